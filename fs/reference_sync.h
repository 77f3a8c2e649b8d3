// ReferenceSync: on the metadata node, keeps meta::Namespace's per-node
// reference counts right (meta/references.h says why they can be wrong).
//
// One thread. Every heartbeat, and at once on an event, it
//  - asks every node that is heard and not registered for its table: after
//    our start, after it restarted, after it came back from being gone;
//  - declares gone a node that was not heard for a lease (once a lease has
//    passed since our start: a node we never heard may still hold inodes);
//  - asks again, at most once a lease, a node counted as holding an orphan
//    for longer than two request deadlines: a Forget may have been lost, or
//    the answer to a lookup that took a reference, or the notice that the
//    orphan's name went (the node then keeps a stale dentry, and is told).
// Asks are Calls with deadlines; nothing is locked across one.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "meta/namespace.h"

namespace cshm::fs {

class ReferenceSync {
 public:
  struct Options {
    std::vector<uint32_t> peers;
    std::chrono::milliseconds heartbeat{1000};
    std::chrono::milliseconds lease{5000};
    std::chrono::milliseconds request_timeout{5000};
    std::function<bool(uint32_t node)> heard;  // within the lease
    std::function<Result<meta::ReferenceSnapshot>(uint32_t node)> ask;
    // After a registration: the orphans the node holds, so that it drops
    // their dentries in case it never heard the names go (one-way, may be lost:
    // it is said again at the next ask).
    std::function<void(uint32_t node, const std::vector<uint64_t>& orphans)> tell_orphans;
  };
  ReferenceSync(meta::Namespace* ns, Options o);
  ~ReferenceSync();
  // Tells the namespace which nodes to expect (nothing is purged until they
  // settle) and starts the thread. Events before it wait for it.
  void Start();

  // From the transport's hooks (any thread, never blocks).
  void Restarted(uint32_t node);
  void Forgotten(uint32_t node);
  void Stop();

 private:
  void Loop();
  void Round();
  void Ask(uint32_t node);

  meta::Namespace* const ns_;
  const Options o_;
  const std::chrono::steady_clock::time_point started_;
  std::unordered_map<uint32_t, std::chrono::steady_clock::time_point> asked_;  // loop thread only

  Mutex mu_;
  CondVar cv_;
  bool stopping_ GUARDED_BY(mu_) = false;
  std::deque<std::pair<uint32_t, bool>> events_ GUARDED_BY(mu_);  // node, restarted (else forgotten)
  std::thread thread_;
};

}  // namespace cshm::fs
