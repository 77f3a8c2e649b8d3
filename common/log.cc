#include "common/log.h"

#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace cshm {

Status InitLogging(const std::string& level, const std::string& log_file, bool to_stderr, uint64_t max_bytes,
                   size_t files) {
  std::vector<spdlog::sink_ptr> sinks;
  try {
    if (to_stderr) sinks.push_back(std::make_shared<spdlog::sinks::stderr_sink_mt>());
    if (!log_file.empty()) sinks.push_back(std::make_shared<spdlog::sinks::rotating_file_sink_mt>(log_file, max_bytes, files));
  } catch (const spdlog::spdlog_ex& e) {
    return IoError(std::string("cannot open log file ") + log_file + ": " + e.what());
  }
  auto logger = std::make_shared<spdlog::logger>("cshm", sinks.begin(), sinks.end());
  logger->set_level(spdlog::level::from_str(level));
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e [%P] %l: %v");
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  return Status::Ok();
}

NamedLog::NamedLog(std::string name) : state_(std::make_shared<State>()) { state_->name = std::move(name); }

std::shared_ptr<spdlog::logger> NamedLog::operator->() const {
  auto base = spdlog::default_logger();
  std::lock_guard<std::mutex> lock(state_->mu);
  if (base != state_->base || !state_->named || state_->named->level() != base->level()) {
    state_->base = base;
    state_->named = base->clone(state_->name);
  }
  return state_->named;
}

bool RateLimit::Allow(uint64_t* suppressed) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  if (!first_ && now - last_ < interval_) {
    dropped_++;
    return false;
  }
  first_ = false;
  last_ = now;
  *suppressed = dropped_;
  dropped_ = 0;
  return true;
}

}  // namespace cshm
