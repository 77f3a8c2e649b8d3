#include "fs/filesystem.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"

namespace cshm::fs {
namespace {

using cshm::testing::TempDir;
using store::kPageSize;
using store::kRootIno;

class FileSystemTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(64 * kPageSize); }
  void Open(uint64_t cap) {
    fs_.reset();
    FileSystemOptions o;
    o.state_dir = dir_ / "state";
    o.capacity_bytes = cap;
    auto f = FileSystem::Open(o);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    fs_ = std::move(*f);
  }
  uint64_t NewFile(const char* name) {
    return fs_->ns().Mknod(kRootIno, name, S_IFREG | 0644, 0, meta::Caller{})->ino;
  }
  std::string ReadAll(uint64_t ino, uint64_t off, size_t len) {
    std::string buf(len, 'x');
    auto n = fs_->Read(ino, off, len, buf.data());
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    buf.resize(n.ok() ? *n : 0);
    return buf;
  }

  TempDir dir_;
  std::unique_ptr<FileSystem> fs_;
};

TEST_F(FileSystemTest, WriteGrowsAndReadStopsAtEof) {
  uint64_t f = NewFile("f");
  ASSERT_TRUE(fs_->Write(f, 5000, "hello", 5).ok());
  EXPECT_EQ(fs_->ns().GetAttr(f)->size, 5005u);
  EXPECT_EQ(ReadAll(f, 5000, 100), "hello");
  EXPECT_EQ(ReadAll(f, 0, 3), std::string(3, '\0'));
  EXPECT_EQ(ReadAll(f, 9000, 10), "");
}

TEST_F(FileSystemTest, ShrinkThenGrowExposesZeros) {
  uint64_t f = NewFile("f");
  std::string data(3 * kPageSize, 'd');
  ASSERT_TRUE(fs_->Write(f, 0, data.data(), data.size()).ok());
  ASSERT_TRUE(fs_->SetAttr(f, meta::SetAttrRequest{.size = 100}).ok());
  ASSERT_TRUE(fs_->SetAttr(f, meta::SetAttrRequest{.size = 3 * kPageSize}).ok());
  EXPECT_EQ(ReadAll(f, 0, 100), std::string(100, 'd'));
  EXPECT_EQ(ReadAll(f, 100, 3 * kPageSize - 100), std::string(3 * kPageSize - 100, '\0'));
}

TEST_F(FileSystemTest, CapGivesNoSpaceAndStatfsAgrees) {
  uint64_t f = NewFile("f");
  FsStats before = fs_->Stats();
  EXPECT_EQ(before.blocks, 64u);
  EXPECT_EQ(before.blocks_free, 64u);
  std::string page(kPageSize, 'p');
  for (int i = 0; i < 64; i++) ASSERT_TRUE(fs_->Write(f, i * kPageSize, page.data(), page.size()).ok()) << i;
  EXPECT_EQ(fs_->Stats().blocks_free, 0u);
  auto full = fs_->Write(f, 64 * kPageSize, page.data(), page.size());
  EXPECT_EQ(full.ToErrno(), ENOSPC);
  EXPECT_EQ(fs_->ns().GetAttr(f)->size, 64 * kPageSize);  // the refused write changed nothing
  ASSERT_TRUE(fs_->ns().Unlink(kRootIno, "f", {}).ok());
  fs_->ns().Forget(f, 1, meta::Caller{});
  EXPECT_EQ(fs_->Stats().blocks_free, 64u);
}

TEST_F(FileSystemTest, FallocateExtendsOrKeepsSize) {
  uint64_t f = NewFile("f");
  ASSERT_TRUE(fs_->Fallocate(f, 0, 0, 2 * kPageSize).ok());
  EXPECT_EQ(fs_->ns().GetAttr(f)->size, 2 * kPageSize);
  ASSERT_TRUE(fs_->Fallocate(f, FALLOC_FL_KEEP_SIZE, 0, 4 * kPageSize).ok());
  EXPECT_EQ(fs_->ns().GetAttr(f)->size, 2 * kPageSize);
  EXPECT_EQ(fs_->Fallocate(f, 0, 0, 100 * kPageSize).ToErrno(), ENOSPC);
}

TEST_F(FileSystemTest, DataSurvivesReopen) {
  uint64_t f = NewFile("f");
  ASSERT_TRUE(fs_->Write(f, 10, "persist", 7).ok());
  Open(64 * kPageSize);
  EXPECT_EQ(ReadAll(f, 10, 7), "persist");
  EXPECT_EQ(fs_->Stats().blocks_free, 63u);
}

TEST_F(FileSystemTest, CreateOfANameThatAppearedOpensItUnlessExclusive) {
  uint64_t f = NewFile("f");
  ASSERT_TRUE(fs_->Write(f, 0, "data", 4).ok());
  const meta::Caller root{0, 0, 0}, other{1000, 1000, 0};
  auto again = fs_->CreateOrOpen(kRootIno, "f", 0644, O_RDWR | O_CREAT, root);
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(again->ino, f);
  EXPECT_EQ(again->size, 4u);
  EXPECT_EQ(fs_->CreateOrOpen(kRootIno, "f", 0644, O_RDWR | O_CREAT | O_EXCL, root).status().ToErrno(), EEXIST);
  auto trunc = fs_->CreateOrOpen(kRootIno, "f", 0644, O_RDWR | O_CREAT | O_TRUNC, root);
  ASSERT_TRUE(trunc.ok());
  EXPECT_EQ(trunc->size, 0u);
  // The file's own permissions hold: 0644 root-owned, another user may read only.
  EXPECT_TRUE(fs_->CreateOrOpen(kRootIno, "f", 0644, O_RDONLY | O_CREAT, other).ok());
  EXPECT_EQ(fs_->CreateOrOpen(kRootIno, "f", 0644, O_WRONLY | O_CREAT, other).status().ToErrno(), EACCES);
  ASSERT_TRUE(fs_->ns().Mkdir(kRootIno, "d", 0755, root).ok());
  EXPECT_EQ(fs_->CreateOrOpen(kRootIno, "d", 0644, O_RDWR | O_CREAT, root).status().ToErrno(), EISDIR);
}

TEST_F(FileSystemTest, OpenTruncatesWithOTruncAndRefusesADirectory) {
  uint64_t f = NewFile("f");
  ASSERT_TRUE(fs_->Write(f, 0, "hello", 5).ok());
  ASSERT_TRUE(fs_->OpenFile(f, O_RDONLY).ok());
  EXPECT_EQ(fs_->GetAttr(f)->size, 5u) << "a plain open changes nothing";
  ASSERT_TRUE(fs_->OpenFile(f, O_WRONLY | O_TRUNC).ok());
  fs_->ClosedForWrite(f);
  EXPECT_EQ(fs_->GetAttr(f)->size, 0u);
  EXPECT_EQ(ReadAll(f, 0, 5), "");
  EXPECT_EQ(fs_->OpenFile(kRootIno, O_RDONLY).code(), Status::Code::kIsDir);
  EXPECT_FALSE(fs_->OpenFile(9999, O_RDONLY).ok()) << "an inode that does not exist";
}

TEST_F(FileSystemTest, DataOpsOnDirectoriesAreRefused) {
  EXPECT_EQ(fs_->Write(kRootIno, 0, "x", 1).ToErrno(), EISDIR);
  EXPECT_EQ(fs_->SetAttr(kRootIno, meta::SetAttrRequest{.size = 0}).status().ToErrno(), EISDIR);
}

}  // namespace
}  // namespace cshm::fs
