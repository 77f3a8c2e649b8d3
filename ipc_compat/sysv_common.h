// What the SysV shared memory and semaphore emulations share: errno helpers,
// the user.cshm.* bookkeeping xattrs, Linux's permission rule for IPC
// objects, and the kernel's limits.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <string>
#include <vector>

namespace cshm::ipc {

// Sets errno, returns -1 (as the libc call would).
int Fail(int err);

// stat(2) of `path` (relative to `dirfd`; with AT_EMPTY_PATH in `flags`, of
// `dirfd` itself) with the attributes the path walk or the open just
// brought, without asking for them again: on a cluster mount the kernel
// caches no entry, so each walk asked the metadata node, which answered
// with them (statx's AT_STATX_DONT_SYNC). 0, or -1 with errno.
int StatWalked(int dirfd, const char* path, int flags, struct stat* st);

void SetU64(const std::string& path, const char* name, unsigned long long v);
// The same through an open descriptor (one request, no path walk): 0, or -1
// with errno (ENOSPC: a full disk), for a caller that must not go on without it.
int SetU64At(int fd, const char* name, unsigned long long v);
unsigned long long GetU64(const std::string& path, const char* name, unsigned long long dflt = 0);
// The same through `fd` if it is open (>= 0), else by `path`; false with
// errno if the xattr (or the file) is not there, or empty.
bool ReadU64(int fd, const std::string& path, const char* name, unsigned long long* v);
// An attach or a detach (user.cshm.at, user.cshm.dt): when (ns since the
// epoch) and by which pid, in one xattr, so that each costs one write.
void SetEvent(int fd, const char* name);
struct IpcEvent {
  unsigned long long ns = 0;
  unsigned long long pid = 0;
};
IpcEvent GetEvent(const std::string& path, const char* name);

// Linux's ipcperms(): may the caller have `requested` (rwx bits, any class)
// on an object with this file's mode and owner, and this creator?
bool Allowed(const struct stat& st, uid_t cuid, gid_t cgid, int requested);
// The same for the object at `path`, reading its creator's ids
// (user.cshm.cuid, .cgid) only where they decide: not for root nor the
// owner, the group not unless the caller is neither creator nor in the
// owner's group. Each read is a metadata round trip on a cluster mount.
bool AllowedAt(const struct stat& st, const std::string& path, int requested);
// The caller owns or created the object, or is root (IPC_SET, IPC_RMID).
bool OwnerOrCreator(const struct stat& st, uid_t cuid);

// A limit of this node's kernel (/proc/sys/kernel/NAME, per IPC namespace),
// or `dflt`. `field` picks a number of a line that has several (kernel/sem).
unsigned long long KernelLimit(const char* name, unsigned long long dflt, int field = 0);

// An object's bookkeeping (its user.cshm.* xattrs) needs read and write
// permission on its file, which the object's mode may deny its owner; Linux
// lets the owner remove or lock an object whatever its mode. So for those
// calls the owner lends itself u+rw on the file and gives it back after.
// (A creator that is no longer the owner, after IPC_SET, cannot: it gets
// what the mode allows.)
class OwnerAccess {
 public:
  OwnerAccess(const std::string& path, const struct stat& st);
  ~OwnerAccess();
  // The call set the mode itself (IPC_SET): nothing to give back.
  void Keep() { lent_ = false; }
  OwnerAccess(const OwnerAccess&) = delete;
  OwnerAccess& operator=(const OwnerAccess&) = delete;

 private:
  const std::string path_;
  const mode_t mode_;
  bool lent_ = false;
};

// Copies between the caller's memory and ours as the kernel does for a
// system call: a bad address is EFAULT (false), not a crash in the library.
// (process_vm_readv/writev on ourselves; where a sandbox forbids them, a
// plain copy, as glibc's own wrappers would crash.)
bool CopyFromCaller(void* dst, const void* src, size_t n);
bool CopyToCaller(void* dst, const void* src, size_t n);

// Puts an object made whole under the hidden name `tmp` in place: linked as
// `id_path`, then as `key_path` (none for IPC_PRIVATE: ""), then `tmp` goes.
// 0; -2 if the key was taken meanwhile (nothing is left); -1 with errno.
int LinkIn(const std::string& tmp, const std::string& id_path, const std::string& key_path);
// The ids of the entries of `dir` named `prefix` and a number, ascending:
// the order in which SHM_STAT and SEM_STAT index the mount's objects; their
// count is what the kernel's *mni limits are checked against (over the
// mount: cluster-wide).
std::vector<int> ListIds(const std::string& dir, const char* prefix);
// Where the mount's objects start in the kernel's index space (SHM_STAT,
// SEM_STAT): after the kernel's highest used index, or at 0 if the kernel
// has none of its own (`kernel_used`).
inline int FirstClusterIndex(int kernel_used, int kernel_max) { return kernel_used > 0 ? kernel_max + 1 : 0; }

// MOUNT/.sysv, mode 1777 (like /dev/shm), made on first use: once per
// process (each look is a metadata round trip on a cluster mount), again
// after ForgetSysvDir (a creation in it found it gone).
int EnsureSysvDir(const std::string& dir);
void ForgetSysvDir(const std::string& dir);
// Opens `path` (in a directory EnsureSysvDir made) with `flags` and `mode`,
// making the directory again if it is gone.
int OpenInSysvDir(const std::string& dir, const std::string& path, int flags, mode_t mode);

}  // namespace cshm::ipc
