// Namespace: the POSIX namespace of a cshm filesystem (directories, names,
// inodes, attributes, xattrs) kept in store::MetaStore.
//
// This is what the metadata node runs (DESIGN.md "Namespace and metadata"); it
// knows nothing of FUSE. Every operation is serialised by one mutex, so each is
// atomic with respect to the others and is one atomic RocksDB batch.
//
// References: an inode handed out by Lookup or a create op carries one
// reference, as the kernel's lookup count does, counted for the node that asked
// (meta/references.h); Forget drops them. An inode whose last name is removed
// while referenced, or while some node's references are not known, becomes an
// orphan (persisted) and is purged, with its pages, once no node holds it and
// every node's references are known again. Nothing is purged before
// ExpectNodes: at start, the other nodes' kernels may still hold the orphans a
// previous run left.
//
// Permission checks are the kernel's (the mount uses default_permissions); the
// namespace checks only what the kernel leaves to the filesystem: names,
// emptiness, types, link counts.
//
// Thread-safety: all methods are thread-safe (checked: GUARDED_BY, REQUIRES).
// Lock order: store::Segment::mu() before mu_. Purging pages happens after mu_ is released.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "meta/meta_service.h"
#include "meta/name_cache.h"
#include "meta/references.h"
#include "store/inode_record.h"
#include "store/meta_store.h"

namespace cshm::meta {

// Root directory attributes applied at mount (tmpfs's mode=, uid=, gid=).
// Unset fields keep what the store has (defaults on first start: 01777 0:0).
struct RootOptions {
  std::optional<uint32_t> mode;  // permission bits only
  std::optional<uint32_t> uid;
  std::optional<uint32_t> gid;
};

class Namespace : public MetaService {
 public:
  // Called (outside the namespace mutex) for each inode purged, to free its
  // pages on the node that owns them.
  using PurgeFn = std::function<Status(uint64_t ino, uint32_t owner_node)>;

  // Loads or creates the root, applies `root`, and loads the orphans left by
  // a previous run (purged once ExpectNodes settles them). New inode numbers are node_id << 48 | counter, so they never
  // repeat across the cluster.
  static Result<std::unique_ptr<Namespace>> Open(store::MetaStore* store, uint32_t node_id,
                                                 const RootOptions& root, PurgeFn purge);

  Result<InodeRecord> Lookup(uint64_t parent, std::string_view name, const Caller& caller) override;  // +1 ref
  void Forget(uint64_t ino, uint64_t n, const Caller& caller) override;
  Result<InodeRecord> GetAttr(uint64_t ino) override;
  // Applies every field of `req` (the caller has done the data side of a size
  // change; see fs::FileSystem::SetAttr). ctime is set to now.
  Result<InodeRecord> SetAttr(uint64_t ino, const SetAttrRequest& req) override;
  // Grows the size to at least `end` and sets mtime/ctime (a write or fallocate).
  // A change of the times alone (a write inside the file) is kept in the
  // record cache, where every reader sees it, and reaches the store with the
  // inode's next commit, at CommitWrites (fsync and close of the file on a
  // node of its own, unmount), before the record leaves the cache, or with
  // the first such change a second or more after the oldest kept one: a
  // commit per write cost an eighth of fio's mmap random writes (issue 17).
  // A kill -9 may leave the stored times that old; sizes are stored at once.
  Result<InodeRecord> NoteWrite(uint64_t ino, uint64_t end, bool touch_mtime) override;
  // Commits the times writes kept in the cache (of `ino` only, if not 0).
  Status CommitWrites(uint64_t ino = 0);
  ~Namespace();

  // Create ops: +1 ref on the new inode.
  Result<InodeRecord> Mknod(uint64_t parent, std::string_view name, uint32_t mode, uint64_t rdev,
                            const Caller& caller) override;
  Result<InodeRecord> Mkdir(uint64_t parent, std::string_view name, uint32_t mode, const Caller& caller) override;
  Result<InodeRecord> Symlink(uint64_t parent, std::string_view name, std::string_view target,
                              const Caller& caller) override;
  Result<InodeRecord> Link(uint64_t ino, uint64_t new_parent, std::string_view new_name,
                           const Caller& caller) override;
  Status Unlink(uint64_t parent, std::string_view name, const Caller& caller) override;
  Status Rmdir(uint64_t parent, std::string_view name, const Caller& caller) override;
  // flags: 0, RENAME_NOREPLACE or RENAME_EXCHANGE.
  Status Rename(uint64_t parent, std::string_view name, uint64_t new_parent, std::string_view new_name,
                unsigned flags, const Caller& caller) override;
  Result<std::string> Readlink(uint64_t ino) override;
  // Every entry of a directory, "." and ".." first.
  Result<std::vector<ListedEntry>> ListDir(uint64_t ino) override;

  Status SetXattr(uint64_t ino, std::string_view name, std::string_view value, int flags) override;
  Result<std::string> GetXattr(uint64_t ino, std::string_view name) override;
  Result<std::vector<std::string>> ListXattrs(uint64_t ino) override;
  Status RemoveXattr(uint64_t ino, std::string_view name) override;
  Status SetOwner(uint64_t ino, uint32_t node) override;

  uint64_t inode_count();
  uint64_t references(uint64_t ino);  // all nodes'
  size_t orphan_count();

  // The other nodes whose kernels may hold inodes (none on one node): until
  // each has registered its references or is declared gone, nothing is
  // purged. Called once, before serving and after the purge function works;
  // then purges what it can.
  void ExpectNodes(const std::vector<uint32_t>& peers);
  // Registration (ReferenceSync drives it; see NodeReferences).
  using NodeState = NodeReferences::State;
  NodeState node_state(uint32_t node);
  void Asking(uint32_t node);
  void Register(uint32_t node, const ReferenceSnapshot& snap);
  void Abandon(uint32_t node);
  void NodeGone(uint32_t node);
  void NodeUnknown(uint32_t node);
  // Nodes counted as holding an orphan that has been one for at least `age`:
  // perhaps only because a Forget was lost; worth asking again.
  std::vector<uint32_t> Pinning(std::chrono::milliseconds age);
  // The orphans `node` is counted as holding: it may never have heard that
  // their names went (a lost message), and hold them only through a stale
  // dentry.
  std::vector<uint64_t> OrphansHeldBy(uint32_t node);
  // Whether `node`'s kernel holds a reference to `ino`.
  bool HeldBy(uint64_t ino, uint32_t node);

  // Called, outside the mutex, after every change that leaves a non-empty
  // NameChange (meta/name_cache.h), before the change's call returns; may block (bounded: it
  // waits on other nodes with deadlines). Set once before serving.
  using ChangeFn = std::function<void(const NameChange&)>;
  void SetChangeHook(ChangeFn fn);

 private:
  Namespace(store::MetaStore* store, uint32_t node_id, PurgeFn purge);

  static constexpr char kInoCounterKey[] = "next_ino";  // the store's counter of new inodes
  static constexpr uint32_t kMaxLinks = 65000;

  Result<InodeRecord> LoadLocked(uint64_t ino) REQUIRES(mu_);
  Result<InodeRecord> LoadDirLocked(uint64_t ino) REQUIRES(mu_);
  Result<std::optional<store::DirEntry>> EntryLocked(uint64_t parent, std::string_view name) REQUIRES(mu_);
  Result<InodeRecord> Create(uint64_t parent, std::string_view name, uint32_t mode, uint64_t rdev,
                             std::string_view symlink_target, const Caller& caller) EXCLUDES(mu_);
  Result<InodeRecord> CreateLocked(uint64_t parent, std::string_view name, uint32_t mode, uint64_t rdev,
                                   std::string_view symlink_target, const Caller& caller) REQUIRES(mu_);
  // Stages the drop of one link of `victim`: deletes or orphans it in `b`.
  // Returns true if its pages must be purged after the commit.
  bool DropLinkLocked(InodeRecord& victim, store::MetaStore::Batch& b, const Timestamp& now) REQUIRES(mu_);
  Status CommitLocked(store::MetaStore::Batch& b, std::vector<InodeRecord> updated,
                      std::vector<uint64_t> deleted) REQUIRES(mu_);
  Status CommitWritesLocked(uint64_t ino) REQUIRES(mu_);
  // Keeps `r` (its times changed by a write) in the cache, uncommitted.
  Result<InodeRecord> KeepLocked(const InodeRecord& r) REQUIRES(mu_);
  using PurgeList = std::vector<std::pair<uint64_t, uint32_t>>;  // ino, owner
  // Deletes every orphan no node holds, if the references are settled.
  PurgeList PurgeOrphansLocked() REQUIRES(mu_);
  // Runs `change` on the references under mu_, then purges what it freed.
  template <typename F>
  void ChangeReferences(F change) EXCLUDES(mu_);
  Status Purge(const PurgeList& inos) EXCLUDES(mu_);
  // The directories CommitLocked changed since the last take, as a change by `by`.
  NameChange TakeChangeLocked(uint32_t by) REQUIRES(mu_);
  void Announce(const NameChange& change) EXCLUDES(mu_);

  store::MetaStore* const store_;
  const uint32_t node_id_;
  const PurgeFn purge_;
  ChangeFn changed_;  // set once before serving

  Mutex mu_;
  uint64_t next_counter_ GUARDED_BY(mu_) = 0;
  std::unordered_map<uint64_t, InodeRecord> cache_ GUARDED_BY(mu_);  // write-through, but for
  // the inodes in kept_, whose writes' times are kept (NoteWrite),
  // the oldest since kept_since_.
  std::unordered_set<uint64_t> kept_ GUARDED_BY(mu_);
  std::vector<uint64_t> changed_dirs_ GUARDED_BY(mu_);  // committed, not yet announced
  std::chrono::steady_clock::time_point kept_since_ GUARDED_BY(mu_);
  NodeReferences refs_ GUARDED_BY(mu_);
  struct Orphan {
    uint32_t owner;
    std::chrono::steady_clock::time_point since;
  };
  std::unordered_map<uint64_t, Orphan> orphans_ GUARDED_BY(mu_);  // persisted too
};

// Checks a single path component: not empty, no '/', not "." or "..", at most
// NAME_MAX bytes.
Status CheckName(std::string_view name);

}  // namespace cshm::meta
