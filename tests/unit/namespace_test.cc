#include "meta/namespace.h"

#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sys/xattr.h>

#include <optional>
#include <set>

#include "tests/support/temp_dir.h"

namespace cshm::meta {
namespace {

using cshm::testing::TempDir;
using store::kRootIno;

class NamespaceTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen(RootOptions root = {}) {
    ns_.reset();
    store_.reset();
    auto s = store::MetaStore::Open(dir_ / "db");
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    auto n = Namespace::Open(store_.get(), 0, root, [this](uint64_t ino, uint32_t) {
      purged_.insert(ino);
      return Status::Ok();
    });
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    ns_ = std::move(*n);
    if (expect_) ns_->ExpectNodes(*expect_);
  }

  uint64_t File(uint64_t parent, const char* name) {
    auto r = ns_->Mknod(parent, name, S_IFREG | 0644, 0, caller_);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->ino : 0;
  }
  uint64_t Dir(uint64_t parent, const char* name) {
    auto r = ns_->Mkdir(parent, name, 0755, caller_);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->ino : 0;
  }
  Status::Code Code(const Status& s) { return s.code(); }
  uint32_t Nlink(uint64_t ino) { return ns_->GetAttr(ino)->nlink; }
  std::vector<std::string> Names(uint64_t dir) {
    std::vector<std::string> out;
    for (auto& e : *ns_->ListDir(dir)) out.push_back(e.name);
    return out;
  }

  TempDir dir_;
  std::unique_ptr<store::MetaStore> store_;
  std::unique_ptr<Namespace> ns_;
  std::set<uint64_t> purged_;
  Caller caller_{1000, 100};
  std::optional<std::vector<uint32_t>> expect_ = std::vector<uint32_t>{};  // one node
};

TEST_F(NamespaceTest, RootDefaultsLikeDevShm) {
  auto root = ns_->GetAttr(kRootIno);
  ASSERT_TRUE(root.ok());
  EXPECT_EQ(root->mode, S_IFDIR | 01777u);
  EXPECT_EQ(root->uid, 0u);
  EXPECT_EQ(root->nlink, 2u);
}

TEST_F(NamespaceTest, RootOptionsApplyAndPersist) {
  Reopen(RootOptions{0700, 5, 6});
  EXPECT_EQ(ns_->GetAttr(kRootIno)->mode, S_IFDIR | 0700u);
  Reopen();
  EXPECT_EQ(ns_->GetAttr(kRootIno)->mode, S_IFDIR | 0700u);
  EXPECT_EQ(ns_->GetAttr(kRootIno)->uid, 5u);
}

TEST_F(NamespaceTest, CreateLookupAndOwnership) {
  uint64_t f = File(kRootIno, "a");
  auto r = ns_->Lookup(kRootIno, "a", caller_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->ino, f);
  EXPECT_EQ(r->uid, 1000u);
  EXPECT_EQ(r->gid, 100u);
  EXPECT_EQ(Code(ns_->Lookup(kRootIno, "b", caller_).status()), Status::Code::kNotFound);
  EXPECT_EQ(Code(ns_->Mknod(kRootIno, "a", S_IFREG | 0644, 0, caller_).status()), Status::Code::kExists);
  EXPECT_EQ(Code(ns_->Mknod(kRootIno, std::string(256, 'n'), S_IFREG, 0, caller_).status()),
            Status::Code::kNameTooLong);
  EXPECT_EQ(Code(ns_->Mknod(f, "x", S_IFREG, 0, caller_).status()), Status::Code::kNotDir);
}

TEST_F(NamespaceTest, InodeNumbersCarryTheNodeAndNeverRepeat) {
  uint64_t a = File(kRootIno, "a");
  ASSERT_TRUE(ns_->Unlink(kRootIno, "a", {}).ok());
  Reopen();
  uint64_t b = File(kRootIno, "a");
  EXPECT_NE(a, b);
  EXPECT_EQ(a >> 48, 0u);
}

TEST_F(NamespaceTest, SetgidDirectoryPassesGroupOn) {
  uint64_t d = Dir(kRootIno, "d");
  ASSERT_TRUE(ns_->SetAttr(d, SetAttrRequest{.mode = 02775, .gid = 777}).ok());
  auto f = ns_->Mknod(d, "f", S_IFREG | 0644, 0, caller_);
  EXPECT_EQ(f->gid, 777u);
  auto sub = ns_->Mkdir(d, "s", 0755, caller_);
  EXPECT_EQ(sub->gid, 777u);
  EXPECT_TRUE(sub->mode & S_ISGID);
}

TEST_F(NamespaceTest, DirectoryLinkCounts) {
  uint64_t d = Dir(kRootIno, "d");
  EXPECT_EQ(Nlink(kRootIno), 3u);
  Dir(d, "e");
  EXPECT_EQ(Nlink(d), 3u);
  EXPECT_EQ(Code(ns_->Rmdir(kRootIno, "d", {})), Status::Code::kNotEmpty);
  EXPECT_EQ(Code(ns_->Unlink(kRootIno, "d", {})), Status::Code::kIsDir);
  ASSERT_TRUE(ns_->Rmdir(d, "e", {}).ok());
  EXPECT_EQ(Nlink(d), 2u);
  ASSERT_TRUE(ns_->Rmdir(kRootIno, "d", {}).ok());
  EXPECT_EQ(Nlink(kRootIno), 2u);
  File(kRootIno, "f");
  EXPECT_EQ(Code(ns_->Rmdir(kRootIno, "f", {})), Status::Code::kNotDir);
}

TEST_F(NamespaceTest, HardLinksShareTheInode) {
  uint64_t f = File(kRootIno, "a");
  ASSERT_TRUE(ns_->Link(f, kRootIno, "b", caller_).ok());
  EXPECT_EQ(Nlink(f), 2u);
  ASSERT_TRUE(ns_->Unlink(kRootIno, "a", {}).ok());
  EXPECT_EQ(Nlink(f), 1u);
  EXPECT_EQ(ns_->Lookup(kRootIno, "b", caller_)->ino, f);
  EXPECT_EQ(Code(ns_->Link(Dir(kRootIno, "d"), kRootIno, "dl", caller_).status()), Status::Code::kNotPermitted);
}

TEST_F(NamespaceTest, UnlinkedButReferencedLivesUntilForget) {
  uint64_t f = File(kRootIno, "a");  // one reference, as after the kernel's create
  ASSERT_TRUE(ns_->Unlink(kRootIno, "a", {}).ok());
  EXPECT_EQ(Code(ns_->Lookup(kRootIno, "a", caller_).status()), Status::Code::kNotFound);
  auto r = ns_->GetAttr(f);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->nlink, 0u);
  EXPECT_TRUE(purged_.empty());
  ns_->Forget(f, 1, caller_);
  EXPECT_EQ(purged_.count(f), 1u);
  EXPECT_EQ(Code(ns_->GetAttr(f).status()), Status::Code::kNotFound);
}

TEST_F(NamespaceTest, OrphansOfACrashedRunArePurgedAtStart) {
  uint64_t f = File(kRootIno, "a");
  ASSERT_TRUE(ns_->Unlink(kRootIno, "a", {}).ok());
  Reopen();  // no Forget: as if the daemon died
  EXPECT_EQ(purged_.count(f), 1u);
  EXPECT_EQ(Code(ns_->GetAttr(f).status()), Status::Code::kNotFound);
}

// In a cluster the other nodes' kernels hold inodes too: after a restart the
// metadata node knows none of their references, so it deletes nothing until
// each node has registered its table (or is declared gone).
TEST_F(NamespaceTest, AfterARestartNothingIsPurgedUntilEveryNodeIsKnown) {
  expect_ = std::vector<uint32_t>{1};
  Reopen();
  ns_->NodeGone(1);  // settled: node 1 is gone
  Caller node1{1000, 100, 1, 5};
  uint64_t a = ns_->Mknod(kRootIno, "a", S_IFREG | 0644, 0, node1)->ino;
  uint64_t b = File(kRootIno, "b");
  ns_->Forget(b, 1, caller_);
  ASSERT_TRUE(ns_->Unlink(kRootIno, "a", {}).ok());  // node 1 holds it: an orphan
  Reopen();                                       // every count is lost
  EXPECT_EQ(ns_->orphan_count(), 1u);
  ASSERT_TRUE(ns_->Unlink(kRootIno, "b", {}).ok());  // no count, but node 1 is not known yet
  EXPECT_TRUE(purged_.empty());
  ns_->Asking(1);
  ns_->Register(1, ReferenceSnapshot{10, {{a, 1}}});
  EXPECT_EQ(purged_, std::set<uint64_t>{b});
  EXPECT_EQ(ns_->Pinning(std::chrono::milliseconds(0)), std::vector<uint32_t>{1});
  ns_->Forget(a, 1, Caller{0, 0, 1, 11});
  EXPECT_EQ(purged_.count(a), 1u);
  EXPECT_EQ(ns_->orphan_count(), 0u);
}

TEST_F(NamespaceTest, UnreferencedUnlinkPurgesAtOnce) {
  uint64_t f = File(kRootIno, "a");
  ns_->Forget(f, 1, caller_);
  EXPECT_TRUE(purged_.empty());
  ASSERT_TRUE(ns_->Unlink(kRootIno, "a", {}).ok());
  EXPECT_EQ(purged_.count(f), 1u);
}

TEST_F(NamespaceTest, RenameReplacesMovesAndRefuses) {
  uint64_t a = File(kRootIno, "a");
  uint64_t b = File(kRootIno, "b");
  ns_->Forget(b, 1, caller_);
  ASSERT_TRUE(ns_->Rename(kRootIno, "a", kRootIno, "b", 0, {}).ok());
  EXPECT_EQ(ns_->Lookup(kRootIno, "b", caller_)->ino, a);
  EXPECT_EQ(purged_.count(b), 1u);  // the replaced file had no other name or reference

  File(kRootIno, "c");
  EXPECT_EQ(Code(ns_->Rename(kRootIno, "b", kRootIno, "c", RENAME_NOREPLACE, {})), Status::Code::kExists);
  EXPECT_EQ(Code(ns_->Rename(kRootIno, "zz", kRootIno, "c", 0, {})), Status::Code::kNotFound);

  uint64_t d = Dir(kRootIno, "d");
  uint64_t e = Dir(d, "e");
  EXPECT_EQ(Code(ns_->Rename(kRootIno, "d", e, "x", 0, {})), Status::Code::kInvalid);  // into itself
  EXPECT_EQ(Code(ns_->Rename(kRootIno, "b", kRootIno, "d", 0, {})), Status::Code::kIsDir);
  EXPECT_EQ(Code(ns_->Rename(d, "e", kRootIno, "b", 0, {})), Status::Code::kNotDir);
  Dir(kRootIno, "full");
  File(ns_->Lookup(kRootIno, "full", caller_)->ino, "x");
  EXPECT_EQ(Code(ns_->Rename(d, "e", kRootIno, "full", 0, {})), Status::Code::kNotEmpty);

  // Moving a directory between parents moves a ".." link.
  ASSERT_TRUE(ns_->Rename(d, "e", kRootIno, "e", 0, {}).ok());
  EXPECT_EQ(Nlink(d), 2u);
  EXPECT_EQ(ns_->GetAttr(e)->parent, kRootIno);
  EXPECT_EQ(Names(kRootIno), (std::vector<std::string>{".", "..", "b", "c", "d", "e", "full"}));
}

TEST_F(NamespaceTest, RenameOverEmptyDirectoryFixesLinkCount) {
  Dir(kRootIno, "a");
  Dir(kRootIno, "b");
  EXPECT_EQ(Nlink(kRootIno), 4u);
  ASSERT_TRUE(ns_->Rename(kRootIno, "a", kRootIno, "b", 0, {}).ok());
  EXPECT_EQ(Nlink(kRootIno), 3u);
}

TEST_F(NamespaceTest, RenameExchangeSwaps) {
  uint64_t a = File(kRootIno, "a");
  uint64_t d = Dir(kRootIno, "d");
  uint64_t sub = Dir(d, "sub");
  ASSERT_TRUE(ns_->Rename(kRootIno, "a", d, "sub", RENAME_EXCHANGE, {}).ok());
  EXPECT_EQ(ns_->Lookup(kRootIno, "a", caller_)->ino, sub);
  EXPECT_EQ(ns_->Lookup(d, "sub", caller_)->ino, a);
  EXPECT_EQ(ns_->GetAttr(sub)->parent, kRootIno);
  EXPECT_EQ(Nlink(d), 2u);
  EXPECT_EQ(Nlink(kRootIno), 4u);
  EXPECT_EQ(Code(ns_->Rename(kRootIno, "a", kRootIno, "none", RENAME_EXCHANGE, {})), Status::Code::kNotFound);
}

TEST_F(NamespaceTest, SymlinksAndReadlink) {
  auto l = ns_->Symlink(kRootIno, "l", "target/path", caller_);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(*ns_->Readlink(l->ino), "target/path");
  EXPECT_EQ(Code(ns_->Readlink(File(kRootIno, "f")).status()), Status::Code::kInvalid);
}

TEST_F(NamespaceTest, XattrsFollowLinuxRules) {
  uint64_t f = File(kRootIno, "f");
  EXPECT_EQ(Code(ns_->GetXattr(f, "user.a").status()), Status::Code::kNoData);
  ASSERT_TRUE(ns_->SetXattr(f, "user.a", "1", 0).ok());
  EXPECT_EQ(Code(ns_->SetXattr(f, "user.a", "2", XATTR_CREATE)), Status::Code::kExists);
  EXPECT_EQ(Code(ns_->SetXattr(f, "user.b", "2", XATTR_REPLACE)), Status::Code::kNoData);
  ASSERT_TRUE(ns_->SetXattr(f, "user.a", "3", XATTR_REPLACE).ok());
  EXPECT_EQ(*ns_->GetXattr(f, "user.a"), "3");
  EXPECT_EQ(Code(ns_->SetXattr(f, "trusted.x", "1", 0)), Status::Code::kNotSupported);
  EXPECT_EQ(Code(ns_->SetXattr(f, "user.big", std::string(65537, 'x'), 0)), Status::Code::kArgTooBig);
  EXPECT_EQ(*ns_->ListXattrs(f), std::vector<std::string>{"user.a"});
  ASSERT_TRUE(ns_->RemoveXattr(f, "user.a").ok());
  EXPECT_EQ(Code(ns_->RemoveXattr(f, "user.a")), Status::Code::kNoData);
  auto l = ns_->Symlink(kRootIno, "l", "f", caller_);
  EXPECT_EQ(Code(ns_->SetXattr(l->ino, "user.a", "1", 0)), Status::Code::kNotPermitted);
}

// A write inside the file changes only the times: every reader sees them at
// once, the store gets them at the next commit of the inode, CommitWrites
// (fsync, close), or when the namespace closes; the record does not leave
// the cache before. A write that grows the file is stored at once.
TEST_F(NamespaceTest, AWritesTimesAreSeenAtOnceAndStoredAtTheNextCommitOrCommitWrites) {
  uint64_t f = File(kRootIno, "t");
  ASSERT_TRUE(ns_->NoteWrite(f, 10, true).ok());  // grows: stored
  auto stored = [&] { return (*store_->GetInode(f))->mtime; };
  const Timestamp grown = ns_->GetAttr(f)->mtime;
  EXPECT_EQ(stored(), grown);
  auto later = [](const Timestamp& a, const Timestamp& b) { return a.sec > b.sec || (a.sec == b.sec && a.nsec > b.nsec); };
  while (!later(Timestamp::Now(), grown)) {
  }
  ASSERT_TRUE(ns_->NoteWrite(f, 5, true).ok());  // inside: kept
  const Timestamp kept = ns_->GetAttr(f)->mtime;
  EXPECT_TRUE(later(kept, grown));
  EXPECT_EQ(stored(), grown);
  ns_->Forget(f, 1, caller_);  // the kernel forgot it: a kept record stays
  EXPECT_EQ(ns_->GetAttr(f)->mtime, kept);
  ASSERT_TRUE(ns_->CommitWrites(f).ok());
  EXPECT_EQ(stored(), kept);
  // Kept again, then another change of the inode commits them with it.
  while (!later(Timestamp::Now(), kept)) {
  }
  ASSERT_TRUE(ns_->NoteWrite(f, 5, true).ok());
  const Timestamp again = ns_->GetAttr(f)->mtime;
  ASSERT_TRUE(ns_->SetXattr(f, "user.k", "v", 0).ok());
  EXPECT_TRUE(later(stored(), kept));
  // And closing the namespace stores what is kept.
  while (!later(Timestamp::Now(), again)) {
  }
  ASSERT_TRUE(ns_->NoteWrite(f, 5, true).ok());
  const Timestamp last = ns_->GetAttr(f)->mtime;
  Reopen();
  EXPECT_EQ(ns_->GetAttr(f)->mtime, last);
}

TEST_F(NamespaceTest, EverythingSurvivesReopen) {
  uint64_t d = Dir(kRootIno, "d");
  uint64_t f = File(d, "f");
  ASSERT_TRUE(ns_->NoteWrite(f, 12345, true).ok());
  ASSERT_TRUE(ns_->SetXattr(f, "user.k", "v", 0).ok());
  ASSERT_TRUE(ns_->SetAttr(f, SetAttrRequest{.mode = 0600, .uid = 7}).ok());
  Reopen();
  auto r = ns_->Lookup(d, "f", caller_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size, 12345u);
  EXPECT_EQ(r->mode, S_IFREG | 0600u);
  EXPECT_EQ(r->uid, 7u);
  EXPECT_EQ(*ns_->GetXattr(f, "user.k"), "v");
}

// What each change tells the other kernels to drop (meta/name_cache.h): the
// directories whose attributes changed, the names that went or name another
// inode now, and who made it; reads and changes of files alone tell nothing.
TEST_F(NamespaceTest, EveryChangeNamesWhatTheKernelsMustDrop) {
  std::vector<NameChange> told;
  ns_->SetChangeHook([&](const NameChange& c) { told.push_back(c); });
  auto take = [&] {
    std::vector<NameChange> out;
    out.swap(told);
    return out;
  };
  using Names = std::vector<std::pair<uint64_t, std::string>>;
  Caller by{0, 0, 2};

  const uint64_t d = Dir(kRootIno, "d");  // caller_ is node 0
  auto c = take();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].by, 0u);
  EXPECT_EQ(c[0].dirs, (std::vector<uint64_t>{kRootIno, d}));  // its times and links; and "d" (nobody has it yet)
  EXPECT_TRUE(c[0].names.empty());

  const uint64_t f = File(d, "f");
  ASSERT_TRUE(ns_->Lookup(d, "f", caller_).ok());
  ASSERT_TRUE(ns_->GetAttr(f).ok());
  ASSERT_TRUE(ns_->NoteWrite(f, 100, true).ok());
  ASSERT_TRUE(ns_->SetAttr(f, SetAttrRequest{.size = 10}).ok());  // a file's attributes are not cached
  c = take();
  ASSERT_EQ(c.size(), 1u);  // the create only
  EXPECT_EQ(c[0].dirs, std::vector<uint64_t>{d});

  ASSERT_TRUE(ns_->Link(f, kRootIno, "hard", by).ok());
  c = take();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].by, 2u);
  EXPECT_EQ(c[0].dirs, std::vector<uint64_t>{kRootIno});

  ASSERT_TRUE(ns_->Unlink(kRootIno, "hard", by).ok());
  c = take();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].dirs, std::vector<uint64_t>{kRootIno});
  EXPECT_EQ(c[0].names, (Names{{kRootIno, "hard"}}));

  File(kRootIno, "g");
  take();
  ASSERT_TRUE(ns_->Rename(d, "f", kRootIno, "g", 0, by).ok());  // replaces g
  c = take();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].dirs, (std::vector<uint64_t>{kRootIno, d}));
  EXPECT_EQ(c[0].names, (Names{{d, "f"}, {kRootIno, "g"}}));
  ASSERT_TRUE(ns_->Rename(kRootIno, "g", kRootIno, "new", 0, by).ok());  // nothing replaced
  c = take();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].names, (Names{{kRootIno, "g"}}));

  ASSERT_TRUE(ns_->SetAttr(d, SetAttrRequest{.mode = 0700}).ok());
  ASSERT_TRUE(ns_->SetXattr(d, "user.k", "v", 0).ok());
  c = take();
  ASSERT_EQ(c.size(), 2u);
  for (const NameChange& one : c) {
    EXPECT_EQ(one.by, kNoNode);  // the kernel that asked is told too
    EXPECT_EQ(one.dirs, std::vector<uint64_t>{d});
  }

  ASSERT_TRUE(ns_->Rmdir(kRootIno, "d", by).ok());
  c = take();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].names, (Names{{kRootIno, "d"}}));

  // A change that fails tells nothing.
  EXPECT_FALSE(ns_->Unlink(kRootIno, "absent", by).ok());
  EXPECT_FALSE(ns_->Mkdir(kRootIno, "new", 0755, by).ok());
  EXPECT_TRUE(take().empty());
}

TEST(NameChangeTest, RoundTripsAndRefusesWhatIsMalformed) {
  NameChange c;
  c.dirs = {1, 2};
  c.names = {{1, "a"}, {2, std::string(255, 'x')}};
  auto back = NameChange::Decode(c.Encode());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->dirs, c.dirs);
  EXPECT_EQ(back->names, c.names);
  const std::string good = c.Encode();
  for (size_t n = 0; n < good.size(); n++) EXPECT_FALSE(NameChange::Decode(good.substr(0, n)).ok()) << n;
  EXPECT_FALSE(NameChange::Decode(good + "x").ok());
  EXPECT_FALSE(NameChange::Decode(std::string(4, '\xff')).ok());  // a count no change has
}

// A request's sender has its cache window noted before it is served, for as
// long as it said its kernel caches; a sender that caches nothing has none.
TEST(NameGrantsTest, ASendersWindowIsWhatItSaid) {
  NameGrants g;
  const auto before = NameGrants::Clock::now();
  EXPECT_LE(g.Until(3), before);
  g.Granted(3, 0);
  EXPECT_LE(g.Until(3), before);
  g.Granted(3, 5000);
  EXPECT_GE(g.Until(3), before + std::chrono::milliseconds(5000) + NameGrants::kMargin);
  const auto until = g.Until(3);
  g.Granted(3, 10);  // a shorter window never shortens one given
  EXPECT_EQ(g.Until(3), until);
  EXPECT_LE(g.Until(4), before);
}

}  // namespace
}  // namespace cshm::meta
