// The namespace over the wire: one request shape for every MetaService
// operation, a pure codec, the server-side dispatcher the metadata node runs,
// and RemoteMeta, the client the other nodes use. meta/ knows nothing of the
// transport: RemoteMeta is given functions that carry bytes to the metadata
// node and back.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "meta/meta_service.h"
#include "meta/name_cache.h"
#include "meta/references.h"

namespace cshm::meta {

enum class MetaOp : uint8_t {
  kLookup = 1, kForget, kGetAttr, kSetAttr, kNoteWrite, kMknod, kMkdir, kSymlink, kLink, kUnlink,
  kRmdir, kRename, kReadlink, kListDir, kSetXattr, kGetXattr, kListXattrs, kRemoveXattr, kSetOwner,
};

struct MetaRequest {
  MetaOp op = MetaOp::kGetAttr;
  uint64_t ino = 0;      // ino or parent
  uint64_t ino2 = 0;     // new parent, forget count, write end, rdev
  uint32_t mode = 0;     // mode, rename/xattr flags, touch_mtime
  std::string name;      // name
  std::string name2;     // new name, symlink target, xattr value
  Caller caller;
  SetAttrRequest attr;
  uint32_t cache_ms = 0;  // how long the sender's kernel caches what the reply says

  std::string Encode() const;
  static Result<MetaRequest> Decode(std::string_view in);
};

// Runs `payload` (an encoded MetaRequest from node `from`, as the transport
// authenticated it) against `svc`; the result is the response payload. A
// payload that does not decode is kInvalid. `grants` (if not null) is told
// of the sender's cache window before the request is served.
Result<std::string> ServeMetaRequest(MetaService& svc, uint32_t from, std::string_view payload,
                                     NameGrants* grants = nullptr);

// Whether serving `payload` may wait for other nodes (a change of names or
// attributes waits for their kernels' caches): it must run where it may wait.
bool MayWaitOnPeers(std::string_view payload);

class RemoteMeta : public MetaService {
 public:
  using CallFn = std::function<Result<std::string>(std::string payload)>;
  using SendFn = std::function<void(std::string payload)>;  // one-way (Forget)
  // `cache_ms`: how long this node's kernel caches entries and directory
  // attributes (ClusterConfig::name_cache_ms), told with every request.
  RemoteMeta(CallFn call, SendFn send, uint32_t cache_ms = 0);

  Result<InodeRecord> Lookup(uint64_t parent, std::string_view name, const Caller& caller) override;
  void Forget(uint64_t ino, uint64_t n, const Caller& caller) override;
  Result<InodeRecord> GetAttr(uint64_t ino) override;
  Result<InodeRecord> SetAttr(uint64_t ino, const SetAttrRequest& req) override;
  Result<InodeRecord> NoteWrite(uint64_t ino, uint64_t end, bool touch_mtime) override;
  Result<InodeRecord> Mknod(uint64_t parent, std::string_view name, uint32_t mode, uint64_t rdev,
                            const Caller& caller) override;
  Result<InodeRecord> Mkdir(uint64_t parent, std::string_view name, uint32_t mode, const Caller& caller) override;
  Result<InodeRecord> Symlink(uint64_t parent, std::string_view name, std::string_view target,
                              const Caller& caller) override;
  Result<InodeRecord> Link(uint64_t ino, uint64_t new_parent, std::string_view new_name,
                           const Caller& caller) override;
  Status Unlink(uint64_t parent, std::string_view name, const Caller& caller) override;
  Status Rmdir(uint64_t parent, std::string_view name, const Caller& caller) override;
  Status Rename(uint64_t parent, std::string_view name, uint64_t new_parent, std::string_view new_name,
                unsigned flags, const Caller& caller) override;
  Result<std::string> Readlink(uint64_t ino) override;
  Result<std::vector<ListedEntry>> ListDir(uint64_t ino) override;
  Status SetXattr(uint64_t ino, std::string_view name, std::string_view value, int flags) override;
  Result<std::string> GetXattr(uint64_t ino, std::string_view name) override;
  Result<std::vector<std::string>> ListXattrs(uint64_t ino) override;
  Status RemoveXattr(uint64_t ino, std::string_view name) override;
  Status SetOwner(uint64_t ino, uint32_t node) override;

  // What this node's kernel holds, for the metadata node to register.
  HeldReferences& held() { return held_; }

 private:
  Result<InodeRecord> CallInode(const MetaRequest& r);
  Result<InodeRecord> CallTakingRef(MetaRequest r);
  Result<std::string> Call(MetaRequest r);
  CallFn call_;
  SendFn send_;
  const uint32_t cache_ms_;
  HeldReferences held_;
};

}  // namespace cshm::meta
