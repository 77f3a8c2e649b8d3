#include <gtest/gtest.h>

#include <cmath>

#include "migrator/access_ledger.h"
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
  EXPECT_EQ(ChooseTarget(c, 0, Rates({{2, 500}, {0, 10}}), 100), 2u);
  // Not dominant enough over the owner's own use plus others.
  EXPECT_EQ(ChooseTarget(c, 0, Rates({{2, 500}, {0, 200}, {1, 100}}), 100), std::nullopt);
  // Too little traffic to bother.
  EXPECT_EQ(ChooseTarget(c, 0, Rates({{2, 20}}), 100), std::nullopt);
  // The owner is the busiest: stay.
  EXPECT_EQ(ChooseTarget(c, 0, Rates({{0, 500}, {2, 10}}), 100), std::nullopt);
}

TEST(Policy, CooldownHolds) {
  PolicyConfig c;
  EXPECT_EQ(ChooseTarget(c, 0, Rates({{2, 500}}), /*since=*/c.cooldown_s - 1), std::nullopt);
  EXPECT_EQ(ChooseTarget(c, 0, Rates({{2, 500}}), /*since=*/c.cooldown_s), 2u);
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
    auto target = ChooseTarget(c, owner, s.Rates(t), t - last_move);
    if (target) {
      owner = *target;
      last_move = t;
      moves++;
    }
  }
  EXPECT_LE(moves, 1) << "moves in 10 minutes of even alternation";
}

class AccessLedgerTest : public ::testing::Test {
 protected:
  AccessLedgerTest() {
    policy_.cooldown_s = 10;
    policy_.min_rate = 50;
  }
  // 100 pages a second by `node` for `seconds`, in steps of a tenth.
  void Serve(uint64_t ino, uint32_t node, double seconds) {
    for (double t = 0; t < seconds; t += 0.1) {
      ledger_.Served(ino, node, 10);
      now_ += 0.1;
    }
  }
  double now_ = 1000;
  PolicyConfig policy_;
  AccessLedger ledger_{2.0, [this] { return now_; }};
};

TEST_F(AccessLedgerTest, ProposesTheNodeThatDominates) {
  Serve(8, 0, 10);  // the owner's own: stays
  Serve(7, 3, 10);
  EXPECT_EQ(ledger_.Candidates(policy_, 0), (std::vector<std::pair<uint64_t, uint32_t>>{{7, 3}}));
  EXPECT_NE(ledger_.Describe(7).find("node3="), std::string::npos);
  EXPECT_EQ(ledger_.Describe(9), "idle");
}

TEST_F(AccessLedgerTest, AMoveEndingHereStartsTheCooldown) {
  Serve(7, 3, 10);
  ledger_.Moved(7, /*away=*/false);  // arrived, or a move that failed
  EXPECT_TRUE(ledger_.Candidates(policy_, 0).empty()) << "within the cooldown";
  now_ += policy_.cooldown_s;
  Serve(7, 3, 2);
  EXPECT_EQ(ledger_.Candidates(policy_, 0).size(), 1u) << "after it";
}

TEST_F(AccessLedgerTest, AMoveAwayOrARemovalForgetsTheSegment) {
  Serve(7, 3, 10);
  Serve(8, 3, 10);
  ledger_.Moved(7, /*away=*/true);
  ledger_.Forget(8);
  EXPECT_TRUE(ledger_.Candidates(policy_, 0).empty());
  EXPECT_EQ(ledger_.tracked(), 0u);
}

TEST_F(AccessLedgerTest, IdleSegmentsCostNothingOnceTheirCooldownIsOver) {
  Serve(7, 3, 1);
  ledger_.Moved(8, /*away=*/false);
  now_ += 60;  // 30 half-lives: both decayed away; 8's cooldown not yet over
  policy_.cooldown_s = 100;
  EXPECT_TRUE(ledger_.Candidates(policy_, 0).empty());
  EXPECT_EQ(ledger_.tracked(), 1u) << "a move's cooldown is kept while it runs";
  now_ += 100;
  EXPECT_TRUE(ledger_.Candidates(policy_, 0).empty());
  EXPECT_EQ(ledger_.tracked(), 0u);
}

}  // namespace
}  // namespace cshm::migrator
