#include "fs/twin_cache.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "tests/support/temp_dir.h"

namespace cshm::fs {
namespace {

using store::kPageSize;

class TwinCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = TwinCache::Open(dir_ / "twins");
    ASSERT_TRUE(t.ok()) << t.status().message();
    twins_ = std::move(*t);
  }
  testing::TempDir dir_;
  std::unique_ptr<TwinCache> twins_;
};

TEST_F(TwinCacheTest, ADropAfterANotifyKeepsTwinsStoredSinceItsMark) {
  ASSERT_TRUE(twins_->Put(7, 0, std::string(2 * kPageSize, 'a')).ok());  // pages 0 and 1 fetched
  const uint64_t mark = twins_->Mark();                // a notify starts
  ASSERT_TRUE(twins_->Put(7, kPageSize, std::string(kPageSize, 'b')).ok());  // page 1 fetched again meanwhile
  twins_->Drop(7, ownership::Range{0, 0}, mark);       // the notify is done
  EXPECT_FALSE(twins_->Has(7, 0));
  ASSERT_TRUE(twins_->Has(7, 1));
  EXPECT_EQ(*twins_->Get(7, 1), std::string(kPageSize, 'b'));
  twins_->Drop(7, ownership::Range{0, 0});  // without a mark: everything
  EXPECT_FALSE(twins_->Has(7, 1));
}

TEST_F(TwinCacheTest, APatchedTwinKeepsItsAgeAndAPartialPatchCreatesNone) {
  ASSERT_TRUE(twins_->Put(7, 0, std::string(kPageSize, 'a')).ok());
  const uint64_t mark = twins_->Mark();
  twins_->Patch(7, 10, "xyz");                                  // the kernel wrote back part of page 0
  twins_->Patch(7, 3 * kPageSize + 5, "q");                     // part of a page without a twin: none made
  twins_->Patch(7, kPageSize, std::string(kPageSize, 'w'));     // a whole page: a new twin
  EXPECT_EQ(twins_->Get(7, 0)->substr(9, 5), "axyza");
  EXPECT_FALSE(twins_->Has(7, 3));
  twins_->Drop(7, ownership::Range{0, 0}, mark);
  EXPECT_FALSE(twins_->Has(7, 0));  // stored before the mark, patched after: still dropped
  EXPECT_TRUE(twins_->Has(7, 1));   // made after the mark
  // With whole_pages off (the owner's own pages), nothing new is made.
  twins_->Patch(7, 5 * kPageSize, std::string(kPageSize, 'o'), /*whole_pages=*/false);
  EXPECT_FALSE(twins_->Has(7, 5));
}

// The kernel forgot the inode: its twins go, and their file with the last
// one, except a twin stored after the mark (a new lookup and fault since).
// And a write on the owner, which patches no twin, makes no twin file.
TEST_F(TwinCacheTest, AForgottenInodeLosesItsTwinsButNotOnesStoredSince) {
  auto files = [&] {
    size_t n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir_ / "twins")) n++;
    return n;
  };
  ASSERT_TRUE(twins_->Put(7, 0, std::string(kPageSize, 'a')).ok());
  const uint64_t mark = twins_->Mark();  // the forget
  ASSERT_TRUE(twins_->Put(7, kPageSize, std::string(kPageSize, 'b')).ok());  // faulted in again since
  twins_->DropInodeUpTo(7, mark);
  EXPECT_FALSE(twins_->Has(7, 0));
  ASSERT_TRUE(twins_->Has(7, 1));
  EXPECT_EQ(*twins_->Get(7, 1), std::string(kPageSize, 'b'));
  EXPECT_EQ(files(), 1u);
  twins_->DropInodeUpTo(7, twins_->Mark());
  EXPECT_FALSE(twins_->Has(7, 1));
  EXPECT_EQ(files(), 0u) << "the twin file outlived its last twin";
  twins_->Patch(9, 100, "x", /*whole_pages=*/false);  // the owner's write
  EXPECT_EQ(files(), 0u) << "a write that patches no twin made a twin file";
}

}  // namespace
}  // namespace cshm::fs
