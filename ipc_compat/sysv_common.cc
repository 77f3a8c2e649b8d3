#include "ipc_compat/sysv_common.h"

#include <dirent.h>
#include <sys/uio.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace cshm::ipc {

int Fail(int err) {
  errno = err;
  return -1;
}

int StatWalked(int dirfd, const char* path, int flags, struct stat* st) {
  struct statx x;
  if (statx(dirfd, path, flags | AT_STATX_DONT_SYNC, STATX_BASIC_STATS, &x) != 0) return -1;
  *st = {};
  st->st_dev = makedev(x.stx_dev_major, x.stx_dev_minor);
  st->st_ino = x.stx_ino;
  st->st_mode = x.stx_mode;
  st->st_nlink = x.stx_nlink;
  st->st_uid = x.stx_uid;
  st->st_gid = x.stx_gid;
  st->st_size = static_cast<off_t>(x.stx_size);
  st->st_blksize = x.stx_blksize;
  st->st_blocks = static_cast<blkcnt_t>(x.stx_blocks);
  st->st_atim = {x.stx_atime.tv_sec, x.stx_atime.tv_nsec};
  st->st_mtim = {x.stx_mtime.tv_sec, x.stx_mtime.tv_nsec};
  st->st_ctim = {x.stx_ctime.tv_sec, x.stx_ctime.tv_nsec};
  return 0;
}

void SetU64(const std::string& path, const char* name, unsigned long long v) {
  std::string s = std::to_string(v);
  setxattr(path.c_str(), name, s.data(), s.size(), 0);
}

bool ReadU64(int fd, const std::string& path, const char* name, unsigned long long* v) {
  char buf[32];
  const ssize_t n = fd >= 0 ? fgetxattr(fd, name, buf, sizeof(buf) - 1) : getxattr(path.c_str(), name, buf, sizeof(buf) - 1);
  if (n < 0) return false;
  if (n == 0) {  // empty: as good as absent
    errno = ENODATA;
    return false;
  }
  buf[n] = '\0';
  *v = std::strtoull(buf, nullptr, 10);
  return true;
}

unsigned long long GetU64(const std::string& path, const char* name, unsigned long long dflt) {
  unsigned long long v = 0;
  return ReadU64(-1, path, name, &v) ? v : dflt;
}

namespace {
std::string EventNow() {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  return std::to_string(static_cast<unsigned long long>(now.tv_sec) * 1000000000ull +
                        static_cast<unsigned long long>(now.tv_nsec)) +
         " " + std::to_string(getpid());
}
}  // namespace

void SetEvent(int fd, const char* name) {
  const std::string s = EventNow();
  fsetxattr(fd, name, s.data(), s.size(), 0);
}

IpcEvent GetEvent(const std::string& path, const char* name) {
  char buf[64];
  ssize_t n = getxattr(path.c_str(), name, buf, sizeof(buf) - 1);
  if (n <= 0) return {};
  buf[n] = '\0';
  IpcEvent e;
  if (sscanf(buf, "%llu %llu", &e.ns, &e.pid) != 2) return {};
  return e;
}

namespace {
bool InGroup(gid_t gid) {
  if (getegid() == gid) return true;
  int n = getgroups(0, nullptr);
  if (n <= 0) return false;
  std::vector<gid_t> groups(static_cast<size_t>(n));
  n = getgroups(n, groups.data());
  for (int i = 0; i < n; i++)
    if (groups[static_cast<size_t>(i)] == gid) return true;
  return false;
}
}  // namespace

bool Allowed(const struct stat& st, uid_t cuid, gid_t cgid, int requested) {
  if (geteuid() == 0) return true;
  int granted = static_cast<int>(st.st_mode);
  if (geteuid() == st.st_uid || geteuid() == cuid) granted >>= 6;
  else if (InGroup(st.st_gid) || InGroup(cgid)) granted >>= 3;
  const int req = (requested >> 6) | (requested >> 3) | requested;
  return (req & ~granted & 07) == 0;
}

bool AllowedAt(const struct stat& st, const std::string& path, int requested) {
  const uid_t euid = geteuid();
  // Root, or the owner: the owner's class decides, the creator does not matter.
  if (euid == 0 || euid == st.st_uid) return Allowed(st, st.st_uid, st.st_gid, requested);
  const auto cuid = static_cast<uid_t>(GetU64(path, "user.cshm.cuid", st.st_uid));
  if (euid == cuid || InGroup(st.st_gid)) return Allowed(st, cuid, st.st_gid, requested);
  return Allowed(st, cuid, static_cast<gid_t>(GetU64(path, "user.cshm.cgid", st.st_gid)), requested);
}

bool OwnerOrCreator(const struct stat& st, uid_t cuid) {
  return geteuid() == 0 || geteuid() == st.st_uid || geteuid() == cuid;
}

unsigned long long KernelLimit(const char* name, unsigned long long dflt, int field) {
  FILE* f = fopen((std::string("/proc/sys/kernel/") + name).c_str(), "re");
  if (f == nullptr) return dflt;
  unsigned long long v = dflt;
  for (int i = 0; i <= field; i++)
    if (fscanf(f, "%llu", &v) != 1) {
      v = dflt;
      break;
    }
  fclose(f);
  return v;
}

OwnerAccess::OwnerAccess(const std::string& path, const struct stat& st) : path_(path), mode_(st.st_mode & 07777) {
  if (geteuid() != 0 && geteuid() == st.st_uid && (mode_ & 0600) != 0600)
    lent_ = chmod(path_.c_str(), mode_ | 0600) == 0;
}

OwnerAccess::~OwnerAccess() {
  if (lent_) (void)!chmod(path_.c_str(), mode_);  // ENOENT if the call destroyed it
}

namespace {
bool CopyVm(void* dst, const void* src, size_t n, bool from_caller) {
  if (n == 0) return true;
  iovec local{from_caller ? dst : const_cast<void*>(src), n};
  iovec remote{from_caller ? const_cast<void*>(src) : dst, n};
  const ssize_t r = from_caller ? process_vm_readv(getpid(), &local, 1, &remote, 1, 0)
                                : process_vm_writev(getpid(), &local, 1, &remote, 1, 0);
  if (r == static_cast<ssize_t>(n)) return true;
  if (r < 0 && (errno == ENOSYS || errno == EPERM)) {
    std::memcpy(dst, src, n);
    return true;
  }
  return false;
}
}  // namespace

bool CopyFromCaller(void* dst, const void* src, size_t n) { return CopyVm(dst, src, n, true); }
bool CopyToCaller(void* dst, const void* src, size_t n) { return CopyVm(dst, src, n, false); }

int LinkIn(const std::string& tmp, const std::string& id_path, const std::string& key_path) {
  if (link(tmp.c_str(), id_path.c_str()) != 0) {
    const int err = errno;
    unlink(tmp.c_str());
    return Fail(err);
  }
  if (!key_path.empty() && link(tmp.c_str(), key_path.c_str()) != 0) {
    const int err = errno;
    unlink(tmp.c_str());
    unlink(id_path.c_str());
    if (err == EEXIST) return -2;  // somebody created the key first
    return Fail(err);
  }
  unlink(tmp.c_str());
  return 0;
}

namespace {
// What a directory looked like when it was last listed: any entry made or
// removed in it since changes its mtime, ctime or link count.
struct DirVersion {
  dev_t dev = 0;
  ino_t ino = 0;
  nlink_t nlink = 0;
  struct timespec mtime {}, ctime {};
  bool operator==(const DirVersion& o) const {
    return dev == o.dev && ino == o.ino && nlink == o.nlink && mtime.tv_sec == o.mtime.tv_sec &&
           mtime.tv_nsec == o.mtime.tv_nsec && ctime.tv_sec == o.ctime.tv_sec && ctime.tv_nsec == o.ctime.tv_nsec;
  }
};
struct Listing {
  DirVersion version;
  std::vector<int> ids;
};
std::mutex listings_mu;
auto* listings = new std::map<std::pair<std::string, std::string>, Listing>;  // never destroyed: used until exit
}  // namespace

std::vector<int> ListIds(const std::string& dir, const char* prefix) {
  // An index walk (SHM_STAT/SEM_STAT for 0, 1, 2, ...) asks for the list at
  // every index: listed again only when the directory changed (one stat,
  // where a listing of thousands of entries is dozens of requests on a
  // cluster mount), so the walk is linear, not quadratic. The stat comes
  // before the listing: a change between them makes the next call list again.
  struct stat st;
  const bool versioned = stat(dir.c_str(), &st) == 0;
  DirVersion version;
  if (versioned) version = DirVersion{st.st_dev, st.st_ino, st.st_nlink, st.st_mtim, st.st_ctim};
  const auto key = std::make_pair(dir, std::string(prefix));
  if (versioned) {
    std::lock_guard<std::mutex> lock(listings_mu);
    auto it = listings->find(key);
    if (it != listings->end() && it->second.version == version) return it->second.ids;
  }
  std::vector<int> ids;
  const size_t len = std::strlen(prefix);
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (std::strncmp(e->d_name, prefix, len) != 0) continue;
      char* end = nullptr;
      const long id = std::strtol(e->d_name + len, &end, 10);
      if (end != e->d_name + len && *end == '\0' && id > 0 && id <= INT_MAX) ids.push_back(static_cast<int>(id));
    }
    closedir(d);
  }
  std::sort(ids.begin(), ids.end());
  if (versioned) {
    std::lock_guard<std::mutex> lock(listings_mu);
    (*listings)[key] = Listing{version, ids};
  }
  return ids;
}

namespace {
std::mutex ensured_mu;
std::set<std::string>* ensured = new std::set<std::string>;  // never destroyed: used until exit
}  // namespace

int EnsureSysvDir(const std::string& dir) {
  {
    std::lock_guard<std::mutex> lock(ensured_mu);
    if (ensured->count(dir)) return 0;
  }
  if (mkdir(dir.c_str(), 01777) != 0 && errno != EEXIST) return -1;
  chmod(dir.c_str(), 01777);  // not filtered by the umask (another user's: EPERM, and it is set)
  std::lock_guard<std::mutex> lock(ensured_mu);
  ensured->insert(dir);
  return 0;
}

int OpenInSysvDir(const std::string& dir, const std::string& path, int flags, mode_t mode) {
  if (EnsureSysvDir(dir) != 0) return -1;
  int fd = open(path.c_str(), flags, mode);
  if (fd >= 0 || errno != ENOENT) return fd;
  ForgetSysvDir(dir);  // removed since this process made sure of it
  if (EnsureSysvDir(dir) != 0) return -1;
  return open(path.c_str(), flags, mode);
}

void ForgetSysvDir(const std::string& dir) {
  std::lock_guard<std::mutex> lock(ensured_mu);
  ensured->erase(dir);
}

int SetU64At(int fd, const char* name, unsigned long long v) {
  const std::string s = std::to_string(v);
  return fsetxattr(fd, name, s.data(), s.size(), 0);
}

}  // namespace cshm::ipc
