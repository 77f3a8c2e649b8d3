// MetaService: the namespace operations a node needs, wherever the namespace
// lives. meta::Namespace serves them on the metadata node; meta::RemoteMeta
// forwards them to it from the other nodes. Behind this one interface a
// replicated metadata service can replace the single node later (DESIGN.md).
//
// Errors are those of meta::Namespace, plus kUnavailable / kTimedOut when the
// metadata node cannot be reached in time.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "store/inode_record.h"

namespace cshm::meta {

using store::InodeRecord;
using store::Timestamp;

struct Caller {
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t node = 0;  // the node the request comes from: owner of what it creates
  // The number of a request that changes a reference (meta/references.h);
  // RemoteMeta sets it, 0 on the metadata node itself.
  uint64_t seq = 0;
};

struct SetAttrRequest {
  std::optional<uint32_t> mode;  // permission bits only
  std::optional<uint32_t> uid;
  std::optional<uint32_t> gid;
  std::optional<uint64_t> size;
  std::optional<Timestamp> atime;
  std::optional<Timestamp> mtime;
};

struct ListedEntry {
  std::string name;
  uint64_t ino = 0;
  uint32_t type = 0;  // S_IFMT bits
};

class MetaService {
 public:
  virtual ~MetaService() = default;
  // Lookup and the create ops take one reference on the inode (the kernel's
  // lookup count); Forget drops them.
  // References are counted per node: `caller.node` (the sender, on the
  // metadata node) holds them.
  virtual Result<InodeRecord> Lookup(uint64_t parent, std::string_view name, const Caller& caller) = 0;
  virtual void Forget(uint64_t ino, uint64_t n, const Caller& caller) = 0;
  virtual Result<InodeRecord> GetAttr(uint64_t ino) = 0;
  virtual Result<InodeRecord> SetAttr(uint64_t ino, const SetAttrRequest& req) = 0;
  virtual Result<InodeRecord> NoteWrite(uint64_t ino, uint64_t end, bool touch_mtime) = 0;
  virtual Result<InodeRecord> Mknod(uint64_t parent, std::string_view name, uint32_t mode, uint64_t rdev,
                                    const Caller& caller) = 0;
  virtual Result<InodeRecord> Mkdir(uint64_t parent, std::string_view name, uint32_t mode,
                                    const Caller& caller) = 0;
  virtual Result<InodeRecord> Symlink(uint64_t parent, std::string_view name, std::string_view target,
                                      const Caller& caller) = 0;
  virtual Result<InodeRecord> Link(uint64_t ino, uint64_t new_parent, std::string_view new_name,
                                   const Caller& caller) = 0;
  // `caller.node`'s kernel keeps its own cache right for the name it
  // removes; every other node's is told (meta/namespace.h, NameChange).
  virtual Status Unlink(uint64_t parent, std::string_view name, const Caller& caller) = 0;
  virtual Status Rmdir(uint64_t parent, std::string_view name, const Caller& caller) = 0;
  virtual Status Rename(uint64_t parent, std::string_view name, uint64_t new_parent, std::string_view new_name,
                        unsigned flags, const Caller& caller) = 0;
  virtual Result<std::string> Readlink(uint64_t ino) = 0;
  virtual Result<std::vector<ListedEntry>> ListDir(uint64_t ino) = 0;
  virtual Status SetXattr(uint64_t ino, std::string_view name, std::string_view value, int flags) = 0;
  virtual Result<std::string> GetXattr(uint64_t ino, std::string_view name) = 0;
  virtual Result<std::vector<std::string>> ListXattrs(uint64_t ino) = 0;
  virtual Status RemoveXattr(uint64_t ino, std::string_view name) = 0;
  // The ownership directory: a migration names the segment's new owner.
  virtual Status SetOwner(uint64_t ino, uint32_t node) = 0;
};

}  // namespace cshm::meta
