#include "ipc_compat/sysv_semaphores.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <vector>

#include "ipc_compat/sysv_common.h"

namespace cshm::ipc {
namespace {

constexpr int kIdBit = 1 << 30;

int IdOf(const struct stat& st) { return kIdBit | static_cast<int>(st.st_ino & (kIdBit - 1)); }

}  // namespace

SysvSemaphores::SysvSemaphores(std::string mount) : mount_(std::move(mount)) {
  struct stat st;
  if (stat(mount_.c_str(), &st) == 0) {
    mount_dev_major_ = major(st.st_dev);
    mount_dev_minor_ = minor(st.st_dev);
  }
}

std::string SysvSemaphores::IdPath(int semid) const { return Dir() + "/sem-" + std::to_string(semid); }

std::string SysvSemaphores::MarkPath(int semid) const { return Dir() + "/semn-" + std::to_string(semid); }

size_t SysvSemaphores::CountSets() {
  const std::vector<int> ids = ListIds(Dir(), "sem-");
  for (int m : ListIds(Dir(), "semn-"))
    if (!std::binary_search(ids.begin(), ids.end(), m)) rmdir(MarkPath(m).c_str());
  return ids.size();
}

std::string SysvSemaphores::KeyPath(key_t key) const {
  char name[32];
  snprintf(name, sizeof(name), "/semkey-%08x", static_cast<unsigned>(key));
  return Dir() + name;
}

bool SysvSemaphores::IsOurs(int semid) const {
  if (semid < 0 || !(semid & kIdBit)) return false;
  {
    std::lock_guard<std::mutex> lock(const_cast<std::mutex&>(mu_));
    if (fds_.contains(semid)) return true;
  }
  struct stat st;
  return stat(IdPath(semid).c_str(), &st) == 0;
}

int SysvSemaphores::Fd(int semid) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = fds_.find(semid);
    if (it != fds_.end()) return it->second;
  }
  // Write access is the kernel's "alter" permission; the daemon refuses an
  // operation that changes a value through a read-only descriptor.
  const std::string path = IdPath(semid);
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0 && errno == EACCES) fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Fail(errno == ENOENT ? EINVAL : errno);
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, fresh] = fds_.emplace(semid, fd);
  if (!fresh) close(fd);  // another thread was first
  return it->second;
}

void SysvSemaphores::Drop(int semid) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = fds_.find(semid);
  if (it == fds_.end()) return;
  close(it->second);
  fds_.erase(it);
}

int SysvSemaphores::Call(int fd, fs::SemIoctl* req, void* extra, size_t extra_bytes) {
  const size_t total = sizeof(fs::SemIoctl) + extra_bytes;
  if (total > fs::kSemIoctlMax) return Fail(E2BIG);
  std::vector<char> buf(total);
  req->pid = getpid();
  req->err = 0;
  std::memcpy(buf.data(), req, sizeof(*req));
  if (!CopyFromCaller(buf.data() + sizeof(*req), extra, extra_bytes)) return Fail(EFAULT);
  if (ioctl(fd, fs::SemIoctlCommand(total), buf.data()) != 0) return errno == ENOTTY ? Fail(EINVAL) : -1;
  std::memcpy(req, buf.data(), sizeof(*req));
  if (req->err == 0 && !CopyToCaller(extra, buf.data() + sizeof(*req), extra_bytes)) return Fail(EFAULT);
  if (req->err != 0) return Fail(req->err);
  return 0;
}

int SysvSemaphores::Stat(int fd, fs::SemIoctl* out) {
  *out = fs::SemIoctl{};
  out->op = fs::kSemCtl;
  out->cmd = IPC_STAT;
  return Call(fd, out, nullptr, 0);
}

void SysvSemaphores::Release() {
  // /proc/PID/maps, opened once per process (a forked child reopens its
  // own) and read again from the start each time.
  std::vector<std::pair<uintptr_t, size_t>> ranges;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const pid_t pid = getpid();
    if (maps_pid_ != pid) {
      if (maps_fd_ >= 0) close(maps_fd_);
      maps_fd_ = open(("/proc/" + std::to_string(pid) + "/maps").c_str(), O_RDONLY | O_CLOEXEC);
      maps_pid_ = pid;
    }
    if (maps_fd_ < 0) return;
    maps_.clear();
    char chunk[16384];
    for (off_t off = 0;;) {
      const ssize_t n = pread(maps_fd_, chunk, sizeof(chunk), off);
      if (n <= 0) break;
      maps_.append(chunk, static_cast<size_t>(n));
      off += n;
    }
    for (size_t pos = 0; pos < maps_.size();) {
      size_t end = maps_.find('\n', pos);
      if (end == std::string::npos) end = maps_.size();
      unsigned long lo = 0, hi = 0, maj = 0, min = 0;
      char perms[8] = {};
      const std::string line = maps_.substr(pos, end - pos);
      pos = end + 1;
      if (sscanf(line.c_str(), "%lx-%lx %7s %*x %lx:%lx", &lo, &hi, perms, &maj, &min) != 5) continue;
      if (maj != mount_dev_major_ || min != mount_dev_minor_ || perms[1] != 'w' || perms[3] != 's') continue;
      ranges.emplace_back(lo, hi - lo);
    }
  }
  for (auto [addr, len] : ranges) msync(reinterpret_cast<void*>(addr), len, MS_SYNC);
}

int SysvSemaphores::Create(key_t key, int nsems, int flags) {
  char tmp[64];
  snprintf(tmp, sizeof(tmp), "/.newsem-%d-%ld", getpid(), static_cast<long>(random()));
  const std::string tmp_path = Dir() + tmp;
  int fd = OpenInSysvDir(Dir(), tmp_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  auto undo = [&](int err) {
    close(fd);
    unlink(tmp_path.c_str());
    return Fail(err);
  };
  struct stat st;
  if (StatWalked(fd, "", AT_EMPTY_PATH, &st) != 0) return undo(errno);
  const int semid = IdOf(st);
  // The set exists (at this node's daemon) before any name leads to it.
  fs::SemIoctl req{};
  req.op = fs::kSemCreate;
  req.count = static_cast<uint32_t>(nsems);
  if (Call(fd, &req, nullptr, 0) != 0) return undo(errno);
  // Through the descriptor (a request each); not made without its bookkeeping.
  if (SetU64At(fd, "user.cshm.key", static_cast<unsigned>(key)) != 0 ||
      SetU64At(fd, "user.cshm.nsems", static_cast<unsigned long long>(nsems)) != 0 ||
      SetU64At(fd, "user.cshm.cuid", geteuid()) != 0 || SetU64At(fd, "user.cshm.cgid", getegid()) != 0 ||
      fchmod(fd, flags & 0777) != 0)
    return undo(errno);
  close(fd);
  fd = -1;
  if (const int r = LinkIn(tmp_path, IdPath(semid), key != IPC_PRIVATE ? KeyPath(key) : ""); r != 0) return r;
  mkdir(MarkPath(semid).c_str(), 0555);  // best effort: a missing one is within CheckNew's margin
  return semid;
}

int SysvSemaphores::Get(key_t key, int nsems, int flags) {
  const unsigned long long msl = std::min<unsigned long long>(KernelLimit("sem", 32000, 0), fs::kMaxSemsPerSet);
  auto check_new = [&]() -> int {
    if (nsems <= 0 || static_cast<unsigned long long>(nsems) > msl) return Fail(EINVAL);
    // Counting the sets lists .sysv; its link count (2, one per set's
    // marker and per segment's att- directory) says cheaply whether the
    // limit is near, and only then are they counted (the margin covers
    // markers a crash left unmade). Seen before: filling semmni (LTP
    // semget05, 32,000 sets) listed .sysv at every creation and outlasted
    // the test.
    const unsigned long long mni = KernelLimit("sem", 32000, 3);
    constexpr unsigned long long kMargin = 64;
    struct stat dir;
    const bool far = stat(Dir().c_str(), &dir) == 0 && dir.st_nlink >= 2 && dir.st_nlink - 2 + kMargin < mni;
    if (!far && CountSets() >= mni) return Fail(ENOSPC);
    // semmns, the semaphores of all sets: counted (each set's size read)
    // only when it can bind, below semmni sets of semmsl each; by default it
    // cannot (32,000 x 32,000).
    const unsigned long long mns = KernelLimit("sem", 1024000000ull, 1);
    if (mns < KernelLimit("sem", 32000, 0) * mni) {
      unsigned long long used = 0;
      for (int id : ListIds(Dir(), "sem-")) used += GetU64(IdPath(id), "user.cshm.nsems", 0);
      if (used + static_cast<unsigned long long>(nsems) > mns) return Fail(ENOSPC);
    }
    return 0;
  };
  if (nsems < 0) return Fail(EINVAL);
  if (key == IPC_PRIVATE) {
    if (check_new() != 0) return -1;
    return Create(key, nsems, flags);
  }
  for (int attempt = 0; attempt < 3; attempt++) {
    struct stat st;
    if (StatWalked(AT_FDCWD, KeyPath(key).c_str(), 0, &st) == 0) {
      if ((flags & IPC_CREAT) && (flags & IPC_EXCL)) return Fail(EEXIST);
      const int semid = IdOf(st);
      const std::string id = IdPath(semid);
      if (!AllowedAt(st, id, flags & 0777)) return Fail(EACCES);
      if (nsems > 0 && static_cast<unsigned long long>(nsems) > GetU64(id, "user.cshm.nsems", 0)) return Fail(EINVAL);
      return semid;
    }
    if (errno != ENOENT) return -1;
    if (!(flags & IPC_CREAT)) return Fail(ENOENT);
    if (check_new() != 0) return -1;
    int r = Create(key, nsems, flags);
    if (r != -2) return r;
  }
  return Fail(EAGAIN);
}

int SysvSemaphores::Op(int semid, struct sembuf* sops, size_t nsops, const struct timespec* timeout) {
  if (nsops < 1) return Fail(EINVAL);
  // SEMOPM, read once per process (it is checked on every call).
  static const unsigned long long opm = std::min<unsigned long long>(KernelLimit("sem", 500, 2), fs::kMaxSemOps);
  if (nsops > opm) return Fail(E2BIG);
  // The caller's memory is read as the kernel reads it: EFAULT, not a crash.
  std::vector<struct sembuf> ops(nsops);
  if (!CopyFromCaller(ops.data(), sops, nsops * sizeof(struct sembuf))) return Fail(EFAULT);
  struct timespec to {};
  if (timeout && !CopyFromCaller(&to, timeout, sizeof(to))) return Fail(EFAULT);
  if (timeout && (to.tv_sec < 0 || to.tv_nsec < 0 || to.tv_nsec >= 1000000000L)) return Fail(EINVAL);
  const int fd = Fd(semid);
  if (fd < 0) return -1;
  bool alters = false;
  for (const struct sembuf& b : ops) alters |= b.sem_op != 0;
  if (alters) Release();
  fs::SemIoctl req{};
  req.op = fs::kSemOp;
  req.count = static_cast<uint32_t>(nsops);
  req.timeout_ns = timeout ? to.tv_sec * 1000000000LL + to.tv_nsec : -1;
  return Call(fd, &req, ops.data(), nsops * sizeof(struct sembuf));
}

namespace {

// The kernel's own sets: how many, and its highest index (SEM_INFO).
void KernelIndex(SysvSemaphores::RealSemctl real, int* used, int* max) {
  struct seminfo info {};
  SemArg a;
  a.info = &info;
  const int r = real(0, 0, SEM_INFO, a);
  *used = r < 0 ? 0 : info.semusz;
  *max = r < 0 ? -1 : r;
}

}  // namespace

int SysvSemaphores::Info(int cmd, SemArg arg, RealSemctl real) {
  const int r = real(0, 0, cmd, arg);
  if (r < 0) return r;
  const std::vector<int> ids = ListIds(Dir(), "sem-");
  if (ids.empty()) return r;
  int used = 0, max = r;
  if (cmd == SEM_INFO) {
    // The kernel wrote it, so it is the caller's memory and writable.
    used = arg.info->semusz;
    int sems = 0;
    for (int id : ids) sems += static_cast<int>(GetU64(IdPath(id), "user.cshm.nsems", 0));
    arg.info->semusz += static_cast<int>(ids.size());
    arg.info->semaem += sems;
  } else {
    KernelIndex(real, &used, &max);
  }
  return FirstClusterIndex(used, max) + static_cast<int>(ids.size()) - 1;
}

int SysvSemaphores::IndexStat(int index, int cmd, SemArg arg, RealSemctl real) {
  int used = 0, max = -1;
  KernelIndex(real, &used, &max);
  const int first = FirstClusterIndex(used, max);
  if (index < first) return real(index, 0, cmd, arg);
  const std::vector<int> ids = ListIds(Dir(), "sem-");
  const size_t at = static_cast<size_t>(index - first);
  if (at >= ids.size()) return real(index, 0, cmd, arg);  // the kernel's EINVAL
  return Control(ids[at], 0, cmd, arg);
}

int SysvSemaphores::Control(int semid, int semnum, int cmd, SemArg arg) {
  const std::string id = IdPath(semid);
  // Linux lets the owner remove a set or change its permissions whatever its
  // mode: when the mode refuses the owner its file, it lends itself u+rw
  // for the call, on a descriptor of the call's own (never cached).
  std::optional<OwnerAccess> lend;
  int own_fd = -1;
  int fd = Fd(semid);
  if (fd < 0 && errno == EACCES && (cmd == IPC_RMID || cmd == IPC_SET)) {
    struct stat st;
    if (stat(id.c_str(), &st) != 0) return Fail(errno == ENOENT ? EINVAL : errno);
    lend.emplace(id, st);
    fd = own_fd = open(id.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Fail(EPERM);
  }
  if (fd < 0) return -1;
  struct CloseOwn {
    int fd;
    ~CloseOwn() {
      if (fd >= 0) close(fd);
    }
  } close_own{own_fd};
  fs::SemIoctl req{};
  req.op = fs::kSemCtl;
  req.cmd = cmd;
  req.num = static_cast<uint32_t>(semnum);
  switch (cmd) {
    case GETVAL:
    case GETPID:
    case GETNCNT:
    case GETZCNT:
      if (semnum < 0) return Fail(EINVAL);
      if (Call(fd, &req, nullptr, 0) != 0) return -1;
      return req.result;
    case GETALL: {
      fs::SemIoctl st;
      if (Stat(fd, &st) != 0) return -1;
      if (arg.array == nullptr) return Fail(EFAULT);
      req.count = st.nsems;
      return Call(fd, &req, arg.array, st.nsems * sizeof(unsigned short));
    }
    case SETVAL:
      if (semnum < 0) return Fail(EINVAL);
      Release();
      req.value = arg.val;
      return Call(fd, &req, nullptr, 0);
    case SETALL: {
      fs::SemIoctl st;
      if (Stat(fd, &st) != 0) return -1;
      if (arg.array == nullptr) return Fail(EFAULT);
      Release();
      req.count = st.nsems;
      return Call(fd, &req, arg.array, st.nsems * sizeof(unsigned short));
    }
    case IPC_STAT:
    case SEM_STAT:
    case SEM_STAT_ANY: {
      if (arg.buf == nullptr) return Fail(EFAULT);
      struct stat st;
      if (fstat(fd, &st) != 0) return -1;
      const uid_t cuid = static_cast<uid_t>(GetU64(id, "user.cshm.cuid", st.st_uid));
      const gid_t cgid = static_cast<gid_t>(GetU64(id, "user.cshm.cgid", st.st_gid));
      if (cmd != SEM_STAT_ANY && !Allowed(st, cuid, cgid, 0444)) return Fail(EACCES);
      fs::SemIoctl s;
      if (Stat(fd, &s) != 0) return -1;
      struct semid_ds out;
      std::memset(&out, 0, sizeof(out));
      out.sem_perm.__key = static_cast<key_t>(GetU64(id, "user.cshm.key"));
      out.sem_perm.uid = st.st_uid;
      out.sem_perm.gid = st.st_gid;
      out.sem_perm.cuid = cuid;
      out.sem_perm.cgid = cgid;
      out.sem_perm.mode = static_cast<unsigned short>(st.st_mode & 0777);
      out.sem_nsems = s.nsems;
      out.sem_otime = static_cast<time_t>(s.otime);
      out.sem_ctime = static_cast<time_t>(s.ctime);
      if (!CopyToCaller(arg.buf, &out, sizeof(out))) return Fail(EFAULT);
      return cmd == IPC_STAT ? 0 : semid;
    }
    case IPC_SET: {
      struct semid_ds in;
      if (arg.buf == nullptr || !CopyFromCaller(&in, arg.buf, sizeof(in))) return Fail(EFAULT);
      struct stat st;
      if (fstat(fd, &st) != 0) return -1;
      if (!OwnerOrCreator(st, static_cast<uid_t>(GetU64(id, "user.cshm.cuid", st.st_uid)))) return Fail(EPERM);
      if ((in.sem_perm.uid != st.st_uid || in.sem_perm.gid != st.st_gid) &&
          fchown(fd, in.sem_perm.uid, in.sem_perm.gid) != 0)
        return -1;
      if (fchmod(fd, in.sem_perm.mode & 0777) != 0) return -1;
      if (lend) lend->Keep();
      return Call(fd, &req, nullptr, 0);
    }
    case IPC_RMID: {
      struct stat st;
      if (fstat(fd, &st) != 0) return -1;
      if (!lend) lend.emplace(id, st);
      if (!OwnerOrCreator(st, static_cast<uid_t>(GetU64(id, "user.cshm.cuid", st.st_uid)))) return Fail(EPERM);
      const key_t key = static_cast<key_t>(GetU64(id, "user.cshm.key"));
      Release();
      if (Call(fd, &req, nullptr, 0) != 0) return -1;
      struct stat kst;
      if (key != IPC_PRIVATE && stat(KeyPath(key).c_str(), &kst) == 0 && kst.st_ino == st.st_ino)
        unlink(KeyPath(key).c_str());
      unlink(id.c_str());
      rmdir(MarkPath(semid).c_str());
      lend.reset();
      Drop(semid);
      return 0;
    }
    default:
      return Fail(EINVAL);
  }
}

}  // namespace cshm::ipc
