// The owner side of the protocol, without a network: copysets, merges and
// who must be invalidated.
#include "ownership/owned_segments.h"

#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"

namespace cshm::ownership {
namespace {

using cshm::testing::TempDir;
using store::kPageSize;

class OwnedSegmentsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pages_ = std::move(*store::PageStore::Open(dir_ / "pages", 1 << 30));
    owned_ = std::make_unique<OwnedSegments>(pages_.get(), [](uint64_t) -> Result<uint64_t> { return 0; });
  }
  std::string Fetch(uint32_t node, uint64_t off, uint64_t len) {
    uint64_t size = 0;
    auto r = owned_->Fetch(7, node, off, len, &size);
    EXPECT_TRUE(r.ok()) << r.status().message();
    return r.ok() ? *r : "";
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

TEST_F(OwnedSegmentsTest, ADroppedNodeIsNeverInvalidated) {
  ASSERT_TRUE(owned_->Apply(7, 0, {WriteRun{0, "x"}}).ok());
  Fetch(3, 0, 1);
  owned_->DropNode(3);
  auto out = owned_->Apply(7, 0, {WriteRun{0, "y"}});
  ASSERT_TRUE(out.ok());
  EXPECT_TRUE(out->invalidate.empty());
}

}  // namespace
}  // namespace cshm::ownership
