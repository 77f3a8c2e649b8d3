#include "migrator/access_stats.h"

#include <cmath>
#include <cstdio>

namespace cshm::migrator {

double AccessStats::Decayed(uint32_t node, double now_s) const {
  const double dt = now_s - at_[node];
  if (dt <= 0) return count_[node];
  return count_[node] * std::exp2(-dt / half_life_s_);
}

void AccessStats::Add(uint32_t node, double pages, double now_s) {
  if (node >= kMaxNodes) return;
  count_[node] = Decayed(node, now_s) + pages;
  at_[node] = now_s;
}

double AccessStats::Rate(uint32_t node, double now_s) const {
  if (node >= kMaxNodes) return 0;
  return Decayed(node, now_s) * std::log(2.0) / half_life_s_;
}

std::array<double, kMaxNodes> AccessStats::Rates(double now_s) const {
  std::array<double, kMaxNodes> r{};
  for (uint32_t n = 0; n < kMaxNodes; n++) r[n] = Rate(n, now_s);
  return r;
}

std::string AccessStats::Describe(double now_s) const {
  std::string out;
  for (uint32_t n = 0; n < kMaxNodes; n++) {
    const double r = Rate(n, now_s);
    if (r < 0.01) continue;
    char buf[48];
    snprintf(buf, sizeof(buf), "%snode%u=%.1f", out.empty() ? "" : " ", n, r);
    out += buf;
  }
  return out.empty() ? "idle" : out;
}

void AccessStats::Reset() {
  count_.fill(0);
  at_.fill(0);
}

}  // namespace cshm::migrator
