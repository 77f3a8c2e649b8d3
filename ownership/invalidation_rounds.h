// InvalidationRounds: the owner's rounds of invalidations (docs/architecture.md
// "The cluster"). A write-back, truncation or hole that changes pages other
// nodes cache starts a round: every such node is asked to drop them, and the
// round is over when every one has acknowledged (or could not be reached
// until its lease ran out: then its copy is gone anyway). Rounds are numbered
// per segment as they start.
//
// Nothing here blocks a WRITE: Start sends and returns, the acks are counted
// as they arrive. Releases wait instead: Wait (a thread that may), WhenDone
// (answered by the round's last ack, no thread waits: the Sync served on the
// I/O thread), and a write-back's answer may be held for a moment until its
// round is over (AnswerAfter), so that a release with sharers costs one round
// trip instead of two. A failed round is reported once, to the next release
// that waits for it.
//
// Modelled in ownership/coherence.pml (Write/Sync and the rounds).
//
// Thread-safety: all methods are thread-safe; callbacks run with no lock held.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "ownership/owned_segments.h"

namespace cshm::ownership {

class InvalidationRounds {
 public:
  struct Env {
    // Asks `node` (this node too) to drop `ranges` of `ino`; `done` gets the
    // outcome once, from any thread. Must not block its caller.
    std::function<void(uint32_t node, uint64_t ino, std::vector<Range> ranges, std::function<void(const Status&)> done)>
        invalidate;
    // Runs `fn` after `delay` without blocking (a timer).
    std::function<void(std::chrono::microseconds delay, std::function<void()> fn)> after;
    // How long a round may take (a sharer that cannot be reached is asked
    // until its lease has run out).
    std::chrono::milliseconds deadline{0};
  };
  explicit InvalidationRounds(Env env) : env_(std::move(env)) {}

  // Starts a round of `inv` for `ino` (one with no sharers ends at once);
  // returns its number.
  uint64_t Start(uint64_t ino, Invalidations inv);
  // Whether a round of `ino` is running, or a failed one is not yet reported.
  bool Pending(uint64_t ino);
  // Returns once every round of `ino` started so far is over (kTimedOut after
  // the deadline); kUnavailable, once, if one of them failed.
  Status Wait(uint64_t ino);
  // The same without waiting: `answer` is called now or by the last ack of
  // the last round started so far.
  void WhenDone(uint64_t ino, std::function<void(const Status&)> answer);
  // Calls `answer` once the rounds up to `seq` are over, or after `hold` at
  // the latest, whichever comes first (it may be called twice: make the
  // second call do nothing).
  void AnswerAfter(uint64_t ino, uint64_t seq, std::chrono::microseconds hold, std::function<void()> answer);
  // Drops the state of `ino` if nothing is running or waiting.
  void Forget(uint64_t ino);

 private:
  struct Rounds {
    Mutex mu;
    CondVar done;
    uint64_t next GUARDED_BY(mu) = 0;
    std::set<uint64_t> running GUARDED_BY(mu);
    std::set<uint64_t> failed GUARDED_BY(mu);  // not yet reported to a release
    // Releases waiting for every round below a number.
    std::vector<std::pair<uint64_t, std::function<void(const Status&)>>> waiters GUARDED_BY(mu);
    // Write-back answers held until every round below a number is over (or
    // their time is up), run outside mu.
    std::vector<std::pair<uint64_t, std::function<void()>>> answers GUARDED_BY(mu);
    // Whether a round numbered below `upto` is still running.
    bool RunningBelow(uint64_t upto) const REQUIRES(mu) { return !running.empty() && *running.begin() < upto; }
  };
  std::shared_ptr<Rounds> Of(uint64_t ino);
  void Finish(uint64_t ino, const std::shared_ptr<Rounds>& rounds, uint64_t seq, const Status& st);
  // Whether every round below `upto` is over; the failures among them go
  // into *st, once.
  static bool Done(uint64_t ino, Rounds& rounds, uint64_t upto, Status* st) REQUIRES(rounds.mu);

  const Env env_;
  Mutex mu_;
  std::unordered_map<uint64_t, std::shared_ptr<Rounds>> rounds_ GUARDED_BY(mu_);
};

}  // namespace cshm::ownership
