// DelaySeam: a test seam of the daemon's data path. With VAR=N in its
// environment, this node waits N ms where the seam is placed (the fault
// tests widen races with it). The environment is read once, at start, not on
// the paths the seams sit on.
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <thread>

namespace cshm::fs {

class DelaySeam {
 public:
  explicit DelaySeam(const char* var) : var_(var), ms_(getenv(var) != nullptr ? atoi(getenv(var)) : 0) {}
  void At(const char* what, uint64_t ino) const {
    if (ms_ <= 0) return;
    spdlog::warn("{}: {} {} waits {} ms, as asked", var_, what, ino, ms_);
    std::this_thread::sleep_for(std::chrono::milliseconds(ms_));
  }

 private:
  const char* var_;
  int ms_;
};

}  // namespace cshm::fs
