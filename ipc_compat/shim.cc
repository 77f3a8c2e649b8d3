// libcshm_ipc.so: LD_PRELOAD it with CSHM_MOUNT=/mnt/cshm and unchanged SysV
// (shmget/shmat/shmdt/shmctl, ftok), SysV semaphore (semget/semop/
// semtimedop/semctl) and POSIX (shm_open/shm_unlink) shared
// memory programs use files of the cshm mount, so processes on different
// nodes share them. Everything else, and everything when CSHM_MOUNT is unset
// or not in a mounted cshm, goes to the real libc functions (dlsym RTLD_NEXT).
//
// CSHM_KEYS limits which SysV keys go to the cluster (see key_scope.h);
// CSHM_POSIX=0 leaves shm_open alone. Exceptions never leave this library:
// each entry point catches them and fails with ENOMEM like libc would.
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "ipc_compat/key_scope.h"
#include "ipc_compat/posix_semaphores.h"
#include "ipc_compat/sysv_segments.h"
#include "ipc_compat/sysv_semaphores.h"

#define CSHM_EXPORT extern "C" __attribute__((visibility("default")))

namespace cshm::ipc {
namespace {

struct Real {
  int (*shmget)(key_t, size_t, int);
  void* (*shmat)(int, const void*, int);
  int (*shmdt)(const void*);
  int (*shmctl)(int, int, struct shmid_ds*);
  key_t (*ftok)(const char*, int);
  int (*shm_open)(const char*, int, mode_t);
  int (*shm_unlink)(const char*);
  int (*semget)(key_t, int, int);
  int (*semtimedop)(int, struct sembuf*, size_t, const struct timespec*);
  int (*semctl)(int, int, int, ...);
  sem_t* (*sem_open)(const char*, int, ...);
  int (*sem_close)(sem_t*);
  int (*sem_unlink)(const char*);
  int (*sem_post)(sem_t*);
  int (*sem_wait)(sem_t*);
  int (*sem_trywait)(sem_t*);
  int (*sem_timedwait)(sem_t*, const struct timespec*);
  int (*sem_clockwait)(sem_t*, clockid_t, const struct timespec*);
  int (*sem_getvalue)(sem_t*, int*);
};

struct State {
  Real real{};
  std::unique_ptr<SysvSegments> segments;  // null: pass everything through
  std::unique_ptr<SysvSemaphores> semaphores;  // with segments
  std::unique_ptr<PosixSemaphores> named;      // with segments, unless CSHM_POSIX=0
  KeyScope scope = KeyScope::All();
  bool posix = true;
  std::string mount;
};

State* g_state = nullptr;
pthread_once_t g_once = PTHREAD_ONCE_INIT;

void AfterForkChild() {
  if (g_state && g_state->segments) g_state->segments->AfterFork();
}

// What a libc function the next library does not have does: fail, as a
// system without it would, instead of calling through a null pointer.
int NoShmget(key_t, size_t, int) { return errno = ENOSYS, -1; }
void* NoShmat(int, const void*, int) { return errno = ENOSYS, reinterpret_cast<void*>(-1); }
int NoShmdt(const void*) { return errno = ENOSYS, -1; }
int NoShmctl(int, int, struct shmid_ds*) { return errno = ENOSYS, -1; }
key_t NoFtok(const char*, int) { return errno = ENOSYS, -1; }
int NoShmOpen(const char*, int, mode_t) { return errno = ENOSYS, -1; }
int NoShmUnlink(const char*) { return errno = ENOSYS, -1; }
int NoSemget(key_t, int, int) { return errno = ENOSYS, -1; }
int NoSemtimedop(int, struct sembuf*, size_t, const struct timespec*) { return errno = ENOSYS, -1; }
int NoSemctl(int, int, int, ...) { return errno = ENOSYS, -1; }
sem_t* NoSemOpen(const char*, int, ...) { return errno = ENOSYS, SEM_FAILED; }
int NoSemHandle(sem_t*) { return errno = ENOSYS, -1; }
int NoSemUnlink(const char*) { return errno = ENOSYS, -1; }
int NoSemTimedwait(sem_t*, const struct timespec*) { return errno = ENOSYS, -1; }
int NoSemClockwait(sem_t*, clockid_t, const struct timespec*) { return errno = ENOSYS, -1; }
int NoSemGetvalue(sem_t*, int*) { return errno = ENOSYS, -1; }

template <typename F>
void Resolve(F*& fn, const char* name, F* missing) {
  fn = reinterpret_cast<F*>(dlsym(RTLD_NEXT, name));
  if (fn != nullptr) return;
  fprintf(stderr, "cshm_ipc: the C library has no %s; calls of it fail with ENOSYS\n", name);
  fn = missing;
}

// Mount points in /proc/self/mountinfo are escaped: \040 for a space, etc.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      out.push_back(static_cast<char>(std::strtol(s.substr(i + 1, 3).c_str(), nullptr, 8)));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// Whether `path` (resolved) lies in a mounted cshm file system: the longest
// mount point containing it in /proc/self/mountinfo has type fuse.cshmfs.
bool InCshmMount(const std::string& path) {
  FILE* f = fopen("/proc/self/mountinfo", "re");
  if (f == nullptr) return false;
  char* line = nullptr;
  size_t cap = 0;
  size_t best = 0;
  bool cshm = false;
  while (getline(&line, &cap, f) > 0) {
    // id parent major:minor root mountpoint options [optional...] - fstype source super
    char mp[PATH_MAX], fstype[64];
    const char* dash = std::strstr(line, " - ");
    if (dash == nullptr || sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1 || sscanf(dash + 3, "%63s", fstype) != 1)
      continue;
    const std::string point = Unescape(mp);
    const bool contains = point == "/" || path == point ||
                          (path.size() > point.size() && path.compare(0, point.size(), point) == 0 &&
                           path[point.size()] == '/');
    if (contains && point.size() >= best) {
      best = point.size();
      cshm = std::strcmp(fstype, "fuse.cshmfs") == 0;
    }
  }
  free(line);
  fclose(f);
  return cshm;
}

void Init() {
  auto* s = new State();
  Resolve(s->real.shmget, "shmget", NoShmget);
  Resolve(s->real.shmat, "shmat", NoShmat);
  Resolve(s->real.shmdt, "shmdt", NoShmdt);
  Resolve(s->real.shmctl, "shmctl", NoShmctl);
  Resolve(s->real.ftok, "ftok", NoFtok);
  Resolve(s->real.shm_open, "shm_open", NoShmOpen);
  Resolve(s->real.shm_unlink, "shm_unlink", NoShmUnlink);
  Resolve(s->real.semget, "semget", NoSemget);
  Resolve(s->real.semtimedop, "semtimedop", NoSemtimedop);
  Resolve(s->real.semctl, "semctl", NoSemctl);
  Resolve(s->real.sem_open, "sem_open", NoSemOpen);
  Resolve(s->real.sem_close, "sem_close", NoSemHandle);
  Resolve(s->real.sem_unlink, "sem_unlink", NoSemUnlink);
  Resolve(s->real.sem_post, "sem_post", NoSemHandle);
  Resolve(s->real.sem_wait, "sem_wait", NoSemHandle);
  Resolve(s->real.sem_trywait, "sem_trywait", NoSemHandle);
  Resolve(s->real.sem_timedwait, "sem_timedwait", NoSemTimedwait);
  Resolve(s->real.sem_clockwait, "sem_clockwait", NoSemClockwait);
  Resolve(s->real.sem_getvalue, "sem_getvalue", NoSemGetvalue);
  const char* mount = getenv("CSHM_MOUNT");
  if (mount != nullptr && *mount != '\0') {
    char real[PATH_MAX];
    struct stat st;
    if (realpath(mount, real) == nullptr || stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) {
      fprintf(stderr, "cshm_ipc: CSHM_MOUNT=%s is not a mounted directory; shared memory stays local\n", mount);
    } else if (!InCshmMount(real)) {
      fprintf(stderr, "cshm_ipc: CSHM_MOUNT=%s is not in a mounted cshm file system (mount cshmfs there first); "
                      "shared memory stays local\n", mount);
    } else {
      s->mount = real;
      s->segments = std::make_unique<SysvSegments>(s->mount);
      s->semaphores = std::make_unique<SysvSemaphores>(s->mount);
      if (const char* keys = getenv("CSHM_KEYS"); keys && *keys) {
        auto scope = KeyScope::Parse(keys);
        if (scope) {
          s->scope = *scope;
        } else {
          fprintf(stderr, "cshm_ipc: cannot parse CSHM_KEYS=%s (want e.g. 0x1000-0x1fff,42,private); "
                          "no key goes to the cluster\n", keys);
          s->scope = *KeyScope::Parse("0-0");
        }
      }
      if (const char* p = getenv("CSHM_POSIX")) s->posix = std::strcmp(p, "0") != 0;
      if (s->posix) s->named = std::make_unique<PosixSemaphores>(s->mount, s->semaphores.get());
      pthread_atfork(nullptr, nullptr, AfterForkChild);
    }
  }
  g_state = s;
}

State& S() {
  pthread_once(&g_once, Init);
  return *g_state;
}

// POSIX names are "/name": one component, as glibc requires.
std::string PosixPath(const State& s, const char* name) {
  while (*name == '/') name++;
  if (*name == '\0' || std::strchr(name, '/') != nullptr || std::strlen(name) > NAME_MAX) return "";
  return s.mount + "/.posix/" + name;
}

__attribute__((destructor)) void DetachAtExit() {
  if (g_state && g_state->segments) {
    try {
      g_state->segments->DetachAll();
    } catch (...) {
    }
  }
}

}  // namespace
}  // namespace cshm::ipc

using cshm::ipc::S;

CSHM_EXPORT int shmget(key_t key, size_t size, int flags) {
  try {
    auto& s = S();
    if (!s.segments || !s.scope.Contains(key)) return s.real.shmget(key, size, flags);
    return s.segments->Get(key, size, flags);
  } catch (...) {
    errno = ENOMEM;
    return -1;
  }
}

CSHM_EXPORT void* shmat(int shmid, const void* addr, int flags) {
  try {
    auto& s = S();
    if (!s.segments || !cshm::ipc::SysvSegments::MayBeOurs(shmid)) return s.real.shmat(shmid, addr, flags);
    bool theirs = false;
    void* p = s.segments->Attach(shmid, addr, flags, &theirs);
    return theirs ? s.real.shmat(shmid, addr, flags) : p;
  } catch (...) {
    errno = ENOMEM;
    return reinterpret_cast<void*>(-1);
  }
}

CSHM_EXPORT int shmdt(const void* addr) {
  try {
    auto& s = S();
    if (!s.segments || !s.segments->IsOurAttachment(addr)) return s.real.shmdt(addr);
    return s.segments->Detach(addr);
  } catch (...) {
    errno = ENOMEM;
    return -1;
  }
}

CSHM_EXPORT int shmctl(int shmid, int cmd, struct shmid_ds* buf) {
  try {
    auto& s = S();
    if (!s.segments) return s.real.shmctl(shmid, cmd, buf);
    // The system's view: the kernel's segments, then the mount's.
    if (cmd == IPC_INFO || cmd == SHM_INFO) return s.segments->Info(cmd, buf, s.real.shmctl);
    // An index, or (as the kernel takes an id there for its index) one of ours.
    const bool ours = s.segments->IsOurs(shmid);
    if ((cmd == SHM_STAT || cmd == SHM_STAT_ANY) && !ours) return s.segments->IndexStat(shmid, cmd, buf, s.real.shmctl);
    if (!ours) return s.real.shmctl(shmid, cmd, buf);
    return s.segments->Control(shmid, cmd, buf);
  } catch (...) {
    errno = ENOMEM;
    return -1;
  }
}

CSHM_EXPORT key_t ftok(const char* path, int id) {
  try {
    auto& s = S();
    key_t key;
    if (s.segments && path != nullptr && s.segments->Ftok(path, id, &key)) return key;
    return s.real.ftok(path, id);
  } catch (...) {
    errno = ENOMEM;
    return -1;
  }
}

CSHM_EXPORT int shm_open(const char* name, int oflag, mode_t mode) {
  try {
    auto& s = S();
    if (!s.segments || !s.posix) return s.real.shm_open(name, oflag, mode);
    const std::string path = cshm::ipc::PosixPath(s, name);
    if (path.empty()) {
      errno = EINVAL;
      return -1;
    }
    if (mkdir((s.mount + "/.posix").c_str(), 01777) == 0) chmod((s.mount + "/.posix").c_str(), 01777);
    return open(path.c_str(), oflag | O_NOFOLLOW | O_CLOEXEC, mode);
  } catch (...) {
    errno = ENOMEM;
    return -1;
  }
}

CSHM_EXPORT int shm_unlink(const char* name) {
  try {
    auto& s = S();
    if (!s.segments || !s.posix) return s.real.shm_unlink(name);
    const std::string path = cshm::ipc::PosixPath(s, name);
    if (path.empty()) {
      errno = EINVAL;
      return -1;
    }
    return unlink(path.c_str());
  } catch (...) {
    errno = ENOMEM;
    return -1;
  }
}

CSHM_EXPORT int semget(key_t key, int nsems, int flags) {
  try {
    auto& s = S();
    if (!s.semaphores || !s.scope.Contains(key)) return s.real.semget(key, nsems, flags);
    return s.semaphores->Get(key, nsems, flags);
  } catch (...) {
    errno = ENOMEM;
    return -1;
  }
}

CSHM_EXPORT int semtimedop(int semid, struct sembuf* sops, size_t nsops, const struct timespec* timeout) {
  try {
    auto& s = S();
    if (!s.semaphores || !s.semaphores->IsOurs(semid)) return s.real.semtimedop(semid, sops, nsops, timeout);
    return s.semaphores->Op(semid, sops, nsops, timeout);
  } catch (...) {
    errno = ENOMEM;
    return -1;
  }
}

CSHM_EXPORT int semop(int semid, struct sembuf* sops, size_t nsops) { return semtimedop(semid, sops, nsops, nullptr); }

CSHM_EXPORT int semctl(int semid, int semnum, int cmd, ...) {
  try {
    // The fourth argument, when the command has one, is a union semun
    // (which the caller defines); read it as one, as glibc does.
    cshm::ipc::SemArg arg{};
    if (cmd == SETVAL || cmd == GETALL || cmd == SETALL || cmd == IPC_STAT || cmd == IPC_SET || cmd == SEM_STAT ||
        cmd == SEM_STAT_ANY || cmd == IPC_INFO || cmd == SEM_INFO) {
      va_list ap;
      va_start(ap, cmd);
      arg = va_arg(ap, cshm::ipc::SemArg);
      va_end(ap);
    }
    auto& s = S();
    if (!s.semaphores) return s.real.semctl(semid, semnum, cmd, arg);
    // The system's view: the kernel's sets, then the mount's.
    if (cmd == IPC_INFO || cmd == SEM_INFO) return s.semaphores->Info(cmd, arg, s.real.semctl);
    // An index, or (as the kernel takes an id there for its index) one of ours.
    const bool ours = s.semaphores->IsOurs(semid);
    if ((cmd == SEM_STAT || cmd == SEM_STAT_ANY) && !ours) return s.semaphores->IndexStat(semid, cmd, arg, s.real.semctl);
    if (!ours) return s.real.semctl(semid, semnum, cmd, arg);
    return s.semaphores->Control(semid, semnum, cmd, arg);
  } catch (...) {
    errno = ENOMEM;
    return -1;
  }
}

// POSIX named semaphores: sem_open's are ours, every other sem_t (sem_init's)
// is the C library's.
CSHM_EXPORT sem_t* sem_open(const char* name, int oflag, ...) {
  try {
    mode_t mode = 0;
    unsigned value = 0;
    if (oflag & O_CREAT) {
      va_list ap;
      va_start(ap, oflag);
      mode = static_cast<mode_t>(va_arg(ap, unsigned));
      value = va_arg(ap, unsigned);
      va_end(ap);
    }
    auto& s = S();
    if (!s.named) return s.real.sem_open(name, oflag, mode, value);
    return s.named->Open(name, oflag, mode, value);
  } catch (...) {
    errno = ENOMEM;
    return SEM_FAILED;
  }
}

namespace {
template <typename Ours, typename Theirs>
int OnSem(sem_t* sem, Ours ours, Theirs theirs) {
  try {
    auto& s = S();
    if (!s.named || !s.named->IsOurs(sem)) return theirs(s.real);
    return ours(*s.named);
  } catch (...) {
    errno = ENOMEM;
    return -1;
  }
}
}  // namespace

CSHM_EXPORT int sem_close(sem_t* sem) {
  return OnSem(sem, [&](auto& n) { return n.Close(sem); }, [&](auto& r) { return r.sem_close(sem); });
}

CSHM_EXPORT int sem_unlink(const char* name) {
  try {
    auto& s = S();
    if (!s.named) return s.real.sem_unlink(name);
    return s.named->Unlink(name);
  } catch (...) {
    errno = ENOMEM;
    return -1;
  }
}

CSHM_EXPORT int sem_post(sem_t* sem) {
  return OnSem(sem, [&](auto& n) { return n.Post(sem); }, [&](auto& r) { return r.sem_post(sem); });
}

CSHM_EXPORT int sem_wait(sem_t* sem) {
  return OnSem(sem, [&](auto& n) { return n.Wait(sem, false, CLOCK_REALTIME, nullptr); },
               [&](auto& r) { return r.sem_wait(sem); });
}

CSHM_EXPORT int sem_trywait(sem_t* sem) {
  return OnSem(sem, [&](auto& n) { return n.Wait(sem, true, CLOCK_REALTIME, nullptr); },
               [&](auto& r) { return r.sem_trywait(sem); });
}

CSHM_EXPORT int sem_timedwait(sem_t* sem, const struct timespec* abs) {
  return OnSem(sem, [&](auto& n) { return n.Wait(sem, false, CLOCK_REALTIME, abs); },
               [&](auto& r) { return r.sem_timedwait(sem, abs); });
}

CSHM_EXPORT int sem_clockwait(sem_t* sem, clockid_t clock, const struct timespec* abs) {
  return OnSem(sem, [&](auto& n) { return n.Wait(sem, false, clock, abs); },
               [&](auto& r) { return r.sem_clockwait(sem, clock, abs); });
}

CSHM_EXPORT int sem_getvalue(sem_t* sem, int* value) {
  return OnSem(sem, [&](auto& n) { return n.GetValue(sem, value); },
               [&](auto& r) { return r.sem_getvalue(sem, value); });
}
