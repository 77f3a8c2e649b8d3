// POSIX named semaphores on a cshm mount (docs/ipc_compat.md, "Semaphores").
//
// sem_open(NAME) opens MOUNT/.posix/sem.NAME (where glibc would use
// /dev/shm/sem.NAME): a one-semaphore set of the kind SysvSemaphores serves,
// so one name is one semaphore on every node, kept by the node that created
// it. The sem_t* returned is ours (a handle, not a futex word): sem_wait and
// the rest recognise it and pass every other sem_t (sem_init's unnamed ones)
// to the C library. sem_post is a release, as a SysV operation is.
//
// Every function returns as its libc namesake and sets errno like it.
#pragma once

#include <fcntl.h>
#include <semaphore.h>
#include <sys/stat.h>
#include <time.h>

#include <map>
#include <mutex>
#include <set>
#include <string>
#include <utility>

#include "ipc_compat/sysv_semaphores.h"

namespace cshm::ipc {

class PosixSemaphores {
 public:
  PosixSemaphores(std::string mount, SysvSemaphores* sysv) : mount_(std::move(mount)), sysv_(sysv) {}

  sem_t* Open(const char* name, int oflag, mode_t mode, unsigned value);
  bool IsOurs(sem_t* s);
  int Close(sem_t* s);
  int Unlink(const char* name);
  int Post(sem_t* s);
  // `abs` on `clock` (CLOCK_REALTIME for sem_timedwait), or null: no deadline.
  int Wait(sem_t* s, bool try_only, clockid_t clock, const struct timespec* abs);
  int GetValue(sem_t* s, int* value);

 private:
  struct Handle {
    char room[sizeof(sem_t)];  // what a caller may believe it got
    int fd;
    dev_t dev;
    ino_t ino;
    int refs;
  };
  // MOUNT/.posix/sem.NAME, or "" for a name glibc would refuse.
  std::string PathOf(const char* name) const;
  int FdOf(sem_t* s);

  const std::string mount_;
  SysvSemaphores* const sysv_;
  std::mutex mu_;
  std::set<sem_t*> handles_;                            // GUARDED_BY(mu_)
  std::map<std::pair<dev_t, ino_t>, Handle*> by_file_;  // sem_open of an open one gives the same (GUARDED_BY(mu_))
};

}  // namespace cshm::ipc
