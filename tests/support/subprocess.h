// Running commands and child functions from tests, always with a deadline: a
// child that outlives it is killed (by its pid, never by name).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace cshm::testing {

struct CommandResult {
  int exit_code = -1;   // -1 if killed by a signal or timed out
  int signal = 0;       // the signal that ended it, if any
  bool timed_out = false;
  std::string out;
  std::string err;
};

// Runs argv[0] (searched in PATH) with the extra environment `env`
// ("NAME=value"), waiting at most `timeout`.
CommandResult RunCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                         const std::vector<std::string>& env = {});

// Runs `fn` in a forked child; its return value is the exit code. Waits at
// most `timeout`. Use for code that must crash (SIGBUS) or change identity.
CommandResult RunInChild(const std::function<int()>& fn, std::chrono::milliseconds timeout);

// Waits for `pid` to exit, at most `timeout`. Returns false on timeout.
bool WaitForExit(pid_t pid, std::chrono::milliseconds timeout, int* status = nullptr);

// True once `pid` has exited: gone, or a zombie (every thread of it gone) that
// has not been reaped yet.
bool ProcessGone(pid_t pid);

// Polls `cond` every few ms until it holds or `timeout` passes.
bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds timeout);

}  // namespace cshm::testing
