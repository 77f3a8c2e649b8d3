// RemoteMeta against ServeMetaRequest over a real Namespace, with the bytes
// carried by plain functions: every operation survives the codec.
#include "meta/meta_rpc.h"

#include <gtest/gtest.h>
#include <linux/fs.h>

#include "meta/namespace.h"
#include "tests/support/temp_dir.h"

namespace cshm::meta {
namespace {

using cshm::testing::TempDir;
using store::kRootIno;

class MetaRpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = std::move(*store::MetaStore::Open(dir_ / "db"));
    ns_ = std::move(*Namespace::Open(store_.get(), 0, {}, nullptr));
    remote_ = std::make_unique<RemoteMeta>([this](std::string p) { return ServeMetaRequest(*ns_, 2, p); },
                                           [this](std::string p) { (void)ServeMetaRequest(*ns_, 2, p); });
  }
  TempDir dir_;
  std::unique_ptr<store::MetaStore> store_;
  std::unique_ptr<Namespace> ns_;
  std::unique_ptr<RemoteMeta> remote_;
};

TEST_F(MetaRpcTest, EveryOperationRoundTrips) {
  Caller c{1000, 100, 2};
  auto f = remote_->Mknod(kRootIno, "f", S_IFREG | 0640, 0, c);
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(f->owner_node, 2u);  // the creating node owns the segment
  EXPECT_EQ(f->uid, 1000u);
  EXPECT_EQ(remote_->Lookup(kRootIno, "f", c)->ino, f->ino);
  EXPECT_EQ(remote_->Lookup(kRootIno, "g", c).status().code(), Status::Code::kNotFound);
  auto d = remote_->Mkdir(kRootIno, "d", 0700, c);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(remote_->Symlink(d->ino, "l", "../f", c).ok());
  EXPECT_EQ(*remote_->Readlink(remote_->Lookup(d->ino, "l", c)->ino), "../f");
  ASSERT_TRUE(remote_->Link(f->ino, d->ino, "hard", c).ok());
  EXPECT_EQ(remote_->GetAttr(f->ino)->nlink, 2u);
  auto sa = remote_->SetAttr(f->ino, SetAttrRequest{.mode = 0600, .size = 77, .mtime = Timestamp{5, 6}});
  ASSERT_TRUE(sa.ok());
  EXPECT_EQ(sa->mode & 07777, 0600u);
  EXPECT_EQ(sa->size, 77u);
  EXPECT_EQ(sa->mtime, (Timestamp{5, 6}));
  EXPECT_EQ(remote_->NoteWrite(f->ino, 100, true)->size, 100u);
  ASSERT_TRUE(remote_->SetXattr(f->ino, "user.a", std::string("v\0w", 3), 0).ok());
  EXPECT_EQ(*remote_->GetXattr(f->ino, "user.a"), std::string("v\0w", 3));
  EXPECT_EQ(*remote_->ListXattrs(f->ino), std::vector<std::string>{"user.a"});
  ASSERT_TRUE(remote_->RemoveXattr(f->ino, "user.a").ok());
  EXPECT_EQ(remote_->GetXattr(f->ino, "user.a").status().code(), Status::Code::kNoData);
  ASSERT_TRUE(remote_->Rename(kRootIno, "f", kRootIno, "f2", RENAME_NOREPLACE, {}).ok());
  auto list = remote_->ListDir(kRootIno);
  ASSERT_TRUE(list.ok());
  std::vector<std::string> names;
  for (auto& e : *list) names.push_back(e.name);
  EXPECT_EQ(names, (std::vector<std::string>{".", "..", "d", "f2"}));
  ASSERT_TRUE(remote_->SetOwner(f->ino, 5).ok());
  EXPECT_EQ(remote_->GetAttr(f->ino)->owner_node, 5u);
  EXPECT_EQ(remote_->SetOwner(d->ino, 5).code(), Status::Code::kInvalid);
  ASSERT_TRUE(remote_->Unlink(kRootIno, "f2", {}).ok());
  EXPECT_EQ(remote_->Rmdir(kRootIno, "d", {}).code(), Status::Code::kNotEmpty);
  const uint64_t before = ns_->references(f->ino);
  remote_->Forget(f->ino, 1, c);
  EXPECT_EQ(ns_->references(f->ino), before - 1);
}

// The sender's cache window travels with every request and is noted for the
// node the transport says sent it.
TEST_F(MetaRpcTest, EveryRequestCarriesItsSendersCacheWindow) {
  NameGrants grants;
  RemoteMeta caching([&](std::string p) { return ServeMetaRequest(*ns_, 5, p, &grants); },
                     [](std::string) {}, 4000);
  const auto before = NameGrants::Clock::now();
  ASSERT_TRUE(caching.GetAttr(kRootIno).ok());
  EXPECT_GE(grants.Until(5), before + std::chrono::milliseconds(4000));
  EXPECT_LE(grants.Until(2), before);
  // The default client caches nothing.
  RemoteMeta plain([&](std::string p) { return ServeMetaRequest(*ns_, 6, p, &grants); }, [](std::string) {});
  ASSERT_TRUE(plain.GetAttr(kRootIno).ok());
  EXPECT_LE(grants.Until(6), before);
}

TEST_F(MetaRpcTest, MalformedRequestsAreInvalidNotCrashes) {
  EXPECT_EQ(ServeMetaRequest(*ns_, 2, "").status().code(), Status::Code::kInvalid);
  EXPECT_EQ(ServeMetaRequest(*ns_, 2, std::string(200, '\xff')).status().code(), Status::Code::kInvalid);
  std::string good = MetaRequest{.op = MetaOp::kGetAttr, .ino = kRootIno}.Encode();
  for (size_t n = 0; n < good.size(); n++)
    EXPECT_EQ(ServeMetaRequest(*ns_, 2, good.substr(0, n)).status().code(), Status::Code::kInvalid) << n;
  good[0] = 99;
  EXPECT_EQ(ServeMetaRequest(*ns_, 2, good).status().code(), Status::Code::kInvalid);
}

}  // namespace
}  // namespace cshm::meta
