// LockClient (fs/lock_client.h): the holder side of the cluster's locks, with
// its owners faked. What these tests hold it to: a lock wait is retried until
// it is granted or interrupted, and a try that waits out its deadline at a
// silent owner holds back no other wait (issue 15: the lock-wait thread once
// tried its waits one after another, so one silent owner's 5 s deadline
// delayed every other node's grant and every signal by as much).
#include "fs/lock_client.h"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

namespace cshm::fs {
namespace {

using namespace std::chrono_literals;
using ownership::Lock;
using ownership::LockMessage;
using ownership::LockOp;
using ownership::LockReply;

constexpr uint64_t kSilent = 1;  // its owner answers a first try, then goes silent
constexpr uint64_t kOther = 2;   // its owner grants the second try
constexpr uint64_t kNever = 3;   // held elsewhere for good

class LockClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spdlog::set_level(spdlog::level::off);
    LockClient::Env env;
    env.self = 1;
    env.request_timeout = 5s;
    env.at_owner = [this](uint64_t ino, const LockMessage& m) -> Result<LockReply> {
      if (m.op != LockOp::kSet) return LockReply{};  // unlocks and cancels: taken
      std::unique_lock<std::mutex> lock(mu_);
      const int n = ++tries_[ino];
      cv_.notify_all();
      if (ino == kSilent && n >= 2) {
        // Waits out a deadline, as a call to an owner that went silent does
        // (bounded here, so that a failing test ends).
        cv_.wait_for(lock, 20s, [this] { return silent_ends_; });
        return TimedOut("the owner did not answer");
      }
      LockReply reply;  // held elsewhere...
      reply.granted = ino == kOther && n >= 2;  // ... but kOther's second try
      return reply;
    };
    env.release = [](uint64_t) { return Status::Ok(); };
    env.drop_local = [](uint64_t, uint64_t, uint64_t) {};
    env.errors_reported = [](uint64_t) {};
    client_ = std::make_unique<LockClient>(std::move(env));
    client_->Start();
  }
  void TearDown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      silent_ends_ = true;
    }
    cv_.notify_all();
    client_->Stop();
    spdlog::set_level(spdlog::level::info);
  }

  static Lock WriteLock(uint64_t owner) {
    Lock l;
    l.type = F_WRLCK;
    l.who.owner = owner;
    return l;
  }
  // Waits for `ino`'s lock; its outcome lands in done_[ino].
  void WaitFor(uint64_t ino, std::function<bool()> interrupted = nullptr) {
    client_->SetLockLater(ino, WriteLock(100 + ino), std::move(interrupted), [this, ino](const Status& st) {
      std::lock_guard<std::mutex> lock(mu_);
      done_.emplace(ino, st);
      cv_.notify_all();
    });
  }
  // True once `pred` holds (under mu_), within `deadline`.
  bool Await(std::chrono::milliseconds deadline, const std::function<bool()>& pred) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, deadline, pred);
  }
  // The silent owner's second try is under way on the client's pool.
  void StartSilentTry() {
    WaitFor(kSilent);
    ASSERT_TRUE(Await(5s, [this] { return tries_[kSilent] >= 2; })) << "the silent wait was never tried again";
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, int> tries_;      // GUARDED_BY(mu_): kSet requests per inode
  std::map<uint64_t, Status> done_;    // GUARDED_BY(mu_): the waits' outcomes
  bool silent_ends_ = false;           // GUARDED_BY(mu_)
  std::unique_ptr<LockClient> client_;
};

TEST_F(LockClientTest, AWaitIsGrantedWhileAnotherWaitsOutASilentOwner) {
  ASSERT_NO_FATAL_FAILURE(StartSilentTry());
  WaitFor(kOther);
  ASSERT_TRUE(Await(3s, [this] { return done_.contains(kOther); }))
      << "the wait for another owner's lock was held back by the silent owner's try";
  EXPECT_TRUE(done_[kOther].ok()) << done_[kOther].ToString();
  EXPECT_FALSE(done_.contains(kSilent)) << "the silent try was still under way";
  {
    std::lock_guard<std::mutex> lock(mu_);
    silent_ends_ = true;
  }
  cv_.notify_all();
  ASSERT_TRUE(Await(5s, [this] { return done_.contains(kSilent); }));
  EXPECT_EQ(done_[kSilent].code(), Status::Code::kTimedOut);
}

TEST_F(LockClientTest, ASignalIsNoticedWhileAnotherWaitWaitsOutASilentOwner) {
  ASSERT_NO_FATAL_FAILURE(StartSilentTry());
  std::atomic<bool> signalled{false};
  WaitFor(kNever, [&signalled] { return signalled.load(); });
  ASSERT_TRUE(Await(5s, [this] { return tries_[kNever] >= 1; }));
  signalled = true;
  ASSERT_TRUE(Await(3s, [this] { return done_.contains(kNever); }))
      << "the signal was not noticed while the silent owner's try waited";
  EXPECT_EQ(done_[kNever].code(), Status::Code::kInterrupted);
}

TEST_F(LockClientTest, AStopEndsEveryWait) {
  WaitFor(kNever);
  ASSERT_TRUE(Await(5s, [this] { return tries_[kNever] >= 1; }));
  client_->Stop();
  std::lock_guard<std::mutex> lock(mu_);
  ASSERT_TRUE(done_.contains(kNever));
  EXPECT_EQ(done_[kNever].code(), Status::Code::kUnavailable);
}

}  // namespace
}  // namespace cshm::fs
