#include "ownership/semaphore_table.h"

#include <gtest/gtest.h>
#include <sys/sem.h>

#include <cerrno>

#include "ownership/messages.h"

namespace cshm::ownership {
namespace {

constexpr uint64_t kIno = 7;
const SemProcess kA{1, 100, 5000}, kB{2, 200, 6000};

SemOpBuf Op(uint16_t num, int16_t op, int16_t flg = 0) { return SemOpBuf{num, op, flg}; }

int Errno(const Status& s) { return s.ok() ? 0 : s.system_errno(); }

class SemaphoreTableTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(t_.Create(kIno, 3, 1000).ok()); }
  int Val(uint32_t num) { return *t_.GetVal(kIno, num); }
  SemaphoreTable t_;
  std::vector<SemCompleted> done_;
};

TEST_F(SemaphoreTableTest, AnOperationAppliesAllOfItsStepsOrNone) {
  EXPECT_EQ(Errno(t_.Op(kIno, kA, {Op(0, 2)}, 0, 1001, &done_)), 0);
  // The second step cannot proceed: the first is not applied either.
  EXPECT_EQ(t_.Op(kIno, kA, {Op(0, -1), Op(1, -1)}, 0, 1002, &done_).code(), Status::Code::kWouldBlock);
  EXPECT_EQ(Val(0), 2);
  EXPECT_EQ(Errno(t_.Op(kIno, kA, {Op(0, -1), Op(1, -1, IPC_NOWAIT)}, 0, 1002, &done_)), EAGAIN);
  EXPECT_EQ(Errno(t_.Op(kIno, kA, {Op(0, kSemVmx)}, 0, 1002, &done_)), ERANGE);
  EXPECT_EQ(Errno(t_.Op(kIno, kA, {Op(3, 1)}, 0, 1002, &done_)), EFBIG);
  EXPECT_EQ(Errno(t_.Op(kIno + 1, kA, {Op(0, 1)}, 0, 1002, &done_)), EINVAL);
  EXPECT_EQ(Val(0), 2);
  EXPECT_EQ(*t_.GetPid(kIno, 0), 100);
  EXPECT_EQ(t_.Stat(kIno)->otime, 1001);
  EXPECT_EQ(t_.Stat(kIno)->ctime, 1000);
  EXPECT_TRUE(done_.empty());
}

TEST_F(SemaphoreTableTest, WaitersAreRetriedInOrderUntilNoneCanProceed) {
  // B waits for 2, A for 1, then a zero-waiter on semaphore 0.
  EXPECT_EQ(t_.Op(kIno, kB, {Op(0, -2)}, 11, 1, &done_).code(), Status::Code::kWouldBlock);
  EXPECT_EQ(t_.Op(kIno, kA, {Op(0, -1)}, 12, 1, &done_).code(), Status::Code::kWouldBlock);
  ASSERT_EQ(done_.size(), 0u);
  EXPECT_EQ(*t_.GetNcnt(kIno, 0), 2);
  // A post of 1 lets the second waiter in, not the first.
  EXPECT_TRUE(t_.Op(kIno, kA, {Op(0, 1)}, 0, 2, &done_).ok());
  ASSERT_EQ(done_.size(), 1u);
  EXPECT_EQ(done_[0].token, 12u);
  // A post of 2 lets B in.
  done_.clear();
  EXPECT_TRUE(t_.Op(kIno, kA, {Op(0, 2)}, 0, 3, &done_).ok());
  ASSERT_EQ(done_.size(), 1u);
  EXPECT_EQ(done_[0].token, 11u);
  EXPECT_EQ(done_[0].node, 2u);
  EXPECT_EQ(*t_.GetNcnt(kIno, 0), 0);
  EXPECT_EQ(Val(0), 0);
}

TEST_F(SemaphoreTableTest, AWaitForZeroIsCountedAndWokenWhenTheValueReachesZero) {
  ASSERT_TRUE(t_.SetVal(kIno, kA, 2, 1, 5, &done_).ok());
  EXPECT_EQ(t_.Op(kIno, kB, {Op(2, 0)}, 21, 6, &done_).code(), Status::Code::kWouldBlock);
  EXPECT_EQ(*t_.GetZcnt(kIno, 2), 1);
  EXPECT_EQ(*t_.GetNcnt(kIno, 2), 0);
  EXPECT_TRUE(t_.Queued(kIno, 2, 21));
  EXPECT_TRUE(t_.Op(kIno, kA, {Op(2, -1)}, 0, 7, &done_).ok());
  ASSERT_EQ(done_.size(), 1u);
  EXPECT_EQ(done_[0].token, 21u);
  EXPECT_FALSE(t_.Queued(kIno, 2, 21));
}

TEST_F(SemaphoreTableTest, ACancelledWaiterIsNeverApplied) {
  EXPECT_EQ(t_.Op(kIno, kB, {Op(0, -1)}, 31, 1, &done_).code(), Status::Code::kWouldBlock);
  EXPECT_TRUE(t_.Cancel(kIno, 2, 31));
  EXPECT_FALSE(t_.Cancel(kIno, 2, 31));
  EXPECT_TRUE(t_.Op(kIno, kA, {Op(0, 1)}, 0, 2, &done_).ok());
  EXPECT_TRUE(done_.empty());
  EXPECT_EQ(Val(0), 1);
}

TEST_F(SemaphoreTableTest, UndoIsAppliedAtExitClampedAndClearedBySetval) {
  ASSERT_TRUE(t_.SetVal(kIno, kA, 0, 1, 1, &done_).ok());
  EXPECT_TRUE(t_.Op(kIno, kA, {Op(0, -1, SEM_UNDO), Op(1, 3, SEM_UNDO)}, 0, 2, &done_).ok());
  EXPECT_EQ(t_.SetsWithUndo(kA), std::vector<uint64_t>{kIno});
  EXPECT_TRUE(t_.SetsWithUndo(SemProcess{2, 100, 5000}).empty());
  // Another process takes 2 of semaphore 1: at A's exit it cannot go below 0.
  EXPECT_TRUE(t_.Op(kIno, kB, {Op(1, -2)}, 0, 3, &done_).ok());
  t_.Exited(kA, 4, &done_);
  EXPECT_EQ(Val(0), 1);
  EXPECT_EQ(Val(1), 0);  // 1 - 3, clamped
  EXPECT_EQ(*t_.GetPid(kIno, 1), 100);
  EXPECT_TRUE(t_.SetsWithUndo(kA).empty());
  // SETVAL clears the semaphore's adjustments: an exit after it changes nothing.
  EXPECT_TRUE(t_.Op(kIno, kB, {Op(0, -1, SEM_UNDO)}, 0, 5, &done_).ok());
  ASSERT_TRUE(t_.SetVal(kIno, kA, 0, 4, 6, &done_).ok());
  t_.Exited(kB, 7, &done_);
  EXPECT_EQ(Val(0), 4);
  // An adjustment past SEMVMX is refused, and changes nothing.
  ASSERT_TRUE(t_.SetVal(kIno, kA, 2, kSemVmx, 8, &done_).ok());
  EXPECT_TRUE(t_.Op(kIno, kA, {Op(2, -kSemVmx, SEM_UNDO)}, 0, 9, &done_).ok());  // adjustment +32767
  EXPECT_TRUE(t_.Op(kIno, kA, {Op(2, 1)}, 0, 9, &done_).ok());
  EXPECT_EQ(Errno(t_.Op(kIno, kA, {Op(2, -1, SEM_UNDO)}, 0, 9, &done_)), ERANGE);
  EXPECT_EQ(Val(2), 1);
}

// A pid is used again once its process is gone: the later process's
// adjustments are its own, and the earlier one's exit does not undo them.
TEST_F(SemaphoreTableTest, APidUsedAgainNamesAnotherProcessWithItsOwnAdjustments) {
  const SemProcess again{kA.node, kA.pid, kA.start + 100};
  ASSERT_TRUE(t_.SetVal(kIno, kB, 0, 5, 1, &done_).ok());
  EXPECT_TRUE(t_.Op(kIno, kA, {Op(0, -1, SEM_UNDO)}, 0, 2, &done_).ok());
  EXPECT_TRUE(t_.Op(kIno, again, {Op(0, -2, SEM_UNDO)}, 0, 3, &done_).ok());
  EXPECT_EQ(Val(0), 2);
  t_.Exited(kA, 4, &done_);
  EXPECT_EQ(Val(0), 3) << "the first process's exit gave back more than it took";
  EXPECT_EQ(t_.SetsWithUndo(again), std::vector<uint64_t>{kIno});
  t_.Exited(again, 5, &done_);
  EXPECT_EQ(Val(0), 5);
}

// A process that exits while its operation waits never has it applied (as
// the kernel: a killed process's semop is gone with it), so no adjustment
// of it can appear after its exit, when nothing would undo it.
TEST_F(SemaphoreTableTest, AnExitedProcessesWaitersGoWithIt) {
  EXPECT_EQ(t_.Op(kIno, kB, {Op(0, -1, SEM_UNDO)}, 31, 1, &done_).code(), Status::Code::kWouldBlock);
  t_.Exited(kB, 2, &done_);
  EXPECT_FALSE(t_.Queued(kIno, kB.node, 31));
  EXPECT_TRUE(t_.Op(kIno, kA, {Op(0, 1)}, 0, 3, &done_).ok());
  EXPECT_TRUE(done_.empty());
  EXPECT_EQ(Val(0), 1) << "the exited process's operation was applied";
  EXPECT_TRUE(t_.SetsWithUndo(kB).empty());
}

TEST_F(SemaphoreTableTest, AGoneNodeGivesBackWhatItsProcessesHeldAndItsWaitersGo) {
  ASSERT_TRUE(t_.SetVal(kIno, kA, 0, 1, 1, &done_).ok());
  EXPECT_TRUE(t_.Op(kIno, kB, {Op(0, -1, SEM_UNDO)}, 0, 2, &done_).ok());  // node 2 holds it
  EXPECT_EQ(t_.Op(kIno, SemProcess{2, 201}, {Op(0, -1)}, 41, 3, &done_).code(), Status::Code::kWouldBlock);
  EXPECT_EQ(t_.Op(kIno, kA, {Op(0, -1)}, 42, 3, &done_).code(), Status::Code::kWouldBlock);
  t_.DropNode(2, 4, &done_);
  // Node 2's waiter is not answered (nobody to tell); node 1's gets the value back.
  ASSERT_EQ(done_.size(), 1u);
  EXPECT_EQ(done_[0].token, 42u);
  EXPECT_EQ(done_[0].node, 1u);
  EXPECT_EQ(Val(0), 0);
}

TEST_F(SemaphoreTableTest, RemovalFailsEveryWaiterWithEidrm) {
  EXPECT_EQ(t_.Op(kIno, kB, {Op(0, -1)}, 51, 1, &done_).code(), Status::Code::kWouldBlock);
  EXPECT_TRUE(t_.Remove(kIno, &done_).ok());
  ASSERT_EQ(done_.size(), 1u);
  EXPECT_EQ(done_[0].err, EIDRM);
  EXPECT_FALSE(t_.Has(kIno));
  EXPECT_EQ(Errno(t_.Op(kIno, kA, {Op(0, 1)}, 0, 2, &done_)), EINVAL);
  EXPECT_EQ(Errno(t_.Remove(kIno, &done_)), EINVAL);
}

TEST_F(SemaphoreTableTest, SetallChecksEveryValueAndWakes) {
  EXPECT_EQ(t_.Op(kIno, kB, {Op(1, -2)}, 61, 1, &done_).code(), Status::Code::kWouldBlock);
  EXPECT_EQ(Errno(t_.SetAll(kIno, kA, {1, 2}, 2, &done_)), EINVAL);
  EXPECT_EQ(Errno(t_.SetAll(kIno, kA, {1, 2, kSemVmx + 1}, 2, &done_)), ERANGE);
  EXPECT_TRUE(done_.empty());
  EXPECT_TRUE(t_.SetAll(kIno, kA, {1, 2, 3}, 2, &done_).ok());
  ASSERT_EQ(done_.size(), 1u);
  EXPECT_EQ(*t_.GetAll(kIno), (std::vector<uint16_t>{1, 0, 3}));
  EXPECT_EQ(t_.Stat(kIno)->ctime, 2);
}

TEST_F(SemaphoreTableTest, TheSavedStateComesBackWithItsAdjustmentsAndGarbageIsRefused) {
  ASSERT_TRUE(t_.SetAll(kIno, kA, {5, 6, 7}, 3, &done_).ok());
  EXPECT_TRUE(t_.Op(kIno, kB, {Op(2, -2, SEM_UNDO)}, 0, 4, &done_).ok());
  const std::string saved = t_.Encode(kIno);
  SemaphoreTable back;
  ASSERT_TRUE(back.Load(kIno, saved).ok());
  EXPECT_EQ(*back.GetAll(kIno), (std::vector<uint16_t>{5, 6, 5}));
  EXPECT_EQ(*back.GetPid(kIno, 2), 200);
  EXPECT_EQ(back.Stat(kIno)->otime, 4);
  back.Exited(SemProcess{kB.node, kB.pid, kB.start + 1}, 5, &done_);  // another process with B's pid
  EXPECT_EQ(*back.GetVal(kIno, 2), 5);
  back.Exited(kB, 5, &done_);
  EXPECT_EQ(*back.GetVal(kIno, 2), 7);  // the adjustment survived, B's own
  EXPECT_FALSE(back.Load(9, saved.substr(0, saved.size() - 1)).ok());
  EXPECT_FALSE(back.Load(9, saved + "x").ok());
  EXPECT_FALSE(back.Load(9, "garbage").ok());
  EXPECT_FALSE(back.Has(9));
  EXPECT_TRUE(t_.Encode(99).empty());
}

TEST(SemMessagesTest, RoundTripAndRefuseWhatIsNotOne) {
  SemRequest r;
  r.kind = SemKind::kOp;
  r.ino = 42;
  r.token = 9;
  r.pid = 1234;
  r.start = 987654321;
  r.cmd = SETALL;
  r.num = 3;
  r.value = -5;
  r.ops = {SemOpBuf{1, -2, SEM_UNDO}, SemOpBuf{0, 0, IPC_NOWAIT}};
  r.values = {1, 2, 3};
  auto back = SemRequest::Decode(r.Encode());
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->kind, SemKind::kOp);
  EXPECT_EQ(back->ino, 42u);
  EXPECT_EQ(back->token, 9u);
  EXPECT_EQ(back->pid, 1234);
  EXPECT_EQ(back->start, 987654321u);
  EXPECT_EQ(back->value, -5);
  ASSERT_EQ(back->ops.size(), 2u);
  EXPECT_EQ(back->ops[0].op, -2);
  EXPECT_EQ(back->ops[0].flg, SEM_UNDO);
  EXPECT_EQ(back->values, r.values);
  const std::string bytes = r.Encode();
  EXPECT_FALSE(SemRequest::Decode(bytes.substr(0, bytes.size() - 1)).ok());
  EXPECT_FALSE(SemRequest::Decode(bytes + "x").ok());
  // A node of the version before sends no start time: 0.
  auto older = SemRequest::Decode(bytes.substr(0, bytes.size() - 8));
  ASSERT_TRUE(older.ok()) << older.status().message();
  EXPECT_EQ(older->start, 0u);
  EXPECT_EQ(older->values, r.values);
  std::string bad_kind = bytes;
  bad_kind[0] = 9;
  EXPECT_FALSE(SemRequest::Decode(bad_kind).ok());

  SemReply rep{SemState::kQueued, EIDRM, 17, 3, 100, 200, {4, 5}};
  auto rb = SemReply::Decode(rep.Encode());
  ASSERT_TRUE(rb.ok());
  EXPECT_EQ(rb->state, SemState::kQueued);
  EXPECT_EQ(rb->err, EIDRM);
  EXPECT_EQ(rb->result, 17);
  EXPECT_EQ(rb->values, rep.values);
  EXPECT_FALSE(SemReply::Decode(rep.Encode() + "x").ok());

  SemWake w{1, 2, EIDRM};
  auto wb = SemWake::Decode(w.Encode());
  ASSERT_TRUE(wb.ok());
  EXPECT_EQ(wb->token, 2u);
  EXPECT_EQ(wb->err, EIDRM);
  EXPECT_FALSE(SemWake::Decode("short").ok());
}

}  // namespace
}  // namespace cshm::ownership
