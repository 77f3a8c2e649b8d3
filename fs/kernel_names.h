// KernelNames: the names this node's kernel may hold in its dcache, and
// until when (meta/name_cache.h): each is noted before the request that may
// bring it is sent, for as long as the kernel may keep the reply, so that an
// invalidation that arrives while the request is in flight still finds it.
//
// Why it is kept: dropping an entry (notify_inval_entry) takes the kernel's
// lock of its directory whether or not the kernel holds the name, and a node
// that is itself removing another name there holds that lock while it waits
// for the metadata node, which waits for the other nodes' kernels to drop
// theirs. Two nodes removing names in one directory waited for each other
// until their windows closed (1.2 s an unlink). A name this node's kernel was
// never given is not its to drop: no lock taken. One it was given is dropped
// on another thread, and the change is confirmed when the drop is done or the
// kernel's own timeout of the name has run out, whichever is first.
//
// Thread-safety: thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include "common/mutex.h"
#include "meta/name_cache.h"

namespace cshm::fs {

class KernelNames {
 public:
  using Clock = std::chrono::steady_clock;
  // What covers the kernel taking a reply later than the daemon gave it
  // (scheduling): the metadata node's margin.
  static constexpr std::chrono::milliseconds kMargin = meta::NameGrants::kMargin;

  // How long a directory whose names another node changed is not cached
  // here: two nodes that each hold a name the other removes, while each
  // removes one in the same directory, wait for each other's timeout.
  static constexpr std::chrono::seconds kContended{10};

  // Before asking the metadata node about `name` in `parent`, when the
  // kernel may keep the answer for `cache`; not noted (the kernel is then
  // told not to keep it) while `parent` is contended.
  void Asking(uint64_t parent, std::string_view name, std::chrono::milliseconds cache) EXCLUDES(mu_);
  // This node's kernel moved (or swapped) an entry it holds to `name` in
  // `parent`, keeping its timeout: noted whatever the directory.
  void Moved(uint64_t parent, std::string_view name, std::chrono::milliseconds cache) EXCLUDES(mu_);
  // Another node changed names in `dir`.
  void Contended(uint64_t dir) EXCLUDES(mu_);
  // Until when the kernel may hold the entry (the past: it cannot).
  Clock::time_point HeldUntil(uint64_t parent, std::string_view name) EXCLUDES(mu_);

 private:
  void PruneLocked(Clock::time_point now) REQUIRES(mu_);
  void NoteLocked(uint64_t parent, std::string_view name, Clock::time_point until, Clock::time_point now)
      REQUIRES(mu_);
  Mutex mu_;
  std::map<std::pair<uint64_t, std::string>, Clock::time_point> until_ GUARDED_BY(mu_);
  std::map<uint64_t, Clock::time_point> contended_ GUARDED_BY(mu_);  // until when
  size_t prune_at_ GUARDED_BY(mu_) = 1024;
};

}  // namespace cshm::fs
