#include "ipc_compat/posix_semaphores.h"

#include <sys/ipc.h>
#include <sys/sem.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>

#include "ipc_compat/sysv_common.h"

namespace cshm::ipc {
namespace {

sem_t* FailSem(int err) {
  errno = err;
  return SEM_FAILED;
}

int64_t Nanos(const struct timespec& t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

// The process's umask, which filters sem_open's mode as it does open's.
mode_t CurrentUmask() {
  const mode_t u = umask(0);
  umask(u);
  return u;
}

}  // namespace

std::string PosixSemaphores::PathOf(const char* name) const {
  while (*name == '/') name++;
  // One component, as glibc's sem_open requires (and the "sem." it prefixes).
  if (*name == '\0' || std::strchr(name, '/') != nullptr || std::strlen(name) > NAME_MAX - 4) return "";
  return mount_ + "/.posix/sem." + name;
}

sem_t* PosixSemaphores::Open(const char* name, int oflag, mode_t mode, unsigned value) {
  if (name == nullptr) return FailSem(EINVAL);
  const std::string path = PathOf(name);
  if (path.empty()) return FailSem(EINVAL);
  if ((oflag & O_CREAT) && value > static_cast<unsigned>(fs::kSemValueMax)) return FailSem(EINVAL);
  const std::string dir = mount_ + "/.posix";
  if (mkdir(dir.c_str(), 01777) == 0) chmod(dir.c_str(), 01777);
  int fd = -1;
  for (int attempt = 0; attempt < 4 && fd < 0; attempt++) {
    fd = open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == EACCES) fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
      if ((oflag & O_CREAT) && (oflag & O_EXCL)) {
        close(fd);
        return FailSem(EEXIST);
      }
      break;
    }
    if (errno != ENOENT) return SEM_FAILED;
    if (!(oflag & O_CREAT)) return FailSem(ENOENT);
    // Made whole under a hidden name, then linked in: nobody opens a name
    // whose set does not exist yet (glibc does the same in /dev/shm).
    char tmp[64];
    snprintf(tmp, sizeof(tmp), "/.newsem-%d-%ld", getpid(), static_cast<long>(random()));
    const std::string tmp_path = dir + tmp;
    fd = open(tmp_path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return SEM_FAILED;
    fs::SemIoctl req{};
    req.op = fs::kSemCreate;
    req.count = 1;
    fs::SemIoctl set{};
    set.op = fs::kSemCtl;
    set.cmd = SETVAL;
    set.value = static_cast<int32_t>(value);
    int err = 0;
    if (SysvSemaphores::Call(fd, &req, nullptr, 0) != 0 || SysvSemaphores::Call(fd, &set, nullptr, 0) != 0 ||
        fchmod(fd, mode & 0777 & ~CurrentUmask()) != 0)
      err = errno;
    if (err == 0 && link(tmp_path.c_str(), path.c_str()) != 0) err = errno;
    unlink(tmp_path.c_str());
    if (err == 0) break;
    close(fd);
    fd = -1;
    if (err != EEXIST) return FailSem(err);
    if (oflag & O_EXCL) return FailSem(EEXIST);
    // Somebody created it first: open theirs.
  }
  if (fd < 0) return FailSem(EAGAIN);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    return FailSem(err);
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_file_.find({st.st_dev, st.st_ino});
  if (it != by_file_.end()) {  // the same sem_t as the first open, as glibc
    close(fd);
    it->second->refs++;
    return reinterpret_cast<sem_t*>(it->second);
  }
  auto* h = new Handle{{}, fd, st.st_dev, st.st_ino, 1};
  by_file_[{st.st_dev, st.st_ino}] = h;
  handles_.insert(reinterpret_cast<sem_t*>(h));
  return reinterpret_cast<sem_t*>(h);
}

bool PosixSemaphores::IsOurs(sem_t* s) {
  std::lock_guard<std::mutex> lock(mu_);
  return handles_.contains(s);
}

int PosixSemaphores::FdOf(sem_t* s) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!handles_.contains(s)) return Fail(EINVAL);
  return reinterpret_cast<Handle*>(s)->fd;
}

int PosixSemaphores::Close(sem_t* s) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!handles_.contains(s)) return Fail(EINVAL);
  auto* h = reinterpret_cast<Handle*>(s);
  if (--h->refs > 0) return 0;
  close(h->fd);
  by_file_.erase({h->dev, h->ino});
  handles_.erase(s);
  delete h;
  return 0;
}

int PosixSemaphores::Unlink(const char* name) {
  if (name == nullptr) return Fail(EINVAL);
  const std::string path = PathOf(name);
  if (path.empty()) return Fail(ENOENT);
  // The name goes; the semaphore lives while it is open anywhere.
  return unlink(path.c_str());
}

int PosixSemaphores::Post(sem_t* s) {
  const int fd = FdOf(s);
  if (fd < 0) return -1;
  sysv_->Release();
  struct sembuf up = {0, 1, 0};
  fs::SemIoctl req{};
  req.op = fs::kSemOp;
  req.count = 1;
  req.timeout_ns = -1;
  if (SysvSemaphores::Call(fd, &req, &up, sizeof(up)) == 0) return 0;
  return Fail(errno == ERANGE ? EOVERFLOW : errno);
}

int PosixSemaphores::Wait(sem_t* s, bool try_only, clockid_t clock, const struct timespec* abs) {
  const int fd = FdOf(s);
  if (fd < 0) return -1;
  struct sembuf down = {0, -1, static_cast<short>(try_only ? IPC_NOWAIT : 0)};
  fs::SemIoctl req{};
  req.op = fs::kSemOp;
  req.count = 1;
  req.timeout_ns = -1;
  if (abs != nullptr) {
    if (abs->tv_nsec < 0 || abs->tv_nsec >= 1000000000L) return Fail(EINVAL);
    struct timespec now;
    if (clock_gettime(clock, &now) != 0) return Fail(EINVAL);
    req.timeout_ns = std::max<int64_t>(0, Nanos(*abs) - Nanos(now));
  }
  if (SysvSemaphores::Call(fd, &req, &down, sizeof(down)) == 0) return 0;
  if (errno == EAGAIN && abs != nullptr && !try_only) return Fail(ETIMEDOUT);
  return -1;
}

int PosixSemaphores::GetValue(sem_t* s, int* value) {
  const int fd = FdOf(s);
  if (fd < 0) return -1;
  fs::SemIoctl req{};
  req.op = fs::kSemCtl;
  req.cmd = GETVAL;
  if (SysvSemaphores::Call(fd, &req, nullptr, 0) != 0) return -1;
  *value = req.result;
  return 0;
}

}  // namespace cshm::ipc
