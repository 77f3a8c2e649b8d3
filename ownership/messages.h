// Wire messages of the data path (pure codecs; the transport carries bytes):
//
//   Fetch       accessor -> owner   {ino, off, len}           -> {size, data}
//   WriteBack   accessor -> owner   {ino, runs[, expect]}     -> {size, busy, dropped}
//               With `expect` (a late write-back: one kept after it failed and
//               delivered later), a page is written only if it still holds
//               what the writer diffed against; see WriteBackRequest.
//   Sync        accessor -> owner   {ino}                     -> {} once every
//               invalidation round started before it is acknowledged
//   Truncate    accessor -> owner   {ino, size}               -> {size}
//   Fallocate   accessor -> owner   {ino, mode, off, len}     -> {size}, once
//               every other copy of a punched hole is dropped
//   Invalidate  owner -> accessor   {ino, ranges}             -> {}
//   Drop        metadata -> owner   {ino}  (one-way: the segment was deleted)
//
// A WriteBack is answered once the owner applied it and its invalidation
// round is over, or after a short hold (the round then runs on; see
// fs/cluster_dispatch.cc, kWriteBackHold). Releases wait with Sync, unless every
// write-back since the last one was answered with busy = 0 (no round of the
// segment was running when it was answered: nothing to wait for).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "ownership/lock_table.h"
#include "ownership/owned_segments.h"
#include "ownership/semaphore_table.h"

namespace cshm::ownership {

enum MessageType : uint16_t {
  kMetaRequest = 16,
  kMetaForget = 17,
  kFetch = 20,
  kWriteBack = 21,
  kTruncate = 22,
  kInvalidate = 23,
  kDrop = 24,
  kPing = 25,  // one-way, at start: peers learn our incarnation
  kLock = 26,
  kNamesChanged = 27,  // metadata node -> node: meta::NameChange -> {} once its kernel dropped it (or one-way)
  kMigrateQuery = 28,    // old owner -> target: MoveRef -> bitmap of pages with twins there; starts staging
  kMigratePages = 29,    // old owner -> target: a chunk of pages
  kMigrateInstall = 30,  // old owner -> target: size, copysets, pin, locks: staged, served only at commit
  kControl = 31,         // anyone -> owner: pin, describe, migrate
  kMigrateAbort = 32,    // old owner -> target, one-way MoveRef: forget what was staged
  kSync = 33,            // accessor -> owner {ino}: wait for the rounds so far
  // One-way, any node -> node N, on its own connection to N, after it has
  // given up every lock of N's earlier incarnations: {u64 N's incarnation}.
  // N's grace period ends when every other node has said so (or after a lease).
  kIncarnationSeen = 34,
  kMigrateCommit = 35,   // old owner -> target: MoveRef -> {}: the directory names you, serve it
  kMetaRefs = 36,        // metadata node -> node: {} -> meta::ReferenceSnapshot of what its kernel holds
  kHeldOrphans = 37,     // one-way, metadata node -> node: u64 inos it holds that have no name: drop their dentries
  kNodeStatus = 38,      // anyone -> node: {} -> NodeStatus (cshmctl status)
  kSem = 39,             // accessor -> owner of a semaphore set's file: SemRequest -> SemReply
  kSemWake = 40,         // owner -> accessor: SemWake -> {}: a queued semop finished
  kFallocate = 41,       // accessor -> owner: FallocateRequest -> u64 size, once the caches of a hole are dropped
};

// What a node says of itself for `cshmctl status`.
struct NodeStatus {
  uint32_t node = 0;
  uint64_t incarnation = 0;
  uint64_t uptime_ms = 0;
  uint64_t segments_owned = 0;  // segments with state here (owned, staged, forwarding)
  uint64_t page_bytes = 0;      // the page store's use...
  uint64_t capacity_bytes = 0;  // ...and its cap
  uint64_t twin_bytes = 0;
  uint64_t kept_writebacks = 0;
  uint64_t queued_unlocks = 0;
  uint64_t semaphore_sets = 0;  // SysV semaphore sets served here...
  uint64_t semaphore_ops = 0;   // ...and calls on them answered since start
  // The move from this node under way (moving_ino 0: none): pages of the
  // segment gone through so far, of its total.
  uint64_t moving_ino = 0, moving_target = 0, moving_done = 0, moving_total = 0;
  std::string version;
  std::string Encode() const;
  static Result<NodeStatus> Decode(std::string_view in);
};

// Migration (DESIGN.md "Migration"): the old owner freezes the segment, asks
// the target which pages it holds (twins of pages in its copyset equal the
// owner's), sends the others in chunks, then the state; then the directory
// names the target, and the old owner forwards late requests (kMoved). Two
// phases: the target serves nothing (requests wait as at a freeze) until the
// old owner commits the move after the directory update, or until the
// target itself finds the directory naming it (the commit was lost); if the
// directory does not name it, the move aborts and nothing the target saw was
// acknowledged.
//
// A twin is trusted only if its hash equals the owner's page: the target's
// twin of a page it wrote itself is updated only when the answer to its
// write-back arrives, which may be after the move asked for it. The target
// answers each chunk with the pages it needs after all, and the old owner
// sends those (a repair chunk: kData where needed, kSkip elsewhere).
enum class PageKind : uint8_t { kZero = 0, kData = 1, kYourTwin = 2, kSkip = 3 };

// Which move a migration message belongs to: the old owner draws a fresh id
// for every move, and the target refuses pages, an install, a commit or an
// abort of any move but the one it is staging (a late or reordered message
// of an earlier move changes nothing).
struct MoveRef {
  uint64_t ino = 0;
  uint64_t move_id = 0;
  std::string Encode() const;
  static Result<MoveRef> Decode(std::string_view in);
};

struct MigratePages {
  uint64_t ino = 0;
  uint64_t move_id = 0;
  uint64_t first_page = 0;
  bool repair = false;  // pages for an earlier chunk of this move: nothing is reset
  std::vector<PageKind> kinds;
  // One per kData page, in order, each 4 KiB. Views, not copies: into the
  // sender's buffer of the chunk's pages (Encode), or into the message that
  // was decoded (Decode); valid as long as that is.
  std::vector<std::string_view> data;
  std::vector<uint64_t> twin_hashes;     // one per kYourTwin page, in order: PageHash of the owner's copy
  std::string Encode() const;
  static Result<MigratePages> Decode(std::string_view in);
};

// The target's answer to a chunk: the pages whose twin it does not have or
// whose twin differs from the owner's copy.
struct MigratePagesReply {
  std::vector<uint64_t> need;
  std::string Encode() const;
  static Result<MigratePagesReply> Decode(std::string_view in);
};

struct MigrateInstall {
  uint64_t ino = 0;
  uint64_t move_id = 0;
  SegmentSnapshot snapshot;
  std::vector<Lock> locks;
  std::string Encode() const;
  static Result<MigrateInstall> Decode(std::string_view in);
};

enum class ControlOp : uint8_t { kDescribe = 1, kPin = 2, kMigrate = 3 };
struct ControlRequest {
  uint64_t ino = 0;
  ControlOp op = ControlOp::kDescribe;
  uint32_t arg = 0;
  std::string Encode() const;
  static Result<ControlRequest> Decode(std::string_view in);
};

// Lock requests to a segment's owner; never wait there (a blocked F_SETLKW
// retries from the requesting node), so they run on the fast pool.
enum class LockOp : uint8_t { kGet = 1, kSet = 2, kUnlock = 3 };

struct LockMessage {
  LockOp op = LockOp::kGet;
  uint64_t ino = 0;
  Lock lock;  // lock.who.node is filled in by the owner from the connection
  // kSet: a number the asking node gives each of its lock requests, rising.
  // kUnlock: with `cancels`, it undoes a kSet whose answer was lost (its
  // number): the owner frees what it granted, and refuses that request (or
  // an older one of the same lock owner) if it arrives after this, as a
  // request held in the owner's pool can.
  uint64_t seq = 0;
  uint64_t cancels = 0;
  std::string Encode() const;
  static Result<LockMessage> Decode(std::string_view in);
};

// Reply: granted (kSet), or the conflicting lock (kGet; type F_UNLCK if none).
// `grace`: not granted because the owner restarted less than a lease ago and
// holders of its previous incarnation's locks may still think they hold them.
struct LockReply {
  bool granted = false;
  bool grace = false;
  Lock conflict;
  std::string Encode() const;
  static Result<LockReply> Decode(std::string_view in);
};

// SysV semaphores (fs/semaphores.h): served by the owner of the set's file
// from its SemaphoreTable; never wait there (fast pool). A semop that must
// wait is queued under the caller's token and answered by a SemWake; kCancel
// takes it back (a signal, a deadline) or, if it finished meanwhile, says how.
enum class SemKind : uint8_t { kCreate = 1, kOp = 2, kCtl = 3, kCancel = 4, kExit = 5 };
struct SemRequest {
  SemKind kind = SemKind::kOp;
  uint64_t ino = 0;
  uint64_t token = 0;  // kOp/kCancel: unique per caller node incarnation
  int32_t pid = 0;     // the calling process, on its node
  uint64_t start = 0;  // and its start time there (SemProcess): kOp with SEM_UNDO, kExit
  int32_t cmd = 0;     // kCtl: semctl's cmd
  uint32_t num = 0;    // kCreate: nsems; kCtl: semnum
  int32_t value = 0;
  std::vector<SemOpBuf> ops;
  std::vector<uint16_t> values;  // SETALL
  std::string Encode() const;
  static Result<SemRequest> Decode(std::string_view in);
};
// `state`: kDone (err says how), kQueued (a SemWake follows), kUnknown (kCancel
// of a token the owner has no trace of: its incarnation restarted).
enum class SemState : uint8_t { kDone = 0, kQueued = 1, kCancelled = 2, kUnknown = 3 };
struct SemReply {
  SemState state = SemState::kDone;
  int32_t err = 0;
  int32_t result = 0;
  uint32_t nsems = 0;
  int64_t otime = 0, ctime = 0;
  std::vector<uint16_t> values;  // GETALL
  std::string Encode() const;
  static Result<SemReply> Decode(std::string_view in);
};
struct SemWake {
  uint64_t ino = 0, token = 0;
  int32_t err = 0;
  std::string Encode() const;
  static Result<SemWake> Decode(std::string_view in);
};

// No offset on the wire is beyond this (files end at INT64_MAX; offset plus
// length never overflows).
constexpr uint64_t kMaxWireOffset = 1ull << 62;

struct FetchRequest {
  // Longer fetches are malformed (the reply must fit a frame; FUSE asks for
  // at most 1 MiB), and so are empty ones.
  static constexpr uint64_t kMaxLen = 16u << 20;
  uint64_t ino = 0, off = 0, len = 0;
  std::string Encode() const;
  static Result<FetchRequest> Decode(std::string_view in);
};
struct FetchReply {
  uint64_t size = 0;
  std::string data;
  std::string Encode() const;
  static Result<FetchReply> Decode(std::string_view in);

  // The same wire form without copying the data: the owner reads the bytes
  // straight into a frame made by Frame (at kDataOffset) and then calls
  // Finish; the accessor takes a view of them in the received payload.
  static constexpr size_t kDataOffset = 12;  // u64 size, u32 length
  static std::string Frame(size_t len);
  static void Finish(std::string* frame, uint64_t size, size_t n);
  static Result<std::string_view> View(std::string_view in, uint64_t* size);
};

struct WriteBackRequest {
  uint64_t ino = 0;
  std::vector<WriteRun> runs;
  // A late write-back (DESIGN.md "Faults", page versions): kept after its
  // delivery failed, so the writer was told EIO and the page may have
  // changed since. Its bytes land only on pages whose content still hashes
  // to the expectation; a page without one is not written. The owner drops
  // the rest (counted in the reply) and invalidates every cached copy of the
  // pages it touched, the writer's too: its kernel may hold bytes that did
  // not land. A normal write-back (not late) has no expectations.
  bool late = false;
  std::vector<PageExpect> expect;
  // The writer's kernel keeps its copy of the pages (a write-back it made of
  // its own accord, diffed against a twin; not one forced by dropping the
  // pages, nor a write(2)). If the owner does not count that copy (the
  // writer is not in the page's copyset: its copy was declared gone while
  // the writer could not be reached), the copy may miss other nodes' bytes:
  // the writer drops it too, instead of entering the copyset with it.
  bool keeps_copy = false;
  std::string Encode() const;
  static Result<WriteBackRequest> Decode(std::string_view in);
};

struct WriteBackReply {
  uint64_t size = 0;
  bool rounds_running = false;  // a round of the segment was running at the answer
  uint32_t dropped = 0;         // pages of a late write-back not written (changed since)
  std::string Encode() const;
  static Result<WriteBackReply> Decode(std::string_view in);
};

struct TruncateRequest {
  uint64_t ino = 0, size = 0;
  std::string Encode() const;
  static Result<TruncateRequest> Decode(std::string_view in);
};

struct FallocateRequest {
  uint64_t ino = 0;
  uint32_t mode = 0;
  uint64_t off = 0, len = 0;
  std::string Encode() const;
  static Result<FallocateRequest> Decode(std::string_view in);
};

struct InvalidateRequest {
  uint64_t ino = 0;
  std::vector<Range> ranges;
  std::string Encode() const;
  static Result<InvalidateRequest> Decode(std::string_view in);
};

// A single u64 (sizes, inode numbers).
std::string EncodeU64(uint64_t v);
Result<uint64_t> DecodeU64(std::string_view in);

// What every Decode returns for what does not parse: "malformed <what>" (EINVAL).
Status Malformed(const char* what);

}  // namespace cshm::ownership
