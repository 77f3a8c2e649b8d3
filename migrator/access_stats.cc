#include "migrator/access_stats.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace cshm::migrator {

namespace {
constexpr double kNegligible = 0.01;  // pages
}

double AccessStats::Decayed(const Entry& e, double now_s) const {
  const double dt = now_s - e.at;
  if (dt <= 0) return e.count;
  return e.count * std::exp2(-dt / half_life_s_);
}

const AccessStats::Entry* AccessStats::Find(uint32_t node) const {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), node,
                             [](const Entry& e, uint32_t n) { return e.node < n; });
  return it != entries_.end() && it->node == node ? &*it : nullptr;
}

void AccessStats::Add(uint32_t node, double pages, double now_s) {
  if (node >= kMaxNodes) return;
  auto it = std::lower_bound(entries_.begin(), entries_.end(), node,
                             [](const Entry& e, uint32_t n) { return e.node < n; });
  if (it == entries_.end() || it->node != node) it = entries_.insert(it, Entry{node, 0, now_s});
  it->count = Decayed(*it, now_s) + pages;
  it->at = now_s;
}

double AccessStats::Rate(uint32_t node, double now_s) const {
  const Entry* e = Find(node);
  return e ? Decayed(*e, now_s) * std::log(2.0) / half_life_s_ : 0;
}

std::array<double, kMaxNodes> AccessStats::Rates(double now_s) const {
  std::array<double, kMaxNodes> r{};
  for (const Entry& e : entries_) r[e.node] = Decayed(e, now_s) * std::log(2.0) / half_life_s_;
  return r;
}

std::string AccessStats::Describe(double now_s) const {
  std::string out;
  for (const Entry& e : entries_) {
    const double r = Rate(e.node, now_s);
    if (r < 0.01) continue;
    char buf[48];
    snprintf(buf, sizeof(buf), "%snode%u=%.1f", out.empty() ? "" : " ", e.node, r);
    out += buf;
  }
  return out.empty() ? "idle" : out;
}

void AccessStats::Reset() { std::vector<Entry>().swap(entries_); }

bool AccessStats::Prune(double now_s) {
  std::erase_if(entries_, [&](const Entry& e) { return Decayed(e, now_s) < kNegligible; });
  if (entries_.empty()) std::vector<Entry>().swap(entries_);  // give the memory back
  return entries_.empty();
}

}  // namespace cshm::migrator
