// Mutex, MutexLock and CondVar: std::mutex, a scoped lock of it and a
// condition variable, annotated so that clang's -Wthread-safety checks that
// every GUARDED_BY field is touched only with its mutex held
// (common/thread_annotations.h; docs/locking.md lists the core's mutexes).
//
//   Mutex mu_;
//   bool stopping_ GUARDED_BY(mu_) = false;
//   CondVar stopped_;
//   ...
//   MutexLock lock(&mu_);
//   stopped_.WaitFor(lock, 1s, [&]() REQUIRES(mu_) { return stopping_; });
//
// A predicate is a function of its own to the analysis: say REQUIRES on it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <shared_mutex>

#include "common/thread_annotations.h"

namespace cshm {

class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;
  void Lock() ACQUIRE() { mu_.lock(); }
  void Unlock() RELEASE() { mu_.unlock(); }
  bool TryLock() TRY_ACQUIRE(true) { return mu_.try_lock(); }

 private:
  friend class MutexLock;
  std::mutex mu_;
};

// Holds `mu` from construction to destruction, except between an Unlock()
// and the next Lock().
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  // Not held yet: Acquire takes it.
  enum Deferred { kDeferred };
  MutexLock(Mutex* mu, Deferred) EXCLUDES(mu) : mu_(mu), held_(false) {}
  ~MutexLock() RELEASE() {
    if (held_) mu_->Unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;
  void Unlock() RELEASE() {
    held_ = false;
    mu_->Unlock();
  }
  void Lock() ACQUIRE() {
    mu_->Lock();
    held_ = true;
  }
  // With `wait`, Lock; without it, holds the mutex only if it is free now.
  // True if held.
  bool Acquire(bool wait) TRY_ACQUIRE(true) {
    if (wait) {
      mu_->Lock();
    } else if (!mu_->TryLock()) {
      return false;
    }
    held_ = true;
    return true;
  }

 private:
  friend class CondVar;
  std::mutex& native() { return mu_->mu_; }
  Mutex* const mu_;
  bool held_ = true;
};

// Many readers or one writer (std::shared_mutex), with the shared side
// modelled: a field GUARDED_BY it is read under a ReaderLock and written
// under a WriterLock.
class CAPABILITY("mutex") SharedMutex {
 public:
  SharedMutex() = default;
  SharedMutex(const SharedMutex&) = delete;
  SharedMutex& operator=(const SharedMutex&) = delete;
  void Lock() ACQUIRE() { mu_.lock(); }
  void Unlock() RELEASE() { mu_.unlock(); }
  void LockShared() ACQUIRE_SHARED() { mu_.lock_shared(); }
  void UnlockShared() RELEASE_SHARED() { mu_.unlock_shared(); }

 private:
  std::shared_mutex mu_;
};

class SCOPED_CAPABILITY ReaderLock {
 public:
  explicit ReaderLock(SharedMutex* mu) ACQUIRE_SHARED(mu) : mu_(mu) { mu_->LockShared(); }
  ~ReaderLock() RELEASE() { mu_->UnlockShared(); }
  ReaderLock(const ReaderLock&) = delete;
  ReaderLock& operator=(const ReaderLock&) = delete;

 private:
  SharedMutex* const mu_;
};

class SCOPED_CAPABILITY WriterLock {
 public:
  explicit WriterLock(SharedMutex* mu) ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~WriterLock() RELEASE() { mu_->Unlock(); }
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;

 private:
  SharedMutex* const mu_;
};

// Waits release the lock's mutex and hold it again before they return.
class CondVar {
 public:
  template <typename Pred>
  void Wait(MutexLock& lock, Pred pred) {
    std::unique_lock<std::mutex> u(lock.native(), std::adopt_lock);
    cv_.wait(u, pred);
    u.release();
  }
  // False if `pred` still does not hold at the deadline.
  template <typename Clock, typename Duration, typename Pred>
  bool WaitUntil(MutexLock& lock, const std::chrono::time_point<Clock, Duration>& deadline, Pred pred) {
    std::unique_lock<std::mutex> u(lock.native(), std::adopt_lock);
    const bool ok = cv_.wait_until(u, deadline, pred);
    u.release();
    return ok;
  }
  // False at the deadline (or woken before it: check what you wait for).
  template <typename Clock, typename Duration>
  bool WaitUntil(MutexLock& lock, const std::chrono::time_point<Clock, Duration>& deadline) {
    std::unique_lock<std::mutex> u(lock.native(), std::adopt_lock);
    const bool ok = cv_.wait_until(u, deadline) == std::cv_status::no_timeout;
    u.release();
    return ok;
  }
  template <typename Rep, typename Period, typename Pred>
  bool WaitFor(MutexLock& lock, const std::chrono::duration<Rep, Period>& d, Pred pred) {
    return WaitUntil(lock, std::chrono::steady_clock::now() + d, pred);
  }
  void NotifyOne() { cv_.notify_one(); }
  void NotifyAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace cshm
