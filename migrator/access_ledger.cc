#include "migrator/access_ledger.h"

#include <chrono>

namespace cshm::migrator {

namespace {
double SteadySeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

AccessLedger::AccessLedger(double half_life_s, Clock now)
    : half_life_s_(half_life_s), now_(now ? std::move(now) : Clock(SteadySeconds)) {}

AccessLedger::Entry& AccessLedger::At(uint64_t ino) {
  return entries_.try_emplace(ino, half_life_s_).first->second;
}

void AccessLedger::Served(uint64_t ino, uint32_t node, uint64_t pages) {
  const double now = now_();
  MutexLock lock(&mu_);
  At(ino).stats.Add(node, static_cast<double>(pages), now);
}

void AccessLedger::Moved(uint64_t ino, bool away) {
  const double now = now_();
  MutexLock lock(&mu_);
  if (away) {
    entries_.erase(ino);  // served elsewhere: its new owner counts from zero
    return;
  }
  At(ino).moved_at = now;
}

void AccessLedger::Forget(uint64_t ino) {
  MutexLock lock(&mu_);
  entries_.erase(ino);
}

std::vector<std::pair<uint64_t, uint32_t>> AccessLedger::Candidates(const PolicyConfig& policy, uint32_t owner) {
  const double now = now_();
  std::vector<std::pair<uint64_t, uint32_t>> out;
  MutexLock lock(&mu_);
  for (auto it = entries_.begin(); it != entries_.end();) {
    Entry& e = it->second;
    const double since = now - e.moved_at;
    if (e.stats.Prune(now)) {  // idle: most segments
      if (since >= policy.cooldown_s) {
        it = entries_.erase(it);
      } else {
        ++it;  // keep the cooldown of a move that just ended
      }
      continue;
    }
    if (auto target = ChooseTarget(policy, owner, e.stats.Rates(now), since)) out.emplace_back(it->first, *target);
    ++it;
  }
  return out;
}

std::string AccessLedger::Describe(uint64_t ino) {
  const double now = now_();
  MutexLock lock(&mu_);
  auto it = entries_.find(ino);
  return it == entries_.end() ? AccessStats().Describe(now) : it->second.stats.Describe(now);
}

size_t AccessLedger::tracked() {
  MutexLock lock(&mu_);
  return entries_.size();
}

}  // namespace cshm::migrator
