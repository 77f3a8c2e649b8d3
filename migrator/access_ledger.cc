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

AccessLedger::Entry& AccessLedger::At(Stripe& s, uint64_t ino) {
  return s.entries.try_emplace(ino, half_life_s_).first->second;
}

void AccessLedger::Served(uint64_t ino, uint32_t node, uint64_t pages) {
  const double now = now_();
  Stripe& s = StripeOf(ino);
  MutexLock lock(&s.mu);
  At(s, ino).stats.Add(node, static_cast<double>(pages), now);
}

void AccessLedger::Moved(uint64_t ino, bool away) {
  const double now = now_();
  Stripe& s = StripeOf(ino);
  MutexLock lock(&s.mu);
  if (away) {
    s.entries.erase(ino);  // served elsewhere: its new owner counts from zero
    return;
  }
  At(s, ino).moved_at = now;
}

void AccessLedger::Forget(uint64_t ino) {
  Stripe& s = StripeOf(ino);
  MutexLock lock(&s.mu);
  s.entries.erase(ino);
}

std::vector<std::pair<uint64_t, uint32_t>> AccessLedger::Candidates(const PolicyConfig& policy, uint32_t owner) {
  const double now = now_();
  std::vector<std::pair<uint64_t, uint32_t>> out;
  // A stripe at a time: a fetch on the I/O thread waits at most for one.
  for (Stripe& s : stripes_) {
    MutexLock lock(&s.mu);
    for (auto it = s.entries.begin(); it != s.entries.end();) {
      Entry& e = it->second;
      const double since = now - e.moved_at;
      if (e.stats.Prune(now)) {  // idle: most segments
        if (since >= policy.cooldown_s) {
          it = s.entries.erase(it);
        } else {
          ++it;  // keep the cooldown of a move that just ended
        }
        continue;
      }
      if (auto target = ChooseTarget(policy, owner, e.stats.Rates(now), since)) out.emplace_back(it->first, *target);
      ++it;
    }
  }
  return out;
}

std::string AccessLedger::Describe(uint64_t ino) {
  const double now = now_();
  Stripe& s = StripeOf(ino);
  MutexLock lock(&s.mu);
  auto it = s.entries.find(ino);
  return it == s.entries.end() ? AccessStats().Describe(now) : it->second.stats.Describe(now);
}

size_t AccessLedger::tracked() {
  size_t n = 0;
  for (Stripe& s : stripes_) {
    MutexLock lock(&s.mu);
    n += s.entries.size();
  }
  return n;
}

}  // namespace cshm::migrator
