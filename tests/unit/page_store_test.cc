#include "store/page_store.h"

#include <fcntl.h>
#include <unistd.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "tests/support/temp_dir.h"

namespace cshm::store {
namespace {

using cshm::testing::TempDir;

TEST(PageStore, ReadsBackWritesAndZeroesHoles) {
  TempDir dir;
  auto ps = PageStore::Open(dir / "pages", 1 << 20);
  ASSERT_TRUE(ps.ok());
  auto seg = (*ps)->Get(7);
  ASSERT_TRUE(seg.ok());
  MutexLock lock(&(*seg)->mu());
  ASSERT_TRUE((*seg)->Write(10000, "abc", 3).ok());
  std::string buf(10010, 'x');
  ASSERT_TRUE((*seg)->Read(0, buf.size(), buf.data()).ok());
  EXPECT_EQ(buf.substr(10000, 3), "abc");
  EXPECT_EQ(buf.substr(0, 10000), std::string(10000, '\0'));
  EXPECT_EQ(buf.substr(10003), std::string(7, '\0'));  // past the backing file's end
}

TEST(PageStore, SendToHandsOverTheFileRangeOnlyIfTheFileHoldsItAll) {
  TempDir dir;
  auto ps = PageStore::Open(dir / "pages", 1 << 20);
  ASSERT_TRUE(ps.ok());
  auto seg = *(*ps)->Get(7);
  {
    MutexLock lock(&seg->mu());
    ASSERT_TRUE(seg->Write(5000, "spliced", 7).ok());
  }
  std::string got;
  int calls = 0;
  FileSink sink = [&](int fd, uint64_t off, size_t len) -> Status {
    calls++;
    got.assign(len, '?');
    if (pread(fd, got.data(), len, static_cast<off_t>(off)) != static_cast<ssize_t>(len)) return IoError("pread");
    return Status::Ok();
  };
  auto sent = seg->SendTo(5000, 7, sink);
  ASSERT_TRUE(sent.ok());
  EXPECT_TRUE(*sent);
  EXPECT_EQ(got, "spliced");
  // Past the file's end (bytes that read as zero): not handed over.
  sent = seg->SendTo(5000, 8, sink);
  ASSERT_TRUE(sent.ok());
  EXPECT_FALSE(*sent);
  EXPECT_EQ(calls, 1);
  // The sink's error is the caller's.
  FileSink failing = [](int, uint64_t, size_t) { return IoError("the reply failed"); };
  EXPECT_EQ(seg->SendTo(0, 10, failing).status().code(), Status::Code::kIo);
}

TEST(PageStore, SparseWritesCostOnlyTheirPages) {
  TempDir dir;
  auto ps = PageStore::Open(dir / "pages", 1 << 20);
  ASSERT_TRUE(ps.ok());
  auto seg = *(*ps)->Get(7);
  MutexLock lock(&seg->mu());
  ASSERT_TRUE(seg->Write(100 << 20, "x", 1).ok());  // far beyond the cap, but one page
  EXPECT_EQ((*ps)->used(), kPageSize);
}

TEST(PageStore, CapRefusesWritesThatAllocateAndAllowsOverwrites) {
  TempDir dir;
  auto ps = PageStore::Open(dir / "pages", 4 * kPageSize);
  ASSERT_TRUE(ps.ok());
  auto seg = *(*ps)->Get(7);
  MutexLock lock(&seg->mu());
  std::string page(kPageSize, 'a');
  for (int i = 0; i < 4; i++) ASSERT_TRUE(seg->Write(i * kPageSize, page.data(), page.size()).ok());
  Status full = seg->Write(4 * kPageSize, page.data(), page.size());
  EXPECT_EQ(full.code(), Status::Code::kNoSpace);
  EXPECT_EQ(full.ToErrno(), ENOSPC);
  // Nothing was written by the refused write.
  std::string tail(kPageSize, 'x');
  ASSERT_TRUE(seg->Read(4 * kPageSize, tail.size(), tail.data()).ok());
  EXPECT_EQ(tail, std::string(kPageSize, '\0'));
  // Overwriting allocated pages needs no space.
  EXPECT_TRUE(seg->Write(kPageSize + 5, "zz", 2).ok());
  // Shrinking gives space back.
  ASSERT_TRUE(seg->Truncate(2 * kPageSize).ok());
  EXPECT_EQ((*ps)->used(), 2 * kPageSize);
  EXPECT_TRUE(seg->Write(2 * kPageSize, page.data(), page.size()).ok());
}

TEST(PageStore, RemoveFreesSpaceAndUsageSurvivesReopen) {
  TempDir dir;
  {
    auto ps = PageStore::Open(dir / "pages", 1 << 20);
    ASSERT_TRUE(ps.ok());
    for (uint64_t ino : {1, 2}) {
      auto seg = *(*ps)->Get(ino);
      MutexLock lock(&seg->mu());
      std::string d(3 * kPageSize, 'q');
      ASSERT_TRUE(seg->Write(0, d.data(), d.size()).ok());
    }
    EXPECT_EQ((*ps)->used(), 6 * kPageSize);
    ASSERT_TRUE((*ps)->Remove(1).ok());
    EXPECT_EQ((*ps)->used(), 3 * kPageSize);
  }
  auto ps = PageStore::Open(dir / "pages", 1 << 20);
  ASSERT_TRUE(ps.ok());
  EXPECT_EQ((*ps)->used(), 3 * kPageSize);
}

TEST(PageStore, AllocateReservesAndPunchFrees) {
  TempDir dir;
  auto ps = PageStore::Open(dir / "pages", 8 * kPageSize);
  ASSERT_TRUE(ps.ok());
  auto seg = *(*ps)->Get(3);
  MutexLock lock(&seg->mu());
  ASSERT_TRUE(seg->Allocate(0, 0, 4 * kPageSize).ok());
  EXPECT_EQ((*ps)->used(), 4 * kPageSize);
  EXPECT_EQ(seg->Allocate(0, 4 * kPageSize, 5 * kPageSize).code(), Status::Code::kNoSpace);
  ASSERT_TRUE(seg->Allocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 2 * kPageSize).ok());
  EXPECT_EQ((*ps)->used(), 2 * kPageSize);
  EXPECT_EQ(seg->Allocate(FALLOC_FL_COLLAPSE_RANGE, 0, kPageSize).code(), Status::Code::kNotSupported);
}

// fio preallocates its file and then writes it page by page: at the cap every
// write lands in a block the allocation already holds and needs no space.
TEST(PageStore, WritesIntoPreallocatedBlocksSucceedAtTheCap) {
  TempDir dir;
  auto ps = PageStore::Open(dir / "pages", 4 * kPageSize);
  ASSERT_TRUE(ps.ok());
  auto seg = *(*ps)->Get(5);
  MutexLock lock(&seg->mu());
  ASSERT_TRUE(seg->Allocate(0, 0, 4 * kPageSize).ok());  // posix_fallocate, as fio does
  ASSERT_EQ((*ps)->used(), 4 * kPageSize);
  std::string page(kPageSize, 'p');
  for (int i = 3; i >= 0; i--) ASSERT_TRUE(seg->Write(i * kPageSize, page.data(), page.size()).ok()) << i;
  EXPECT_EQ((*ps)->used(), 4 * kPageSize);
  EXPECT_EQ(seg->Write(4 * kPageSize, "x", 1).code(), Status::Code::kNoSpace);
  // A write straddling an allocated and a new block needs the new one only.
  ASSERT_TRUE(seg->Allocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 3 * kPageSize, kPageSize).ok());
  EXPECT_TRUE(seg->Write(3 * kPageSize - 1, "ab", 2).ok());
  EXPECT_EQ((*ps)->used(), 4 * kPageSize);
}

size_t OpenDescriptors() {
  size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) n++;
  return n;
}

// A node owns many more segments than it may hold descriptors (seen before:
// one descriptor per segment for ever, EMFILE at RLIMIT_NOFILE/2 segments):
// descriptors are opened on use and the least recently used are closed.
TEST(PageStore, DescriptorsAreBoundedAndEverySegmentStillReadsBack) {
  TempDir dir;
  auto ps = PageStore::Open(dir / "pages", PageStore::kUnlimited, /*max_open=*/4);
  ASSERT_TRUE(ps.ok());
  const size_t before = OpenDescriptors();
  std::vector<std::shared_ptr<Segment>> held;  // callers keep segments, not descriptors
  for (uint64_t ino = 1; ino <= 200; ino++) {
    auto seg = (*ps)->Get(ino);
    ASSERT_TRUE(seg.ok()) << seg.status().ToString();
    const std::string data = "segment " + std::to_string(ino);
    MutexLock lock(&(*seg)->mu());
    ASSERT_TRUE((*seg)->Write(0, data.data(), data.size()).ok());
    held.push_back(*seg);
  }
  EXPECT_LE((*ps)->open_files(), 4u);
  EXPECT_LE(OpenDescriptors(), before + 4);
  for (uint64_t ino = 1; ino <= 200; ino++) {
    const std::string want = "segment " + std::to_string(ino);
    std::string got(want.size(), '\0');
    ASSERT_TRUE(held[ino - 1]->Read(0, got.size(), got.data()).ok());
    EXPECT_EQ(got, want);
  }
  EXPECT_LE(OpenDescriptors(), before + 4);
  held.clear();
  EXPECT_EQ(OpenDescriptors(), before + (*ps)->open_files());
}

// A descriptor handed to a sink stays open while the sink uses it, though
// other segments evict it meanwhile.
TEST(PageStore, ADescriptorInUseOutlivesItsEviction) {
  TempDir dir;
  auto ps = PageStore::Open(dir / "pages", PageStore::kUnlimited, /*max_open=*/1);
  ASSERT_TRUE(ps.ok());
  auto a = *(*ps)->Get(1);
  {
    MutexLock lock(&a->mu());
    ASSERT_TRUE(a->Write(0, "aaaa", 4).ok());
  }
  std::string got;
  auto sent = a->SendTo(0, 4, [&](int fd, uint64_t off, size_t len) {
    auto b = (*ps)->Get(2);  // evicts a's descriptor from the cache
    if (!b.ok()) return b.status();
    got.resize(len);
    if (pread(fd, got.data(), len, static_cast<off_t>(off)) != static_cast<ssize_t>(len))
      return Status::FromErrno(errno, "pread in the sink");
    return Status::Ok();
  });
  ASSERT_TRUE(sent.ok()) << sent.status().ToString();
  EXPECT_TRUE(*sent);
  EXPECT_EQ(got, "aaaa");
  EXPECT_EQ((*ps)->open_files(), 1u);
}

// After Remove, a holder's later use fails instead of creating the file again.
TEST(PageStore, ARemovedSegmentIsNotCreatedAgainByAHolder) {
  TempDir dir;
  auto ps = PageStore::Open(dir / "pages", PageStore::kUnlimited, /*max_open=*/1);
  ASSERT_TRUE(ps.ok());
  auto a = *(*ps)->Get(1);
  ASSERT_TRUE((*ps)->Remove(1).ok());
  ASSERT_TRUE((*ps)->Get(2).ok());  // evicts a's descriptor
  MutexLock lock(&a->mu());
  EXPECT_EQ(a->Write(0, "x", 1).code(), Status::Code::kNotFound);
  size_t files = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir / "pages")) files++;
  EXPECT_EQ(files, 1u) << "the removed segment's file was created again";
}

}  // namespace
}  // namespace cshm::store
