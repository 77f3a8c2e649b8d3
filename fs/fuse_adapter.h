// What the FUSE adapter's callbacks share: fs/fuse_ops.cc (names,
// attributes, directories, xattrs, statfs, init, the table) and
// fs/fuse_ops_files.cc (open files: data, locks, flush, fsync, fallocate,
// the semaphore ioctl). Internal to the adapter; every callback sends
// exactly one reply, and Guard keeps exceptions out of libfuse.
#pragma once

#include <utility>

#include "fs/fuse_guard.h"
#include "fs/fuse_ops.h"

namespace cshm::fs::fuse_adapter {

inline FileSystem& Fs(fuse_req_t req) { return *static_cast<FileSystem*>(fuse_req_userdata(req)); }

inline meta::Caller CallerOf(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  return meta::Caller{ctx->uid, ctx->gid, Fs(req).node_id()};
}

// Replies with the errno of `s`, logging it once: expected outcomes (a missing
// name, a full mount) at debug, real failures at warn.
void ReplyError(fuse_req_t req, const Status& s, const char* op);

template <typename F>
void Guard(fuse_req_t req, const char* op, F&& body, const bool* replied = nullptr) {
  GuardRequest(op, std::forward<F>(body), [req](int err) { fuse_reply_err(req, err); }, replied);
}

// An entry for the kernel, cached as long as FileSystem::EntryTimeout and
// AttrTimeout say for a request that began at `asked`.
// `name` in `parent` is the entry's name.
fuse_entry_param EntryOf(fuse_req_t req, const meta::InodeRecord& r, uint64_t parent, std::string_view name,
                         std::chrono::steady_clock::time_point asked);

// Puts the open files' callbacks (fs/fuse_ops_files.cc) into the table.
void AddFileOps(fuse_lowlevel_ops* ops);

}  // namespace cshm::fs::fuse_adapter
