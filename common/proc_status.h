// What /proc/PID/status says of a process: whether it has exited (a zombie
// leader whose threads are all gone), and which signals wait for it. A zombie
// leader may still have a live thread (one stuck in the kernel), so "state Z"
// alone does not mean exited.
#pragma once

#include <sys/types.h>

#include <cstdint>

namespace cshm {

struct ProcStatus {
  bool exists = false;
  bool zombie = false;
  long threads = 0;
  pid_t tgid = 0;        // the thread group (process) a thread id belongs to
  uint64_t pending = 0;  // SigPnd | ShdPnd: signals sent and not yet taken

  bool exited() const { return !exists || (zombie && threads <= 1); }
  bool pending_signal(int sig) const { return (pending >> (sig - 1)) & 1; }
};

ProcStatus ReadProcStatus(pid_t pid);

// When the process (or thread) started, in clock ticks since boot
// (/proc/PID/stat's starttime): with the pid, what names one process, since
// a pid is used again once its process is gone. 0 if there is no such process.
uint64_t ReadProcStart(pid_t pid);

}  // namespace cshm
