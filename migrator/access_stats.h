// Decaying access rates, like openMosix's decaying statistics: each node's
// faults and write-backs served for a segment, as pages per second with an
// exponential decay of a configurable half-life. Pure; the clock is passed in.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace cshm::migrator {

constexpr uint32_t kMaxNodes = 64;

// Sparse: only the nodes that accessed the segment recently cost memory
// (a node owns up to a million segments; a dense table per segment cost 1 KiB).
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
  // Forgets the nodes whose decayed count fell below a hundredth of a page;
  // true if none is left (the segment is idle: no policy would move it).
  bool Prune(double now_s);

 private:
  struct Entry {
    uint32_t node;
    double count;  // decayed; count * ln2 / half_life is the rate
    double at;
  };
  double Decayed(const Entry& e, double now_s) const;
  const Entry* Find(uint32_t node) const;
  double half_life_s_;
  std::vector<Entry> entries_;  // by node
};

}  // namespace cshm::migrator
