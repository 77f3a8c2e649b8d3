// Logging set-up: spdlog's default logger, to stderr in the foreground and to a
// file when running in the background. Code logs with spdlog::info(...) etc.
#pragma once

#include <spdlog/logger.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"

namespace cshm {

// level: trace, debug, info, warn, error, off. log_file empty: stderr only.
// The file rotates when it reaches max_bytes: cshmfs.1.log .. cshmfs.<files>.log
// keep the older ones (spdlog's rotating sink), so the log never holds more
// than (files + 1) * max_bytes.
Status InitLogging(const std::string& level, const std::string& log_file, bool to_stderr,
                   uint64_t max_bytes = 64ull << 20, size_t files = 4);

// The default logger as it is now (InitLogging may replace it after this was
// made, and the level may change), its messages named `name`: what a part
// of a node logs through when one process holds several nodes (the
// simulated cluster prints the name; the daemon's pattern leaves it out).
//   NamedLog log("node 2");  log->warn("...", ...);
// Copies share one cache. Thread-safe.
class NamedLog {
 public:
  explicit NamedLog(std::string name);
  std::shared_ptr<spdlog::logger> operator->() const;

 private:
  struct State {
    std::string name;
    std::mutex mu;
    std::shared_ptr<spdlog::logger> base, named;  // GUARDED_BY(mu)
  };
  std::shared_ptr<State> state_;
};

// One repeated warning at most once per interval, with how many were
// dropped since (a flood of bad connections must not fill the disk):
//   static RateLimit limit(std::chrono::seconds(10));
//   if (uint64_t n; limit.Allow(&n)) spdlog::warn("... ({} more like it)", n);
// Thread-safe.
class RateLimit {
 public:
  explicit RateLimit(std::chrono::milliseconds interval) : interval_(interval) {}
  bool Allow(uint64_t* suppressed);

 private:
  const std::chrono::milliseconds interval_;
  std::mutex mu_;
  std::chrono::steady_clock::time_point last_{};  // GUARDED_BY(mu_)
  uint64_t dropped_ = 0;                           // GUARDED_BY(mu_)
  bool first_ = true;                              // GUARDED_BY(mu_)
};

}  // namespace cshm
