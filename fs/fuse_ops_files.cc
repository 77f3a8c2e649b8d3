// The FUSE adapter's callbacks on open files (fs/fuse_adapter.h): open and
// create, READ (spliced from the page store's file) and WRITE, flush and
// release (releases of the file), POSIX and flock locks, fsync, fallocate,
// and the shim's semaphore ioctl. Each sends exactly one reply.
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>

#include <memory>
#include <string>

#include "fs/fuse_adapter.h"
#include "fs/sem_ioctl.h"

namespace cshm::fs::fuse_adapter {
namespace {

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
  const auto asked = std::chrono::steady_clock::now();
  Guard(req, "create", [&] {
    auto r = Fs(req).CreateOrOpen(parent, name, mode, fi->flags, CallerOf(req));
    if (!r.ok()) return ReplyError(req, r.status(), "create");
    if (Writable(fi->flags)) {
      Status w = Fs(req).OpenedForWrite(r->ino);
      if (!w.ok()) return ReplyError(req, w, "create");
    }
    fi->keep_cache = 1;
    fi->fh = Writable(fi->flags) ? kWritableHandle : 0;
    fuse_entry_param e = EntryOf(req, *r, parent, name, asked);
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

// Valid replies: fuse_reply_err.
void OpFallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, fuse_file_info*) {
  Guard(req, "fallocate", [&] {
    if (off < 0 || len <= 0) return (void)fuse_reply_err(req, EINVAL);
    Status s = Fs(req).Fallocate(ino, mode, static_cast<uint64_t>(off), static_cast<uint64_t>(len));
    if (!s.ok()) return ReplyError(req, s, "fallocate");
    fuse_reply_err(req, 0);
  });
}

}  // namespace

void AddFileOps(fuse_lowlevel_ops* ops) {
  ops->open = OpOpen;
  ops->create = OpCreate;
  ops->read = OpRead;
  ops->write = OpWrite;
  ops->flush = OpFlush;
  ops->release = OpRelease;
  ops->fsync = OpFsync;
  ops->fallocate = OpFallocate;
  ops->getlk = OpGetlk;
  ops->setlk = OpSetlk;
  ops->flock = OpFlock;
  ops->ioctl = OpIoctl;
}

}  // namespace cshm::fs::fuse_adapter
