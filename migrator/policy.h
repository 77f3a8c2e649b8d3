// When to move a segment (DESIGN.md "Migration"): to node X when X's rate
// dominates everyone else's, the owner's own local traffic included, by
// `ratio`, X's rate is at least `min_rate`, and the last move was at least
// `cooldown_s` ago. (A pinned segment never moves on its own: the owner
// refuses, OwnedSegments::MayMove.) The cooldown and the ratio together
// stop two nodes that alternate evenly from bouncing the segment. Pure.
#pragma once

#include <array>
#include <cstdint>
#include <optional>

#include "migrator/access_stats.h"

namespace cshm::migrator {

struct PolicyConfig {
  double half_life_s = 5.0;
  double ratio = 2.0;        // X's rate >= ratio * (sum of all other rates)
  double min_rate = 50.0;    // pages per second
  double cooldown_s = 10.0;  // between two moves of one segment
  double check_interval_s = 0.5;
};

std::optional<uint32_t> ChooseTarget(const PolicyConfig& config, uint32_t owner,
                                     const std::array<double, kMaxNodes>& rates, double since_last_move_s);

}  // namespace cshm::migrator
