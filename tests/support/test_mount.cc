#include "tests/support/test_mount.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include "fs/mountinfo.h"

namespace cshm::testing {
namespace {

using namespace std::chrono_literals;
constexpr auto kMountDeadline = 15s;
constexpr auto kStopDeadline = 10s;

}  // namespace

std::string CshmfsBinary() {
#ifdef CSHMFS_BIN
  return CSHMFS_BIN;
#else
  return "cshmfs";
#endif
}

std::string CshmctlBinary() {
#ifdef CSHMCTL_BIN
  return CSHMCTL_BIN;
#else
  return "cshmctl";
#endif
}

TestMount::TestMount() : mountpoint_(dir_ / "mnt"), state_dir_(dir_ / "state") {
  chmod(dir_.path().c_str(), 0755);  // tests act as other users on the mount
  mkdir(mountpoint_.c_str(), 0755);
}

TestMount::~TestMount() { Stop(); }

bool TestMount::mounted() const {
  auto m = fs::FindMount(mountpoint_);
  return m && m->fstype == "fuse.cshmfs";
}

std::string TestMount::Start(const std::vector<std::string>& extra, const std::vector<std::string>& env) {
  // The daemon's stderr goes to a file, never a pipe: a pipe nobody drains
  // fills after 64 KiB of warnings and blocks the daemon's threads on write(2)
  // (and with them every FUSE request) until the test gives up.
  const std::string log = stderr_file();
  int err = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (err < 0) return "cannot open " + log + ": " + strerror(errno);
  struct stat st;
  const off_t start = fstat(err, &st) == 0 ? st.st_size : 0;
  std::vector<std::string> args = {CshmfsBinary(), "-f", mountpoint_, "--state-dir", state_dir_};
  args.insert(args.end(), extra.begin(), extra.end());
  pid_ = fork();
  if (pid_ == 0) {
    dup2(err, 2);
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 0);
    dup2(devnull, 1);
    for (const std::string& e : env) putenv(strdup(e.c_str()));
    if (nofile_limit_ > 0) {
      rlimit rl{nofile_limit_, nofile_limit_};
      if (setrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(126);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(err);
  bool exited = false;
  int status = 0;
  bool up = WaitFor(
      [&] {
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
          exited = true;
          return true;
        }
        return mounted();
      },
      kMountDeadline);
  if (exited || !up) {
    std::string why = exited ? "cshmfs exited with status " + std::to_string(WEXITSTATUS(status))
                             : "cshmfs did not mount within the deadline";
    if (!exited) Stop();
    pid_ = -1;
    return why + ": " + StderrText().substr(static_cast<size_t>(start));
  }
  return "";
}

std::string TestMount::StderrText() const {
  std::ifstream in(stderr_file(), std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

std::string TestMount::StartBackground(const std::vector<std::string>& extra) {
  std::vector<std::string> args = {CshmfsBinary(), mountpoint_, "--state-dir", state_dir_};
  args.insert(args.end(), extra.begin(), extra.end());
  CommandResult r = RunCommand(args, kMountDeadline);
  if (r.exit_code != 0) return "cshmfs failed (" + std::to_string(r.exit_code) + "): " + r.err;
  std::ifstream pidf(state_dir_ + "/cshmfs.pid");
  long pid = 0;
  pidf >> pid;
  if (pid <= 0) return "no pid in the state dir";
  pid_ = static_cast<pid_t>(pid);  // not our child: Stop() polls kill(pid, 0)
  if (!mounted()) return "cshmfs reported success but nothing is mounted";
  return "";
}

void TestMount::AbortConnection() {
  auto m = fs::FindMount(mountpoint_);
  if (!m) return;
  mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, nullptr);  // may be mounted already
  const std::string minor = m->devnum.substr(m->devnum.find(':') + 1);
  std::ofstream("/sys/fs/fuse/connections/" + minor + "/abort") << "1";
}

void TestMount::ClearDeadMount() {
  for (int i = 0; i < 3 && fs::FindMount(mountpoint_); i++) {
    if (umount2(mountpoint_.c_str(), MNT_DETACH) != 0)
      RunCommand({"fusermount3", "-u", "-z", mountpoint_}, 5s);
  }
}

bool TestMount::Reaped() {
  int st;
  return waitpid(pid_, &st, WNOHANG) == pid_ || ProcessGone(pid_);
}

void TestMount::Stop() {
  if (pid_ > 0 && mounted()) RunCommand({"fusermount3", "-u", mountpoint_}, kStopDeadline);
  if (pid_ > 0) {
    auto gone = [&] { return Reaped(); };
    if (!WaitFor(gone, kStopDeadline)) {
      // Busy or wedged: abort the connection, then make sure the daemon goes.
      AbortConnection();
      if (!WaitFor(gone, 3s)) {
        kill(pid_, SIGKILL);
        WaitFor(gone, kStopDeadline);
      }
    }
    pid_ = -1;
  }
  ClearDeadMount();
}

void TestMount::Kill9() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    auto gone = [&] { return Reaped(); };
    // A thread stuck in the kernel on the mount keeps a killed daemon alive
    // until its connection is aborted.
    if (!WaitFor(gone, kStopDeadline)) {
      AbortConnection();
      WaitFor(gone, kStopDeadline);
    }
    Reaped();  // it may have exited between the two checks of the last poll
    pid_ = -1;
  }
  ClearDeadMount();
}

}  // namespace cshm::testing
