// FileSystem: one node's filesystem core, below the FUSE adapter and free of
// <fuse_lowlevel.h>. It owns the state dir, the metadata store, the namespace and
// the page store, and orders data changes with metadata changes.
//
// Without a cluster config every segment is this node's and data goes straight
// to the page store. With one, the namespace is the metadata node's (served
// here or reached through meta::RemoteMeta) and the data methods go through
// fs::Cluster to each segment's owner.
//
// Thread-safety: all methods are thread-safe.
#pragma once

#include <fcntl.h>

#include <cstdint>
#include <memory>
#include <string>

#include <functional>
#include <optional>

#include "common/status.h"
#include "fs/delay_seam.h"
#include "fs/read_scratch.h"
#include "meta/namespace.h"
#include "net/cluster_config.h"
#include "net/messenger.h"
#include "ownership/lock_table.h"
#include "store/meta_store.h"
#include "store/page_store.h"
#include "store/state_dir.h"

namespace cshm::fs {

struct FileSystemOptions {
  std::string state_dir;
  uint32_t node_id = 0;
  uint64_t capacity_bytes = 0;
  meta::RootOptions root;
  std::optional<net::ClusterConfig> cluster;
  // With `cluster`: how the node reaches the others (empty: TCP, with
  // `seams.net`; the component tests give a simulated network).
  net::MessengerFactory messenger;
  // Where tests widen races (fs/delay_seam.h); cshmfs reads them from its
  // environment, nothing else does.
  TestSeams seams;
};

class Cluster;
class Semaphores;

struct FsStats {
  uint64_t block_size = store::kPageSize;
  uint64_t blocks = 0;
  uint64_t blocks_free = 0;
  uint64_t files = 0;
  uint64_t files_free = 0;
  uint64_t name_max = 255;
};

class FileSystem {
 public:
  static Result<std::unique_ptr<FileSystem>> Open(const FileSystemOptions& options);
  ~FileSystem();

  // The namespace as the kernel asks for it (the FUSE adapter calls
  // nothing but this class): the metadata node's, served here or reached
  // through meta::RemoteMeta. Lookup takes a reference (Forget drops it).
  Result<meta::InodeRecord> Lookup(uint64_t parent, std::string_view name, const meta::Caller& caller) {
    AskingName(parent, name);
    return meta_->Lookup(parent, name, caller);
  }
  Result<meta::InodeRecord> GetAttr(uint64_t ino) { return meta_->GetAttr(ino); }
  Result<std::string> Readlink(uint64_t ino) { return meta_->Readlink(ino); }
  Result<std::vector<meta::ListedEntry>> ListDir(uint64_t ino) { return meta_->ListDir(ino); }
  Result<meta::InodeRecord> Mknod(uint64_t parent, std::string_view name, uint32_t mode, uint64_t rdev,
                                  const meta::Caller& caller) {
    AskingName(parent, name);
    return meta_->Mknod(parent, name, mode, rdev, caller);
  }
  Result<meta::InodeRecord> Mkdir(uint64_t parent, std::string_view name, uint32_t mode, const meta::Caller& caller) {
    AskingName(parent, name);
    return meta_->Mkdir(parent, name, mode, caller);
  }
  Result<meta::InodeRecord> Symlink(uint64_t parent, std::string_view name, std::string_view target,
                                    const meta::Caller& caller) {
    AskingName(parent, name);
    return meta_->Symlink(parent, name, target, caller);
  }
  Result<meta::InodeRecord> Link(uint64_t ino, uint64_t new_parent, std::string_view new_name,
                                 const meta::Caller& caller) {
    AskingName(new_parent, new_name);
    return meta_->Link(ino, new_parent, new_name, caller);
  }
  // A removed file's pages go when its last reference does (the metadata
  // node purges it at its owner: meta::Namespace, Cluster::Purge).
  Status Unlink(uint64_t parent, std::string_view name, const meta::Caller& caller) {
    return meta_->Unlink(parent, name, caller);
  }
  Status Rmdir(uint64_t parent, std::string_view name, const meta::Caller& caller) {
    return meta_->Rmdir(parent, name, caller);
  }
  // flags: 0, RENAME_NOREPLACE or RENAME_EXCHANGE.
  Status Rename(uint64_t parent, std::string_view name, uint64_t new_parent, std::string_view new_name,
                unsigned flags, const meta::Caller& caller) {
    RenamingTo(new_parent, new_name);
    if (flags & RENAME_EXCHANGE) RenamingTo(parent, name);
    return meta_->Rename(parent, name, new_parent, new_name, flags, caller);
  }
  // For tests and tools: the namespace service itself.
  meta::MetaService& ns() { return *meta_; }
  store::StateDir& state_dir() { return *state_dir_; }
  Cluster* cluster() { return cluster_.get(); }
  uint32_t node_id() const { return node_id_; }
  // How long the kernel may keep what a reply says, in seconds, for a
  // request that began at `asked`. On one node every change goes through
  // this daemon: 1 s. In a cluster, entries and directories' attributes for
  // the config's name_cache_ms counted from `asked` (the metadata node has
  // every kernel drop them when they change, or waits out that window:
  // meta/name_cache.h); an entry only if it was noted before it was asked
  // for (AskingName: not in a directory whose names other nodes change,
  // fs/kernel_names.h); regular files' attributes not at all (a write
  // elsewhere changes their size and times).
  double EntryTimeout(uint64_t parent, std::string_view name, std::chrono::steady_clock::time_point asked) const;
  double DirTimeout(std::chrono::steady_clock::time_point asked) const;
  // Before a request whose reply may give the kernel `name` in `parent`.
  void AskingName(uint64_t parent, std::string_view name);
  void RenamingTo(uint64_t parent, std::string_view name);
  double AttrTimeout(const meta::InodeRecord& r, std::chrono::steady_clock::time_point asked) const;
  // Drops kernel-cached pages (see Cluster::Notifier); set by the FUSE layer.
  void SetNotifier(std::function<void(uint64_t ino, uint64_t off, uint64_t len)> n);
  // Drops a dentry from the kernel (a name removed on another node).
  void SetEntryNotifier(std::function<void(uint64_t parent, const std::string& name)> n);
  // Leaves the cluster (before the FUSE session goes).
  void Stop();

  // open(O_CREAT): creates `name`, or, when another node created it since the
  // kernel looked (it only sends CREATE for a name it did not find), opens the
  // existing file unless O_EXCL, as a local filesystem would.
  Result<meta::InodeRecord> CreateOrOpen(uint64_t parent, std::string_view name, uint32_t mode, int flags,
                                         const meta::Caller& caller);

  // open(2) of an existing file, before it is answered: EISDIR for a
  // directory; O_TRUNC truncates (libfuse asks for atomic O_TRUNC, so the
  // truncation is ours); a writable open is OpenedForWrite. A writable
  // open whose answer does not reach the kernel must be ClosedForWrite.
  Status OpenFile(uint64_t ino, int flags);
  static bool Writable(int flags) { return (flags & O_ACCMODE) != O_RDONLY; }

  // Reads up to `len` bytes at `off`, stopping at EOF. Returns the count.
  Result<size_t> Read(uint64_t ino, uint64_t off, size_t len, char* buf);
  // The FUSE READ: the result views `buf` or `scratch->frame` (bytes from a
  // remote owner stay in the received frame). Keep `scratch` until the reply
  // is sent (see Cluster::Read).
  Result<std::string_view> Read(uint64_t ino, uint64_t off, size_t len, char* buf, ReadScratch* scratch);
  // Every handle opened for writing (before the open is answered), and its
  // release (see Cluster::Read).
  Status OpenedForWrite(uint64_t ino);
  void ClosedForWrite(uint64_t ino);
  // Writes and grows the size if the write ends past it. `writeback`: the
  // kernel writing back a mapping's pages (not a write(2)).
  Status Write(uint64_t ino, uint64_t off, const char* data, size_t len, bool writeback = false);
  // SetAttr, with the data side of a size change: shrinking drops the pages
  // past the new end, so that growing later exposes zeros.
  Result<meta::InodeRecord> SetAttr(uint64_t ino, const meta::SetAttrRequest& req);
  // fallocate(2): mode 0 and FALLOC_FL_KEEP_SIZE reserve space (ENOSPC past the
  // cap), FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE frees it.
  Status Fallocate(uint64_t ino, int mode, uint64_t off, uint64_t len);
  // fsync/msync: on one node, the metadata WAL to disk (page data is in the
  // backing files' page cache, as safe from a daemon crash as tmpfs); in a
  // cluster, a release (Cluster::Sync).
  Status Fsync(uint64_t ino);
  // FUSE FORGET: the kernel dropped `n` lookups of `ino` (it evicted the inode).
  void Forget(uint64_t ino, uint64_t n, const meta::Caller& caller);
  FsStats Stats();

  // Extended attributes, with the control surface (docs/migrator.md):
  //   user.cshm.owner           read: the owner node; write N: migrate there now
  //   user.cshm.pin             "1"/"0": pinned against automatic migration
  //   user.cshm.stats           read: owner, pin, size, decaying rates per node
  //   user.cshm.remote_fetches  read: this node's fetches of it from a remote owner
  // Everything else is the namespace's. The control attributes are virtual,
  // like CephFS's ceph.* ones: never listed; removing user.cshm.pin unpins,
  // the others cannot be removed (EPERM).
  Result<std::string> GetXattr(uint64_t ino, std::string_view name);
  Status SetXattr(uint64_t ino, std::string_view name, std::string_view value, int flags);
  Result<std::vector<std::string>> ListXattrs(uint64_t ino);
  Status RemoveXattr(uint64_t ino, std::string_view name);

  // Cluster-wide locks (see Cluster). On one node the kernel keeps locks
  // itself and these are not called; they answer kNotSupported.
  bool cluster_locks() const { return cluster_ != nullptr; }
  Result<ownership::Lock> GetLock(uint64_t ino, const ownership::Lock& want);
  Status SetLock(uint64_t ino, const ownership::Lock& want);  // one try (F_SETLK, unlock)
  Status ReleaseLocks(uint64_t ino, uint64_t owner, bool flock);
  // A lock wait that holds no thread (Cluster::SetLockLater).
  void SetLockLater(uint64_t ino, const ownership::Lock& want, std::function<bool()> interrupted,
                    std::function<void(const Status&)> done);
  // close(): a release, and the closing owner's POSIX locks go.
  Status Flush(uint64_t ino, uint64_t lock_owner);

  // SysV semaphores: the shim's ioctl on a set's file (fs/sem_ioctl.h),
  // answered through `reply`, maybe later and from another thread; see
  // Semaphores::Run.
  void Semaphore(uint64_t ino, std::string io, pid_t caller_tid, bool writable, std::function<bool()> interrupted,
                 std::function<void(const std::string& io)> reply);

 private:
  FileSystem() = default;
  Result<std::shared_ptr<store::Segment>> RegularSegment(uint64_t ino);

  void AddGauges();  // metrics read from this object; removed by Stop
  std::unique_ptr<store::StateDir> state_dir_;
  std::unique_ptr<store::MetaStore> meta_store_;
  std::unique_ptr<store::PageStore> pages_;
  uint32_t node_id_ = 0;
  std::unique_ptr<Semaphores> semaphores_;  // destroyed after cluster_, whose handlers use it
  std::unique_ptr<Cluster> cluster_;
  std::unique_ptr<meta::Namespace> ns_;  // null on a node that is not the metadata node
  meta::MetaService* meta_ = nullptr;
};

}  // namespace cshm::fs
