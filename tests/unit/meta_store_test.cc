#include "store/meta_store.h"

#include <gtest/gtest.h>

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "tests/support/temp_dir.h"

namespace cshm::store {
namespace {

using cshm::testing::TempDir;

TEST(MetaStore, BatchIsAppliedAndPersists) {
  TempDir dir;
  {
    auto s = MetaStore::Open(dir / "db");
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    InodeRecord r;
    r.ino = 5;
    r.mode = S_IFREG | 0644;
    MetaStore::Batch b;
    b.PutInode(r);
    b.PutEntry(1, DirEntry{"f", 5, S_IFREG});
    b.PutXattr(5, "user.a", "1");
    b.PutXattr(5, "user.b", "2");
    b.PutCounter("next_ino", 6);
    ASSERT_TRUE((*s)->Commit(b).ok());
  }
  auto s = MetaStore::Open(dir / "db");
  ASSERT_TRUE(s.ok());
  auto r = (*s)->GetInode(5);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->mode, S_IFREG | 0644u);
  auto e = (*s)->GetEntry(1, "f");
  ASSERT_TRUE(e.ok() && e->has_value());
  EXPECT_EQ((*e)->ino, 5u);
  std::vector<std::string> names;
  ASSERT_TRUE((*s)->ListXattrs(5, &names).ok());
  EXPECT_EQ(names, (std::vector<std::string>{"user.a", "user.b"}));
  EXPECT_EQ(*(*s)->GetCounter("next_ino", 0), 6u);
  EXPECT_EQ(*(*s)->GetCounter("absent", 77), 77u);
}

TEST(MetaStore, DeleteInodeTakesItsXattrsButNotTheNeighbours) {
  TempDir dir;
  auto s = MetaStore::Open(dir / "db");
  ASSERT_TRUE(s.ok());
  MetaStore::Batch b;
  for (uint64_t ino : {5, 6}) {
    InodeRecord r;
    r.ino = ino;
    b.PutInode(r);
    b.PutXattr(ino, "user.x", "v");
  }
  ASSERT_TRUE((*s)->Commit(b).ok());
  MetaStore::Batch d;
  d.DeleteInode(5);
  ASSERT_TRUE((*s)->Commit(d).ok());
  EXPECT_FALSE((*s)->GetInode(5)->has_value());
  EXPECT_FALSE((*s)->GetXattr(5, "user.x")->has_value());
  EXPECT_TRUE((*s)->GetXattr(6, "user.x")->has_value());
}

TEST(MetaStore, ListEntriesPagesInNameOrder) {
  TempDir dir;
  auto s = MetaStore::Open(dir / "db");
  ASSERT_TRUE(s.ok());
  MetaStore::Batch b;
  for (const char* n : {"c", "a", "b", "d"}) b.PutEntry(1, DirEntry{n, 9, S_IFREG});
  b.PutEntry(2, DirEntry{"other", 9, S_IFREG});
  ASSERT_TRUE((*s)->Commit(b).ok());
  std::vector<DirEntry> page;
  ASSERT_TRUE((*s)->ListEntries(1, "", 2, &page).ok());
  ASSERT_EQ(page.size(), 2u);
  EXPECT_EQ(page[0].name, "a");
  EXPECT_EQ(page[1].name, "b");
  std::vector<DirEntry> rest;
  ASSERT_TRUE((*s)->ListEntries(1, "b", 10, &rest).ok());
  ASSERT_EQ(rest.size(), 2u);
  EXPECT_EQ(rest[0].name, "c");
  EXPECT_EQ(rest[1].name, "d");
  EXPECT_TRUE(*(*s)->HasEntries(2));
  EXPECT_FALSE(*(*s)->HasEntries(3));
}

TEST(MetaStore, GarbageDirectoryIsCorruptionWithAdvice) {
  TempDir dir;
  std::filesystem::create_directories(dir / "db");
  std::ofstream(dir / "db/CURRENT") << "MANIFEST-999999\n";
  auto s = MetaStore::Open(dir / "db");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Status::Code::kCorruption);
  EXPECT_NE(s.status().message().find("move the state dir aside"), std::string::npos) << s.status().message();
}

TEST(MetaStore, SecondOpenOfTheSameStoreIsBusy) {
  TempDir dir;
  auto a = MetaStore::Open(dir / "db");
  ASSERT_TRUE(a.ok());
  auto b = MetaStore::Open(dir / "db");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), Status::Code::kBusy) << b.status().message();
}

// A small file system of its own for the store, unmounted when done.
class SmallFs {
 public:
  explicit SmallFs(const std::string& dir, const char* size) : dir_(dir) {
    mkdir(dir.c_str(), 0755);
    ok_ = mount("cshm-test-small", dir.c_str(), "tmpfs", 0, (std::string("size=") + size).c_str()) == 0;
  }
  ~SmallFs() {
    if (ok_) umount2(dir_.c_str(), MNT_DETACH);
  }
  bool ok() const { return ok_; }

 private:
  std::string dir_;
  bool ok_ = false;
};

std::string Key(int i) { return "user.k" + std::to_string(i); }

// RocksDB itself meets ENOSPC (no headroom kept). Seen before: Debian's
// RocksDB aborted the process with an assertion on the write after the one
// that failed. The failed write is kNoSpace and not applied, reads go on,
// and once space is freed writes resume with everything acknowledged there.
TEST(MetaStore, AFullDiskRefusesWritesKeepsReadsAndResumesWhenSpaceIsFreed) {
  TempDir dir;
  SmallFs fs(dir / "small", "32m");
  ASSERT_TRUE(fs.ok()) << "mounting a tmpfs needs root: " << strerror(errno);
  const std::string ballast = (dir / "small") + "/ballast";
  {
    std::ofstream b(ballast, std::ios::binary);
    b << std::string(20 << 20, 'b');
  }
  auto s = MetaStore::Open((dir / "small") + "/db", /*headroom=*/0);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  const std::string value(60000, 'v');
  // Writes until the disk is full; the store may find room again (opening
  // it again frees what RocksDB had preallocated), so on until it refuses
  // three in a row. Every write that succeeded is acknowledged.
  std::vector<int> acked;
  int refused_in_a_row = 0, refused = 0;
  for (int i = 0; i < 2000 && refused_in_a_row < 3; i++) {
    MetaStore::Batch b;
    b.PutXattr(7, Key(i), value);
    Status st = (*s)->Commit(b);
    if (st.ok()) {
      acked.push_back(i);
      refused_in_a_row = 0;
      continue;
    }
    ASSERT_EQ(st.code(), Status::Code::kNoSpace) << st.ToString();
    refused++;
    refused_in_a_row++;
  }
  ASSERT_EQ(refused_in_a_row, 3) << "the disk never filled";
  ASSERT_FALSE(acked.empty());
  // Full: syncs are refused too, reads still answer.
  EXPECT_FALSE((*s)->Sync().ok());
  auto first = (*s)->GetXattr(7, Key(acked.front()));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(first->has_value());
  // Space again: the next write succeeds.
  ASSERT_EQ(unlink(ballast.c_str()), 0);
  MetaStore::Batch again;
  again.PutXattr(7, "user.again", "1");
  Status resumed = (*s)->Commit(again);
  EXPECT_TRUE(resumed.ok()) << resumed.ToString();
  EXPECT_TRUE((*s)->Sync().ok());
  s->reset();
  auto back = MetaStore::Open((dir / "small") + "/db", 0);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  for (int i : acked) {
    auto v = (*back)->GetXattr(7, Key(i));
    ASSERT_TRUE(v.ok() && v->has_value() && **v == value) << "acknowledged " << Key(i) << " is gone";
  }
  auto a = (*back)->GetXattr(7, "user.again");
  EXPECT_TRUE(a.ok() && a->has_value());
}

// With the default headroom the store refuses before RocksDB meets ENOSPC.
TEST(MetaStore, BelowTheHeadroomAWriteIsNoSpaceWithAMessage) {
  TempDir dir;
  SmallFs fs(dir / "small", "40m");
  ASSERT_TRUE(fs.ok()) << "mounting a tmpfs needs root: " << strerror(errno);
  auto s = MetaStore::Open((dir / "small") + "/db", 16 << 20);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  MetaStore::Batch b;
  b.PutXattr(7, "user.a", "1");
  ASSERT_TRUE((*s)->Commit(b).ok());
  {
    std::ofstream f((dir / "small") + "/ballast", std::ios::binary);
    f << std::string(24 << 20, 'b');
  }
  MetaStore::Batch c;
  c.PutXattr(7, "user.b", "1");
  Status st = (*s)->Commit(c);
  EXPECT_EQ(st.code(), Status::Code::kNoSpace);
  EXPECT_EQ(st.ToErrno(), ENOSPC);
  EXPECT_NE(st.ToString().find("free space there"), std::string::npos) << st.ToString();
  ASSERT_EQ(unlink(((dir / "small") + "/ballast").c_str()), 0);
  EXPECT_TRUE((*s)->Commit(c).ok());
}

}  // namespace
}  // namespace cshm::store
