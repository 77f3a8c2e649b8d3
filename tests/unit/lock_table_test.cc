#include "ownership/lock_table.h"

#include <gtest/gtest.h>

namespace cshm::ownership {
namespace {

Lock L(int type, uint64_t start, uint64_t end, uint32_t node, uint64_t owner, bool flock = false) {
  return Lock{type, start, end, 100 + node, LockOwner{node, owner}, flock};
}

TEST(LockTable, WritersExcludeEveryoneReadersShare) {
  LockTable t;
  EXPECT_TRUE(t.TrySet(1, L(F_RDLCK, 0, 99, 0, 1)));
  EXPECT_TRUE(t.TrySet(1, L(F_RDLCK, 50, 149, 1, 1)));   // readers share
  EXPECT_FALSE(t.TrySet(1, L(F_WRLCK, 90, 95, 2, 1)));   // a writer does not
  auto c = t.Conflict(1, L(F_WRLCK, 120, 130, 2, 1));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->who.node, 1u);
  EXPECT_TRUE(t.TrySet(1, L(F_WRLCK, 150, kLockEof, 2, 1)));  // disjoint
  EXPECT_TRUE(t.TrySet(2, L(F_WRLCK, 0, kLockEof, 2, 1)));    // another inode
}

TEST(LockTable, SameOwnerNeverConflictsAndUpgradesInPlace) {
  LockTable t;
  EXPECT_TRUE(t.TrySet(1, L(F_RDLCK, 0, 99, 0, 7)));
  EXPECT_TRUE(t.TrySet(1, L(F_WRLCK, 10, 19, 0, 7)));  // upgrade part of it
  auto locks = t.Locks(1);
  ASSERT_EQ(locks.size(), 3u);  // read 0-9, write 10-19, read 20-99
  // Same owner id on another node is another owner.
  EXPECT_FALSE(t.TrySet(1, L(F_WRLCK, 0, 0, 1, 7)));
}

TEST(LockTable, UnlockSplitsAndMergesAdjacent) {
  LockTable t;
  EXPECT_TRUE(t.TrySet(1, L(F_WRLCK, 0, 99, 0, 1)));
  t.Unlock(1, LockOwner{0, 1}, false, 40, 59);
  EXPECT_TRUE(t.TrySet(1, L(F_WRLCK, 40, 59, 1, 1)));   // the hole is free
  EXPECT_FALSE(t.TrySet(1, L(F_WRLCK, 39, 39, 1, 1)));  // the rest is not
  t.Unlock(1, LockOwner{1, 1}, false, 0, kLockEof);
  EXPECT_TRUE(t.TrySet(1, L(F_WRLCK, 40, 59, 0, 1)));   // merges 0-39, 40-59, 60-99
  EXPECT_EQ(t.Locks(1).size(), 1u);
  t.Unlock(1, LockOwner{0, 1}, false, 0, kLockEof);
  EXPECT_TRUE(t.Locks(1).empty());
}

TEST(LockTable, FlockAndPosixLocksAreIndependent) {
  LockTable t;
  EXPECT_TRUE(t.TrySet(1, L(F_WRLCK, 0, kLockEof, 0, 1, /*flock=*/true)));
  EXPECT_TRUE(t.TrySet(1, L(F_WRLCK, 0, kLockEof, 1, 1, /*flock=*/false)));
  EXPECT_FALSE(t.TrySet(1, L(F_RDLCK, 0, kLockEof, 1, 2, /*flock=*/true)));
  t.Unlock(1, LockOwner{0, 1}, true, 0, kLockEof);
  EXPECT_TRUE(t.TrySet(1, L(F_RDLCK, 0, kLockEof, 1, 2, /*flock=*/true)));
}

TEST(LockTable, ADeadNodesLocksGo) {
  LockTable t;
  EXPECT_TRUE(t.TrySet(1, L(F_WRLCK, 0, kLockEof, 2, 1)));
  EXPECT_TRUE(t.TrySet(3, L(F_WRLCK, 0, 10, 2, 9, true)));
  EXPECT_TRUE(t.TrySet(3, L(F_RDLCK, 0, 10, 1, 9)));
  t.ReleaseNode(2);
  EXPECT_TRUE(t.TrySet(1, L(F_WRLCK, 0, kLockEof, 0, 1)));
  EXPECT_EQ(t.Locks(3).size(), 1u);
}

}  // namespace
}  // namespace cshm::ownership
