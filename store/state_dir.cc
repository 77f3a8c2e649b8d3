#include "store/state_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

namespace cshm::store {
namespace {

constexpr std::string_view kHint = "choose another with --state-dir";

// mkdir -p with mode 0700 for the directories it creates.
Status MakeDirs(const std::string& path) {
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    cur = path.substr(0, pos);
    if (cur.empty()) continue;
    if (mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST)
      return Status::FromErrno(errno, "cannot create state dir " + path, kHint);
  }
  struct stat st;
  if (stat(path.c_str(), &st) != 0)
    return Status::FromErrno(errno, "cannot create state dir " + path, kHint);
  if (!S_ISDIR(st.st_mode)) return NotDir("state dir " + path + " exists and is not a directory");
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<StateDir>> StateDir::Open(const std::string& path) {
  CSHM_RETURN_IF_ERROR(MakeDirs(path));
  if (access(path.c_str(), W_OK | X_OK) != 0)
    return Status::FromErrno(errno, "state dir " + path + " is not writable", kHint);
  std::unique_ptr<StateDir> dir(new StateDir(path));
  dir->lock_fd_ = open(dir->pid_file().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (dir->lock_fd_ < 0)
    return Status::FromErrno(errno, "cannot write " + dir->pid_file(), kHint);
  if (flock(dir->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {};
    ssize_t n = pread(dir->lock_fd_, buf, sizeof(buf) - 1, 0);
    std::string pid = n > 0 ? std::string(buf, strcspn(buf, "\n")) : "?";
    return Busy("state dir " + path + " is in use by another cshmfs (pid " + pid +
                "); unmount it first or choose another --state-dir");
  }
  CSHM_RETURN_IF_ERROR(dir->WritePid());
  return dir;
}

StateDir::~StateDir() {
  if (lock_fd_ >= 0) {
    if (ftruncate(lock_fd_, 0) != 0) { /* best effort: the lock is what matters */ }
    close(lock_fd_);
  }
}

Status StateDir::WritePid() {
  std::string pid = std::to_string(getpid()) + "\n";
  if (ftruncate(lock_fd_, 0) != 0 || pwrite(lock_fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    const int err = errno;
    return Status::FromErrno(err, "cannot write " + pid_file(),
                             err == ENOSPC || err == EDQUOT ? "free space on its disk, or choose another with --state-dir"
                                                            : kHint);
  }
  return Status::Ok();
}

std::string DefaultStateDir(const std::string& mountpoint) {
  std::string base;
  if (geteuid() == 0) {
    base = "/var/lib/cshm";
  } else if (const char* x = getenv("XDG_STATE_HOME"); x && *x) {
    base = std::string(x) + "/cshm";
  } else {
    const char* home = getenv("HOME");
    base = std::string(home ? home : "/tmp") + "/.local/state/cshm";
  }
  // systemd-escape style: "/mnt/cshm" -> "mnt-cshm"; '-' itself becomes "\x2d".
  std::string name;
  for (char c : mountpoint) {
    if (c == '/') {
      if (!name.empty() && name.back() != '-') name.push_back('-');
    } else if (c == '-') {
      name += "\\x2d";
    } else {
      name.push_back(c);
    }
  }
  while (!name.empty() && name.back() == '-') name.pop_back();
  if (name.empty()) name = "root";
  return base + "/" + name;
}

}  // namespace cshm::store
