// The FUSE low-level adapter: each callback decodes the request, calls
// FileSystem / Namespace, and sends exactly one reply. Exceptions never cross
// into libfuse: Guard() (fs/fuse_guard.h) turns one into EIO, logged once.
#include "fs/fuse_ops.h"

#include <errno.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/xattr.h>

#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "fs/fuse_guard.h"
#include "fs/sem_ioctl.h"

namespace cshm::fs {
namespace {

FileSystem& Fs(fuse_req_t req) { return *static_cast<FileSystem*>(fuse_req_userdata(req)); }

meta::Caller CallerOf(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  return meta::Caller{ctx->uid, ctx->gid, Fs(req).node_id()};
}

// Replies with the errno of `s`, logging it once: expected outcomes (a missing
// name, a full mount) at debug, real failures at warn.
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

template <typename F>
void Guard(fuse_req_t req, const char* op, F&& body, const bool* replied = nullptr) {
  GuardRequest(op, std::forward<F>(body), [req](int err) { fuse_reply_err(req, err); }, replied);
}

// Entries and attributes: on one node every change goes through this daemon,
// so the kernel may cache them briefly; in a cluster other nodes change them,
// so it asks every time (FileSystem::cache_timeout()).
fuse_entry_param EntryOf(fuse_req_t req, const meta::InodeRecord& r) {
  fuse_entry_param e{};
  e.ino = r.ino;
  e.generation = 0;  // inode numbers never repeat
  e.attr = r.ToStat();
  e.attr_timeout = Fs(req).cache_timeout();
  e.entry_timeout = Fs(req).cache_timeout();
  return e;
}

void ReplyEntry(fuse_req_t req, const Result<meta::InodeRecord>& r, const char* op) {
  if (!r.ok()) return ReplyError(req, r.status(), op);
  fuse_entry_param e = EntryOf(req, *r);
  // A reply that does not reach the kernel (the request was interrupted)
  // gives it no reference: the one taken for it goes, on both ends. The
  // request is freed by the reply, so what comes after it is taken before.
  FileSystem& fs = Fs(req);
  const meta::Caller caller = CallerOf(req);
  if (fuse_reply_entry(req, &e) != 0) fs.Forget(r->ino, 1, caller);
}

// Valid replies: fuse_reply_entry, fuse_reply_err.
void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guard(req, "lookup", [&] { ReplyEntry(req, Fs(req).Lookup(parent, name, CallerOf(req)), "lookup"); });
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
  Guard(req, "getattr", [&] {
    auto r = Fs(req).GetAttr(ino);
    if (!r.ok()) return ReplyError(req, r.status(), "getattr");
    struct stat st = r->ToStat();
    fuse_reply_attr(req, &st, Fs(req).cache_timeout());
  });
}

Timestamp FromTimespec(const timespec& ts) { return Timestamp{ts.tv_sec, ts.tv_nsec}; }

// Valid replies: fuse_reply_attr, fuse_reply_err.
void OpSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
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
    fuse_reply_attr(req, &st, Fs(req).cache_timeout());
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
  Guard(req, "mknod", [&] { ReplyEntry(req, Fs(req).Mknod(parent, name, mode, rdev, CallerOf(req)), "mknod"); });
}

void OpMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  Guard(req, "mkdir", [&] { ReplyEntry(req, Fs(req).Mkdir(parent, name, mode, CallerOf(req)), "mkdir"); });
}

void OpSymlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  Guard(req, "symlink",
        [&] { ReplyEntry(req, Fs(req).Symlink(parent, name, link, CallerOf(req)), "symlink"); });
}

void OpLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name) {
  Guard(req, "link", [&] { ReplyEntry(req, Fs(req).Link(ino, new_parent, new_name, CallerOf(req)), "link"); });
}

// Valid replies: fuse_reply_err (0 on success).
void OpUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guard(req, "unlink", [&] {
    Status s = Fs(req).Unlink(parent, name);
    if (!s.ok()) return ReplyError(req, s, "unlink");
    fuse_reply_err(req, 0);
  });
}

void OpRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guard(req, "rmdir", [&] {
    Status s = Fs(req).Rmdir(parent, name);
    if (!s.ok()) return ReplyError(req, s, "rmdir");
    fuse_reply_err(req, 0);
  });
}

void OpRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent, const char* new_name,
              unsigned int flags) {
  Guard(req, "rename", [&] {
    Status s = Fs(req).Rename(parent, name, new_parent, new_name, flags);
    if (!s.ok()) return ReplyError(req, s, "rename");
    fuse_reply_err(req, 0);
  });
}

bool Writable(int flags) { return FileSystem::Writable(flags); }
// A regular file's handle says only whether it was opened for writing (the
// ioctl callback is not given the open flags).
constexpr uint64_t kWritableHandle = 1;

// Valid replies: fuse_reply_open, fuse_reply_err.
void OpOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guard(req, "open", [&] {
    Status opened = Fs(req).OpenFile(ino, fi->flags);
    if (!opened.ok()) return ReplyError(req, opened, "open");
    // Without keep_cache every open() would drop every process's cached pages
    // of the file (DESIGN.md "What the kernel does").
    fi->keep_cache = 1;
    fi->fh = Writable(fi->flags) ? kWritableHandle : 0;
    FileSystem& fs = Fs(req);  // the reply frees the request
    if (fuse_reply_open(req, fi) != 0 && Writable(fi->flags)) fs.ClosedForWrite(ino);  // no release will come
  });
}

// Valid replies: fuse_reply_create, fuse_reply_err.
void OpCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  Guard(req, "create", [&] {
    auto r = Fs(req).CreateOrOpen(parent, name, mode, fi->flags, CallerOf(req));
    if (!r.ok()) return ReplyError(req, r.status(), "create");
    if (Writable(fi->flags)) {
      Status w = Fs(req).OpenedForWrite(r->ino);
      if (!w.ok()) return ReplyError(req, w, "create");
    }
    fi->keep_cache = 1;
    fi->fh = Writable(fi->flags) ? kWritableHandle : 0;
    fuse_entry_param e = EntryOf(req, *r);
    FileSystem& fs = Fs(req);  // the reply frees the request
    const meta::Caller caller = CallerOf(req);
    const bool writable = Writable(fi->flags);
    if (fuse_reply_create(req, &e, fi) != 0) {  // the kernel has neither the open file nor the reference
      if (writable) fs.ClosedForWrite(r->ino);
      fs.Forget(r->ino, 1, caller);
    }
  });
}

// Valid replies: fuse_reply_ioctl, fuse_reply_err. The only ioctl is the
// shim's semaphore call (fs/sem_ioctl.h); a restricted ioctl's buffer comes in
// and goes out whole. A semop that waits is answered later, from another
// thread (this worker goes back to the loop); a signal to the caller
// interrupts it (FUSE INTERRUPT).
void OpIoctl(fuse_req_t req, fuse_ino_t ino, unsigned cmd, void*, fuse_file_info* fi, unsigned flags,
             const void* in_buf, size_t in_bufsz, size_t out_bufsz) {
  Guard(req, "ioctl", [&] {
    const unsigned c = cmd;
    if ((flags & FUSE_IOCTL_COMPAT) || !IsSemIoctl(c) || in_bufsz != _IOC_SIZE(c) || out_bufsz != _IOC_SIZE(c))
      return (void)fuse_reply_err(req, ENOTTY);
    Fs(req).Semaphore(
        ino, std::string(static_cast<const char*>(in_buf), in_bufsz), fuse_req_ctx(req)->pid,
        (fi->fh & kWritableHandle) != 0, [req] { return fuse_req_interrupted(req) != 0; },
        [req](const std::string& io) { fuse_reply_ioctl(req, 0, io.data(), io.size()); });
  });
}

// Valid replies: fuse_reply_buf, fuse_reply_err.
void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  ReadScratch scratch;  // outlives the reply, and Guard's look at `replied`
  Guard(req, "read", [&] {
    if (off < 0) return (void)fuse_reply_err(req, EINVAL);
    std::unique_ptr<char[]> buf(new char[size]);
    // Pages of this node's store go to the kernel spliced from their file:
    // one copy (in the kernel) instead of a read here and a write there.
    scratch.from_file = [req, &scratch](int fd, uint64_t at, size_t n) -> Status {
      scratch.replied = true;
      fuse_bufvec bv = FUSE_BUFVEC_INIT(n);
      bv.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
      bv.buf[0].fd = fd;
      bv.buf[0].pos = static_cast<off_t>(at);
      int rc = fuse_reply_data(req, &bv, static_cast<fuse_buf_copy_flags>(0));  // copied, never moved
      return rc == 0 ? Status::Ok() : Status::FromErrno(-rc, "answering a read");
    };
    auto got = Fs(req).Read(ino, static_cast<uint64_t>(off), size, buf.get(), &scratch);
    if (scratch.replied) return;  // answered from the file (or failed doing so: answered with the error)
    if (!got.ok()) return ReplyError(req, got.status(), "read");
    fuse_reply_buf(req, got->data(), got->size());
  }, &scratch.replied);
}

// Valid replies: fuse_reply_write, fuse_reply_err.
void OpWrite(fuse_req_t req, fuse_ino_t ino, const char* data, size_t size, off_t off, fuse_file_info* fi) {
  Guard(req, "write", [&] {
    if (off < 0) return (void)fuse_reply_err(req, EINVAL);
    Status s = Fs(req).Write(ino, static_cast<uint64_t>(off), data, size, fi->writepage != 0);
    if (!s.ok()) return ReplyError(req, s, "write");
    fuse_reply_write(req, size);
  });
}

// The kernel writes dirty pages back before FLUSH; a flush (close) is a
// release and drops the closing owner's POSIX locks, a release of the file
// its flock locks. Valid replies: fuse_reply_err.
void OpFlush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guard(req, "flush", [&] {
    Status s = Fs(req).Flush(ino, fi->lock_owner);
    if (!s.ok()) return ReplyError(req, s, "flush");
    fuse_reply_err(req, 0);
  });
}

void OpRelease(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guard(req, "release", [&] {
    if (Writable(fi->flags)) Fs(req).ClosedForWrite(ino);
    if (fi->flock_release) {
      Status s = Fs(req).ReleaseLocks(ino, fi->lock_owner, /*flock=*/true);
      if (!s.ok()) return ReplyError(req, s, "release");
    }
    fuse_reply_err(req, 0);
  });
}

ownership::Lock LockOf(fuse_req_t req, const struct flock* l, uint64_t owner, bool flock) {
  ownership::Lock k;
  k.type = l->l_type;
  k.start = static_cast<uint64_t>(l->l_start);
  k.end = l->l_len == 0 ? ownership::kLockEof : static_cast<uint64_t>(l->l_start + l->l_len - 1);
  k.pid = static_cast<uint32_t>(fuse_req_ctx(req)->pid);
  k.who = ownership::LockOwner{Fs(req).node_id(), owner};
  k.flock = flock;
  return k;
}

// Valid replies: fuse_reply_lock, fuse_reply_err.
void OpGetlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock) {
  Guard(req, "getlk", [&] {
    auto r = Fs(req).GetLock(ino, LockOf(req, lock, fi->lock_owner, false));
    if (!r.ok()) return ReplyError(req, r.status(), "getlk");
    struct flock out = *lock;
    out.l_type = static_cast<short>(r->type);
    if (r->type != F_UNLCK) {
      out.l_start = static_cast<off_t>(r->start);
      out.l_len = r->end == ownership::kLockEof ? 0 : static_cast<off_t>(r->end - r->start + 1);
      // Another node's pid means nothing here; report it only for our own.
      out.l_pid = r->who.node == Fs(req).node_id() ? static_cast<pid_t>(r->pid) : 0;
    }
    fuse_reply_lock(req, &out);
  });
}

// Takes or drops a lock and replies. A lock that must be waited for is
// answered later, from the lock-wait thread: this worker goes back to the loop.
void SetLockAndReply(fuse_req_t req, fuse_ino_t ino, const ownership::Lock& want, bool sleep, const char* op) {
  if (sleep && want.type != F_UNLCK) {
    Fs(req).SetLockLater(ino, want, [req] { return fuse_req_interrupted(req) != 0; }, [req, op](const Status& s) {
      if (!s.ok()) return ReplyError(req, s, op);
      fuse_reply_err(req, 0);
    });
    return;
  }
  Status s = Fs(req).SetLock(ino, want);
  if (!s.ok()) return ReplyError(req, s, op);
  fuse_reply_err(req, 0);
}

// Valid replies: fuse_reply_err.
void OpSetlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock, int sleep) {
  Guard(req, "setlk", [&] { SetLockAndReply(req, ino, LockOf(req, lock, fi->lock_owner, false), sleep != 0, "setlk"); });
}

void OpFlock(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int op) {
  Guard(req, "flock", [&] {
    struct flock whole {};
    whole.l_type = (op & LOCK_UN) ? F_UNLCK : (op & LOCK_EX) ? F_WRLCK : F_RDLCK;
    SetLockAndReply(req, ino, LockOf(req, &whole, fi->lock_owner, true), !(op & LOCK_NB), "flock");
  });
}

void OpFsync(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
  Guard(req, "fsync", [&] {
    Status s = Fs(req).Fsync(ino);
    if (!s.ok()) return ReplyError(req, s, "fsync");
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

// Valid replies: fuse_reply_err.
void OpFallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, fuse_file_info*) {
  Guard(req, "fallocate", [&] {
    if (off < 0 || len <= 0) return (void)fuse_reply_err(req, EINVAL);
    Status s = Fs(req).Fallocate(ino, mode, static_cast<uint64_t>(off), static_cast<uint64_t>(len));
    if (!s.ok()) return ReplyError(req, s, "fallocate");
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
  ops.open = OpOpen;
  ops.create = OpCreate;
  ops.read = OpRead;
  ops.write = OpWrite;
  ops.flush = OpFlush;
  ops.release = OpRelease;
  ops.fsync = OpFsync;
  ops.opendir = OpOpendir;
  ops.readdir = OpReaddir;
  ops.releasedir = OpReleasedir;
  ops.statfs = OpStatfs;
  ops.setxattr = OpSetxattr;
  ops.getxattr = OpGetxattr;
  ops.listxattr = OpListxattr;
  ops.removexattr = OpRemovexattr;
  ops.fallocate = OpFallocate;
  ops.getlk = OpGetlk;
  ops.setlk = OpSetlk;
  ops.ioctl = OpIoctl;
  ops.flock = OpFlock;
  return ops;
}();

}  // namespace

const fuse_lowlevel_ops& FuseOps() { return kOps; }

}  // namespace cshm::fs
