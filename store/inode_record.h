// InodeRecord: everything the namespace keeps about one inode, and its binary
// encoding in the metadata store. The encoding starts with a format byte so that
// a later version can read older records.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace cshm::store {

constexpr uint64_t kRootIno = 1;  // FUSE_ROOT_ID

struct Timestamp {
  int64_t sec = 0;
  int64_t nsec = 0;
  static Timestamp Now();
  bool operator==(const Timestamp&) const = default;
};

struct InodeRecord {
  uint64_t ino = 0;
  uint32_t mode = 0;  // type and permission bits, as st_mode
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t nlink = 0;
  uint64_t size = 0;
  uint64_t rdev = 0;
  Timestamp atime, mtime, ctime;
  // Directories only: the parent directory (rename needs it to refuse moving a
  // directory into its own subtree). The root is its own parent.
  uint64_t parent = 0;
  // The node that owns the segment's pages (DESIGN.md "Ownership directory").
  uint32_t owner_node = 0;
  std::string symlink_target;  // symlinks only

  bool IsDir() const { return S_ISDIR(mode); }
  bool IsReg() const { return S_ISREG(mode); }
  bool IsSymlink() const { return S_ISLNK(mode); }
  struct stat ToStat() const;

  std::string Encode() const;
  static Result<InodeRecord> Decode(uint64_t ino, std::string_view bytes);

  bool operator==(const InodeRecord&) const = default;
};

}  // namespace cshm::store
