// LockService: the owner side of the cluster-wide locks (DESIGN.md contract
// 4) — the lock table of the segments this node serves, the requests their
// askers cancelled, and the grace period after this node starts.
//
// The grace period: a restarted owner has no record of the locks its
// previous incarnation granted, and their holders may not yet know it
// restarted. So for a lease after the start it grants no lock, until every
// other node has said it gave up what the previous incarnation granted
// (kIncarnationSeen, `Confirmed`): NFS's grace period, without reclaims.
// The data path asks the same question (`ConfirmedBy`) for the copies of
// pages the previous incarnation granted (fs::Cluster::AddGraceTargets).
//
// A peer speaks for itself only: a request's lock is always the asking
// node's. Numbered requests (LockMessage::seq) that their asker cancelled
// are refused if they arrive after the cancel, as one held in a pool can.
//
// Thread-safety: thread-safe; one mutex, never held while calling out
// except into `serving`, which must not take locks that wait on this one.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <vector>

#include "common/mutex.h"
#include "common/log.h"
#include "common/status.h"
#include "ownership/lock_table.h"
#include "ownership/messages.h"

namespace cshm::ownership {

class LockService {
 public:
  struct Env {
    uint32_t self = 0;
    std::vector<uint32_t> peers;  // every other node of the cluster
    std::chrono::milliseconds lease{0};
    NamedLog log{"locks"};
    // Ok if the segment is served here; with `wait` after waiting out a
    // freeze, without it kBusy if that would wait; kMoved if it moved.
    std::function<Status(uint64_t ino, bool wait)> serving;
    // The clock (a test's fake one, or steady_clock's).
    std::function<std::chrono::steady_clock::time_point()> now = [] { return std::chrono::steady_clock::now(); };
  };
  explicit LockService(Env env);

  // The grace period starts now (the node joins the network).
  void Start();
  // A request from `from` (this node's own too), as LockMessage says;
  // without `wait`, kBusy instead of waiting for the segment.
  Result<LockReply> Serve(uint32_t from, const LockMessage& m, bool wait);
  // `node` gave up what this node's previous incarnation granted it.
  void Confirmed(uint32_t node);
  bool ConfirmedBy(uint32_t node);
  // What `node` held here is gone (it was silent for a lease, or
  // restarted): its locks, and its cancelled requests (numbered anew).
  void ForgetNode(uint32_t node);
  // Migration: the locks of `ino` leave with it, and arrive at the new owner.
  std::vector<Lock> Locks(uint64_t ino);
  void Replace(uint64_t ino, std::vector<Lock> locks);

 private:
  bool InGrace() REQUIRES(mu_);

  const Env env_;
  Mutex mu_;
  LockTable locks_ GUARDED_BY(mu_);  // locks of the segments served here
  // Per (node, lock owner, inode), the newest request its asker cancelled;
  // only timed-out requests make entries.
  using CancelKey = std::tuple<uint32_t, uint64_t, uint64_t>;
  std::map<CancelKey, uint64_t> cancelled_ GUARDED_BY(mu_);
  std::chrono::steady_clock::time_point grace_until_ GUARDED_BY(mu_);
  std::set<uint32_t> confirmed_ GUARDED_BY(mu_);
  bool grace_over_ GUARDED_BY(mu_) = false;
};

}  // namespace cshm::ownership
