// AccessLedger: where the segments this node owns should live. It watches the
// owner side (an ownership::AccessObserver: every page served, every move that
// ended) and keeps, per segment, decaying access rates (AccessStats) and when
// its last move ended; Candidates applies the policy (ChooseTarget) to them.
// It proposes; the owner disposes (OwnedSegments::MayMove: not pinned, not
// frozen, still served here), so migrator/ depends on ownership/ and not the
// reverse. A segment nobody uses costs nothing here: its entry goes once its
// rates have decayed away and its cooldown is over.
//
// Thread-safety: all methods are thread-safe. The entries are in stripes by
// inode, each with its own mutex, a leaf: the observer's calls come with a
// segment's lock held (State::mu before a stripe's), on every fetch and
// write-back (the I/O thread's too), so Candidates holds one stripe at a
// time, never the whole ledger; no method calls out while holding one.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/mutex.h"
#include "migrator/access_stats.h"
#include "migrator/policy.h"
#include "ownership/owned_segments.h"

namespace cshm::migrator {

class AccessLedger : public ownership::AccessObserver {
 public:
  // Seconds on a monotonic clock; the steady clock unless a test passes its own.
  using Clock = std::function<double()>;
  explicit AccessLedger(double half_life_s, Clock now = {});

  void Served(uint64_t ino, uint32_t node, uint64_t pages) override;
  void Moved(uint64_t ino, bool away) override;
  void Forget(uint64_t ino) override;

  // (ino, target) for each segment the policy would move from `owner` now.
  std::vector<std::pair<uint64_t, uint32_t>> Candidates(const PolicyConfig& policy, uint32_t owner);
  // "node=rate ..." of one segment ("idle" if nobody used it lately).
  std::string Describe(uint64_t ino);
  size_t tracked();  // segments with an entry

 private:
  struct Entry {
    explicit Entry(double half_life_s) : stats(half_life_s) {}
    AccessStats stats;
    double moved_at = -1e18;  // when its last move here (or a failed one) ended
  };
  struct Stripe {
    Mutex mu;
    std::unordered_map<uint64_t, Entry> entries GUARDED_BY(mu);
  };
  static constexpr size_t kStripes = 16;
  Stripe& StripeOf(uint64_t ino) { return stripes_[ino % kStripes]; }
  Entry& At(Stripe& s, uint64_t ino) REQUIRES(s.mu);

  const double half_life_s_;
  const Clock now_;
  std::array<Stripe, kStripes> stripes_;
};

}  // namespace cshm::migrator
