#include "store/meta_store.h"

#include <gtest/gtest.h>

#include <fstream>

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

}  // namespace
}  // namespace cshm::store
