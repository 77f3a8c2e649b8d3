// DelaySeam: a wait that a test places where it widens a race (fs's
// TestSeams, the move's chunks), saying so in the log. Off (0 ms) by default.
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <thread>

namespace cshm {

// Waits `ms` where it is placed, saying so in the log.
class DelaySeam {
 public:
  DelaySeam() = default;
  DelaySeam(const char* name, int ms) : name_(name), ms_(ms) {}
  void At(const char* what, uint64_t ino) const {
    if (ms_ <= 0) return;
    spdlog::warn("{}: {} {} waits {} ms, as asked", name_, what, ino, ms_);
    std::this_thread::sleep_for(std::chrono::milliseconds(ms_));
  }

 private:
  const char* name_ = "";
  int ms_ = 0;
};

}  // namespace cshm
