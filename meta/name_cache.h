// What the nodes' kernels cache of the namespace (DESIGN.md "Namespace and
// metadata"): entries, and directories' attributes, for `name_cache_ms`
// (regular files' attributes change with every write elsewhere and are not
// cached on a cluster). A change tells every other node's kernel what to
// drop (NameChange) before it returns (fs/name_coherence.h).
//
// NameGrants: until when each node's kernel may hold what the metadata node
// told it.
//
// A node caches what a namespace reply says for its `name_cache_ms`, counted
// from before it sent the request; the metadata node notes the node's window
// when the request arrives, before it reads the namespace, so that a change
// made after that read sees the window. A change waits for a node that does
// not confirm its invalidation only until the node's window closes
// (fs/name_coherence.h): then its kernel holds nothing older than the change.
//
// Thread-safety: thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"

namespace cshm::meta {

constexpr uint32_t kNoNode = UINT32_MAX;

// What a change did to what kernels cache. A creation adds no name to drop:
// no kernel caches a name's absence (a lookup that finds nothing is an
// error reply, which the kernel does not keep).
struct NameChange {
  uint32_t by = kNoNode;                                 // its kernel updated its own cache (not on the wire)
  std::vector<uint64_t> dirs;                            // directories whose attributes changed
  std::vector<std::pair<uint64_t, std::string>> names;  // (parent, name) gone or naming another inode
  bool empty() const { return dirs.empty() && names.empty(); }
  std::string Encode() const;
  static Result<NameChange> Decode(std::string_view in);
};

class NameGrants {
 public:
  using Clock = std::chrono::steady_clock;
  // What covers the time between the reply leaving this node and its kernel
  // taking it, and scheduling delays on the way: part of every window.
  static constexpr std::chrono::milliseconds kMargin{200};

  // A request from `node`, which caches replies for `cache_ms` (0: it does not).
  void Granted(uint32_t node, uint32_t cache_ms) EXCLUDES(mu_);
  // When `node`'s kernel holds nothing it was told before now (the past if
  // nothing).
  Clock::time_point Until(uint32_t node) EXCLUDES(mu_);

 private:
  Mutex mu_;
  std::unordered_map<uint32_t, Clock::time_point> until_ GUARDED_BY(mu_);
};

}  // namespace cshm::meta
