#include "store/inode_record.h"

#include <gtest/gtest.h>

namespace cshm::store {
namespace {

InodeRecord Sample() {
  InodeRecord r;
  r.ino = (3ull << 48) | 42;
  r.mode = S_IFLNK | 0777;
  r.uid = 1000;
  r.gid = 100;
  r.nlink = 1;
  r.size = 1ull << 40;
  r.rdev = 0x0801;
  r.atime = {1, 2};
  r.mtime = {3, 4};
  r.ctime = {5, 999999999};
  r.parent = 7;
  r.owner_node = 3;
  r.symlink_target = "../target";
  return r;
}

TEST(InodeRecord, EncodeDecodeRoundTrips) {
  InodeRecord r = Sample();
  auto d = InodeRecord::Decode(r.ino, r.Encode());
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(*d, r);
}

TEST(InodeRecord, EveryTruncationIsCorruption) {
  std::string bytes = Sample().Encode();
  for (size_t n = 0; n < bytes.size(); n++)
    EXPECT_EQ(InodeRecord::Decode(1, bytes.substr(0, n)).status().code(), Status::Code::kCorruption) << n;
  EXPECT_EQ(InodeRecord::Decode(1, bytes + "x").status().code(), Status::Code::kCorruption);
}

TEST(InodeRecord, UnknownFormatIsCorruption) {
  std::string bytes = Sample().Encode();
  bytes[0] = 9;
  auto d = InodeRecord::Decode(1, bytes);
  EXPECT_EQ(d.status().code(), Status::Code::kCorruption);
  EXPECT_NE(d.status().message().find("format 9"), std::string::npos);
}

TEST(InodeRecord, StatOfSymlinkHasTargetLength) {
  struct stat st = Sample().ToStat();
  EXPECT_EQ(st.st_size, 9);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(st.st_ctim.tv_nsec, 999999999);
}

}  // namespace
}  // namespace cshm::store
