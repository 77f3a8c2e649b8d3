// NameCoherence: the metadata node's side of the kernels' namespace caches
// (meta/name_cache.h). A change of a name or of a directory's attributes
// returns only once no other node's kernel can still use what it changed:
// every other node has confirmed that its kernel dropped it, or the node's
// cache window (NameGrants) has closed. Nodes whose window is closed are told
// of names that went, without waiting (their kernel may still hold an
// unlinked file's dentry, and so its inode, which is then purged sooner),
// and of nothing else.
//
// Why an invalidation cannot be overtaken by a reply it should replace: the
// kernel holds the directory's lock across a lookup, and dropping an entry
// takes that lock, so a lookup answered before the change is in the dcache
// before the drop runs; an entry that is only revalidated is unhashed by the
// drop whatever the revalidation then says; and attributes that an older
// reply brings are ignored once an invalidation bumped the inode's attribute
// version. What the receiving node must not do is drop an entry on the
// thread its answers arrive on (fs/cluster_dispatch.cc runs it on the slow
// pool), nor for a change its own kernel made, which holds the directory's
// lock while it waits for the answer (the change's `by` is left out).
//
// Thread-safety: thread-safe; Changed blocks its caller (never longer than
// the latest window, plus nothing: the waits are the windows themselves).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <set>
#include <vector>

#include "common/status.h"
#include "meta/name_cache.h"

namespace cshm::fs {

class NameCoherence {
 public:
  struct Env {
    uint32_t self = 0;
    std::vector<uint32_t> peers;  // every other node
    meta::NameGrants* grants = nullptr;
    // Sends the encoded change to `node`; `done` once it confirmed, or failed
    // (at `timeout` at the latest, or never once the messenger stops).
    std::function<void(uint32_t node, std::string payload, std::function<void(bool ok)> done,
                       std::chrono::milliseconds timeout)>
        call;
    std::function<void(uint32_t node, std::string payload)> send;  // best effort
    // This node's kernel drops what the change names (blocking until it did).
    std::function<void(const meta::NameChange&)> drop_local;
    // A node that did not confirm a change, which then waited out its window.
    std::function<void(uint32_t node)> unconfirmed;
  };
  explicit NameCoherence(Env env) : env_(std::move(env)) {}

  // On the metadata node, after `change` was committed, before it returns.
  void Changed(const meta::NameChange& change);

 private:
  const Env env_;
};

}  // namespace cshm::fs
