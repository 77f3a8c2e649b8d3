#include "fs/connection_watch.h"

#include "common/proc_status.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <string>
#include <thread>

namespace cshm::fs {
namespace {

constexpr char kConnections[] = "/sys/fs/fuse/connections";
constexpr auto kPoll = std::chrono::milliseconds(250);
// Polls in a row that must see SIGKILL pending: a daemon that merely takes a
// moment to die (a thread finishing a syscall) is not aborted.
constexpr int kKillingPolls = 3;

bool AllDigits(const std::string& s) { return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos; }

bool Abort(const std::string& minor) {
  // fusectl is usually mounted at boot (systemd); mount it if not (EBUSY: it is).
  if (mount("fusectl", kConnections, "fusectl", 0, nullptr) != 0 && errno != EBUSY) { /* try the file anyway */ }
  const std::string file = std::string(kConnections) + "/" + minor + "/abort";
  int fd = open(file.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = write(fd, "1", 1) == 1;
  close(fd);
  return ok;
}

void Note(const std::string& log_file, const std::string& what) {
  char when[64];
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
  std::ofstream(log_file, std::ios::app) << "[" << when << "] [" << getpid() << "] warning: " << what << "\n";
}

}  // namespace

Result<pid_t> StartConnectionWatch(const std::string& minor, const std::string& log_file) {
  if (geteuid() != 0) return NotSupported("only root can abort a FUSE connection");
  if (!AllDigits(minor)) return Invalid("connection " + minor + " is not a device minor");
  const std::string daemon = std::to_string(getpid());
  pid_t pid = fork();
  if (pid < 0) return Status::FromErrno(errno, "starting the connection watcher");
  if (pid == 0) {
    // Async-signal-safe calls only until exec: the daemon has threads.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    setpgid(0, 0);  // a signal to the daemon's process group leaves it
    // None of the daemon's descriptors: above all not /dev/fuse, and not
    // its stdout and stderr either (a caller reading them to the end, as a
    // launcher capturing start-up errors does, would wait for ever).
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0) {
      for (int fd = 0; fd <= 2; fd++) dup2(devnull, fd);  // dup2 clears O_CLOEXEC on the copies
    }
    syscall(SYS_close_range, 3U, ~0U, 0U);
    const char* argv[] = {"cshmfs", kWatchConnectionFlag, daemon.c_str(), minor.c_str(), log_file.c_str(), nullptr};
    execv("/proc/self/exe", const_cast<char* const*>(argv));
    _exit(127);
  }
  return pid;
}

void StopConnectionWatch(pid_t watcher) {
  if (watcher <= 0) return;
  kill(watcher, SIGKILL);
  while (waitpid(watcher, nullptr, 0) < 0 && errno == EINTR) {
  }
}

int RunConnectionWatch(int argc, char** argv) {
  if (argc != 5 || !AllDigits(argv[2]) || !AllDigits(argv[3])) {
    fprintf(stderr, "cshmfs: %s is started by cshmfs itself (%s PID MINOR LOG)\n", kWatchConnectionFlag,
            kWatchConnectionFlag);
    return 2;
  }
  const pid_t daemon = static_cast<pid_t>(std::strtol(argv[2], nullptr, 10));
  const std::string minor = argv[3], log_file = argv[4];
  prctl(PR_SET_NAME, "cshmfs-watch");
  int killing_polls = 0;
  bool aborted = false;
  for (;;) {
    std::this_thread::sleep_for(kPoll);
    // One read of /proc/PID/status per poll: a kill -9 stays pending in the
    // shared set while a thread sleeps uninterruptibly.
    const ProcStatus st = ReadProcStatus(daemon);
    if (st.exited()) return 0;  // the kernel closed its /dev/fuse
    killing_polls = st.pending_signal(SIGKILL) ? killing_polls + 1 : 0;
    if (killing_polls >= kKillingPolls && !aborted && Abort(minor)) {
      aborted = true;
      Note(log_file, "the daemon (pid " + std::to_string(daemon) + ") was killed but one of its threads waits in "
                     "the kernel for a page that only the daemon could release; aborted its FUSE connection " +
                     minor + " so that it can exit (processes using the mount get ENOTCONN)");
    }
  }
}

}  // namespace cshm::fs
