#include "fs/lock_client.h"

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <spdlog/spdlog.h>

namespace cshm::fs {

using namespace ownership;

LockClient::LockClient(Env env) : env_(std::move(env)) {}

LockClient::~LockClient() { Stop(); }

void LockClient::Start() {
  tries_ = std::make_unique<boost::asio::thread_pool>(kTryThreads);
  lock_waiter_ = std::thread([this] { LockWaitLoop(); });
}

void LockClient::Stop() {
  {
    MutexLock lock(&lock_waits_mu_);
    lock_waits_stopping_ = true;
  }
  lock_waits_cv_.NotifyAll();
  if (lock_waiter_.joinable()) lock_waiter_.join();
  if (tries_) tries_->join();  // the tries under way end (each has its deadline) and wait no more
  // Nobody will grant what still waits.
  std::vector<LockWait> left;
  {
    MutexLock lock(&lock_waits_mu_);
    left.swap(lock_waits_);
  }
  for (LockWait& w : left) w.done(Unavailable("this node is stopping"));
}

Status LockClient::CheckHeld(uint64_t ino) {
  MutexLock lock(&mu_);
  auto it = lost_locks_.lower_bound(HeldLock{ino, 0, false});
  if (it == lost_locks_.end() || it->ino != ino) return Status::Ok();
  return IoError("a lock of inode " + std::to_string(ino) +
                 " taken through this node was lost (its owner's lease ran out or it restarted); unlock it first");
}

size_t LockClient::Lose(const std::set<uint64_t>& inos) {
  size_t lost = 0;
  MutexLock lock(&mu_);
  for (uint64_t ino : inos)
    for (const Lock& l : held_ranges_.Take(ino)) lost += lost_locks_.insert(HeldLock{ino, l.who.owner, l.flock}).second;
  return lost;
}

size_t LockClient::QueuedUnlocks() {
  MutexLock lock(&mu_);
  size_t n = 0;
  for (auto& [ino, q] : unsent_unlocks_) n += q.size();
  return n;
}

Status LockClient::SetLock(uint64_t ino, const Lock& want) {
  const HeldLock key{ino, want.who.owner, want.flock};
  if (want.type == F_UNLCK) {
    bool lost = false;
    {
      MutexLock lock(&mu_);
      lost = lost_locks_.contains(key);
    }
    const uint64_t len = want.end == kLockEof ? 0 : want.end - want.start + 1;
    if (lost) {
      DiscardUnderLostLock(key, want.start, len);
      // Still told to the owner: it may not have forgotten this node (the
      // link came back within its lease), and would keep the lock granted to
      // nobody who frees it (locks.pml, LOST_UNLOCK_UNSENT). Another node's
      // grant is not touched: the unlock names this node's lock owner.
      (void)Unlock(ino, LockMessage{LockOp::kUnlock, ino, want});
      return IoError("the lock was lost before this unlock (its owner's lease ran out or it restarted); what was "
                     "written under it after that was refused");
    }
    // Unlock is a release: write this node's dirty pages of the range back
    // (the kernel does it before dropping them)...
    env_.drop_local(ino, want.start, len);
    // ... and the other nodes' copies of them are gone. A release that
    // failed still unlocks (as NFS's unlock does after its flush): kept
    // locked, the lock would stay with a process that believes it let go,
    // and every other node would wait for it; what was not delivered lands
    // later only on pages nobody changed meanwhile, and the EIO says so.
    Status synced = env_.release(ino);
    Status sent = Unlock(ino, LockMessage{LockOp::kUnlock, ino, want});
    {
      // Delivered, or queued until it is: held no more once the lock owner
      // has no range of the file left here.
      MutexLock lock(&mu_);
      held_ranges_.Unlock(ino, LockOwner{env_.self, key.owner}, key.flock, want.start, want.end);
      lost = lost_locks_.contains(key);
    }
    if (lost) {
      // Lost while this unlock wrote back and waited (its lease ran out
      // meanwhile): cleared as an unlock of a lost lock clears it, else it
      // would fence the file here for good (seen in the simulated cluster).
      DiscardUnderLostLock(key, want.start, len);
      return IoError("the lock was lost during this unlock (its owner's lease ran out or it restarted); what was "
                     "written under it after that was refused");
    }
    return synced.ok() ? sent : synced;
  }
  // An unlock of this inode still queued would, delivered after this grant,
  // free it.
  CSHM_RETURN_IF_ERROR(FlushUnlocks(ino));
  LockMessage ask{LockOp::kSet, ino, want};
  ask.seq = ++lock_seq_;
  auto r = env_.at_owner(ino, ask);
  if (!r.ok()) {
    if (r.status().code() == Status::Code::kTimedOut || r.status().code() == Status::Code::kUnavailable) {
      // The grant may have been made and only its answer lost. The caller
      // is told it failed and will not unlock it, so its unlock is queued
      // (sent before this node asks for a lock of the file again, and every
      // migrator tick): kept as held instead, the lock could later be lost
      // and fence every write of the file here, for a lock the application
      // never had. Only if the lock owner held locks of the file before
      // (an upgrade, another range) would that unlock free them too: then
      // it stays held, for a close to release.
      MutexLock lock(&mu_);
      // The unlock cancels this very request: if the owner still holds it
      // (in a pool, waiting for the segment) it refuses it when it comes.
      if (HoldsRange(key)) {
        NoteHeldRange(key, want);  // maybe granted: counted as held, for a close to release
      } else {
        Lock release = want;
        release.type = F_UNLCK;
        LockMessage cancel{LockOp::kUnlock, ino, release};
        cancel.cancels = ask.seq;
        unsent_unlocks_[ino].push_back(cancel);
      }
    }
    return r.status();
  }
  if (r->granted) {
    bool lost = false;
    {
      MutexLock lock(&mu_);
      NoteHeldRange(key, want);
      lost = lost_locks_.contains(key);
    }
    if (lost) DiscardUnderLostLock(key, 0, 0);  // taken again: what was stored under the lost one goes first
    return Status::Ok();
  }
  if (r->grace)
    return WouldBlock("the owner of inode " + std::to_string(ino) +
                      " restarted less than a lease ago and grants no lock yet");
  return WouldBlock("the lock is held by node " + std::to_string(r->conflict.who.node));
}

void LockClient::SetLockLater(uint64_t ino, const Lock& want, std::function<bool()> interrupted,
                           std::function<void(const Status&)> done) {
  Status first = Status::Ok();
  try {
    first = SetLock(ino, want);
    if (first.code() == Status::Code::kWouldBlock) {
      MutexLock lock(&lock_waits_mu_);
      if (!lock_waits_stopping_) {
        const auto backoff = std::chrono::microseconds(200);
        lock_waits_.push_back(LockWait{ino, want, std::move(interrupted), std::move(done), backoff,
                                       std::chrono::steady_clock::now() + backoff});
        lock_waits_cv_.NotifyAll();
        return;
      }
      first = Unavailable("this node is stopping");
    }
  } catch (const std::exception& e) {
    first = IoError(std::string("internal error: ") + e.what());
  }
  done(first);
}

void LockClient::LockWaitLoop() {
  using Clock = std::chrono::steady_clock;
  MutexLock lock(&lock_waits_mu_);
  while (!lock_waits_stopping_) {
    const auto now = Clock::now();
    std::vector<LockWait> due;
    auto wake = now + std::chrono::milliseconds(50);  // signals are looked for this often
    for (auto it = lock_waits_.begin(); it != lock_waits_.end();) {
      if (it->next <= now || (it->interrupted && it->interrupted())) {
        due.push_back(std::move(*it));
        it = lock_waits_.erase(it);
      } else {
        wake = std::min(wake, it->next);
        ++it;
      }
    }
    // Out of lock_waits_ until its try puts it back: one try per wait.
    for (LockWait& w : due) boost::asio::post(*tries_, [this, w = std::move(w)]() mutable { TryAgain(std::move(w)); });
    lock_waits_cv_.WaitUntil(lock, wake);
  }
}

void LockClient::TryAgain(LockWait w) {
  bool stopping = false;
  {
    MutexLock lock(&lock_waits_mu_);
    stopping = lock_waits_stopping_;
  }
  if (stopping) {
    w.done(Unavailable("this node is stopping"));
    return;
  }
  if (w.interrupted && w.interrupted()) {
    w.done(Interrupted("interrupted while waiting for a lock"));
    return;
  }
  Status st = Status::Ok();
  try {
    st = SetLock(w.ino, w.want);
  } catch (const std::exception& e) {
    st = IoError(std::string("internal error: ") + e.what());
  }
  if (st.code() != Status::Code::kWouldBlock) {
    w.done(st);
    return;
  }
  w.backoff = std::min<std::chrono::microseconds>(w.backoff * 2, std::chrono::milliseconds(20));
  w.next = std::chrono::steady_clock::now() + w.backoff;
  {
    MutexLock lock(&lock_waits_mu_);
    if (!lock_waits_stopping_) {
      lock_waits_.push_back(std::move(w));
      lock_waits_cv_.NotifyAll();
      return;
    }
  }
  w.done(Unavailable("this node is stopping"));
}

void LockClient::DiscardUnderLostLock(const HeldLock& key, uint64_t off, uint64_t len) {
  env_.drop_local(key.ino, off, len);
  {
    MutexLock lock(&mu_);
    lost_locks_.erase(key);
  }
  env_.errors_reported(key.ino);  // the refused write-backs: this unlock's EIO reports them
}

void LockClient::NoteHeldRange(const HeldLock& key, const Lock& want) {
  Lock l = want;
  l.who = LockOwner{env_.self, key.owner};
  // The owner granted it, so nothing here conflicts but records it
  // outdated (another lock owner's range freed at the owner meanwhile).
  while (auto c = held_ranges_.Conflict(key.ino, l)) held_ranges_.Unlock(key.ino, c->who, c->flock, c->start, c->end);
  (void)held_ranges_.TrySet(key.ino, l);
}

bool LockClient::HoldsRange(const HeldLock& key) const {
  for (const Lock& l : held_ranges_.Locks(key.ino))
    if (l.who.owner == key.owner && l.flock == key.flock) return true;
  return false;
}

Status LockClient::ReleaseLocks(uint64_t ino, uint64_t owner, bool flock) {
  const HeldLock key{ino, owner, flock};
  bool lost = false;
  {
    MutexLock lock(&mu_);
    lost = lost_locks_.contains(key);  // still released at the owner, as in SetLock
    const bool held = HoldsRange(key);
    held_ranges_.Unlock(ino, LockOwner{env_.self, owner}, flock, 0, kLockEof);
    if (!held && !lost) return Status::Ok();  // never locked here
  }
  if (lost) DiscardUnderLostLock(key, 0, 0);
  Lock all;
  all.type = F_UNLCK;
  all.start = 0;
  all.end = kLockEof;
  all.who = LockOwner{env_.self, owner};
  all.flock = flock;
  return Unlock(ino, LockMessage{LockOp::kUnlock, ino, all});
}

Status LockClient::Unlock(uint64_t ino, const LockMessage& m) {
  {
    MutexLock lock(&mu_);
    unsent_unlocks_[ino].push_back(m);
  }
  Status st = FlushUnlocks(ino);
  if (!st.ok())
    spdlog::warn("unlock of inode {} not delivered ({}); retried until its owner takes it", ino, st.message());
  return st;
}

Status LockClient::FlushUnlocks(uint64_t ino) {
  MutexLock lock(&mu_);
  if (!unsent_unlocks_.contains(ino)) return Status::Ok();
  // One flusher per inode, so that none of its unlocks is still in flight
  // when the caller goes on (to ask for a lock); other inodes do not wait.
  const auto deadline = std::chrono::steady_clock::now() + env_.request_timeout;
  if (!unlocks_flushed_.WaitUntil(lock, deadline, [&]() REQUIRES(mu_) { return !flushing_unlocks_.contains(ino); }))
    return IoError("unlocks of inode " + std::to_string(ino) + " are still being delivered");
  flushing_unlocks_.insert(ino);
  Status st = Status::Ok();
  for (auto it = unsent_unlocks_.find(ino); it != unsent_unlocks_.end(); it = unsent_unlocks_.find(ino)) {
    const LockMessage next = it->second.front();
    lock.Unlock();
    st = env_.at_owner(ino, next).status();
    lock.Lock();
    if (!st.ok()) break;
    it = unsent_unlocks_.find(ino);  // only the flusher erases
    it->second.erase(it->second.begin());
    if (it->second.empty()) unsent_unlocks_.erase(it);
  }
  flushing_unlocks_.erase(ino);
  unlocks_flushed_.NotifyAll();
  return st;
}

void LockClient::RetryUnlocks() {
  std::vector<uint64_t> inos;
  {
    MutexLock lock(&mu_);
    for (const auto& [ino, queued] : unsent_unlocks_) inos.push_back(ino);
  }
  for (uint64_t ino : inos) {
    if (FlushUnlocks(ino).ok()) spdlog::info("delivered the queued unlocks of inode {}", ino);
  }
}

}  // namespace cshm::fs
