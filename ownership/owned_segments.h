// OwnedSegments: the owner side of the coherence protocol for the segments this
// node owns (DESIGN.md "How a fault flows"). Knows nothing of FUSE or sockets.
//
// For each owned segment it keeps the size and, per 4 KiB page, the copyset:
// the nodes whose kernels may hold a cached copy (this node's own kernel
// included). Fetch adds the fetching node; Apply merges a writer's bytes and
// hands back the other nodes to invalidate, removing them from the copysets
// at once (a node re-enters only by fetching again). The caller runs the
// invalidation round *after* Apply returns: no lock is held across it, so a
// write-back that an invalidation forces can always be applied (no
// distributed deadlock), and fetches never wait for rounds.
//
// Thread-safety: all methods are thread-safe (checked: GUARDED_BY, REQUIRES).
// Each segment has its own mutex
// (State::mu); lock order: State::mu before store::Segment::mu(). mu_ guards
// only the map and is never held with another lock.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <deque>
#include <optional>

#include "common/mutex.h"
#include "common/status.h"
#include "store/page_store.h"

namespace cshm::ownership {

struct WriteRun {
  uint64_t off = 0;
  std::string bytes;
};
// The changed bytes `runs` carry (counted once per write-back: a diff of
// interleaved writers is many small runs).
uint64_t RunBytes(const std::vector<WriteRun>& runs);

// The hash of a page's 4 KiB (XXH3, 64 bits): what a kYourTwin page of a
// move carries, and what a late write-back expects a page still to hold.
uint64_t PageHash(std::string_view page);

// What a late write-back's page must still hold for its bytes to land: the
// PageHash of the copy the writer diffed against (its twin).
struct PageExpect {
  uint64_t page = 0;
  uint64_t hash = 0;
  bool operator==(const PageExpect&) const = default;
};

struct Range {
  uint64_t off = 0;
  uint64_t len = 0;  // 0: to the end of the segment
  bool operator==(const Range&) const = default;
};

// node -> ranges (page-aligned) to invalidate there.
using Invalidations = std::map<uint32_t, std::vector<Range>>;

struct ApplyOutcome {
  Invalidations invalidate;
  uint64_t size = 0;      // the segment's size after the write
  bool grew = false;      // the write extended the segment
  uint32_t dropped = 0;   // pages of a late write not written: they changed since
};

// kMoved: the segment is owned by `node` now; the caller retries there.
Status Moved(uint32_t node);
// The node of a kMoved status (also after the transport prefixed its message).
std::optional<uint32_t> MovedTo(const Status& s);

// What moves with a segment when its ownership does (besides pages and locks).
struct SegmentSnapshot {
  uint64_t size = 0;
  std::vector<uint64_t> copyset;
  bool pinned = false;
};

// The twins of this node's own kernel copies of the segments it owns. The owner
// stores none while no other node changes a page: the page in the store is
// then exactly what its kernel read, so it is the twin (OwnerTwins reads it).
// Before another node's write changes a page that this node's kernel holds,
// Apply saves the page as it was (Keep), and that is the twin until this
// node's copy is invalidated; a fetch by this node itself discards a saved
// one (Discard), its kernel now holding the page as it is. So the owner's
// faults write no twins. Implemented by fs::TwinCache (its stored twins).
// A twin that cannot be kept (a full disk) fails the write that needed it:
// without it the owner's next write-back of that page would send the page's
// old bytes back over the new ones.
class OwnerTwinStore {
 public:
  virtual ~OwnerTwinStore() = default;
  virtual bool Has(uint64_t ino, uint64_t page) = 0;
  virtual std::optional<std::string> Get(uint64_t ino, uint64_t page) = 0;
  virtual Status Keep(uint64_t ino, uint64_t page, std::string_view before) = 0;
  virtual void Discard(uint64_t ino, uint64_t off, uint64_t len) = 0;
};

// Whoever watches how the owned segments are used: the pages each node was
// served (fetched or written), and when a segment's stay here changed. The
// migrator's AccessLedger is one (migrator/access_ledger.h): it decides
// where a segment should live, OwnedSegments only reports (so ownership/
// knows nothing of the policy). Called with the segment's lock held: quick,
// never blocking, never calling back into OwnedSegments (lock order: a
// State's mu before the observer's own lock).
class AccessObserver {
 public:
  virtual ~AccessObserver() = default;
  virtual void Served(uint64_t ino, uint32_t node, uint64_t pages) = 0;
  // A move of the segment ended: `away`, it is served elsewhere now (what
  // was seen here no longer counts); else it stays or arrived here, and a
  // new move waits out the cooldown.
  virtual void Moved(uint64_t ino, bool away) = 0;
  virtual void Forget(uint64_t ino) = 0;  // removed
};

// What the metadata service says of a segment the first time it is touched.
struct SegmentInfo {
  uint64_t size = 0;
  uint32_t owner = 0;
  bool pinned = false;
};

class OwnedSegments {
 public:
  // `load` describes a segment the first time it is touched here (from the
  // metadata service); one owned by another node answers kMoved.
  using LoadFn = std::function<Result<SegmentInfo>(uint64_t ino)>;
  OwnedSegments(store::PageStore* pages, uint32_t self, LoadFn load);

  // Up to `len` bytes at `off` into `out` (room for `len`), cut at the
  // segment's size; returns how many. `node` joins the copyset of every page
  // returned. The bytes go straight where the caller wants them (a FUSE reply
  // buffer, a reply frame): a fault copies its data as few times as it can.
  // Without `wait`, kBusy instead of waiting for anything (the segment's lock,
  // its first load, a freeze): the transport's I/O thread serves a fetch that
  // way, and hands it to a worker only when that fails.
  // With a `sink`, the bytes go to it straight from the page store's file,
  // still under the segment's lock, and *sent says so (if they cannot, they
  // are in `out` as usual).
  Result<uint64_t> Fetch(uint64_t ino, uint32_t node, uint64_t off, uint64_t len, char* out, uint64_t* size,
                         bool wait = true, const store::FileSink* sink = nullptr, bool* sent = nullptr);
  // Ok if the segment is served here right now; kBusy if finding out would
  // wait (lock, load, freeze); kMoved for a forwarding entry.
  Status TryServing(uint64_t ino) { return Serving(ino, false); }
  // With `wait`, the same after waiting out a freeze (up to 10 s); without
  // it TryServing.
  Status Serving(uint64_t ino, bool wait) EXCLUDES(mu_);
  // Segments with state here (owned, staged, or forwarding entries).
  size_t segment_count() EXCLUDES(mu_) {
    MutexLock lock(&mu_);
    return segments_.size();
  }
  // Where this node's own twins are (see OwnerTwinStore); set before serving.
  // Without one, Apply keeps nothing and this node must store twins itself.
  void SetOwnerTwins(OwnerTwinStore* twins) { owner_twins_ = twins; }
  // Before the first request; nullptr: nobody watches.
  void SetAccessObserver(AccessObserver* observer) { observer_ = observer; }
  // The twins of this node's own copies of pages [first, first + count), one
  // after the other: saved ones where another node changed the page, else the
  // page itself. kMoved if the segment is not served here.
  Result<std::string> OwnerTwins(uint64_t ino, uint64_t first, uint64_t count);
  // Writes `runs` (bytes that differ from what `node` last saw, or a
  // write(2)'s whole data). Returns who else must drop the pages.
  // Without `wait`, kBusy (having written nothing) instead of waiting for the
  // segment or its first load, and if the write would grow the segment (the
  // caller must then tell the metadata service, over the network).
  // With `expect` (a late write-back, see messages.h WriteBackRequest), the
  // bytes land only on pages whose content hashes as expected (a page with
  // no expectation is not written), checked under the segment's lock before
  // anything is written; every node caching a touched page, `node` too,
  // must then drop it.
  // With `writer_keeps` (WriteBackRequest::keeps_copy), a page whose
  // copyset leaves `node` out is dropped by `node` too.
  Result<ApplyOutcome> Apply(uint64_t ino, uint32_t node, const std::vector<WriteRun>& runs, bool wait = true,
                             const std::vector<PageExpect>* expect = nullptr, bool writer_keeps = false);
  // Sets the size. Shrinking drops the pages past it and returns every other
  // node that may cache any of them, with the range from the new end (rounded
  // down to a page) on.
  Result<ApplyOutcome> Truncate(uint64_t ino, uint32_t node, uint64_t size);
  // fallocate(2) by `node`, in the modes tmpfs has: 0 reserves the range and
  // grows the size to its end, KEEP_SIZE only reserves (ENOSPC past the cap),
  // PUNCH_HOLE|KEEP_SIZE frees it, and every other node that may cache a page
  // of it must then drop the range.
  Result<ApplyOutcome> Allocate(uint64_t ino, uint32_t node, int mode, uint64_t off, uint64_t len);
  // Forget a node's copies (it died or restarted: its kernel cache is gone).
  void DropNode(uint32_t node);
  // The segment was deleted: drop its state and its pages.
  Status Remove(uint64_t ino);

  // The pages of `ino` whose copysets here leave `node` out, as ranges (the
  // last one open to the end): where a kernel copy on `node` would be one
  // nobody invalidates. All of it if the segment is not served here, or is
  // frozen (a move: these copysets may not be the ones that count).
  std::vector<Range> PagesNotCachedBy(uint64_t ino, uint32_t node);
  // For tests and stats: the copyset of one page as a bit mask.
  uint64_t CopysetOf(uint64_t ino, uint64_t page);

  // Migration, old owner: stops serving the segment (requests wait, up to
  // their deadline) and returns what moves with it.
  Result<SegmentSnapshot> Freeze(uint64_t ino);
  // Serves again; with `moved_to`, as a forwarding entry (kMoved).
  void Unfreeze(uint64_t ino, std::optional<uint32_t> moved_to);
  // Migration, new owner: the segment is ours, with `s` (pages are in place);
  // staged frozen, until the move commits (Unfreeze) or aborts (Remove).
  void Install(uint64_t ino, const SegmentSnapshot& s);
  // Whether an automatic move of the segment may start now: served here,
  // loaded, not frozen by a move and not pinned (user.cshm.pin). Where it
  // should go is the migrator's to say (AccessObserver).
  bool MayMove(uint64_t ino);
  Status SetPinned(uint64_t ino, bool pinned);
  Result<bool> Pinned(uint64_t ino);
  Result<std::string> Describe(uint64_t ino);

 private:
  struct State {
    Mutex mu;
    CondVar unfrozen;
    bool loaded GUARDED_BY(mu) = false;
    bool frozen GUARDED_BY(mu) = false;
    int64_t moved_to GUARDED_BY(mu) = -1;  // >= 0: a forwarding entry
    bool pinned GUARDED_BY(mu) = false;
    double last_move_s GUARDED_BY(mu) = -1e18;  // a forwarding entry's age
    uint64_t size GUARDED_BY(mu) = 0;
    std::vector<uint64_t> copyset GUARDED_BY(mu);  // per page, bit n = node n
  };
  static double Now();
  // Every request for a segment starts the same way, so that the analysis
  // sees the segment's lock taken where its state is used:
  //   CSHM_ASSIGN_OR_RETURN(std::shared_ptr<State> s, Find(ino, true));
  //   MutexLock lock(&s->mu);
  //   CSHM_RETURN_IF_ERROR(Ready(ino, *s, lock, true));
  // and where the caller may not wait (`wait` false: the I/O thread, the fast pool)
  //   MutexLock lock(&s->mu, MutexLock::kDeferred);
  //   if (!lock.Acquire(wait)) return Busy("segment busy");
  // The state of `ino`, not locked: made if there is none and `make`, else kBusy.
  Result<std::shared_ptr<State>> Find(uint64_t ino, bool make) EXCLUDES(mu_);
  // With `s.mu` held by `lock`: the first time, loads what the metadata
  // service says of the segment (asking with the lock released); then waits
  // out a freeze (up to 10 s); kMoved for a forwarding entry. Without `wait`,
  // kBusy instead of loading or waiting.
  Status Ready(uint64_t ino, State& s, MutexLock& lock, bool wait) REQUIRES(s.mu) EXCLUDES(mu_);

  store::PageStore* const pages_;
  const uint32_t self_;
  const LoadFn load_;
  OwnerTwinStore* owner_twins_ = nullptr;
  AccessObserver* observer_ = nullptr;
  // A forwarding entry was made (s->mu held): the oldest go past a bound.
  void NoteForward(uint64_t ino) EXCLUDES(mu_);

  Mutex mu_;  // lock order: a State's mu before it (NoteForward), else try_lock
  std::unordered_map<uint64_t, std::shared_ptr<State>> segments_ GUARDED_BY(mu_);
  // Forwarding entries, oldest first. Past kMaxForwards the oldest that are
  // a minute old go: the metadata node names the owner again when one is
  // asked for (Ready's load), so dropping one loses nothing.
  std::deque<uint64_t> forwards_ GUARDED_BY(mu_);
};

// Merges per-page ranges into runs of consecutive pages.
void AddPageRange(std::vector<Range>* ranges, uint64_t page);
// The pages `runs` touch, as ranges (AddPageRange).
std::vector<Range> PagesTouched(const std::vector<WriteRun>& runs);

}  // namespace cshm::ownership
