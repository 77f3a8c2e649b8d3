// SemaphoreTable: the SysV semaphore sets whose files a node owns, with the
// kernel's semantics (ipc/sem.c): semop applies all of its operations or none,
// a blocked one waits in FIFO order and is retried whenever a value changes,
// SEM_UNDO adjustments are kept per process and applied when it exits (or its
// node is gone), SETVAL/SETALL clear them, IPC_RMID fails every waiter with
// EIDRM. Pure logic, no I/O, no clock (the caller passes the time): the owner
// serves every node's operations with it (docs/ipc_compat.md, "Semaphores").
//
// A set is named by the inode of its file in MOUNT/.sysv; a process by its
// node and its pid there. A waiter is the caller's token: the table only says
// which tokens completed, and how; the caller answers them.
//
// Thread-safety: not thread-safe; the caller serialises.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace cshm::ownership {

constexpr int kSemVmx = 32767;  // SEMVMX: the largest value, and |semadj| bound

struct SemOpBuf {
  uint16_t num = 0;
  int16_t op = 0;
  int16_t flg = 0;  // IPC_NOWAIT, SEM_UNDO
};

// A process: its node, its pid there, and its start time there (clock
// ticks since the node booted, /proc/PID/stat): a pid used again by a later
// process names another one, whose adjustments are its own.
struct SemProcess {
  uint32_t node = 0;
  int32_t pid = 0;
  uint64_t start = 0;
  auto operator<=>(const SemProcess&) const = default;
};

// A waiter that finished: `err` 0 (its operations were applied), EIDRM.
struct SemCompleted {
  uint32_t node = 0;
  uint64_t token = 0;
  int err = 0;
};

struct SemStat {
  uint32_t nsems = 0;
  int64_t otime = 0, ctime = 0;
};

class SemaphoreTable {
 public:
  // A new set of `nsems` zeros (EEXIST if `ino` has one).
  Status Create(uint64_t ino, uint32_t nsems, int64_t now);
  bool Has(uint64_t ino) const { return sets_.contains(ino); }

  // semop. kOk: applied. kWouldBlock: an operation without IPC_NOWAIT must
  // wait: when `token` is not 0 it is queued (answered later through a
  // SemCompleted); an IPC_NOWAIT operation that would wait is EAGAIN.
  // Errors as the kernel's: EFBIG (a number past the set), ERANGE (a value or
  // an adjustment past SEMVMX), EINVAL (no such set).
  Status Op(uint64_t ino, const SemProcess& who, const std::vector<SemOpBuf>& ops, uint64_t token, int64_t now,
            std::vector<SemCompleted>* done);
  // Takes a queued waiter away (a signal, a deadline, its caller gave up):
  // true if it was still queued, false if it already completed or is unknown.
  bool Cancel(uint64_t ino, uint32_t node, uint64_t token);
  bool Queued(uint64_t ino, uint32_t node, uint64_t token) const;

  // semctl. `num` must be below nsems (EINVAL otherwise, as the kernel).
  Result<int> GetVal(uint64_t ino, uint32_t num) const;
  Result<int> GetPid(uint64_t ino, uint32_t num) const;
  Result<int> GetNcnt(uint64_t ino, uint32_t num) const;  // waiting for it to grow
  Result<int> GetZcnt(uint64_t ino, uint32_t num) const;  // waiting for it to be 0
  Result<std::vector<uint16_t>> GetAll(uint64_t ino) const;
  Result<SemStat> Stat(uint64_t ino) const;
  Status SetVal(uint64_t ino, const SemProcess& who, uint32_t num, int value, int64_t now,
                std::vector<SemCompleted>* done);
  Status SetAll(uint64_t ino, const SemProcess& who, const std::vector<uint16_t>& values, int64_t now,
                std::vector<SemCompleted>* done);
  Status Touch(uint64_t ino, int64_t now);  // IPC_SET changed the permissions: ctime
  // IPC_RMID: the set goes; every waiter completes with EIDRM.
  Status Remove(uint64_t ino, std::vector<SemCompleted>* done);

  // A process exited: its adjustments are applied (each value clamped to
  // [0, SEMVMX], as the kernel's exit_sem) in every set, and its waiters are
  // dropped (nobody to answer; none applied after its exit).
  void Exited(const SemProcess& who, int64_t now, std::vector<SemCompleted>* done);
  // A node is gone: its processes' adjustments applied, its waiters dropped
  // (nobody to answer).
  void DropNode(uint32_t node, int64_t now, std::vector<SemCompleted>* done);
  // The inode is gone without IPC_RMID (its file was deleted): as Remove.
  void Forget(uint64_t ino, std::vector<SemCompleted>* done) { (void)Remove(ino, done); }

  // Persistence of one set (values, pids, times, adjustments; not the
  // waiters, which belong to connections of this incarnation).
  std::string Encode(uint64_t ino) const;
  Status Load(uint64_t ino, std::string_view encoded);
  // Sets with an adjustment of the process (to save them after its exit).
  std::vector<uint64_t> SetsWithUndo(const SemProcess& who) const;

 private:
  struct Waiter {
    uint32_t node;
    uint64_t token;
    SemProcess who;
    std::vector<SemOpBuf> ops;
  };
  struct Set {
    std::vector<int> values;
    std::vector<int> pids;
    int64_t otime = 0, ctime = 0;
    std::map<SemProcess, std::vector<int>> undo;  // semadj per process, only non-zero lists
    std::deque<Waiter> waiters;                   // FIFO
  };
  // 0: applied to `s`; EAGAIN: would wait (index of the blocking op in
  // *blocked); EFBIG/ERANGE: refused. All or nothing.
  static int TryApply(Set& s, const SemProcess& who, const std::vector<SemOpBuf>& ops, int64_t now,
                      size_t* blocked);
  // After a change: retries the waiters in order until none can proceed.
  static void Wake(Set& s, int64_t now, std::vector<SemCompleted>* done);
  static void ApplyUndo(Set& s, const SemProcess& who, const std::vector<int>& adj);
  Result<Set*> Find(uint64_t ino);
  Result<const Set*> Find(uint64_t ino) const;

  std::map<uint64_t, Set> sets_;
};

}  // namespace cshm::ownership
