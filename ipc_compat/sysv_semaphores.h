// SysV semaphores on a cshm mount (docs/ipc_compat.md, "Semaphores").
//
// Layout under MOUNT/.sysv/:
//   sem-<semid>       the set: a regular file whose mode, uid and gid are the
//                     set's permissions (user.cshm.* xattrs: key, nsems,
//                     creator); its values live with the daemon of the node
//                     that owns the file, which serves every node's semop
//   semkey-<8 hex>    a hard link to the set of that key
// A semid is made from the file's inode number as a shmid is, so it names
// the same set on every node.
//
// Every operation is an ioctl on the set's file (fs/sem_ioctl.h). One that
// can let another process proceed (an operation that changes a value,
// SETVAL, SETALL, IPC_RMID) is first a release: every shared, writable
// mapping of a file of the mount in this process is msync'ed, so that what
// the process stored before it is visible on every node once the
// semaphore lets someone in (DESIGN.md, "release").
//
// Every function returns -1 and sets errno like its libc namesake.
#pragma once

#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/types.h>
#include <time.h>

#include <map>
#include <mutex>
#include <string>

#include "fs/sem_ioctl.h"

namespace cshm::ipc {

union SemArg {
  int val;
  struct semid_ds* buf;
  unsigned short* array;
  struct seminfo* info;
};

class SysvSemaphores {
 public:
  explicit SysvSemaphores(std::string mount);

  int Get(key_t key, int nsems, int flags);
  int Op(int semid, struct sembuf* sops, size_t nsops, const struct timespec* timeout);
  int Control(int semid, int semnum, int cmd, SemArg arg);
  // The kernel's semctl (the shim's, found with dlsym).
  using RealSemctl = int (*)(int, int, int, ...);
  // IPC_INFO and SEM_INFO: the kernel's answer with this mount's sets
  // counted in (SEM_INFO's semusz and semaem; the highest index both return
  // counts them after the kernel's own, as IndexStat does).
  int Info(int cmd, SemArg arg, RealSemctl real);
  // SEM_STAT and SEM_STAT_ANY of the kernel's index `index`: the kernel's
  // set up to its highest index, then this mount's sets by semid.
  int IndexStat(int index, int cmd, SemArg arg, RealSemctl real);
  bool IsOurs(int semid) const;
  // msync(MS_SYNC) of every shared writable mapping of the mount here.
  void Release();
  // The daemon's ioctl on a set's file: `extra_bytes` after the header in and
  // out of `extra`; -1 with errno (the daemon's answer, or the ioctl's).
  static int Call(int fd, fs::SemIoctl* req, void* extra, size_t extra_bytes);

 private:
  std::string Dir() const { return mount_ + "/.sysv"; }
  std::string IdPath(int semid) const;
  std::string KeyPath(key_t key) const;
  // An empty directory per set (`semn-<semid>`), made after the set and
  // removed with it: .sysv's link count then bounds the number of sets (and
  // segments, whose att- directories count too) without a listing.
  std::string MarkPath(int semid) const;
  // The sets of the mount, listed; markers without their set (a crash, a
  // file deleted by hand) are removed on the way.
  size_t CountSets();
  int Create(key_t key, int nsems, int flags);
  // The set's file, opened once per process (O_RDWR if allowed).
  int Fd(int semid);
  void Drop(int semid);
  // The set's size and times (an IPC_STAT of the daemon).
  int Stat(int fd, fs::SemIoctl* out);

  const std::string mount_;
  unsigned long mount_dev_major_ = 0, mount_dev_minor_ = 0;
  std::mutex mu_;
  std::map<int, int> fds_;  // semid -> fd (GUARDED_BY(mu_))
  int maps_fd_ = -1;        // /proc/maps_pid_/maps (GUARDED_BY(mu_))
  pid_t maps_pid_ = 0;      // GUARDED_BY(mu_)
  std::string maps_;        // GUARDED_BY(mu_)
};

}  // namespace cshm::ipc
