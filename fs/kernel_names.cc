#include "fs/kernel_names.h"

#include <algorithm>

namespace cshm::fs {

void KernelNames::Asking(uint64_t parent, std::string_view name, std::chrono::milliseconds cache) {
  if (cache.count() == 0) return;
  const Clock::time_point now = Clock::now();
  const Clock::time_point until = now + cache + kMargin;
  MutexLock lock(&mu_);
  auto c = contended_.find(parent);
  if (c != contended_.end()) {
    if (c->second > now) return;
    contended_.erase(c);
  }
  NoteLocked(parent, name, until, now);
}

void KernelNames::Moved(uint64_t parent, std::string_view name, std::chrono::milliseconds cache) {
  if (cache.count() == 0) return;
  const Clock::time_point now = Clock::now();
  MutexLock lock(&mu_);
  NoteLocked(parent, name, now + cache + kMargin, now);
}

void KernelNames::NoteLocked(uint64_t parent, std::string_view name, Clock::time_point until, Clock::time_point now) {
  auto [it, added] = until_.try_emplace({parent, std::string(name)}, until);
  if (!added) it->second = std::max(it->second, until);
  if (until_.size() >= prune_at_) PruneLocked(now);
}

void KernelNames::Contended(uint64_t dir) {
  const Clock::time_point until = Clock::now() + kContended;
  MutexLock lock(&mu_);
  contended_[dir] = until;
  if (contended_.size() >= prune_at_) PruneLocked(Clock::now());
}

KernelNames::Clock::time_point KernelNames::HeldUntil(uint64_t parent, std::string_view name) {
  MutexLock lock(&mu_);
  auto it = until_.find({parent, std::string(name)});
  return it == until_.end() ? Clock::time_point{} : it->second;
}

void KernelNames::PruneLocked(Clock::time_point now) {
  std::erase_if(until_, [now](const auto& e) { return e.second <= now; });
  std::erase_if(contended_, [now](const auto& e) { return e.second <= now; });
  // Amortised: the next prune when the live names have doubled.
  prune_at_ = std::max<size_t>(1024, 2 * std::max(until_.size(), contended_.size()));
}

}  // namespace cshm::fs
