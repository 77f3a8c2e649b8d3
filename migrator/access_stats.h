// Decaying access rates, like openMosix's decaying statistics: each node's
// faults and write-backs served for a segment, as pages per second with an
// exponential decay of a configurable half-life. Pure; the clock is passed in.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace cshm::migrator {

constexpr uint32_t kMaxNodes = 64;

class AccessStats {
 public:
  explicit AccessStats(double half_life_s = 5.0) : half_life_s_(half_life_s) {}

  void Add(uint32_t node, double pages, double now_s);
  // Pages per second of `node`, decayed to `now_s`.
  double Rate(uint32_t node, double now_s) const;
  std::array<double, kMaxNodes> Rates(double now_s) const;
  // "node=rate ..." for the nodes with a rate above 0.01/s.
  std::string Describe(double now_s) const;
  void Reset();

 private:
  // The value is a decayed count; count * ln2 / half_life is the rate.
  double Decayed(uint32_t node, double now_s) const;
  double half_life_s_;
  std::array<double, kMaxNodes> count_{};
  std::array<double, kMaxNodes> at_{};
};

}  // namespace cshm::migrator
