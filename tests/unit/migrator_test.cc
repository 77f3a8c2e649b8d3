#include <gtest/gtest.h>

#include <cmath>

#include "migrator/access_stats.h"
#include "migrator/policy.h"

namespace cshm::migrator {
namespace {

TEST(AccessStats, RatesDecayWithTheHalfLife) {
  AccessStats s(2.0);
  // 100 pages/s for 20 s reaches the steady rate of 100/s.
  for (int i = 0; i < 200; i++) s.Add(3, 10, i * 0.1);
  EXPECT_NEAR(s.Rate(3, 20.0), 100.0, 5.0);
  EXPECT_NEAR(s.Rate(3, 22.0), 50.0, 3.0);  // one half-life later
  EXPECT_NEAR(s.Rate(3, 24.0), 25.0, 2.0);
  EXPECT_EQ(s.Rate(1, 20.0), 0.0);
  EXPECT_NE(s.Describe(20.0).find("node3="), std::string::npos);
  EXPECT_EQ(AccessStats().Describe(0), "idle");
}

// Several nodes, added out of order, keep their own rates; a node idle for
// many half-lives is pruned, and a segment nobody touched is idle.
TEST(AccessStats, NodesAreKeptApartAndIdleOnesArePruned) {
  AccessStats s(1.0);
  s.Add(9, 100, 0);
  s.Add(2, 10, 0);
  s.Add(5, 1, 0);
  EXPECT_NEAR(s.Rate(9, 0), 100 * std::log(2.0), 1e-9);
  EXPECT_NEAR(s.Rate(2, 0), 10 * std::log(2.0), 1e-9);
  auto r = s.Rates(0);
  EXPECT_NEAR(r[5], std::log(2.0), 1e-9);
  EXPECT_EQ(r[3], 0.0);
  EXPECT_EQ(s.Describe(0), "node2=6.9 node5=0.7 node9=69.3");
  EXPECT_FALSE(s.Prune(8));    // node 9: 100/256 pages left; the others are gone
  EXPECT_EQ(s.Rate(5, 8), 0.0);
  EXPECT_GT(s.Rate(9, 8), 0.0);
  EXPECT_TRUE(s.Prune(20));    // nothing left
  EXPECT_EQ(s.Describe(20), "idle");
  s.Add(9, 1, 21);
  EXPECT_NEAR(s.Rate(9, 21), std::log(2.0), 1e-9);
  EXPECT_TRUE(AccessStats().Prune(0));
}

std::array<double, kMaxNodes> Rates(std::initializer_list<std::pair<uint32_t, double>> r) {
  std::array<double, kMaxNodes> out{};
  for (auto [n, v] : r) out[n] = v;
  return out;
}

TEST(Policy, MovesToADominantNode) {
  PolicyConfig c;
  EXPECT_EQ(ChooseTarget(c, 0, Rates({{2, 500}, {0, 10}}), false, 100), 2u);
  // Not dominant enough over the owner's own use plus others.
  EXPECT_EQ(ChooseTarget(c, 0, Rates({{2, 500}, {0, 200}, {1, 100}}), false, 100), std::nullopt);
  // Too little traffic to bother.
  EXPECT_EQ(ChooseTarget(c, 0, Rates({{2, 20}}), false, 100), std::nullopt);
  // The owner is the busiest: stay.
  EXPECT_EQ(ChooseTarget(c, 0, Rates({{0, 500}, {2, 10}}), false, 100), std::nullopt);
}

TEST(Policy, PinAndCooldownHold) {
  PolicyConfig c;
  EXPECT_EQ(ChooseTarget(c, 0, Rates({{2, 500}}), /*pinned=*/true, 100), std::nullopt);
  EXPECT_EQ(ChooseTarget(c, 0, Rates({{2, 500}}), false, /*since=*/c.cooldown_s - 1), std::nullopt);
}

TEST(Policy, EvenAlternationDoesNotPingPong) {
  // Two nodes taking turns every second, 200 pages each turn, for 10 minutes
  // of simulated time: count the moves.
  PolicyConfig c;
  AccessStats s(c.half_life_s);
  uint32_t owner = 0;
  double last_move = -1e9;
  int moves = 0;
  for (double t = 0; t < 600; t += c.check_interval_s) {
    const uint32_t active = (static_cast<int>(t) % 2 == 0) ? 1 : 2;
    s.Add(active, 200 * c.check_interval_s, t);
    auto target = ChooseTarget(c, owner, s.Rates(t), false, t - last_move);
    if (target) {
      owner = *target;
      last_move = t;
      moves++;
    }
  }
  EXPECT_LE(moves, 1) << "moves in 10 minutes of even alternation";
}

}  // namespace
}  // namespace cshm::migrator
