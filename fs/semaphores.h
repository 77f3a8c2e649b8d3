// Semaphores: SysV semaphore sets shared by every node (docs/ipc_compat.md,
// "Semaphores"). A set is a file in MOUNT/.sysv; the owner of that file serves
// it from an ownership::SemaphoreTable, keeping its state (values, pids,
// times, SEM_UNDO adjustments) in <state dir>/semaphores/<ino> so that a
// daemon restart loses nothing acknowledged. The shim reaches its own node's
// daemon with an ioctl on the set's file (fs/sem_ioctl.h); Run serves it here
// or at the owner.
//
// A semop that must wait is queued at the owner under a token and answered
// by a SemWake pushed to the waiting node when another operation lets it
// proceed: one round trip to queue, one message to wake. The waiting thread
// also asks the owner once a second whether it is still queued (a wake-up
// lost with a frame, an owner restarted: kUnknown, EIO), and cancels on a
// signal (EINTR) or its deadline (EAGAIN); a cancel that finds the operation
// done returns its result, so an operation is never both applied and failed.
//
// SEM_UNDO: the accessor watches every process that asked for it with a
// pidfd and tells the owners when it exits (also by kill -9); an owner that
// forgets a node (its lease) applies the adjustments of all its processes.
// A process whose node lost its lease with an owner gets EIO from its next
// operation on that owner's sets: its adjustments were applied meanwhile
// (the lost-lock rule of DESIGN.md "Faults").
//
// Thread-safety: all methods are thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "common/mutex.h"
#include "common/status.h"
#include "ownership/messages.h"
#include "ownership/semaphore_table.h"

namespace cshm::fs {

class Semaphores {
 public:
  struct Options {
    uint32_t self = 0;
    std::string dir;  // where owned sets are kept
    // The owner of a set's file (this node's id on one node).
    std::function<Result<uint32_t>(uint64_t ino)> owner_of;
    // A request to a peer, with the transport's deadline (unset on one node).
    std::function<Result<std::string>(uint32_t node, uint16_t type, std::string payload)> call;
    // One that does not block: `done` may run on the I/O thread.
    std::function<void(uint32_t node, uint16_t type, std::string payload, std::function<void(bool ok)> done)>
        call_async;
  };
  static Result<std::unique_ptr<Semaphores>> Open(Options options);
  ~Semaphores();
  // Stops telling owners of exits (before the cluster goes).
  void Stop();

  // Answers one call, once, with the request's bytes answered in place.
  using Reply = std::function<void(const std::string& io)>;
  // The shim's ioctl: `io` holds a SemIoctl and its entries. `caller_tid`:
  // the thread (this daemon's pid namespace) that made it; `writable`: the
  // set's file is open for writing (alter permission). `reply` is called
  // before Run returns, except for a semop that waits: then it is called
  // later from another thread, and the caller's thread is free (a FUSE
  // worker must not be held by a wait: a few dozen waiters would take every
  // worker of the mount, and nobody could post). `interrupted` is asked
  // until then.
  void Run(uint64_t ino, std::string io, pid_t caller_tid, bool writable, std::function<bool()> interrupted,
           Reply reply);

  // Owner side: a request from node `from` (self for local callers).
  ownership::SemReply Serve(uint32_t from, const ownership::SemRequest& req);
  // Accessor side: a queued operation finished at its owner.
  void Woken(const ownership::SemWake& w);
  // Owner side: `node` is gone (its lease ran out): its processes' undos
  // applied, its waiters and answers dropped.
  void NodeGone(uint32_t node);
  // Accessor side: our lease with `node` ran out, or it restarted: waiters
  // there fail with EIO, and so does the next operation of a process that
  // had adjustments there.
  void OwnerLost(uint32_t node);
  // Either side: the set's file was deleted.
  void Forget(uint64_t ino);
  // Whether a set is served here (a migration must not take it away).
  bool Serves(uint64_t ino);
  size_t sets();  // served here (a gauge)
  uint64_t ops_served() const;  // calls answered here as an owner, since start

 private:
  explicit Semaphores(Options o) : o_(std::move(o)) {}
  using Clock = std::chrono::steady_clock;
  // A semop of this node's process, queued at its owner.
  struct Pending {
    uint64_t ino = 0;
    uint32_t owner = 0;
    std::string io;
    Reply reply;
    std::function<bool()> interrupted;
    Clock::time_point deadline = Clock::time_point::max();
    Clock::time_point next_check;
    bool lost = false;  // the owner's lease ran out
    bool busy = false;  // the wait loop is asking the owner about it
  };
  Result<ownership::SemReply> Ask(uint32_t owner, const ownership::SemRequest& req);
  // Answers `token`'s call with `err`, if nobody has (whoever takes it out
  // of pending_ answers it).
  void Finish(uint64_t token, int err);
  // Deadlines, signals, lost owners and the once-a-second check of the
  // operations queued elsewhere.
  void WaitLoop();
  // Asks the owner about a queued operation, and with `give_up` takes it back.
  // -1: taken back; -2: still queued, or the owner cannot be reached (asked
  // without give_up); otherwise the operation's errno (0: applied).
  int Cancel(uint64_t ino, uint32_t owner, uint64_t token, bool give_up);
  // A process on this node: its thread group id (in this daemon's pid
  // namespace, the one its exit is watched in) and its start time, since a
  // pid is used again once its process is gone (ReadProcStart).
  using Process = std::pair<pid_t, uint64_t>;
  // Watches the process's exit to tell `owner`, which keeps adjustments of
  // it; false if it has exited already (its operation must not be applied:
  // nobody would undo it).
  bool WatchExit(const Process& p, uint32_t owner);
  // An operation of the process is on its way to its owner (Asking), or
  // answered: its exit is told only after every one is answered (else the
  // exit could overtake it and the owner apply it after the exit, for ever).
  void Asking(const Process& p, int delta);
  void ExitLoop();
  void DeliverExits();

  // Owner side, under mu_.
  Status Loaded(uint64_t ino) REQUIRES(mu_);
  Status Reserve(uint64_t ino, size_t extra) REQUIRES(mu_);  // room for the state to grow by `extra` bytes, before a change
  Status Save(uint64_t ino) REQUIRES(mu_);
  void Answer(std::vector<ownership::SemCompleted> done);
  static int ErrnoOf(const Status& s);  // 0 for ok, EIO for what has no errno

  const Options o_;
  Mutex mu_;                     // the owner side
  ownership::SemaphoreTable table_ GUARDED_BY(mu_);
  struct File {
    int fd = -1;             // open while in open_
    uint64_t allocated = 0;  // bytes reserved on disk
    size_t saved = 0;        // bytes of the last state written
    std::list<uint64_t>::iterator at;  // in open_, while open
  };
  std::map<uint64_t, File> files_ GUARDED_BY(mu_);  // the state files of the sets in table_
  // The sets whose state file is open, the least recently used first: at
  // most kOpenStates, so that the sets a node serves are not bounded by its
  // descriptors (LTP semget05 makes 32,000 and met EMFILE at ~17,000).
  static constexpr size_t kOpenStates = 256;
  std::list<uint64_t> open_ GUARDED_BY(mu_);
  Result<int> StateFd(uint64_t ino) REQUIRES(mu_);  // of a set in files_
  void Opened(uint64_t ino, int fd) REQUIRES(mu_);
  void CloseState(File& f) REQUIRES(mu_);
  // Answers of queued operations not yet acknowledged by their node.
  std::map<std::pair<uint32_t, uint64_t>, int> unacked_ GUARDED_BY(mu_);

  Mutex wait_mu_;  // the accessor side
  CondVar wait_cv_;  // the wait loop has something to do
  uint64_t next_token_ GUARDED_BY(wait_mu_) = 0;
  std::map<uint64_t, Pending> pending_ GUARDED_BY(wait_mu_);  // token -> waiter
  std::map<Process, std::set<uint32_t>> undo_owners_ GUARDED_BY(wait_mu_);  // owners holding its adjustments
  std::set<std::pair<Process, uint32_t>> undo_lost_ GUARDED_BY(wait_mu_);
  std::map<Process, int> pidfds_ GUARDED_BY(wait_mu_);
  std::map<Process, int> asking_ GUARDED_BY(wait_mu_);  // its operations not yet answered
  std::vector<std::pair<uint32_t, Process>> exits_ GUARDED_BY(wait_mu_);  // to tell owners
  int wake_fd_ = -1;  // eventfd: the exit watcher's poll set changed
  bool stopping_ GUARDED_BY(wait_mu_) = false;
  std::thread watcher_;
  std::thread waiter_;
};

}  // namespace cshm::fs
