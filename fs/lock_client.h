// LockClient: the holder side of the cluster-wide locks (contract 4,
// DESIGN.md "Faults: leases, epochs and fencing"): what this node's lock
// owners hold at the segments' owners, the locks they lost, the unlocks not
// yet delivered, and the F_SETLKW waits. The owner side (the grants, the
// grace period) is the owner's LockTable in fs::Cluster; the two meet only
// through the messages of ownership/messages.h (LockMessage, LockReply).
//
// Fencing: a lock is *lost* when this node's lease with its owner runs out
// or the owner restarts (Lose). While a file has a lost lock here, its writes
// and releases here fail with EIO (CheckHeld), and so does the lost lock's
// unlock, which clears it: what Linux's NFS client does with lost locks.
// Before a lost lock is cleared (unlock, close, taking it again), the kernel
// drops its pages of the range while the writes are still refused, so that
// what was stored under it never reaches the owner.
//
// Modelled in ownership/locks.pml (SetLock, LockService::Serve, lease expiry).
//
// Thread-safety: all public methods are thread-safe. Lock order: LockClient's
// mutexes are leaves: it calls its Env with none held.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "ownership/lock_table.h"
#include "ownership/messages.h"

namespace boost::asio {
class thread_pool;
}

namespace cshm::fs {

class LockClient {
 public:
  // What the client needs of the rest of the node.
  struct Env {
    uint32_t self = 0;
    std::chrono::milliseconds request_timeout{5000};
    // Sends `m` to the owner of `ino`, wherever it is (following kMoved).
    std::function<Result<ownership::LockReply>(uint64_t ino, const ownership::LockMessage& m)> at_owner;
    // A release of `ino` (Cluster::Sync): every write of it so far acknowledged.
    std::function<Status(uint64_t ino)> release;
    // This node's kernel drops [off, off+len) of `ino` (len 0: to the end),
    // writing its dirty pages back first (Cluster::InvalidateLocal).
    std::function<void(uint64_t ino, uint64_t off, uint64_t len)> drop_local;
    // The write-back errors of `ino` kept for its next release are reported
    // (by the EIO of a lost lock's unlock).
    std::function<void(uint64_t ino)> errors_reported;
  };

  explicit LockClient(Env env);
  ~LockClient();  // Stop()
  // Starts the lock-wait thread; Stop() ends every wait (kUnavailable).
  void Start();
  void Stop();

  // F_RDLCK/F_WRLCK: one try to take it; held elsewhere: kWouldBlock (EAGAIN).
  // F_UNLCK: a release: this node's dirty pages of the range are written back
  // (and acknowledged by the owner) before the lock goes.
  Status SetLock(uint64_t ino, const ownership::Lock& want);
  // F_SETLKW/flock without LOCK_NB, without holding the caller's thread: one
  // try here; a lock held elsewhere is retried (with backoff, each try under
  // its deadline) on the lock-wait pool, and `done` is called from there
  // when it is granted, `interrupted()` says the caller got a signal
  // (kInterrupted), or it fails. Tries run side by side (kTryThreads): a
  // try that waits out its deadline at a silent owner does not hold back
  // the waits for other owners, nor the noticing of their signals. A FUSE worker must not sleep in a lock wait:
  // the mount has 64, and with that many waiters on one node the unlock that
  // would let them in could not be served (seen: the mount wedged).
  void SetLockLater(uint64_t ino, const ownership::Lock& want, std::function<bool()> interrupted,
                    std::function<void(const Status&)> done);
  // Drops every lock of `owner` on `ino` of the kind `flock` (close/release).
  Status ReleaseLocks(uint64_t ino, uint64_t owner, bool flock);
  // kIoError if this node lost a lock of `ino` that is not yet unlocked.
  Status CheckHeld(uint64_t ino);
  // The locks held here of the inodes in `inos` are lost (their owner's
  // lease with us ran out, or it restarted). Returns how many.
  size_t Lose(const std::set<uint64_t>& inos);
  // Delivers the queued unlocks (the migrator loop's tick).
  void RetryUnlocks();
  size_t QueuedUnlocks();  // unlocks not yet delivered, all inodes

 private:
  struct HeldLock {
    uint64_t ino = 0;
    uint64_t owner = 0;  // the kernel's lock owner (POSIX) or open file (flock)
    bool flock = false;
    auto operator<=>(const HeldLock&) const = default;
  };
  // Sends `m` (an unlock) after the unlocks of `ino` not yet delivered; what
  // the owner does not take stays queued (see unsent_unlocks_).
  Status Unlock(uint64_t ino, const ownership::LockMessage& m);
  // Delivers the queued unlocks of `ino`, in order; the first failure stops.
  Status FlushUnlocks(uint64_t ino);
  // A lost lock is unlocked (or its file closed, or it is taken again):
  // while it is still recorded as lost, the range goes from the kernel,
  // whose write-backs of its dirty pages Write refuses (CheckHeld), so that
  // the kernel forgets them; only then does the record go. (Seen in the
  // simulated cluster: a page stored under a lost lock stayed dirty after
  // the unlock's EIO and was written back later, unfenced, over the newer
  // holder's increments.)
  void DiscardUnderLostLock(const HeldLock& key, uint64_t off, uint64_t len);
  void NoteHeldRange(const HeldLock& key, const ownership::Lock& want) REQUIRES(mu_);
  bool HoldsRange(const HeldLock& key) const REQUIRES(mu_);
  struct LockWait;
  // The lock-wait thread: hands every wait that is due (or interrupted) to
  // the pool, one try of it at a time.
  void LockWaitLoop();
  // One try of `w` on the pool; still blocked, it waits again.
  void TryAgain(LockWait w);

  const Env env_;
  // The number of this node's latest lock request (LockMessage::seq).
  std::atomic<uint64_t> lock_seq_{0};

  Mutex mu_;
  // The ranges of the locks taken through this node (or maybe taken: the
  // answer was lost, and the lock owner held others of the file). A lock
  // owner holds a file's lock while it has a range of it here (HoldsRange):
  // one unlock of one range leaves it holding the others, and one counted as
  // holding with none left would be "lost" at the next lease expiry and
  // fence the file for a lock nobody has.
  ownership::LockTable held_ranges_ GUARDED_BY(mu_);
  // The locks lost that the application has not unlocked yet.
  std::set<HeldLock> lost_locks_ GUARDED_BY(mu_);
  // Unlocks whose owner did not answer (a lost frame, a partition shorter
  // than its lease), per inode in order. Dropped, the owner would keep the
  // lock granted to a node that forgot it, and every waiter would wait for
  // ever. Retried every migrator tick and before this node asks for a lock
  // of the same inode again: delivered after a newer grant, an unlock would
  // free that grant. One flusher per inode at a time (flushing_unlocks_; each
  // delivery a call with a deadline), so that no unlock is still in flight
  // when a lock request follows it.
  std::map<uint64_t, std::vector<ownership::LockMessage>> unsent_unlocks_ GUARDED_BY(mu_);
  std::set<uint64_t> flushing_unlocks_ GUARDED_BY(mu_);
  CondVar unlocks_flushed_;  // with mu_

  // Lock requests waiting for a lock held elsewhere (SetLockLater).
  struct LockWait {
    uint64_t ino;
    ownership::Lock want;
    std::function<bool()> interrupted;
    std::function<void(const Status&)> done;
    std::chrono::microseconds backoff;
    std::chrono::steady_clock::time_point next;
  };
  Mutex lock_waits_mu_;
  CondVar lock_waits_cv_;
  std::vector<LockWait> lock_waits_ GUARDED_BY(lock_waits_mu_);
  bool lock_waits_stopping_ GUARDED_BY(lock_waits_mu_) = false;
  std::thread lock_waiter_;
  static constexpr int kTryThreads = 4;
  std::unique_ptr<boost::asio::thread_pool> tries_;  // made by Start, joined by Stop
};

}  // namespace cshm::fs
