// The log cannot fill a disk: it rotates by size, and a repeated warning is
// one line per interval with a count.
#include "common/log.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <thread>

#include "tests/support/temp_dir.h"

namespace cshm {
namespace {

using namespace std::chrono_literals;

TEST(LogTest, TheLogFileRotatesBySizeAndKeepsAFewOlderOnes) {
  cshm::testing::TempDir dir;
  const std::string file = dir / "cshmfs.log";
  ASSERT_TRUE(InitLogging("info", file, false, 64 << 10, 2).ok());
  for (int i = 0; i < 10000; i++) spdlog::info("line {} {}", i, std::string(100, 'x'));  // ~1.2 MB
  spdlog::default_logger()->flush();
  uint64_t total = 0;
  size_t files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) {
    total += std::filesystem::file_size(e.path());
    files++;
  }
  EXPECT_EQ(files, 3u);  // the file and two older ones
  EXPECT_LE(total, 3u * (64u << 10));
  EXPECT_TRUE(std::filesystem::exists(dir / "cshmfs.1.log"));  // spdlog keeps the extension
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("null"));
}

// A NamedLog made before the daemon sets up its log (the cluster part is made
// before InitLogging) still writes where the log goes now, at its level.
// Seen: a clone made at construction wrote to the start-up logger for ever.
TEST(LogTest, ANamedLogFollowsTheDefaultLoggerItWasNotMadeWith) {
  auto old = spdlog::default_logger();
  NamedLog log("node 7");
  auto first = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(10);
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("a", first));
  spdlog::default_logger()->set_pattern("[%n] %v");
  log->info("one");
  auto second = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(10);
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("b", second));
  spdlog::default_logger()->set_pattern("[%n] %v");
  spdlog::set_level(spdlog::level::warn);
  log->info("two");  // below the level now
  log->warn("three");
  spdlog::set_default_logger(old);
  spdlog::set_level(spdlog::level::info);
  ASSERT_EQ(first->last_formatted().size(), 1u);
  EXPECT_NE(first->last_formatted()[0].find("[node 7] one"), std::string::npos);
  ASSERT_EQ(second->last_formatted().size(), 1u);
  EXPECT_NE(second->last_formatted()[0].find("[node 7] three"), std::string::npos);
}

TEST(LogTest, ARateLimitLetsOneThroughPerIntervalAndCountsTheRest) {
  RateLimit limit(200ms);
  uint64_t dropped = 99;
  EXPECT_TRUE(limit.Allow(&dropped));
  EXPECT_EQ(dropped, 0u);
  int allowed = 0;
  for (int i = 0; i < 1000; i++) allowed += limit.Allow(&dropped) ? 1 : 0;
  EXPECT_EQ(allowed, 0);
  std::this_thread::sleep_for(250ms);  // past the interval; the check does not depend on more
  EXPECT_TRUE(limit.Allow(&dropped));
  EXPECT_EQ(dropped, 1000u);
}

}  // namespace
}  // namespace cshm
