#include "ownership/lock_service.h"

#include <gtest/gtest.h>

namespace cshm::ownership {
namespace {

using Clock = std::chrono::steady_clock;

// An owner (node 0) of a three-node cluster with a fake clock and a
// segment 1 it serves (any other answers kMoved).
struct Owner {
  Clock::time_point now = Clock::time_point{} + std::chrono::hours(1);
  LockService service{[this] {
    LockService::Env env;
    env.self = 0;
    env.peers = {1, 2};
    env.lease = std::chrono::milliseconds(3000);
    env.serving = [](uint64_t ino, bool) { return ino == 1 ? Status::Ok() : Moved(2); };
    env.now = [this] { return now; };
    return env;
  }()};
  Owner() { service.Start(); }
};

LockMessage Set(uint64_t owner, uint64_t seq, int type = F_WRLCK) {
  LockMessage m;
  m.op = LockOp::kSet;
  m.ino = 1;
  m.lock.type = type;
  m.lock.who.owner = owner;
  m.seq = seq;
  return m;
}

TEST(LockService, NoLockIsGrantedUntilEveryOtherNodeGaveUpThePreviousIncarnationsLocks) {
  Owner o;
  auto r = o.service.Serve(1, Set(7, 1), true);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_FALSE(r->granted);
  EXPECT_TRUE(r->grace);
  o.service.Confirmed(1);
  EXPECT_TRUE(o.service.ConfirmedBy(1));
  EXPECT_FALSE(o.service.ConfirmedBy(2));
  EXPECT_TRUE(o.service.Serve(1, Set(7, 2), true)->grace) << "node 2 has not said so yet";
  o.service.Confirmed(2);
  r = o.service.Serve(1, Set(7, 3), true);
  EXPECT_TRUE(r->granted);
  EXPECT_FALSE(r->grace);
}

TEST(LockService, TheGraceEndsAfterALeaseEvenIfANodeNeverSaysSo) {
  Owner o;
  o.service.Confirmed(1);
  o.now += std::chrono::milliseconds(2999);
  EXPECT_TRUE(o.service.Serve(1, Set(7, 1), true)->grace);
  o.now += std::chrono::milliseconds(1);
  EXPECT_TRUE(o.service.Serve(1, Set(7, 2), true)->granted);
}

TEST(LockService, ARequestThatArrivesAfterItsCancelIsRefusedAndANewerOneIsNot) {
  Owner o;
  o.service.Confirmed(1);
  o.service.Confirmed(2);
  LockMessage cancel = Set(7, 0);
  cancel.op = LockOp::kUnlock;
  cancel.cancels = 5;  // request 5 timed out at its asker
  ASSERT_TRUE(o.service.Serve(1, cancel, true).ok());
  EXPECT_FALSE(o.service.Serve(1, Set(7, 5), true)->granted) << "the cancelled request, arriving late";
  EXPECT_FALSE(o.service.Serve(1, Set(7, 4), true)->granted) << "an older one";
  // The same numbers from another node, or of another lock owner, are theirs.
  EXPECT_TRUE(o.service.Serve(1, Set(8, 5, F_RDLCK), true)->granted);
  EXPECT_TRUE(o.service.Serve(2, Set(7, 5, F_RDLCK), true)->granted);
  o.service.ForgetNode(2);
  o.service.ForgetNode(1);
  EXPECT_TRUE(o.service.Serve(1, Set(7, 5), true)->granted) << "a restarted node numbers its requests anew";
}

TEST(LockService, APeerSpeaksForItselfOnlyAndItsLocksGoWhenItIsForgotten) {
  Owner o;
  o.service.Confirmed(1);
  o.service.Confirmed(2);
  LockMessage m = Set(7, 1);
  m.lock.who.node = 2;  // node 1 claims to speak for node 2
  ASSERT_TRUE(o.service.Serve(1, m, true)->granted);
  auto locks = o.service.Locks(1);
  ASSERT_EQ(locks.size(), 1u);
  EXPECT_EQ(locks[0].who.node, 1u);
  EXPECT_FALSE(o.service.Serve(2, Set(9, 1), true)->granted);
  o.service.ForgetNode(2);
  EXPECT_EQ(o.service.Locks(1).size(), 1u) << "node 2 held nothing";
  o.service.ForgetNode(1);
  EXPECT_TRUE(o.service.Locks(1).empty());
  EXPECT_TRUE(o.service.Serve(2, Set(9, 2), true)->granted);
}

TEST(LockService, ASegmentServedElsewhereAnswersBeforeTheTable) {
  Owner o;
  LockMessage m = Set(7, 1);
  m.ino = 5;
  auto r = o.service.Serve(1, m, true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(MovedTo(r.status()), std::optional<uint32_t>(2)) << r.status().message();
}

TEST(LockService, LocksMoveWithTheirSegment) {
  Owner from, to;
  for (Owner* o : {&from, &to}) {
    o->service.Confirmed(1);
    o->service.Confirmed(2);
  }
  ASSERT_TRUE(from.service.Serve(1, Set(7, 1), true)->granted);
  to.service.Replace(1, from.service.Locks(1));
  from.service.Replace(1, {});
  EXPECT_TRUE(from.service.Locks(1).empty());
  EXPECT_FALSE(to.service.Serve(2, Set(9, 1), true)->granted) << "node 1's lock came along";
}

}  // namespace
}  // namespace cshm::ownership
