// SysV shared memory on files of a cshm mount (DESIGN.md ipc_compat/).
//
// Layout under MOUNT/.sysv/ (created 1777 on first use, like /dev/shm):
//   id-<shmid>        the segment: a regular file whose mode, uid and gid are
//                     the segment's permissions; xattrs user.cshm.* hold the
//                     key, creator, pids, times, requested size, "removed"
//   key-<8 hex>       a hard link to the segment of that key (IPC_RMID
//                     removes it: the key is free at once)
//   att-<shmid>/      one file per attachment, flock()ed by the attaching
//                     process for as long as it is attached; an entry whose
//                     flock can be taken belongs to a process that is gone
//                     (exit, exec, crash, or its node died), so nattch counts
//                     attachments on every node without trusting anyone to
//                     clean up
//
// A shmid is the low 30 bits of the segment's inode number with bit 30 set:
// inode numbers are the same on every node (one metadata node allocates them),
// so a shmid passed to another node names the same segment there, and bit 30
// keeps it apart from the kernel's own (small) shmids in the same process.
//
// Every function returns -1 and sets errno like its libc namesake.
#pragma once

#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/types.h>

#include <functional>
#include <map>
#include <mutex>
#include <string>

namespace cshm::ipc {

class SysvSegments {
 public:
  // Points between two steps of the protocol where a test runs another
  // process's steps, to replay an interleaving of processes that share the
  // files (empty in the shim).
  struct Hooks {
    // Register: the new entry is locked under its hidden name, not yet shown.
    std::function<void()> entry_hidden;
  };
  explicit SysvSegments(std::string mount, Hooks hooks = {}) : mount_(std::move(mount)), hooks_(std::move(hooks)) {}

  int Get(key_t key, size_t size, int flags);
  // With `theirs`, an id that is not this mount's (none of ours has it)
  // sets *theirs and fails at once, for the caller to ask the kernel: one
  // look at the id instead of IsOurs's and Attach's.
  void* Attach(int shmid, const void* addr, int flags, bool* theirs = nullptr);
  int Detach(const void* addr);
  int Control(int shmid, int cmd, struct shmid_ds* buf);
  // The kernel's shmctl (the shim's, found with dlsym).
  using RealShmctl = int (*)(int, int, struct shmid_ds*);
  // IPC_INFO and SHM_INFO: the kernel's answer with this mount's segments
  // counted in (SHM_INFO's used_ids, shm_tot and shm_rss; the highest index
  // both return counts them after the kernel's own, as IndexStat does).
  int Info(int cmd, struct shmid_ds* buf, RealShmctl real);
  // SHM_STAT and SHM_STAT_ANY of the kernel's index `index`: the kernel's
  // segment up to its highest index, then this mount's segments by shmid.
  int IndexStat(int index, int cmd, struct shmid_ds* buf, RealShmctl real);
  // The key of `path` if it lies inside the mount, from cluster-stable ids.
  bool Ftok(const char* path, int id, key_t* out);

  bool IsOurs(int shmid) const;
  // Whether `shmid` could be one of ours (its bit says so; IsOurs makes sure).
  static constexpr int kIdBit = 1 << 30;  // set in every shmid of ours
  static bool MayBeOurs(int shmid) { return shmid >= 0 && (shmid & kIdBit) != 0; }
  bool IsOurAttachment(const void* addr);
  // pthread_atfork child handler: the child's own registry entries.
  void AfterFork();
  // At exit: detach everything, so a removed segment goes with its last user
  // as on Linux (a crash leaves the files; the next IPC_STAT/IPC_RMID of the
  // segment, on any node, finds the attachment stale and cleans up).
  void DetachAll();

 private:
  struct Attachment {
    int shmid;
    size_t len;
    int id_fd = -1;        // the segment's file, open while attached (its bookkeeping without a path walk)
    int reg_fd = -1;       // the registry entry, flocked while attached
    int dir_fd = -1;       // its directory (O_PATH): entries go without a path walk
    std::string reg_name;  // the entry's name in it
  };
  // Takes the entry out of the registry (and closes its fds).
  static void Unregister(const Attachment& a);
  std::string Dir() const { return mount_ + "/.sysv"; }
  std::string IdPath(int shmid) const;
  std::string KeyPath(key_t key) const;
  int Create(key_t key, size_t size, int flags);
  // -1 (errno set) if the kernel would refuse a new segment of `size` with `flags`.
  int CheckNew(size_t size, int flags);
  int Register(int shmid, Attachment* a);
  int CountAttached(int shmid);
  // With `id_fd` (the segment's file, open), its bookkeeping is read
  // through it rather than by path.
  void MaybeDestroy(int shmid, int id_fd = -1);

  const std::string mount_;
  const Hooks hooks_;
  std::mutex mu_;
  std::map<const void*, Attachment> attachments_;  // GUARDED_BY(mu_)
  unsigned seq_ = 0;                               // GUARDED_BY(mu_)
};

}  // namespace cshm::ipc
