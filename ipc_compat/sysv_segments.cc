#include "ipc_compat/sysv_segments.h"

#include "ipc_compat/sysv_common.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace cshm::ipc {
namespace {

constexpr size_t kShmMax = 1ull << 40;

size_t PageRound(size_t n) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return (n + page - 1) / page * page;
}

// The kernel's own segments: how many, and its highest index (SHM_INFO).
void KernelIndex(SysvSegments::RealShmctl real, int* used, int* max) {
  struct shm_info info {};
  const int r = real(0, SHM_INFO, reinterpret_cast<struct shmid_ds*>(&info));
  *used = r < 0 ? 0 : info.used_ids;
  *max = r < 0 ? -1 : r;
}

}  // namespace

std::string SysvSegments::IdPath(int shmid) const { return Dir() + "/id-" + std::to_string(shmid); }

std::string SysvSegments::KeyPath(key_t key) const {
  char name[32];
  snprintf(name, sizeof(name), "/key-%08x", static_cast<unsigned>(key));
  return Dir() + name;
}

bool SysvSegments::IsOurs(int shmid) const {
  if (!MayBeOurs(shmid)) return false;
  struct stat st;
  return stat(IdPath(shmid).c_str(), &st) == 0;
}

// The attachment directory's mode: the classes (owner, group, others) that
// may attach (read the segment) may register there, nobody else; sticky, so
// that none removes another's entry. (Seen before: 1777, so any user could
// add entries, inflate shm_nattch and keep a removed segment alive.)
static mode_t AttMode(mode_t segment) {
  mode_t m = 01000;
  if (segment & 0600) m |= 0700;
  if (segment & 0060) m |= 0070;
  if (segment & 0006) m |= 0007;
  return m;
}

int SysvSegments::Create(key_t key, size_t size, int flags) {
  char tmp[64];
  snprintf(tmp, sizeof(tmp), "/.new-%d-%ld", getpid(), static_cast<long>(random()));
  const std::string tmp_path = Dir() + tmp;
  int fd = OpenInSysvDir(Dir(), tmp_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  auto undo = [&](int err) {
    close(fd);
    unlink(tmp_path.c_str());
    return Fail(err == EFBIG ? EINVAL : err);
  };
  struct stat st;
  if (ftruncate(fd, static_cast<off_t>(size)) != 0 || StatWalked(fd, "", AT_EMPTY_PATH, &st) != 0) return undo(errno);
  const int shmid = kIdBit | static_cast<int>(st.st_ino & (kIdBit - 1));
  const std::string id_path = IdPath(shmid);
  // The bookkeeping first, while the file is still 0600: a mode without
  // owner read and write (0, 0400, ...) would refuse the xattrs. Through the
  // descriptor (a request each, no path walk); a segment whose bookkeeping
  // could not be stored (a full disk) is not made.
  if (SetU64At(fd, "user.cshm.key", static_cast<unsigned>(key)) != 0 || SetU64At(fd, "user.cshm.size", size) != 0 ||
      SetU64At(fd, "user.cshm.cpid", static_cast<unsigned long long>(getpid())) != 0 ||
      SetU64At(fd, "user.cshm.cuid", geteuid()) != 0 || SetU64At(fd, "user.cshm.cgid", getegid()) != 0 ||
      SetU64At(fd, "user.cshm.ctime", static_cast<unsigned long long>(time(nullptr))) != 0 ||
      fchmod(fd, flags & 0777) != 0)
    return undo(errno);
  close(fd);
  if (const int r = LinkIn(tmp_path, id_path, key != IPC_PRIVATE ? KeyPath(key) : ""); r != 0) return r;
  const std::string att = Dir() + "/att-" + std::to_string(shmid);
  mkdir(att.c_str(), 0700);
  chmod(att.c_str(), AttMode(flags & 0777));  // not filtered by the umask
  return shmid;
}

int SysvSegments::CheckNew(size_t size, int flags) {
  // The kernel's checks for a new segment, with its limits: shmmax per
  // segment, shmmni segments (counted over the whole mount: cluster-wide).
  if (size < 1 || size > std::min<unsigned long long>(kShmMax, KernelLimit("shmmax", kShmMax))) return Fail(EINVAL);
  if (flags & SHM_HUGETLB) {
    // Huge pages need privilege, and pages to give; cshm's pages are
    // ordinary ones whichever is asked.
    if (geteuid() != 0) return Fail(EPERM);
    if (KernelLimit("../vm/nr_hugepages", 0) == 0) return Fail(ENOMEM);
  }
  // Counting them lists .sysv; its link count (2, and one per segment's
  // att-<shmid> directory and per semaphore set's marker: an upper bound)
  // says cheaply whether the limit is near, and only
  // then are they counted (the margin covers directories a crash between a
  // segment's link and its mkdir left out). Seen before: filling shmmni
  // (LTP shmget03) was quadratic and outlasted the test.
  const unsigned long long mni = KernelLimit("shmmni", 4096);
  constexpr unsigned long long kMargin = 64;
  struct stat dir;
  const bool far = stat(Dir().c_str(), &dir) == 0 && dir.st_nlink >= 2 && dir.st_nlink - 2 + kMargin < mni;
  if (!far && ListIds(Dir(), "id-").size() >= mni) return Fail(ENOSPC);
  return 0;
}

int SysvSegments::Get(key_t key, size_t size, int flags) {
  if (key == IPC_PRIVATE) {
    if (CheckNew(size, flags) != 0) return -1;
    return Create(key, size, flags);
  }
  for (int attempt = 0; attempt < 3; attempt++) {
    struct stat st;
    if (StatWalked(AT_FDCWD, KeyPath(key).c_str(), 0, &st) == 0) {
      if ((flags & IPC_CREAT) && (flags & IPC_EXCL)) return Fail(EEXIST);
      const int shmid = kIdBit | static_cast<int>(st.st_ino & (kIdBit - 1));
      const std::string id = IdPath(shmid);
      if (!AllowedAt(st, id, flags & 0777)) return Fail(EACCES);
      // (Size 0, the usual lookup of an existing key, fits whatever it is.)
      if (size > 0 && size > GetU64(id, "user.cshm.size", static_cast<unsigned long long>(st.st_size)))
        return Fail(EINVAL);
      return shmid;
    }
    if (errno != ENOENT) return -1;
    if (!(flags & IPC_CREAT)) return Fail(ENOENT);
    if (CheckNew(size, flags) != 0) return -1;
    int r = Create(key, size, flags);
    if (r != -2) return r;
    // Lost a race with another creator: look again.
  }
  return Fail(EAGAIN);
}

int SysvSegments::Register(int shmid, Attachment* a) {
  char name[96];
  {
    std::lock_guard<std::mutex> lock(mu_);
    char host[40] = {};
    gethostname(host, sizeof(host) - 1);
    snprintf(name, sizeof(name), "%s.%d.%u", host, getpid(), seq_++);
  }
  // Locked under a hidden name first, then put in place: CountAttached takes
  // an entry it can lock for a dead process's and removes it, so an entry
  // must never be visible unlocked.
  // Relative to the directory, opened once: on a cluster mount each path
  // component is a lookup at the metadata node, every time.
  const std::string dir = Dir() + "/att-" + std::to_string(shmid);
  const std::string hidden = std::string(".") + name;
  a->reg_name = name;
  const int dfd = open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return -1;
  a->reg_fd = openat(dfd, hidden.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (a->reg_fd < 0) {
    const int err = errno;
    close(dfd);
    return Fail(err);
  }
  const bool locked = flock(a->reg_fd, LOCK_EX) == 0;
  if (locked && hooks_.entry_hidden) hooks_.entry_hidden();
  if (!locked || renameat(dfd, hidden.c_str(), dfd, name) != 0) {
    const int err = errno;
    close(a->reg_fd);
    unlinkat(dfd, hidden.c_str(), 0);
    close(dfd);
    return Fail(err);
  }
  a->dir_fd = dfd;  // kept for the detach's unlink
  return 0;
}

void SysvSegments::Unregister(const Attachment& a) {
  if (a.dir_fd >= 0) unlinkat(a.dir_fd, a.reg_name.c_str(), 0);
  if (a.reg_fd >= 0) close(a.reg_fd);
  if (a.dir_fd >= 0) close(a.dir_fd);
}

void* SysvSegments::Attach(int shmid, const void* addr, int flags, bool* theirs) {
  // The kernel's order: the address, the id, the permission. Opened first
  // and then asked (fstat, fsetxattr): on a cluster mount each path walk is
  // a lookup at the metadata node for every component.
  uintptr_t where = reinterpret_cast<uintptr_t>(addr);
  const uintptr_t lba = static_cast<uintptr_t>(SHMLBA);
  if (where != 0) {
    if (flags & SHM_RND) where &= ~(lba - 1);
    else if (where % lba != 0) return reinterpret_cast<void*>(Fail(EINVAL));
  } else if (flags & SHM_REMAP) {
    return reinterpret_cast<void*>(Fail(EINVAL));
  }
  const std::string id = IdPath(shmid);
  const bool ro = flags & SHM_RDONLY;
  const int fd = MayBeOurs(shmid) ? open(id.c_str(), (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC) : Fail(ENOENT);
  struct stat st;
  if (fd < 0 && errno != ENOENT && errno != ENOTDIR) return reinterpret_cast<void*>(-1);  // EACCES, ...
  if (fd < 0 || StatWalked(fd, "", AT_EMPTY_PATH, &st) != 0) {
    if (fd >= 0) close(fd);
    if (theirs != nullptr) *theirs = true;
    return reinterpret_cast<void*>(Fail(EINVAL));
  }
  if (!AllowedAt(st, id, ro ? 0444 : 0666)) {
    close(fd);
    return reinterpret_cast<void*>(Fail(EACCES));
  }
  const size_t len = PageRound(static_cast<size_t>(st.st_size));
  int prot = PROT_READ | (ro ? 0 : PROT_WRITE) | ((flags & SHM_EXEC) ? PROT_EXEC : 0);
  int mflags = MAP_SHARED;
  if (where != 0) mflags |= (flags & SHM_REMAP) ? MAP_FIXED : MAP_FIXED_NOREPLACE;
  void* p = mmap(reinterpret_cast<void*>(where), len, prot, mflags, fd, 0);
  int err = errno;
  if (p == MAP_FAILED) {
    close(fd);
    return reinterpret_cast<void*>(Fail(err == EEXIST ? EINVAL : err));
  }
  if (where != 0 && p != reinterpret_cast<void*>(where)) {  // old kernels ignore NOREPLACE
    close(fd);
    munmap(p, len);
    return reinterpret_cast<void*>(Fail(EINVAL));
  }
  Attachment a{shmid, len};
  if (Register(shmid, &a) != 0) {
    err = errno;
    close(fd);
    munmap(p, len);
    return reinterpret_cast<void*>(Fail(err));
  }
  SetEvent(fd, "user.cshm.at");  // shm_atime, shm_lpid
  a.id_fd = fd;  // for the detach's bookkeeping
  std::vector<Attachment> replaced;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // SHM_REMAP took over whatever of ours was mapped there: those are detached.
    const auto* lo = static_cast<const char*>(p);
    for (auto it = attachments_.begin(); it != attachments_.end();) {
      const auto* b = static_cast<const char*>(it->first);
      if (b < lo + len && lo < b + it->second.len) {
        replaced.push_back(it->second);
        it = attachments_.erase(it);
      } else {
        ++it;
      }
    }
    attachments_[p] = a;
  }
  for (const Attachment& old : replaced) {
    Unregister(old);
    MaybeDestroy(old.shmid, old.id_fd);
    close(old.id_fd);
  }
  return p;
}

bool SysvSegments::IsOurAttachment(const void* addr) {
  std::lock_guard<std::mutex> lock(mu_);
  return attachments_.count(addr) != 0;
}

int SysvSegments::Detach(const void* addr) {
  Attachment a;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = attachments_.find(addr);
    if (it == attachments_.end()) return Fail(EINVAL);
    a = it->second;
    attachments_.erase(it);
  }
  // shmdt is a release: msync waits until every other node's copy of what
  // this process wrote is gone (munmap alone writes back, but does not wait).
  msync(const_cast<void*>(addr), a.len, MS_SYNC);
  munmap(const_cast<void*>(addr), a.len);
  Unregister(a);
  SetEvent(a.id_fd, "user.cshm.dt");  // shm_dtime, shm_lpid
  MaybeDestroy(a.shmid, a.id_fd);
  close(a.id_fd);
  return 0;
}

int SysvSegments::CountAttached(int shmid) {
  const std::string dir = Dir() + "/att-" + std::to_string(shmid);
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return 0;
  int live = 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string path = dir + "/" + e->d_name;
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
      unlink(path.c_str());  // its process is gone
    } else {
      live++;
    }
    close(fd);
  }
  closedir(d);
  return live;
}

void SysvSegments::MaybeDestroy(int shmid, int id_fd) {
  const std::string id = IdPath(shmid);
  const std::string dir = Dir() + "/att-" + std::to_string(shmid);
  // One read says both whether the segment is still there and whether it
  // was removed (IPC_RMID).
  // (Through an open file a segment destroyed meanwhile still reads as
  // removed: what follows then finds its file and entries gone.)
  unsigned long long removed = 0;
  if (!ReadU64(id_fd, id, "user.cshm.removed", &removed) && errno == ENOENT) {
    // Destroyed meanwhile by another process, which may have found this
    // one's entry still there: the directory goes with the last entry.
    rmdir(dir.c_str());
    return;
  }
  // Not removed (or its bookkeeping unreadable: it stays), or still attached.
  if (removed == 0 || CountAttached(shmid) > 0) return;
  unlink(id.c_str());
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') unlink((dir + "/" + e->d_name).c_str());
    closedir(d);
  }
  rmdir(dir.c_str());
}

int SysvSegments::Control(int shmid, int cmd, struct shmid_ds* buf) {
  const std::string id = IdPath(shmid);
  struct stat st;
  if (stat(id.c_str(), &st) != 0) return Fail(EINVAL);
  std::optional<OwnerAccess> lend;
  if (cmd == IPC_RMID || cmd == SHM_LOCK || cmd == SHM_UNLOCK) lend.emplace(id, st);
  const uid_t cuid = static_cast<uid_t>(GetU64(id, "user.cshm.cuid", st.st_uid));
  const gid_t cgid = static_cast<gid_t>(GetU64(id, "user.cshm.cgid", st.st_gid));
  const bool removed = GetU64(id, "user.cshm.removed") != 0;
  switch (cmd) {
    case IPC_STAT:
    case SHM_STAT:
    case SHM_STAT_ANY: {
      if (buf == nullptr) return Fail(EFAULT);
      if (cmd != SHM_STAT_ANY && !Allowed(st, cuid, cgid, 0444)) return Fail(EACCES);
      std::memset(buf, 0, sizeof(*buf));
      buf->shm_perm.__key = static_cast<key_t>(removed ? IPC_PRIVATE : GetU64(id, "user.cshm.key"));
      buf->shm_perm.uid = st.st_uid;
      buf->shm_perm.gid = st.st_gid;
      buf->shm_perm.cuid = cuid;
      buf->shm_perm.cgid = cgid;
      buf->shm_perm.mode = static_cast<unsigned short>((st.st_mode & 0777) | (removed ? SHM_DEST : 0) |
                                                       (GetU64(id, "user.cshm.locked") != 0 ? SHM_LOCKED : 0));
      buf->shm_segsz = static_cast<size_t>(GetU64(id, "user.cshm.size", static_cast<unsigned long long>(st.st_size)));
      const IpcEvent at = GetEvent(id, "user.cshm.at"), dt = GetEvent(id, "user.cshm.dt");
      buf->shm_atime = static_cast<time_t>(at.ns / 1000000000ull);
      buf->shm_dtime = static_cast<time_t>(dt.ns / 1000000000ull);
      buf->shm_ctime = static_cast<time_t>(GetU64(id, "user.cshm.ctime"));
      buf->shm_cpid = static_cast<pid_t>(GetU64(id, "user.cshm.cpid"));
      buf->shm_lpid = static_cast<pid_t>(dt.ns > at.ns ? dt.pid : at.pid);  // the last attach or detach
      buf->shm_nattch = static_cast<shmatt_t>(CountAttached(shmid));
      return cmd == IPC_STAT ? 0 : shmid;
    }
    case IPC_SET: {
      if (buf == nullptr) return Fail(EFAULT);
      if (geteuid() != 0 && geteuid() != st.st_uid && geteuid() != cuid) return Fail(EPERM);
      if ((buf->shm_perm.uid != st.st_uid || buf->shm_perm.gid != st.st_gid) &&
          chown(id.c_str(), buf->shm_perm.uid, buf->shm_perm.gid) != 0)
        return -1;
      if (chmod(id.c_str(), buf->shm_perm.mode & 0777) != 0) return -1;
      {
        // Who may attach changed: so does who may register (best effort:
        // only the directory's creator or root may change it).
        const std::string att = Dir() + "/att-" + std::to_string(shmid);
        if (buf->shm_perm.uid != st.st_uid || buf->shm_perm.gid != st.st_gid)
          (void)!chown(att.c_str(), buf->shm_perm.uid, buf->shm_perm.gid);
        (void)!chmod(att.c_str(), AttMode(buf->shm_perm.mode & 0777));
      }
      SetU64(id, "user.cshm.ctime", static_cast<unsigned long long>(time(nullptr)));
      return 0;
    }
    case IPC_RMID: {
      if (geteuid() != 0 && geteuid() != st.st_uid && geteuid() != cuid) return Fail(EPERM);
      if (!removed) {
        // The key is free at once; the memory lives until the last detach.
        const key_t key = static_cast<key_t>(GetU64(id, "user.cshm.key"));
        struct stat kst;
        if (key != IPC_PRIVATE && stat(KeyPath(key).c_str(), &kst) == 0 && kst.st_ino == st.st_ino)
          unlink(KeyPath(key).c_str());
        SetU64(id, "user.cshm.removed", 1);
      }
      MaybeDestroy(shmid);
      return 0;
    }
    case SHM_LOCK:
    case SHM_UNLOCK:
      if (geteuid() != 0 && geteuid() != st.st_uid && geteuid() != cuid) return Fail(EPERM);
      // Kept for IPC_STAT (SHM_LOCKED); cshm's pages are its state dir's
      // files, which the kernel does not swap, so there is nothing to pin.
      if (setxattr(id.c_str(), "user.cshm.locked", cmd == SHM_LOCK ? "1" : "0", 1, 0) != 0) return -1;
      return 0;
    default:
      return Fail(EINVAL);
  }
}

int SysvSegments::Info(int cmd, struct shmid_ds* buf, RealShmctl real) {
  const int r = real(0, cmd, buf);
  if (r < 0) return r;
  const std::vector<int> ids = ListIds(Dir(), "id-");
  if (ids.empty()) return r;
  int used = 0, max = r;
  if (cmd == SHM_INFO) {
    // The kernel wrote it, so it is the caller's memory and writable.
    auto* info = reinterpret_cast<struct shm_info*>(buf);
    used = info->used_ids;
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    unsigned long pages = 0;
    for (int id : ids) {
      struct stat st;
      if (stat(IdPath(id).c_str(), &st) == 0) pages += (static_cast<size_t>(st.st_size) + page - 1) / page;
    }
    info->used_ids += static_cast<int>(ids.size());
    info->shm_tot += pages;
    info->shm_rss += pages;  // files of the state dirs: never swapped
  } else {
    KernelIndex(real, &used, &max);
  }
  return FirstClusterIndex(used, max) + static_cast<int>(ids.size()) - 1;
}

int SysvSegments::IndexStat(int index, int cmd, struct shmid_ds* buf, RealShmctl real) {
  int used = 0, max = -1;
  KernelIndex(real, &used, &max);
  const int first = FirstClusterIndex(used, max);
  if (index < first) return real(index, cmd, buf);
  const std::vector<int> ids = ListIds(Dir(), "id-");
  const size_t at = static_cast<size_t>(index - first);
  if (at >= ids.size()) return real(index, cmd, buf);  // the kernel's EINVAL
  return Control(ids[at], cmd, buf);
}

bool SysvSegments::Ftok(const char* path, int id, key_t* out) {
  char real[PATH_MAX];
  if (realpath(path, real) == nullptr) return false;
  const std::string r(real);
  if (r.compare(0, mount_.size(), mount_) != 0 || (r.size() > mount_.size() && r[mount_.size()] != '/'))
    return false;
  struct stat st;
  if (stat(real, &st) != 0) return false;
  // glibc's formula with the cluster-wide inode number and the metadata
  // node's bits in place of st_dev, which differs between nodes.
  *out = static_cast<key_t>((st.st_ino & 0xffff) | ((st.st_ino >> 48 & 0xff) << 16) |
                            ((static_cast<unsigned>(id) & 0xff) << 24));
  return true;
}

void SysvSegments::DetachAll() {
  std::vector<const void*> addrs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [addr, a] : attachments_) addrs.push_back(addr);
  }
  for (const void* addr : addrs) Detach(addr);
}

void SysvSegments::AfterFork() {
  // The child inherited the mappings, and the registry fds that share the
  // parent's flocks. Give it entries of its own, so nattch counts it.
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [addr, a] : attachments_) {
    close(a.reg_fd);
    char name[96];
    char host[40] = {};
    gethostname(host, sizeof(host) - 1);
    snprintf(name, sizeof(name), "%s.%d.%u", host, getpid(), seq_++);
    a.reg_name = name;
    // (The directory's fd is the parent's too; the child's own from here.)
    const std::string dir = Dir() + "/att-" + std::to_string(a.shmid);
    a.dir_fd = open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    a.reg_fd = a.dir_fd >= 0 ? openat(a.dir_fd, name, O_RDWR | O_CREAT | O_CLOEXEC, 0666) : -1;
    if (a.reg_fd >= 0) flock(a.reg_fd, LOCK_EX);
  }
}

}  // namespace cshm::ipc
