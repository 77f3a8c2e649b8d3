// SegmentTransfer: both ends of a segment's move to another owner (docs/
// migrator.md "The transfer"; ownership/migration.pml). The old owner, in
// Move: wait for its rounds and freeze the segment, stage the move at the
// target (kMigrateQuery: which pages it holds twins of), send the pages that
// hold data in chunks (kMigratePages; a page the target caches unchanged goes
// as a hash of its twin), install the copysets and the locks
// (kMigrateInstall), name the target in the directory, commit
// (kMigrateCommit), keep its own kernel's twins, and forward from then on.
// The target: the staged move serves nothing until it commits; one whose
// commit never came is decided by the directory (Resolve).
//
// What decides the owner is the directory (the metadata node's record): a
// failed directory update that may have been made is asked about until the
// directory answers, with the segment frozen meanwhile, so no acknowledged
// write is lost either way.
//
// Thread-safety: all methods are thread-safe; one move from this node at a
// time (others wait at most a request deadline, then kBusy).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "common/mutex.h"
#include "common/log.h"
#include "fs/delay_seam.h"
#include "common/status.h"
#include "fs/twin_cache.h"
#include "meta/meta_service.h"
#include "net/cluster_config.h"
#include "net/messenger.h"
#include "ownership/invalidation_rounds.h"
#include "ownership/lock_table.h"
#include "ownership/messages.h"
#include "ownership/owned_segments.h"
#include "store/page_store.h"

namespace cshm::fs {

class SegmentTransfer {
 public:
  struct Env {
    uint32_t self = 0;
    NamedLog log{"node"};  // the node's (Cluster::log_)
    TestSeams seams;
    net::ClusterConfig config;
    ownership::OwnedSegments* owned = nullptr;
    store::PageStore* pages = nullptr;
    TwinCache* twins = nullptr;
    ownership::InvalidationRounds* rounds = nullptr;
    std::function<net::Messenger*()> net;
    std::function<meta::MetaService&()> meta;
    // The owner's locks of a segment, and setting them (empty: dropped).
    std::function<std::vector<ownership::Lock>(uint64_t ino)> locks_of;
    std::function<void(uint64_t ino, std::vector<ownership::Lock> locks)> set_locks;
    // This node's idea of a segment's owner, and its update.
    std::function<std::optional<uint32_t>(uint64_t ino)> owner_cached;
    std::function<void(uint64_t ino, uint32_t owner)> note_owner;
    // This node's kernel drops those pages, on a worker thread.
    std::function<void(uint64_t ino, std::vector<ownership::Range> ranges)> drop_local_later;
    // Segments that never move (semaphore sets), optional.
    std::function<bool(uint64_t ino)> stays;
    // Waits up to `d` for the node to stop; true if it is stopping.
    std::function<bool(std::chrono::milliseconds d)> wait_stop;
  };
  explicit SegmentTransfer(Env env) : env_(std::move(env)) {}

  // Old owner: moves `ino` to `target`; `why` is logged.
  Status Move(uint64_t ino, uint32_t target, const std::string& why);
  // The move under way from this node, for status (ino 0: none).
  void Progress(uint64_t* ino, uint64_t* target, uint64_t* done, uint64_t* total) const;

  // Target: the messages of a move.
  Result<std::string> Query(const ownership::MoveRef& ref);  // the twin bitmap
  Result<ownership::MigratePagesReply> Pages(const ownership::MigratePages& m);
  Status Install(const ownership::MigrateInstall& m);
  // The staged move becomes this node's segment, served from now on.
  Status Commit(const ownership::MoveRef& ref);
  void Abort(const ownership::MoveRef& ref, const std::string& why);
  // Staged moves whose commit never came: the directory decides (the
  // migrator loop's tick).
  void Resolve();

 private:
  // Ok if `ref` is the move being staged here.
  Status CheckStaged(const ownership::MoveRef& ref);
  // After a failed directory update: which owner the directory names, asked
  // until it answers (or the node stops).
  Result<uint32_t> DirectoryOwner(uint64_t ino, const Status& why);
  // Stores the twins of this node's own copies (which were the pages
  // themselves, OwnerTwinStore) before the pages are freed.
  void KeepOwnTwins(uint64_t ino, const ownership::SegmentSnapshot& snap, const store::Segment& seg);

  const Env env_;
  // One migration at a time from this node (`migrating_`, a lock that a
  // move holds across its network calls, so others wait for it at most a
  // request deadline, then kBusy). Not a std::timed_mutex: the
  // ThreadSanitizer of GCC 12 does not see its timed lock (glibc's
  // pthread_mutex_clocklock) and reports every unlock.
  Mutex migrate_mu_;
  CondVar migrate_done_;
  bool migrating_ GUARDED_BY(migrate_mu_) = false;
  // The move under way, for status (ino 0: none): pages gone through of all.
  struct MoveProgress {
    std::atomic<uint64_t> ino{0}, target{0}, done{0}, total{0};
  } moving_;
  // Target: the moves being staged here (a query started them), by inode.
  // Installed ones serve nothing until they commit.
  struct Staged {
    uint64_t move_id = 0;
    std::chrono::steady_clock::time_point since;
    bool installed = false;
  };
  Mutex mu_;
  std::map<uint64_t, Staged> staged_ GUARDED_BY(mu_);
};

}  // namespace cshm::fs
