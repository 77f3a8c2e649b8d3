#include "fs/pending_writes.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "tests/support/temp_dir.h"

namespace cshm::fs {
namespace {

using cshm::testing::TempDir;

TEST(PendingWrites, KeepsOrderSurvivesReopenAndStopsAtTheFirstFailure) {
  TempDir dir;
  {
    auto p = PendingWrites::Open(dir / "pending");
    ASSERT_TRUE(p.ok());
    ASSERT_TRUE((*p)->Add(7, "a").ok());
    ASSERT_TRUE((*p)->Add(9, "x").ok());
    ASSERT_TRUE((*p)->Add(7, "b").ok());
    ASSERT_TRUE((*p)->Add(7, "c").ok());
  }
  auto p = PendingWrites::Open(dir / "pending");  // as after a restart
  ASSERT_TRUE(p.ok());
  EXPECT_EQ((*p)->size(), 4u);
  EXPECT_TRUE((*p)->Has(7));
  std::string sent;
  // The owner takes one, then is unreachable again: the rest stays, in order.
  Status st = (*p)->Drain(7, [&](const std::string& payload) {
    if (sent.size() == 1) return Unavailable("down");
    sent += payload;
    return Status::Ok();
  });
  EXPECT_EQ(st.code(), Status::Code::kUnavailable);
  EXPECT_EQ(sent, "a");
  ASSERT_TRUE((*p)->Drain(7, [&](const std::string& payload) {
                sent += payload;
                return Status::Ok();
              })
                  .ok());
  EXPECT_EQ(sent, "abc");
  EXPECT_FALSE((*p)->Has(7));
  // A segment that no longer exists: its write-backs are dropped, not retried forever.
  ASSERT_TRUE((*p)->Drain(9, [](const std::string&) { return NotFound("gone"); }).ok());
  EXPECT_EQ((*p)->size(), 0u);
}

// One unreachable owner holds up only its own segments' write-backs. Seen
// before: one global drain lock was held across the network call, so a
// drain waiting on a dead owner stalled FUSE writes of every other segment.
TEST(PendingWrites, ADrainWaitingOnOneOwnerDoesNotHoldUpAnotherSegment) {
  TempDir dir;
  auto p = PendingWrites::Open(dir / "pending");
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE((*p)->Add(7, "stuck").ok());
  ASSERT_TRUE((*p)->Add(9, "free").ok());
  std::mutex mu;
  std::condition_variable cv;
  bool sending = false, release = false;
  // Let go and joined also when an assertion below returns early.
  struct Join {
    std::thread& t;
    std::function<void()> release;
    ~Join() {
      release();
      if (t.joinable()) t.join();
    }
  };
  std::thread stuck;
  Join join_stuck{stuck, [&] {
                    {
                      std::lock_guard<std::mutex> lock(mu);
                      release = true;
                    }
                    cv.notify_all();
                  }};
  stuck = std::thread([&] {
    (void)(*p)->Drain(7, [&](const std::string&) {
      std::unique_lock<std::mutex> lock(mu);
      sending = true;
      cv.notify_all();
      cv.wait(lock, [&] { return release; });  // the owner's call, waiting for its deadline
      return Unavailable("down");
    });
  });
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return sending; }));
  }
  std::atomic<bool> other_done{false};
  std::thread other([&] {
    EXPECT_TRUE((*p)->Drain(9, [](const std::string&) { return Status::Ok(); }).ok());
    other_done = true;
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!other_done && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_TRUE(other_done) << "segment 9's drain waited for segment 7's";
  join_stuck.release();
  other.join();
  stuck.join();
  EXPECT_FALSE((*p)->Has(9));
  EXPECT_TRUE((*p)->Has(7));
}

}  // namespace
}  // namespace cshm::fs
