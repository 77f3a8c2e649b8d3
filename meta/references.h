// References: which node's kernel holds which inode, kept at both ends.
//
// An inode a kernel holds (a lookup count above zero) must outlive its last
// name: it becomes an orphan and is purged only when no live node holds it
// (docs/architecture.md "References and orphans"). The metadata node counts
// references per node (NodeReferences); each node keeps its own exact table
// (HeldReferences). The node's table is the truth; the metadata node's counts
// are what it learned from requests, and are replaced by the node's table
// whenever they may be wrong: after the metadata node restarted (it lost
// them), after the node restarted or came back from being declared gone, and
// when an orphan stays pinned long enough that a lost Forget or a lookup whose
// answer never arrived may be the reason.
//
// Sequence numbers make a replacement exact although requests overtake each
// other on the way (they run on thread pools): every request that changes a
// reference carries the node's next sequence number; a snapshot of the node's
// table is taken when none of its requests is in flight, and carries the
// number after the last one it includes. The metadata node, having applied
// the snapshot, ignores deltas numbered below it (they are in it) and replays
// the ones at or above it that it applied while the snapshot was on its way.
//
// Neither class locks: NodeReferences is guarded by the namespace's mutex;
// HeldReferences locks itself.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"

namespace cshm::meta {

// A node's table: the inodes its kernel holds, with their lookup counts.
struct ReferenceSnapshot {
  uint64_t seq = 0;  // the number after the last request it includes
  std::vector<std::pair<uint64_t, uint64_t>> held;  // ino, count > 0

  std::string Encode() const;
  static Result<ReferenceSnapshot> Decode(std::string_view in);
};

// The metadata node's view. Nodes are in one of three states: registered (its
// counts are right up to lost messages), unknown (it may hold inodes we do
// not know of: just after our start, after it restarted, after it came back
// from being gone), or gone (declared so by its lease: what it held no longer
// counts). While any node is unknown the table is not settled, and no inode
// may be deleted, even one no count holds.
class NodeReferences {
 public:
  enum class State { kRegistered, kUnknown, kGone };

  explicit NodeReferences(uint32_t self) : self_(self) {}

  // The other nodes of the cluster, each unknown until it registers or is
  // declared gone. Until this is called (with none on one node), the table
  // is not settled: at start nobody has said what it holds.
  void Expect(const std::vector<uint32_t>& peers);
  bool Settled() const;
  State state(uint32_t node) const;

  // A delta from `node`'s request numbered `seq` (0 for the metadata node's
  // own kernel, whose requests never travel).
  void Take(uint64_t ino, uint32_t node, uint64_t seq);
  void Drop(uint64_t ino, uint32_t node, uint64_t n, uint64_t seq);
  bool Held(uint64_t ino) const { return counts_.count(ino) != 0; }
  bool HeldBy(uint64_t ino, uint32_t node) const;
  uint64_t Count(uint64_t ino) const;
  std::vector<uint32_t> Holders(uint64_t ino) const;

  // Registration of `node`: Asking starts recording its deltas, Register
  // replaces its counts by the snapshot and replays what was recorded at or
  // after it, Abandon stops recording (the ask failed).
  void Asking(uint32_t node);
  void Register(uint32_t node, const ReferenceSnapshot& snap);
  void Abandon(uint32_t node);
  // Its lease ran out: its references no longer count.
  void Gone(uint32_t node);
  // It restarted, or is heard again after being gone: it must register.
  void Unknown(uint32_t node);

 private:
  struct Delta {
    uint64_t seq;
    uint64_t ino;
    int64_t n;
  };
  struct Node {
    State state = State::kRegistered;  // a node never expected holds nothing we must wait for
    uint64_t floor = 0;  // deltas numbered below it are in the registered table
    bool asking = false;
    std::vector<Delta> log;  // while asking
  };
  void Apply(uint64_t ino, uint32_t node, int64_t n);
  // Whether a delta numbered `seq` from `node` is to be applied; records it.
  bool Admit(uint32_t node, uint64_t seq, uint64_t ino, int64_t n);
  void EraseNode(uint32_t node);

  const uint32_t self_;
  std::unordered_map<uint64_t, std::unordered_map<uint32_t, uint64_t>> counts_;  // ino -> node -> count > 0
  std::unordered_map<uint32_t, Node> nodes_;  // a few: one per node of the cluster
  bool expected_ = false;                     // Expect was called
};

// A node's own table, kept by meta::RemoteMeta around the requests it sends.
// Thread-safe.
class HeldReferences {
 public:
  // `first_seq` should exceed every number a previous run of this node used
  // (RemoteMeta derives it from the clock).
  explicit HeldReferences(uint64_t first_seq) : next_seq_(first_seq) {}

  // Around a request that may take a reference: Begin gives its number (and
  // waits while a snapshot is being taken), End says which inode it took (0:
  // none, it failed).
  uint64_t Begin();
  // `parent`/`name`: the name the inode was reached by, kept while it is held
  // so that a dentry whose removal was never heard of can be dropped.
  void End(uint64_t ino, uint64_t parent = 0, std::string_view name = {});
  // The kernel forgot `n` lookups of `ino`: the number of the Forget to send.
  // Never waits: a snapshot reads the table and the next number together, so
  // a Forget either is in it and numbered below it, or neither.
  uint64_t Forget(uint64_t ino, uint64_t n);
  // The table, once no request is in flight; kBusy if one still is after
  // `wait` (requests have deadlines, so a later try succeeds).
  Result<ReferenceSnapshot> Snapshot(std::chrono::milliseconds wait);
  uint64_t Count(uint64_t ino);
  // The last name `ino` was reached by while held, if any.
  std::optional<std::pair<uint64_t, std::string>> NameOf(uint64_t ino);

 private:
  Mutex mu_;
  CondVar cv_;  // a snapshot ended, or the last request in flight did
  uint64_t next_seq_ GUARDED_BY(mu_);
  int in_flight_ GUARDED_BY(mu_) = 0;
  bool snapshotting_ GUARDED_BY(mu_) = false;
  std::unordered_map<uint64_t, uint64_t> held_ GUARDED_BY(mu_);
  std::unordered_map<uint64_t, std::pair<uint64_t, std::string>> names_ GUARDED_BY(mu_);  // of held inodes
};

}  // namespace cshm::meta
