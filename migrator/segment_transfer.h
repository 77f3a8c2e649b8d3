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
// write is lost either way. Move waits two request deadlines for that
// answer; then it returns kTimedOut and a thread of its own goes on asking
// and commits or undoes the move when the directory answers (or ends at
// Stop: both copies stay, the directory decides at the next start).
//
// The old owner's end is migrator/transfer_source.cc, the target's
// migrator/transfer_target.cc. It depends on ownership/ (the owner side it
// freezes, installs and unfreezes), meta/ (the directory), net/ and store/,
// and on fs/ for nothing: the node's twins come as a MoveTwins.
//
// Thread-safety: all methods are thread-safe; one move from this node at a
// time (others wait at most a request deadline, then kBusy), the one being
// decided in the background included.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "common/log.h"
#include "common/delay_seam.h"
#include "common/status.h"
#include "migrator/move_twins.h"
#include "meta/meta_service.h"
#include "net/cluster_config.h"
#include "net/messenger.h"
#include "ownership/invalidation_rounds.h"
#include "ownership/lock_table.h"
#include "ownership/messages.h"
#include "ownership/owned_segments.h"
#include "store/page_store.h"

namespace cshm::migrator {

class SegmentTransfer {
 public:
  struct Env {
    uint32_t self = 0;
    NamedLog log{"node"};  // the node's (Cluster::log_)
    DelaySeam slow_chunk;           // before each chunk of a move from here is sent (a test's)
    bool die_in_migration = false;  // the target exits (3) as pages arrive (a test's)
    net::ClusterConfig config;
    ownership::OwnedSegments* owned = nullptr;
    store::PageStore* pages = nullptr;
    MoveTwins* twins = nullptr;  // the node's (fs::TwinCache)
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
  ~SegmentTransfer() { Stop(); }

  // Ends the wait of a move the directory has not confirmed; called once
  // the node is stopping (env.wait_stop says so), with its network up.
  void Stop();

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
  // A move from here once its pages are sent: what deciding it needs.
  struct Moving {
    uint64_t ino = 0;
    uint32_t target = 0;
    ownership::MoveRef ref;
    ownership::SegmentSnapshot snap;
    std::shared_ptr<store::Segment> seg;
    std::string why;
    std::chrono::steady_clock::time_point t0;
    uint64_t pages = 0, sent = 0, repaired = 0, messages = 0;
  };
  // One chunk of a move's pages on its way: the pages as read (its message's
  // views pointed into them), what each was sent as, and the call.
  struct Chunk {
    uint64_t first = 0;
    std::vector<ownership::PageKind> kinds;
    std::string pages;
    std::future<Result<std::string>> answer;
  };
  // The segment's pages to the target, in chunks (`bitmap`: the pages it
  // holds twins of); m.sent, repaired, messages count them.
  Status SendPages(Moving& m, const std::string& bitmap);
  // Waits for the chunk's answer and sends the pages it asks for.
  Status Answered(Moving& m, Chunk& c);
  // The directory names the target: commit there, keep this kernel's
  // twins, forward from now on, free the pages.
  Status Finish(Moving& m);
  // The segment stays here: unfreeze it, drop the staged move at the target.
  Status Fail(const Moving& m, const Status& why);
  // After a failed directory update `why`: the directory names `named`.
  Status Decided(Moving& m, uint32_t named, const Status& why);
  // Asks the directory on a thread of its own (deciding_), which ends the
  // move (EndMove); kTimedOut, or kUnavailable if stopping (nothing started).
  Status DecideLater(Moving m, const Status& why);
  void EndMove();  // another move may begin
  // After a failed directory update: which owner the directory names, asked
  // until it answers, the deadline passes (kTimedOut) or the node stops
  // (kUnavailable).
  Result<uint32_t> DirectoryOwner(uint64_t ino, const Status& why, std::chrono::steady_clock::time_point deadline);
  std::chrono::milliseconds RequestDeadline() const {
    return std::chrono::milliseconds(env_.config.request_timeout_ms);
  }
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
  // The thread deciding a move the directory did not confirm (at most one:
  // it holds `migrating_`); none starts once stopped.
  Mutex deciding_mu_;
  std::thread deciding_ GUARDED_BY(deciding_mu_);
  bool stopped_ GUARDED_BY(deciding_mu_) = false;
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

}  // namespace cshm::migrator
