// The owner side of the protocol, without a network: copysets, merges and
// who must be invalidated.
#include "ownership/owned_segments.h"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/temp_dir.h"

namespace cshm::ownership {
namespace {

using cshm::testing::TempDir;
using store::kPageSize;

class OwnedSegmentsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pages_ = std::move(*store::PageStore::Open(dir_ / "pages", 1 << 30));
    owned_ = std::make_unique<OwnedSegments>(pages_.get(), 0,
                                             [](uint64_t) -> Result<SegmentInfo> { return SegmentInfo{0, 0, false}; });
  }
  std::string Fetch(uint32_t node, uint64_t off, uint64_t len, uint64_t ino = 7) {
    uint64_t size = 0;
    std::string out(len, '\0');
    auto r = owned_->Fetch(ino, node, off, len, out.data(), &size);
    EXPECT_TRUE(r.ok()) << r.status().message();
    out.resize(r.ok() ? *r : 0);
    return out;
  }
  TempDir dir_;
  std::unique_ptr<store::PageStore> pages_;
  std::unique_ptr<OwnedSegments> owned_;
};

TEST_F(OwnedSegmentsTest, FetchJoinsTheCopysetAndWriteInvalidatesOthers) {
  ASSERT_TRUE(owned_->Apply(7, 0, {WriteRun{0, std::string(3 * kPageSize, 'a')}}).ok());
  EXPECT_EQ(Fetch(1, 0, 2 * kPageSize), std::string(2 * kPageSize, 'a'));
  EXPECT_EQ(Fetch(2, kPageSize, kPageSize), std::string(kPageSize, 'a'));
  // The writer (node 0) holds what it wrote; the fetchers joined.
  EXPECT_EQ(owned_->CopysetOf(7, 0), 0b011u);
  EXPECT_EQ(owned_->CopysetOf(7, 1), 0b111u);
  // Node 2 writes page 1: nodes 0 and 1 must drop it; node 2 keeps its copy.
  auto out = owned_->Apply(7, 2, {WriteRun{kPageSize + 5, "xy"}});
  ASSERT_TRUE(out.ok());
  ASSERT_EQ(out->invalidate.size(), 2u);
  EXPECT_EQ(out->invalidate.at(0), (std::vector<Range>{Range{kPageSize, kPageSize}}));
  EXPECT_EQ(out->invalidate.at(1), (std::vector<Range>{Range{kPageSize, kPageSize}}));
  EXPECT_EQ(owned_->CopysetOf(7, 1), 0b100u);
  EXPECT_EQ(owned_->CopysetOf(7, 0), 0b011u);  // untouched page keeps its copyset
  EXPECT_EQ(Fetch(1, kPageSize, 8), "aaaaaxya");
}

// A late write-back (kept after it failed) lands only on pages that still
// hold what its writer diffed against; the others keep their newer bytes, and
// every node caching a touched page, the writer too, must drop it.
TEST_F(OwnedSegmentsTest, ALateWriteLandsOnlyOnPagesUnchangedSinceItsTwin) {
  ASSERT_TRUE(owned_->Apply(7, 0, {WriteRun{0, std::string(2 * kPageSize, '.')}}).ok());
  const std::string twin(kPageSize, '.');
  EXPECT_EQ(Fetch(1, 0, 2 * kPageSize), std::string(2 * kPageSize, '.'));
  EXPECT_EQ(Fetch(2, 0, 2 * kPageSize), std::string(2 * kPageSize, '.'));
  // Node 2 changes page 1 after node 1 fetched it (an acknowledged write).
  ASSERT_TRUE(owned_->Apply(7, 2, {WriteRun{kPageSize + 10, "FRESH"}}).ok());
  EXPECT_EQ(Fetch(2, 0, 2 * kPageSize).substr(kPageSize + 10, 5), "FRESH");
  // Node 1's write of both pages, made before and delivered late.
  const std::vector<WriteRun> late{WriteRun{5, "STALE"}, WriteRun{kPageSize + 8, "STALE-STALE"}};
  const std::vector<PageExpect> expect{PageExpect{0, PageHash(twin)}, PageExpect{1, PageHash(twin)}};
  auto out = owned_->Apply(7, 1, late, /*wait=*/true, &expect);
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_EQ(out->dropped, 1u);
  const std::string now = Fetch(0, 0, 2 * kPageSize);
  EXPECT_EQ(now.substr(5, 5), "STALE");                 // page 0 had not changed: it lands
  EXPECT_EQ(now.substr(kPageSize + 8, 11), "..FRESH....");  // page 1 had: the newer bytes stay
  // Page 0 changed: every node caching it drops it, the late writer too (its
  // kernel may not hold what landed). Page 1 is not cached by node 1 any
  // more (node 2's write took it away) and did not change.
  EXPECT_EQ(out->invalidate.size(), 3u);
  for (uint32_t n : {0u, 1u, 2u}) EXPECT_EQ(out->invalidate.at(n), (std::vector<Range>{Range{0, kPageSize}})) << n;
  // A page without an expectation is not written late at all.
  const std::vector<PageExpect> nothing;
  auto none = owned_->Apply(7, 1, {WriteRun{0, "X"}}, true, &nothing);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->dropped, 1u);
  EXPECT_EQ(Fetch(0, 0, 1), ".");
  // Delivered twice (its first answer lost): the second finds the page changed by the first.
  const std::vector<PageExpect> again{PageExpect{0, PageHash(twin)}};
  auto first = owned_->Apply(7, 1, {WriteRun{kPageSize - 1, "!"}}, true, &again);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->dropped, 1u) << "page 0 changed when STALE landed";
}

TEST_F(OwnedSegmentsTest, InterleavedRunsFromTwoWritersBothSurvive) {
  ASSERT_TRUE(owned_->Apply(7, 0, {WriteRun{0, std::string(2 * kPageSize, '.')}}).ok());
  std::vector<WriteRun> a, b;
  for (uint64_t i = 0; i < 2 * kPageSize; i += 2) a.push_back(WriteRun{i, "A"});
  for (uint64_t i = 1; i < 2 * kPageSize; i += 2) b.push_back(WriteRun{i, "B"});
  ASSERT_TRUE(owned_->Apply(7, 1, a).ok());
  ASSERT_TRUE(owned_->Apply(7, 2, b).ok());
  std::string want;
  for (uint64_t i = 0; i < kPageSize; i++) want += "AB";
  EXPECT_EQ(Fetch(0, 0, 2 * kPageSize), want);
}

TEST_F(OwnedSegmentsTest, WritesGrowAndFetchStopsAtTheSize) {
  auto out = owned_->Apply(7, 0, {WriteRun{10, "hello"}});
  ASSERT_TRUE(out.ok());
  EXPECT_TRUE(out->grew);
  EXPECT_EQ(out->size, 15u);
  EXPECT_EQ(Fetch(1, 0, 100).size(), 15u);
  EXPECT_EQ(Fetch(1, 100, 10), "");
}

TEST_F(OwnedSegmentsTest, ShrinkDropsPagesEverywhereButTheTruncatingNode) {
  ASSERT_TRUE(owned_->Apply(7, 0, {WriteRun{0, std::string(4 * kPageSize, 'q')}}).ok());
  Fetch(1, 0, 4 * kPageSize);
  Fetch(2, 3 * kPageSize, kPageSize);
  auto out = owned_->Truncate(7, 1, kPageSize + 10);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->invalidate.count(1), 0u);
  ASSERT_EQ(out->invalidate.count(2), 1u);
  EXPECT_EQ(out->invalidate.at(2), (std::vector<Range>{Range{kPageSize, 0}}));
  EXPECT_EQ(owned_->CopysetOf(7, 0), 0b011u);  // page 0 stays cached (writer 0, fetcher 1)
  // Growing again reads zeros past the old end.
  ASSERT_TRUE(owned_->Truncate(7, 1, 2 * kPageSize).ok());
  EXPECT_EQ(Fetch(1, kPageSize + 10, 4), std::string(4, '\0'));
}

TEST_F(OwnedSegmentsTest, AFetchThatMustNotWaitIsBusyInsteadOfWaiting) {
  char buf[3];
  uint64_t size = 0;
  // Not loaded yet (loading may ask the network): busy.
  auto r = owned_->Fetch(7, 1, 0, 3, buf, &size, /*wait=*/false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kBusy);
  ASSERT_TRUE(owned_->Apply(7, 0, {WriteRun{0, "abc"}}).ok());
  r = owned_->Fetch(7, 1, 0, 3, buf, &size, /*wait=*/false);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::string(buf, *r), "abc");
  EXPECT_EQ(owned_->CopysetOf(7, 0), 0b011u);  // it joined the copyset like any fetch
  // Frozen (a migration): busy at once, where a waiting fetch would wait.
  ASSERT_TRUE(owned_->Freeze(7).ok());
  r = owned_->Fetch(7, 2, 0, 3, buf, &size, /*wait=*/false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kBusy);
  owned_->Unfreeze(7, 2u);
  r = owned_->Fetch(7, 2, 0, 3, buf, &size, /*wait=*/false);
  EXPECT_EQ(MovedTo(r.status()), 2u);
}

TEST_F(OwnedSegmentsTest, AnApplyThatMustNotWaitRefusesToGrowTheSegmentAndWritesNothing) {
  ASSERT_TRUE(owned_->Apply(7, 0, {WriteRun{0, "abcdef"}}).ok());
  auto inside = owned_->Apply(7, 1, {WriteRun{1, "XY"}}, /*wait=*/false);
  ASSERT_TRUE(inside.ok()) << inside.status().message();
  EXPECT_EQ(inside->size, 6u);
  auto grows = owned_->Apply(7, 1, {WriteRun{0, "zz"}, WriteRun{5, "long"}}, /*wait=*/false);
  ASSERT_FALSE(grows.ok());
  EXPECT_EQ(grows.status().code(), Status::Code::kBusy);
  EXPECT_EQ(Fetch(2, 0, 100), "aXYdef");  // not even the first run was written
}

TEST_F(OwnedSegmentsTest, FreezeHoldsRequestsAndAMoveForwardsThem) {
  ASSERT_TRUE(owned_->Apply(7, 0, {WriteRun{0, "abc"}}).ok());
  auto snap = owned_->Freeze(7);
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->size, 3u);
  // A request during the freeze waits, and learns where the segment went.
  std::atomic<bool> done{false};
  Status seen;
  std::thread t([&] {
    uint64_t size;
    char buf[3];
    seen = owned_->Fetch(7, 1, 0, 3, buf, &size).status();
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(done);  // still held by the freeze
  owned_->Unfreeze(7, 2u);
  t.join();
  EXPECT_EQ(seen.code(), Status::Code::kMoved);
  EXPECT_EQ(MovedTo(seen), 2u);
  EXPECT_EQ(MovedTo(seen.Annotate("node 3")), 2u) << "the node is a field, not the message";
  EXPECT_EQ(MovedTo(Status::Error(Status::Code::kMoved, "moved to node 12")), std::nullopt)
      << "a message that says a node names none";
  // A failed move serves again.
  ASSERT_TRUE(owned_->Apply(8, 0, {WriteRun{0, "x"}}).ok());
  ASSERT_TRUE(owned_->Freeze(8).ok());
  owned_->Unfreeze(8, std::nullopt);
  EXPECT_EQ(Fetch(1, 0, 1, /*ino=*/8), "x");
}

// What the owner reports to the migrator (AccessObserver), as a log.
class RecordingObserver : public AccessObserver {
 public:
  void Served(uint64_t ino, uint32_t node, uint64_t pages) override {
    log.push_back("served " + std::to_string(ino) + " node" + std::to_string(node) + " " + std::to_string(pages));
  }
  void Moved(uint64_t ino, bool away) override { log.push_back("moved " + std::to_string(ino) + (away ? " away" : " here")); }
  void Forget(uint64_t ino) override { log.push_back("forget " + std::to_string(ino)); }
  std::vector<std::string> log;
};

TEST_F(OwnedSegmentsTest, TheObserverSeesEveryPageServedAndEveryMove) {
  RecordingObserver seen;
  owned_->SetAccessObserver(&seen);
  ASSERT_TRUE(owned_->Apply(7, 1, {WriteRun{0, std::string(3 * kPageSize, 'z')}}).ok());
  Fetch(3, kPageSize, 2 * kPageSize);
  Fetch(3, 10 * kPageSize, kPageSize);  // past the end: nothing served
  ASSERT_TRUE(owned_->Freeze(7).ok());
  owned_->Unfreeze(7, std::nullopt);  // a move that failed
  ASSERT_TRUE(owned_->Freeze(7).ok());
  owned_->Unfreeze(7, 2);
  owned_->Install(9, SegmentSnapshot{kPageSize, {}, false});
  ASSERT_TRUE(owned_->Remove(9).ok());
  EXPECT_EQ(seen.log, (std::vector<std::string>{"served 7 node1 3", "served 7 node3 2", "moved 7 here", "moved 7 away",
                                                "moved 9 here", "forget 9"}));
  owned_->SetAccessObserver(nullptr);
}

TEST_F(OwnedSegmentsTest, OnlyAServedUnpinnedSegmentMayMoveOnItsOwn) {
  EXPECT_FALSE(owned_->MayMove(7)) << "never touched here";
  ASSERT_TRUE(owned_->Apply(7, 0, {WriteRun{0, "z"}}).ok());
  EXPECT_TRUE(owned_->MayMove(7));
  ASSERT_TRUE(owned_->SetPinned(7, true).ok());
  EXPECT_FALSE(owned_->MayMove(7)) << "pinned";
  EXPECT_NE(owned_->Describe(7)->find("pinned=1"), std::string::npos);
  ASSERT_TRUE(owned_->SetPinned(7, false).ok());
  ASSERT_TRUE(owned_->Freeze(7).ok());
  EXPECT_FALSE(owned_->MayMove(7)) << "frozen by a move";
  owned_->Unfreeze(7, 2);
  EXPECT_FALSE(owned_->MayMove(7)) << "served elsewhere now";
}

TEST_F(OwnedSegmentsTest, ADroppedNodeIsNeverInvalidated) {
  ASSERT_TRUE(owned_->Apply(7, 0, {WriteRun{0, "x"}}).ok());
  Fetch(3, 0, 1);
  owned_->DropNode(3);
  auto out = owned_->Apply(7, 0, {WriteRun{0, "y"}});
  ASSERT_TRUE(out.ok());
  EXPECT_TRUE(out->invalidate.empty());
}


// A write-back whose writer keeps its copy (WriteBackRequest::keeps_copy)
// but is not in the page's copyset any more (its copy was counted gone)
// drops that copy: it may miss bytes others wrote. Counted, it would stay.
// One the writer is counted in, or a write(2), keeps the writer's copy.
TEST_F(OwnedSegmentsTest, AnUncountedCopyThatIsWrittenBackIsDropped) {
  ASSERT_TRUE(owned_->Apply(7, 0, {WriteRun{0, std::string(2 * kPageSize, '.')}}).ok());
  Fetch(1, 0, 2 * kPageSize);
  owned_->DropNode(1);  // node 1's copies counted gone; its kernel still holds them
  auto out = owned_->Apply(7, 1, {WriteRun{3, "x"}}, true, nullptr, /*writer_keeps=*/true);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->invalidate.at(1), (std::vector<Range>{Range{0, kPageSize}}));
  EXPECT_EQ(owned_->CopysetOf(7, 0), 0u);  // node 0 dropped it too, as for any write
  EXPECT_EQ(Fetch(2, 0, 4), "...x");       // the bytes landed
  // Node 2 is counted now: its write-back keeps its copy.
  out = owned_->Apply(7, 2, {WriteRun{4, "y"}}, true, nullptr, /*writer_keeps=*/true);
  ASSERT_TRUE(out.ok());
  EXPECT_FALSE(out->invalidate.contains(2));
  EXPECT_EQ(owned_->CopysetOf(7, 0), 0b100u);
  // A write(2) (writer_keeps false) of page 1 by uncounted node 1 enters it.
  out = owned_->Apply(7, 1, {WriteRun{kPageSize, "z"}});
  ASSERT_TRUE(out.ok());
  EXPECT_FALSE(out->invalidate.contains(1));
  EXPECT_EQ(owned_->CopysetOf(7, 1), 0b010u);
}

// The pages a node's copies are not counted on, as ranges (the last open).
TEST_F(OwnedSegmentsTest, PagesNotCachedByANodeAreTheRangesItsBitIsClearIn) {
  ASSERT_TRUE(owned_->Apply(7, 0, {WriteRun{0, std::string(4 * kPageSize, '.')}}).ok());
  Fetch(1, kPageSize, 2 * kPageSize);  // pages 1 and 2
  EXPECT_EQ(owned_->PagesNotCachedBy(7, 1), (std::vector<Range>{Range{0, kPageSize}, Range{3 * kPageSize, 0}}));
  EXPECT_EQ(owned_->PagesNotCachedBy(7, 0), (std::vector<Range>{Range{4 * kPageSize, 0}}));
  EXPECT_EQ(owned_->PagesNotCachedBy(7, 2), (std::vector<Range>{Range{0, 0}}));
  EXPECT_EQ(owned_->PagesNotCachedBy(99, 0), (std::vector<Range>{Range{0, 0}}));  // not served here
  // Frozen for a move: the target's copysets may be the ones that count.
  ASSERT_TRUE(owned_->Freeze(7).ok());
  EXPECT_EQ(owned_->PagesNotCachedBy(7, 1), (std::vector<Range>{Range{0, 0}}));
  owned_->Unfreeze(7, std::nullopt);
  EXPECT_EQ(owned_->PagesNotCachedBy(7, 0), (std::vector<Range>{Range{4 * kPageSize, 0}}));
}
// Requests for segments owned elsewhere leave forwarding entries. Seen
// before: one for every segment ever asked about, for ever. They are bounded,
// and a dropped one answers kMoved again (the metadata node names the owner).
TEST(OwnedSegmentsForwarding, ForwardingEntriesAreBoundedAndStillForward) {
  TempDir dir;
  auto pages = std::move(*store::PageStore::Open(dir / "pages", 1 << 30));
  OwnedSegments owned(pages.get(), 0, [](uint64_t) -> Result<SegmentInfo> { return SegmentInfo{0, 1, false}; });
  constexpr uint64_t kAsked = 10000;
  for (uint64_t ino = 1; ino <= kAsked; ino++) {
    uint64_t size = 0;
    char b[8];
    auto r = owned.Fetch(ino, 2, 0, sizeof(b), b, &size);
    ASSERT_EQ(r.status().code(), Status::Code::kMoved) << ino;
  }
  EXPECT_LE(owned.segment_count(), 4097u);
  uint64_t size = 0;
  char b[8];
  auto again = owned.Fetch(1, 2, 0, sizeof(b), b, &size);  // its entry was dropped long ago
  EXPECT_EQ(again.status().code(), Status::Code::kMoved);
  EXPECT_EQ(MovedTo(again.status()), std::optional<uint32_t>(1));
}

}  // namespace
}  // namespace cshm::ownership
