#include "migrator/policy.h"

namespace cshm::migrator {

std::optional<uint32_t> ChooseTarget(const PolicyConfig& config, uint32_t owner,
                                     const std::array<double, kMaxNodes>& rates, double since_last_move_s) {
  if (since_last_move_s < config.cooldown_s) return std::nullopt;
  uint32_t best = owner;
  double total = 0;
  for (uint32_t n = 0; n < kMaxNodes; n++) {
    total += rates[n];
    if (rates[n] > rates[best]) best = n;
  }
  if (best == owner) return std::nullopt;
  const double others = total - rates[best];
  if (rates[best] < config.min_rate || rates[best] < config.ratio * others) return std::nullopt;
  return best;
}

}  // namespace cshm::migrator
