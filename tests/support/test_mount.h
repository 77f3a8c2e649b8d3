// TestMount: a real cshmfs mounted in a temporary directory for one test.
//
// The destructor always unmounts and stops the daemon this object started (by
// its pid), also when the test failed half-way; a wedged mount is recovered by
// aborting its FUSE connection, so one bad test cannot hang the suite.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace cshm::testing {

class TestMount {
 public:
  TestMount();
  ~TestMount();

  // Starts `cshmfs -f MOUNTPOINT --state-dir STATE extra...` and waits (with a
  // deadline) until the mount is up. Returns "" or what went wrong, with the
  // daemon's stderr.
  std::string Start(const std::vector<std::string>& extra = {}, const std::vector<std::string>& env = {});
  // Starts it the way a user does, in the background, and finds its pid in the
  // state dir's pid file.
  std::string StartBackground(const std::vector<std::string>& extra = {});
  // Unmounts with fusermount3 and waits for the daemon to exit.
  void Stop();
  // kill -9 of the daemon, then clears the dead mount.
  void Kill9();

  bool mounted() const;
  pid_t pid() const { return pid_; }
  const std::string& mountpoint() const { return mountpoint_; }
  const std::string& state_dir() const { return state_dir_; }
  std::string operator/(const std::string& name) const { return mountpoint_ + "/" + name; }
  const TempDir& dir() const { return dir_; }
  // Daemons started with Start() from now on run with RLIMIT_NOFILE at `n`
  // (soft and hard; 0: inherited).
  void set_nofile_limit(unsigned long n) { nofile_limit_ = n; }
  // What the daemons started with Start() wrote to stderr, all runs.
  std::string stderr_file() const { return dir_ / "cshmfs.stderr"; }
  std::string StderrText() const;

 private:
  void ClearDeadMount();
  // The daemon has exited: reaped now if it is our child, or gone.
  bool Reaped();
  void AbortConnection();

  TempDir dir_;
  std::string mountpoint_;
  std::string state_dir_;
  pid_t pid_ = -1;
  unsigned long nofile_limit_ = 0;
};

std::string CshmfsBinary();
std::string CshmctlBinary();

}  // namespace cshm::testing
