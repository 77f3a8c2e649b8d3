// libcshm_ipc.so: LD_PRELOAD it with CSHM_MOUNT=/mnt/cshm and unchanged SysV
// (shmget/shmat/shmdt/shmctl, ftok) and POSIX (shm_open/shm_unlink) shared
// memory programs use files of the cshm mount, so processes on different
// nodes share them. Everything else, and everything when CSHM_MOUNT is unset
// or not a directory, goes to the real libc functions (dlsym RTLD_NEXT).
//
// CSHM_KEYS limits which SysV keys go to the cluster (see key_scope.h);
// CSHM_POSIX=0 leaves shm_open alone. Exceptions never leave this library:
// each entry point catches them and fails with ENOMEM like libc would.
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "ipc_compat/key_scope.h"
#include "ipc_compat/sysv_segments.h"

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
};

struct State {
  Real real{};
  std::unique_ptr<SysvSegments> segments;  // null: pass everything through
  KeyScope scope = KeyScope::All();
  bool posix = true;
  std::string mount;
};

State* g_state = nullptr;
pthread_once_t g_once = PTHREAD_ONCE_INIT;

void AfterForkChild() {
  if (g_state && g_state->segments) g_state->segments->AfterFork();
}

void Init() {
  auto* s = new State();
  s->real.shmget = reinterpret_cast<decltype(s->real.shmget)>(dlsym(RTLD_NEXT, "shmget"));
  s->real.shmat = reinterpret_cast<decltype(s->real.shmat)>(dlsym(RTLD_NEXT, "shmat"));
  s->real.shmdt = reinterpret_cast<decltype(s->real.shmdt)>(dlsym(RTLD_NEXT, "shmdt"));
  s->real.shmctl = reinterpret_cast<decltype(s->real.shmctl)>(dlsym(RTLD_NEXT, "shmctl"));
  s->real.ftok = reinterpret_cast<decltype(s->real.ftok)>(dlsym(RTLD_NEXT, "ftok"));
  s->real.shm_open = reinterpret_cast<decltype(s->real.shm_open)>(dlsym(RTLD_NEXT, "shm_open"));
  s->real.shm_unlink = reinterpret_cast<decltype(s->real.shm_unlink)>(dlsym(RTLD_NEXT, "shm_unlink"));
  const char* mount = getenv("CSHM_MOUNT");
  if (mount != nullptr && *mount != '\0') {
    char real[PATH_MAX];
    struct stat st;
    if (realpath(mount, real) == nullptr || stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) {
      fprintf(stderr, "cshm_ipc: CSHM_MOUNT=%s is not a mounted directory; shared memory stays local\n", mount);
    } else {
      s->mount = real;
      s->segments = std::make_unique<SysvSegments>(s->mount);
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
    if (!s.segments || !s.segments->IsOurs(shmid)) return s.real.shmat(shmid, addr, flags);
    return s.segments->Attach(shmid, addr, flags);
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
    // IPC_INFO and SHM_INFO describe the system: the kernel's answer serves.
    if (!s.segments || cmd == IPC_INFO || cmd == SHM_INFO || !s.segments->IsOurs(shmid))
      return s.real.shmctl(shmid, cmd, buf);
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
