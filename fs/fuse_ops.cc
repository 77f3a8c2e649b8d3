// The FUSE low-level adapter: each callback decodes the request, calls
// FileSystem, and sends exactly one reply. Exceptions never cross into
// libfuse: Guard() (fs/fuse_guard.h) turns one into EIO, logged once. Here:
// names, attributes, directories, xattrs, statfs, init and the table; the
// open files' callbacks are in fs/fuse_ops_files.cc (fs/fuse_adapter.h has
// what both share).
#include "fs/fuse_ops.h"

#include <errno.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/xattr.h>

#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "fs/fuse_adapter.h"

namespace cshm::fs {

namespace fuse_adapter {

void ReplyError(fuse_req_t req, const Status& s, const char* op) {
  const int err = s.ToErrno();
  const bool expected = s.code() != Status::Code::kIo && s.code() != Status::Code::kCorruption &&
                        s.code() != Status::Code::kSystem && s.code() != Status::Code::kUnavailable &&
                        s.code() != Status::Code::kTimedOut;
  if (expected)
    spdlog::debug("{}: {} ({})", op, s.message(), strerror(err));
  else
    spdlog::warn("{} failed: {} ({})", op, s.message(), strerror(err));
  fuse_reply_err(req, err);
}

fuse_entry_param EntryOf(fuse_req_t req, const meta::InodeRecord& r, uint64_t parent, std::string_view name,
                         std::chrono::steady_clock::time_point asked) {
  fuse_entry_param e{};
  e.ino = r.ino;
  e.generation = 0;  // inode numbers never repeat
  e.attr = r.ToStat();
  e.attr_timeout = Fs(req).AttrTimeout(r, asked);
  e.entry_timeout = Fs(req).EntryTimeout(parent, name, asked);
  return e;
}

}  // namespace fuse_adapter

namespace {

using namespace fuse_adapter;

using Clock = std::chrono::steady_clock;

void ReplyEntry(fuse_req_t req, const Result<meta::InodeRecord>& r, const char* op, uint64_t parent,
                std::string_view name, Clock::time_point asked) {
  if (!r.ok()) return ReplyError(req, r.status(), op);
  fuse_entry_param e = EntryOf(req, *r, parent, name, asked);
  // A reply that does not reach the kernel (the request was interrupted)
  // gives it no reference: the one taken for it goes, on both ends. The
  // request is freed by the reply, so what comes after it is taken before.
  FileSystem& fs = Fs(req);
  const meta::Caller caller = CallerOf(req);
  if (fuse_reply_entry(req, &e) != 0) fs.Forget(r->ino, 1, caller);
}

// Valid replies: fuse_reply_entry, fuse_reply_err.
void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  const Clock::time_point asked = Clock::now();
  Guard(req, "lookup", [&] { ReplyEntry(req, Fs(req).Lookup(parent, name, CallerOf(req)), "lookup", parent, name, asked); });
}

// Valid replies: fuse_reply_none.
void OpForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  try {
    Fs(req).Forget(ino, nlookup, CallerOf(req));
  } catch (...) {
    spdlog::error("forget: internal error");
  }
  fuse_reply_none(req);
}

void OpForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  try {
    for (size_t i = 0; i < count; i++) Fs(req).Forget(forgets[i].ino, forgets[i].nlookup, CallerOf(req));
  } catch (...) {
    spdlog::error("forget: internal error");
  }
  fuse_reply_none(req);
}

// Valid replies: fuse_reply_attr, fuse_reply_err.
void OpGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  const Clock::time_point asked = Clock::now();
  Guard(req, "getattr", [&] {
    auto r = Fs(req).GetAttr(ino);
    if (!r.ok()) return ReplyError(req, r.status(), "getattr");
    struct stat st = r->ToStat();
    fuse_reply_attr(req, &st, Fs(req).AttrTimeout(*r, asked));
  });
}

Timestamp FromTimespec(const timespec& ts) { return Timestamp{ts.tv_sec, ts.tv_nsec}; }

// Valid replies: fuse_reply_attr, fuse_reply_err.
void OpSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
  const Clock::time_point asked = Clock::now();
  Guard(req, "setattr", [&] {
    meta::SetAttrRequest r;
    if (to_set & FUSE_SET_ATTR_MODE) r.mode = attr->st_mode & 07777;
    if (to_set & FUSE_SET_ATTR_UID) r.uid = attr->st_uid;
    if (to_set & FUSE_SET_ATTR_GID) r.gid = attr->st_gid;
    if (to_set & FUSE_SET_ATTR_SIZE) {
      if (attr->st_size < 0) return (void)fuse_reply_err(req, EINVAL);
      r.size = static_cast<uint64_t>(attr->st_size);
    }
    const Timestamp now = Timestamp::Now();
    if (to_set & FUSE_SET_ATTR_ATIME_NOW) r.atime = now;
    else if (to_set & FUSE_SET_ATTR_ATIME) r.atime = FromTimespec(attr->st_atim);
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) r.mtime = now;
    else if (to_set & FUSE_SET_ATTR_MTIME) r.mtime = FromTimespec(attr->st_mtim);
    auto res = Fs(req).SetAttr(ino, r);
    if (!res.ok()) return ReplyError(req, res.status(), "setattr");
    struct stat st = res->ToStat();
    fuse_reply_attr(req, &st, Fs(req).AttrTimeout(*res, asked));
  });
}

// Valid replies: fuse_reply_readlink, fuse_reply_err.
void OpReadlink(fuse_req_t req, fuse_ino_t ino) {
  Guard(req, "readlink", [&] {
    auto r = Fs(req).Readlink(ino);
    if (!r.ok()) return ReplyError(req, r.status(), "readlink");
    fuse_reply_readlink(req, r->c_str());
  });
}

// Valid replies: fuse_reply_entry, fuse_reply_err.
void OpMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  const Clock::time_point asked = Clock::now();
  Guard(req, "mknod",
        [&] { ReplyEntry(req, Fs(req).Mknod(parent, name, mode, rdev, CallerOf(req)), "mknod", parent, name, asked); });
}

void OpMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  const Clock::time_point asked = Clock::now();
  Guard(req, "mkdir", [&] { ReplyEntry(req, Fs(req).Mkdir(parent, name, mode, CallerOf(req)), "mkdir", parent, name, asked); });
}

void OpSymlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  const Clock::time_point asked = Clock::now();
  Guard(req, "symlink",
        [&] { ReplyEntry(req, Fs(req).Symlink(parent, name, link, CallerOf(req)), "symlink", parent, name, asked); });
}

void OpLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name) {
  const Clock::time_point asked = Clock::now();
  Guard(req, "link",
        [&] { ReplyEntry(req, Fs(req).Link(ino, new_parent, new_name, CallerOf(req)), "link", new_parent, new_name, asked); });
}

// Valid replies: fuse_reply_err (0 on success).
void OpUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guard(req, "unlink", [&] {
    Status s = Fs(req).Unlink(parent, name, CallerOf(req));
    if (!s.ok()) return ReplyError(req, s, "unlink");
    fuse_reply_err(req, 0);
  });
}

void OpRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guard(req, "rmdir", [&] {
    Status s = Fs(req).Rmdir(parent, name, CallerOf(req));
    if (!s.ok()) return ReplyError(req, s, "rmdir");
    fuse_reply_err(req, 0);
  });
}

void OpRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent, const char* new_name,
              unsigned int flags) {
  Guard(req, "rename", [&] {
    Status s = Fs(req).Rename(parent, name, new_parent, new_name, flags, CallerOf(req));
    if (!s.ok()) return ReplyError(req, s, "rename");
    fuse_reply_err(req, 0);
  });
}

// A directory handle holds a snapshot of the entries taken at opendir, so that
// offsets stay stable while the directory changes (POSIX leaves it open whether
// readdir sees concurrent changes).
struct DirHandle {
  std::vector<meta::ListedEntry> entries;
};

// Valid replies: fuse_reply_open, fuse_reply_err.
void OpOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guard(req, "opendir", [&] {
    auto r = Fs(req).ListDir(ino);
    if (!r.ok()) return ReplyError(req, r.status(), "opendir");
    auto* h = new DirHandle{std::move(*r)};
    fi->fh = reinterpret_cast<uint64_t>(h);
    if (fuse_reply_open(req, fi) != 0) delete h;  // the kernel will not release it
  });
}

// Valid replies: fuse_reply_buf, fuse_reply_err.
void OpReaddir(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  Guard(req, "readdir", [&] {
    auto* h = reinterpret_cast<DirHandle*>(fi->fh);
    std::vector<char> buf(size);
    size_t used = 0;
    for (size_t i = static_cast<size_t>(std::max<off_t>(off, 0)); i < h->entries.size(); i++) {
      const meta::ListedEntry& e = h->entries[i];
      struct stat st {};
      st.st_ino = e.ino;
      st.st_mode = e.type;
      size_t need = fuse_add_direntry(req, buf.data() + used, size - used, e.name.c_str(), &st,
                                      static_cast<off_t>(i + 1));
      if (need > size - used) break;
      used += need;
    }
    fuse_reply_buf(req, buf.data(), used);
  });
}

// Valid replies: fuse_reply_err.
void OpReleasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  delete reinterpret_cast<DirHandle*>(fi->fh);
  fuse_reply_err(req, 0);
}

// Valid replies: fuse_reply_statfs, fuse_reply_err.
void OpStatfs(fuse_req_t req, fuse_ino_t) {
  Guard(req, "statfs", [&] {
    FsStats s = Fs(req).Stats();
    struct statvfs v {};
    v.f_bsize = v.f_frsize = s.block_size;
    v.f_blocks = s.blocks;
    v.f_bfree = v.f_bavail = s.blocks_free;
    v.f_files = s.files;
    v.f_ffree = v.f_favail = s.files_free;
    v.f_namemax = s.name_max;
    fuse_reply_statfs(req, &v);
  });
}

// Valid replies: fuse_reply_err.
void OpSetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags) {
  Guard(req, "setxattr", [&] {
    Status s = Fs(req).SetXattr(ino, name, std::string_view(value, size), flags);
    if (!s.ok()) return ReplyError(req, s, "setxattr");
    fuse_reply_err(req, 0);
  });
}

// Size 0 asks for the length. Valid replies: fuse_reply_buf, fuse_reply_xattr, fuse_reply_err.
void ReplyXattrBytes(fuse_req_t req, const std::string& bytes, size_t size) {
  if (size == 0) return (void)fuse_reply_xattr(req, bytes.size());
  if (bytes.size() > size) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, bytes.data(), bytes.size());
}

void OpGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Guard(req, "getxattr", [&] {
    auto r = Fs(req).GetXattr(ino, name);
    if (!r.ok()) return ReplyError(req, r.status(), "getxattr");
    ReplyXattrBytes(req, *r, size);
  });
}

void OpListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Guard(req, "listxattr", [&] {
    auto r = Fs(req).ListXattrs(ino);
    if (!r.ok()) return ReplyError(req, r.status(), "listxattr");
    std::string all;
    for (const std::string& n : *r) all.append(n).push_back('\0');
    ReplyXattrBytes(req, all, size);
  });
}

void OpRemovexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  Guard(req, "removexattr", [&] {
    Status s = Fs(req).RemoveXattr(ino, name);
    if (!s.ok()) return ReplyError(req, s, "removexattr");
    fuse_reply_err(req, 0);
  });
}

void OpInit(void* userdata, fuse_conn_info* conn) {
  // One node: the kernel keeps locks itself. A cluster: the owners do, and
  // the kernel must ask us for every lock (DESIGN.md contract 4).
  if (!static_cast<FileSystem*>(userdata)->cluster_locks())
    conn->want &= ~(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
  // Invalidation is explicit and ours; the kernel must not drop cached pages
  // because an mtime moved.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  // write(2) is write-through, so errors such as ENOSPC reach the writer.
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  if (conn->capable & FUSE_CAP_EXPLICIT_INVAL_DATA) conn->want |= FUSE_CAP_EXPLICIT_INVAL_DATA;
  // READs answered from the page store are spliced from its file (OpRead);
  // never moved: the pages stay the store's.
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  conn->want &= ~FUSE_CAP_SPLICE_MOVE;
  conn->max_read = kMaxRead;  // as the mount option says (cshmfs_main.cc)
  conn->max_readahead = conn->max_readahead == 0 ? (1u << 20) : conn->max_readahead;
  spdlog::debug("FUSE protocol {}.{}, max_write {}, max_readahead {}", conn->proto_major, conn->proto_minor,
                conn->max_write, conn->max_readahead);
}

const fuse_lowlevel_ops kOps = [] {
  fuse_lowlevel_ops ops{};
  ops.init = OpInit;
  ops.lookup = OpLookup;
  ops.forget = OpForget;
  ops.forget_multi = OpForgetMulti;
  ops.getattr = OpGetattr;
  ops.setattr = OpSetattr;
  ops.readlink = OpReadlink;
  ops.mknod = OpMknod;
  ops.mkdir = OpMkdir;
  ops.symlink = OpSymlink;
  ops.link = OpLink;
  ops.unlink = OpUnlink;
  ops.rmdir = OpRmdir;
  ops.rename = OpRename;
  AddFileOps(&ops);  // open, create, read, write, flush, release, fsync, fallocate, locks, ioctl
  ops.opendir = OpOpendir;
  ops.readdir = OpReaddir;
  ops.releasedir = OpReleasedir;
  ops.statfs = OpStatfs;
  ops.setxattr = OpSetxattr;
  ops.getxattr = OpGetxattr;
  ops.listxattr = OpListxattr;
  ops.removexattr = OpRemovexattr;
  return ops;
}();

}  // namespace

const fuse_lowlevel_ops& FuseOps() { return kOps; }

}  // namespace cshm::fs
