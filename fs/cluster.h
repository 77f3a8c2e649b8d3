// Cluster: one node's part of a multi-node cshm. It joins the transport, serves
// the namespace (on the metadata node), the owner side for the segments this
// node owns (ownership::OwnedSegments) and invalidations of this node's kernel
// cache, and gives fs::FileSystem the accessor side of the data path:
//
//   Read   -> Fetch from the owner (local call or RPC); keep twins of the pages
//   Write  -> runs that differ from the twins (a kernel write-back) or the
//             whole data (a write(2)) to the owner, which merges them,
//             invalidates every other copy and waits for the acks
//   Truncate -> the owner, which drops pages past the end everywhere
//
// No lock is held across a network wait or a FUSE notify call, and no WRITE
// ever waits for an invalidation round: the owner applies the bytes, starts
// the round and answers. The kernel holds a page (locked, or under writeback)
// while its WRITE is answered, and a round's notify on another node waits for
// that node's pages; if WRITEs waited for rounds, two nodes writing one page
// would wait for each other. Releases wait instead: fsync/msync (FSYNC), close
// (FLUSH), unlock and shmdt ask the owner to Sync, which returns once every
// round started before it is acknowledged.
//
// The protocol is model-checked (docs/model.md): ownership/coherence.pml is
// Read/Write/Sync/InvalidateLocal and the rounds, ownership/locks.pml is
// SetLock/LockService::Serve and lease expiry, ownership/migration.pml is
// MoveSegment/InstallSegment and the kMoved forwarding. Each model's header
// names the code it stands for; change them together.
//
// The class is in five files, one job each:
//   cluster.cc           start and stop, peers, leases, the restart's grace,
//                        the namespace's entry drops, locks
//   cluster_dispatch.cc  the one table of what a node does with each message
//   cluster_accessor.cc  the accessor side: Read, Write, Sync, Truncate,
//                        InvalidateLocal, kept write-backs
//   cluster_owner.cc     the owner side over ownership::OwnedSegments and
//                        InvalidationRounds: applying write-backs, truncation,
//                        fallocate, the rounds' remote invalidations, times,
//                        control (user.cshm.*), the migrator loop
//   cluster_status.cc    NodeStatus, StatusJson, the metrics' gauges
// The parts with state of their own are classes beside it: LockClient (the
// holder side of locks), ownership::LockService (the owner side),
// migrator::SegmentTransfer (both ends of a move) and migrator::AccessLedger
// (where segments should live), ReferenceSync, PendingWrites,
// TwinCache. docs/locking.md lists the mutexes and their order.
//
// Thread-safety: all public methods are thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <condition_variable>
#include <set>
#include <thread>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/log.h"
#include "common/mutex.h"
#include "common/status.h"
#include "fs/delay_seam.h"
#include "fs/kernel_names.h"
#include "fs/lock_client.h"
#include "fs/name_coherence.h"
#include "fs/pending_writes.h"
#include "fs/read_scratch.h"
#include "fs/reference_sync.h"
#include "fs/twin_cache.h"
#include "meta/meta_rpc.h"
#include "migrator/access_ledger.h"
#include "migrator/segment_transfer.h"
#include "meta/namespace.h"
#include "net/cluster_config.h"
#include "net/messenger.h"
#include "net/transport.h"
#include "ownership/invalidation_rounds.h"
#include "ownership/lock_service.h"
#include "ownership/lock_table.h"
#include "ownership/messages.h"
#include "ownership/owned_segments.h"
#include "store/page_store.h"

namespace boost::asio {
class thread_pool;
}

namespace cshm::fs {

class Semaphores;

// The Notifier's `off` that drops an inode's attributes only (no pages).
constexpr uint64_t kAttributesOnly = UINT64_MAX;

class Cluster {
 public:
  // Drops pages [off, off+len) of `ino` from this node's kernel cache (len 0:
  // to the end), writing dirty ones back first. Set by the FUSE layer.
  using Notifier = std::function<void(uint64_t ino, uint64_t off, uint64_t len)>;
  // Drops the kernel's dentry of `name` in `parent` (it was removed elsewhere).
  using EntryNotifier = std::function<void(uint64_t parent, const std::string& name)>;

  // Creates the node's cluster part; Start() joins the network.
  // `messenger` starts its network (net::StartTransport unless a test gives
  // a simulated one).
  // `seams`: where tests widen races (fs/delay_seam.h); none by default.
  Cluster(net::ClusterConfig config, uint32_t self, store::PageStore* pages, std::unique_ptr<TwinCache> twins,
          std::unique_ptr<PendingWrites> pending, net::MessengerFactory messenger = net::StartTransport,
          TestSeams seams = {});
  ~Cluster();

  // `ns` is the namespace on the metadata node, null elsewhere.
  Status Start(meta::Namespace* ns);
  void Stop();
  void SetNotifier(Notifier n);
  void SetEntryNotifier(EntryNotifier n);

  bool is_metadata_node() const { return config_.metadata_node == self_; }
  uint32_t name_cache_ms() const { return config_.name_cache_ms; }
  // Before this node's kernel asks for `name` in `parent` (fs/kernel_names.h).
  void AskingName(uint64_t parent, std::string_view name) {
    kernel_names_.Asking(parent, name, std::chrono::milliseconds(config_.name_cache_ms));
  }
  // Before this node's kernel renames an entry to `name` in `parent` (it
  // keeps the dentry it had, under the new name).
  void RenamingTo(uint64_t parent, std::string_view name) {
    kernel_names_.Moved(parent, name, std::chrono::milliseconds(config_.name_cache_ms));
  }
  // Whether the kernel may be given `name` in `parent` to keep (noted by AskingName).
  bool KernelMayHold(uint64_t parent, std::string_view name) {
    return kernel_names_.HeldUntil(parent, name) > KernelNames::Clock::now();
  }
  uint32_t self() const { return self_; }
  meta::MetaService& meta();
  // The kernel forgot `ino` (FUSE FORGET): if this node's kernel holds no
  // reference to it any more, what this node kept for its kernel's copy
  // goes (its twins, the cached owner, counters, idle round state), so that
  // per-inode state does not grow with every segment ever touched.
  void KernelForgot(uint64_t ino);
  // For the metadata node's Namespace: frees a purged segment at its owner.
  Status Purge(uint64_t ino, uint32_t owner);

  // Into `buf`; or, with `scratch`, a remote owner's reply is moved into it
  // and the result views it.
  //
  // Twins are kept only where they can be needed: a READ while no handle on
  // this node has the file open for writing keeps none (its pages cannot be
  // dirtied here; a remote sequential read is a third faster without the
  // twin writes). The first writable open then waits for such READs to be
  // answered and drops this node's cached pages of the file, so that every
  // page a writer here can dirty is fetched again, with its twin.
  Result<std::string_view> Read(uint64_t ino, uint64_t off, size_t len, char* buf, ReadScratch* scratch);
  // A handle opened for writing on this node (before the open is answered),
  // and its release.
  Status OpenedForWrite(uint64_t ino);
  void ClosedForWrite(uint64_t ino);
  // A failed write-back (`writeback`: the kernel's, not a write(2), whose
  // caller gets the error) made while this node's kernel drops pages of the
  // inode fails its next release with EIO, once, as the kernel's errseq does
  // for fsync: whatever started it (an unlock's or another node's
  // invalidation) could not report it.
  Status Write(uint64_t ino, uint64_t off, const char* data, size_t len, bool writeback);
  Status Truncate(uint64_t ino, uint64_t size);
  // fallocate(2) at the owner (OwnedSegments::Allocate), with the size cap and
  // the invalidation rules of truncate.
  Status Fallocate(uint64_t ino, int mode, uint64_t off, uint64_t len);
  // A release: returns once every invalidation caused by this node's writes of
  // `ino` so far is acknowledged (no-op if it wrote nothing since the last).
  Status Sync(uint64_t ino);

  // Cluster-wide locks, granted by the segment's owner (contract 4).
  // The conflicting lock, or one of type F_UNLCK.
  Result<ownership::Lock> GetLock(uint64_t ino, const ownership::Lock& want);
  // The holder side, as fs::LockClient (lock_client.h) says: one try; a
  // wait on the lock-wait thread; a close's release.
  Status SetLock(uint64_t ino, const ownership::Lock& want);
  void SetLockLater(uint64_t ino, const ownership::Lock& want, std::function<bool()> interrupted,
                    std::function<void(const Status&)> done);
  Status ReleaseLocks(uint64_t ino, uint64_t owner, bool flock);

  // Migration and the control surface (xattrs user.cshm.*, see docs/migrator.md).
  // Moves `ino` to `target` now (asks its owner, wherever it is).
  Status Migrate(uint64_t ino, uint32_t target);
  Result<std::string> Control(uint64_t ino, ownership::ControlOp op, uint32_t arg);
  // Every node as this node sees it, each asked for its own figures (at most
  // two seconds, in parallel), as one JSON object (user.cshm.cluster, read
  // by `cshmctl status`; the fields are listed in docs/operations.md).
  std::string StatusJson();
  Result<uint32_t> CurrentOwner(uint64_t ino);  // from the directory, not the cache
  uint64_t remote_fetches(uint64_t ino);
  // For a failing test's message: who this node thinks serves `ino`, and if
  // it does, the copyset of `page`.
  std::string DescribePage(uint64_t ino, uint64_t page);

  // SysV semaphores (fs/semaphores.h): this node serves the sets whose files
  // it owns, and its waiters are woken through here. Set before Start; it
  // must outlive Stop.
  void SetSemaphores(Semaphores* s) { semaphores_ = s; }
  Result<uint32_t> SemaphoreOwner(uint64_t ino) { return OwnerOf(ino); }
  Result<std::string> CallPeer(uint32_t node, uint16_t type, std::string payload);
  void CallPeerAsync(uint32_t node, uint16_t type, std::string payload, std::function<void(bool ok)> done);


 private:
  Result<uint32_t> OwnerOf(uint64_t ino);
  void NoteOwner(uint64_t ino, uint32_t owner);
  // Owner side: apply and start the invalidation round (if any); the reply
  // as of now, and the round's number.
  struct Applied {
    ownership::WriteBackReply reply;
    std::optional<uint64_t> round;
  };
  Result<Applied> ApplyAsOwner(uint32_t from, const ownership::WriteBackRequest& wb, bool wait = true);
  // Drops the per-inode maps' entries of `ino` that nothing uses.
  void ForgetInodeState(uint64_t ino);
  // How long a round may take: a sharer that cannot be reached is asked
  // again until it answers or its lease has run out (InvalidateRemote).
  std::chrono::milliseconds RoundDeadline() const {
    return std::chrono::milliseconds(2 * config_.request_timeout_ms + config_.lease_ms);
  }
  Status WriteOnce(uint64_t ino, uint64_t off, const char* data, size_t len, bool writeback);
  Result<uint64_t> TruncateAsOwner(uint64_t ino, uint32_t from, uint64_t size);
  Result<uint64_t> FallocateAsOwner(uint32_t from, const ownership::FallocateRequest& f);
  // Accessor side: drop pages from this node's kernel and twins.
  void InvalidateLocal(uint64_t ino, const std::vector<ownership::Range>& ranges);

  // A peer's copysets are gone (its lease ran out, it restarted): drop our
  // copies of every segment served elsewhere.
  void DropRemoteCopies();
  // Holder side: what `node` granted us is gone (our lease with it ran out,
  // or it restarted): the locks held at it are lost, our copies of every
  // segment served elsewhere are dropped.
  // `then` runs once the copies are dropped (on a worker thread).
  void LoseGrantsOf(uint32_t node, const std::string& why, std::function<void()> then = {});
  // Tells a peer we gave up what its previous incarnation granted us (or
  // never saw one); queued until the transport is stored.
  void SendIncarnationSeen(uint32_t node, uint64_t incarnation);
  // Owner side: what `node` held here is gone (it was silent for a lease, or
  // restarted): its locks and its place in the copysets.
  void ForgetNode(uint32_t node, const std::string& why);
  // The data side of the grace period: for a lease after this node started,
  // its previous incarnation may have granted copies of its pages that it
  // has no record of, to nodes that cannot hear of the restart (they give
  // them up when their lease with it runs out). Meanwhile a write also
  // invalidates the pages it touched on every other node, and a node not
  // heard from since the start counts as having dropped its copy only once
  // that lease has passed (InvalidateRemote). Nodes that said they gave up
  // what the previous incarnation granted (kIncarnationSeen) are exempt;
  // one heard from but not yet saying so is invalidated like the others,
  // and answers at once (it drops on seeing this incarnation, on a pool,
  // a moment after it connected).
  bool InDataGrace() const {
    return std::chrono::steady_clock::now() < started_ + std::chrono::milliseconds(config_.lease_ms);
  }
  void AddGraceTargets(uint32_t writer, const std::vector<ownership::WriteRun>& runs,
                       ownership::Invalidations* invalidate);
  // It said it gave up what our previous incarnation granted
  // (kIncarnationSeen): exempt from the above.
  bool ConfirmedSinceStart(uint32_t node);
  // Confirmed, or heard from since this node started: reachable, so an
  // invalidation need not wait for it to be heard (InvalidateRemote).
  bool HeardSinceStart(uint32_t node);
  // This node's idea of the segment's owner (owner_of_), if it has one.
  std::optional<uint32_t> CachedOwner(uint64_t ino);
  // kIoError if this node lost a lock of `ino` that is not yet unlocked.
  Status CheckLocksHeld(uint64_t ino);
  // Sends an invalidation to `node`, again and again while it cannot be
  // reached, until it answers or its lease has run out (then its copy is
  // gone: Ok); `done` gets the outcome once, on the I/O thread.
  void InvalidateRemote(uint32_t node, std::string payload, std::function<void(const Status&)> done);
  // Serving what peers send (fs/cluster_dispatch.cc): one table from message
  // type to its one handler, which says whether it may wait on the network
  // (then it runs on the slow pool) and whether it may be tried on the
  // messenger's I/O thread first.
  enum class On { kIoThread, kFastPool, kSlowPool };
  struct Handlers;
  friend struct Handlers;
  static bool IsSlow(uint16_t type);
  // Serves `r` where it runs. Only on the I/O thread false: it would have to
  // wait, and a pool serves it (the fast pool defers such a request to the
  // slow one itself).
  bool Serve(net::Request& r, On on);
  // This node's kernel drops the dentry, on a worker thread (never a FUSE
  // request's: the kernel may hold the directory's lock for that request).
  void DropEntryLocal(uint64_t parent, const std::string& name);
  // This node's kernel drops what `change` names (fs/name_coherence.h): the
  // attributes here, the names it may hold on a worker thread, waited for
  // until done or until the kernel's own timeout of them has run out.
  void DropNamesLocal(const meta::NameChange& change);
  KernelNames kernel_names_;  // what this node's kernel may hold
  Result<ownership::LockReply> LockAtOwner(uint64_t ino, const ownership::LockMessage& m);
  // Runs `call(owner)` against the segment's owner, following kMoved answers.
  template <typename F>
  auto AtOwner(uint64_t ino, F call) -> decltype(call(0u));
  Result<std::string> ServeControl(const ownership::ControlRequest& c);
  void MigratorLoop();
  // Sends one write-back to the segment's owner, wherever it is.
  // `*rounds_pending`: the owner had a round of `ino` running (or a failed one
  // unreported) when it answered.
  // `*dropped`: pages of a late write-back that had changed and were not written.
  Status Deliver(const ownership::WriteBackRequest& wb, bool* rounds_pending = nullptr, uint32_t* dropped = nullptr);
  // This node's kernel drops those pages (and their twins), on a worker
  // thread: the caller may be a WRITE of them, which the drop would wait for.
  void DropLocalLater(uint64_t ino, std::vector<ownership::Range> ranges);
  // Delivers the kept write-backs of `ino`, in order (see PendingWrites).
  Status DrainPending(uint64_t ino);
  void DeliverPending();

  const net::ClusterConfig config_;
  const uint32_t self_;
  const TestSeams seams_;
  // The process's log, its messages named "node <self>" (which the daemon's
  // pattern leaves out: a process is one node; the simulation prints it).
  const NamedLog log_;
  store::PageStore* const pages_;
  void AddGauges();  // metrics read from this object; removed by Stop
  void CountApplied(const std::vector<ownership::WriteRun>& runs);
  std::unique_ptr<TwinCache> twins_;
  std::unique_ptr<PendingWrites> pending_;
  // Where the owned segments should live: told of every page owned_ serves
  // (its AccessObserver), asked by the migrator loop.
  migrator::AccessLedger ledger_;
  ownership::OwnedSegments owned_;
  // The owner side of the locks, and the grace period after the start.
  ownership::LockService lock_service_;
  ownership::LockService::Env LockServiceEnv();
  meta::Namespace* ns_ = nullptr;  // metadata node only
  meta::NameGrants name_grants_;           // metadata node: the others' cache windows
  std::unique_ptr<NameCoherence> names_;  // metadata node: changes wait for them
  std::unique_ptr<meta::RemoteMeta> remote_meta_;
  std::unique_ptr<ReferenceSync> ref_sync_;  // metadata node only
  const net::MessengerFactory start_messenger_;
  std::unique_ptr<net::Messenger> transport_;
  Semaphores* semaphores_ = nullptr;
  std::unique_ptr<LockClient> locks_held_;  // the holder side of the locks
  std::unique_ptr<ownership::InvalidationRounds> rounds_;  // the owner's rounds
  std::unique_ptr<migrator::SegmentTransfer> transfer_;               // both ends of a move
  // The same, for the transport's own callbacks, which may run before
  // Start() has stored transport_ (null until then). Requests wait for it on
  // the pools (AwaitTransport) and are never served inline before it.
  std::atomic<net::Messenger*> net_{nullptr};
  Mutex net_mu_;
  CondVar net_cv_;
  // Peers that came up before net_ was stored: told they were seen once it is.
  std::vector<std::pair<uint32_t, uint64_t>> seen_before_start_ GUARDED_BY(net_mu_);
  void AwaitTransport();
  std::unique_ptr<boost::asio::thread_pool> async_rounds_;
  std::thread migrator_;  // also delivers pending write-backs
  Mutex stop_mu_;
  CondVar stop_cv_;
  bool stopping_ GUARDED_BY(stop_mu_) = false;

  Mutex mu_;
  Notifier notifier_ GUARDED_BY(mu_);
  EntryNotifier entry_notifier_ GUARDED_BY(mu_);
  std::unordered_map<uint64_t, uint32_t> owner_of_ GUARDED_BY(mu_);
  // Inodes written here since their last completed Sync, with the number of
  // the latest such write.
  std::unordered_map<uint64_t, uint64_t> unsynced_ GUARDED_BY(mu_);
  uint64_t writes_ GUARDED_BY(mu_) = 0;
  // The first failed write-back of each inode since its last release (Write).
  std::unordered_map<uint64_t, Status> write_errors_ GUARDED_BY(mu_);
  // Inodes whose pages this node's kernel is being told to drop, by how many
  // InvalidateLocal calls at once (the write-backs that causes).
  std::unordered_map<uint64_t, int> notifying_ GUARDED_BY(mu_);
  // The ranges those calls drop (one entry per call and range): a kernel
  // write-back inside one is forced by the drop, the page does not stay.
  std::unordered_multimap<uint64_t, ownership::Range> dropping_ GUARDED_BY(mu_);
  bool Dropping(uint64_t ino, uint64_t off, uint64_t len) REQUIRES(mu_);
  std::map<uint32_t, uint64_t> incarnations_ GUARDED_BY(mu_);
  std::map<uint32_t, bool> lost_ GUARDED_BY(mu_);  // link went down since last up
  // Owner side: the inodes whose data changed here without growing since
  // their times were last told to the metadata node (a write that grows one
  // tells it at once, with the size).
  std::set<uint64_t> times_due_ GUARDED_BY(mu_);
  // A write-back of `ino` was applied here without growing it.
  void TimesDue(uint64_t ino, const std::vector<ownership::WriteRun>& runs);
  // Every migrator tick: the metadata node sets the mtime and ctime of each
  // inode in times_due_ (as of then: within check_s of the write); one it
  // cannot reach stays due.
  void CommitTimes();
  // Peers our lease with ran out, until it holds again (LeaseLostWith),
  // with when a ping last went to each.
  std::map<uint32_t, std::chrono::steady_clock::time_point> lease_lost_ GUARDED_BY(mu_);
  // Our lease with `node` ran out and has not held since: a write-back to it
  // fails at once instead of waiting out its deadline (the kernel writes
  // dirty pages back while it drops the others, which must be quick: the
  // owner may forget this node a margin later). Meanwhile a ping goes to it
  // once a heartbeat, so that a connection is made again when it can be
  // (nothing else may be sent to it) and the lease renewed.
  bool LeaseLostWith(uint32_t node);
  uint64_t incarnation_ = 0;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  ownership::NodeStatus OwnStatus();
  size_t QueuedUnlocks();  // unlocks in unsent_unlocks_, all inodes
  std::unordered_map<uint64_t, uint64_t> fetches_from_ GUARDED_BY(mu_);  // remote fetches per segment

  // Per inode: handles open for writing here, READs being answered without
  // twins, and whether the kernel may hold pages without twins.
  struct Writers {
    int writable = 0;
    int twinless_reads = 0;
    bool twinless_cached = false;
    bool idle() const { return writable == 0 && twinless_reads == 0 && !twinless_cached; }
  };
  Mutex writers_mu_;
  CondVar twinless_done_;
  std::unordered_map<uint64_t, Writers> writers_ GUARDED_BY(writers_mu_);
};

template <typename F>
auto Cluster::AtOwner(uint64_t ino, F call) -> decltype(call(0u)) {
  for (int attempt = 0;; attempt++) {
    auto owner = OwnerOf(ino);
    if (!owner.ok()) return owner.status();
    auto r = call(*owner);
    auto moved = ownership::MovedTo(r.status());
    if (!moved || attempt >= 4) return r;
    NoteOwner(ino, *moved);  // the segment migrated: follow it
  }
}

}  // namespace cshm::fs
