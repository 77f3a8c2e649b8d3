#include "ownership/invalidation_rounds.h"

#include <spdlog/spdlog.h>

#include <atomic>

#include "common/metrics.h"

namespace cshm::ownership {

namespace {
metrics::Counter kRounds("cshm_invalidation_rounds_total",
                         "invalidation rounds this node started as an owner (other nodes' copies dropped)");
}  // namespace

std::shared_ptr<InvalidationRounds::Rounds> InvalidationRounds::Of(uint64_t ino) {
  MutexLock lock(&mu_);
  auto& r = rounds_[ino];
  if (!r) r = std::make_shared<Rounds>();
  return r;
}

void InvalidationRounds::Forget(uint64_t ino) {
  MutexLock lock(&mu_);
  auto r = rounds_.find(ino);
  if (r == rounds_.end() || r->second.use_count() != 1) return;
  MutexLock rl(&r->second->mu);
  if (r->second->running.empty() && r->second->failed.empty() && r->second->waiters.empty() &&
      r->second->answers.empty())
    rounds_.erase(r);
}

bool InvalidationRounds::Pending(uint64_t ino) {
  auto rounds = Of(ino);
  MutexLock lock(&rounds->mu);
  return !rounds->running.empty() || !rounds->failed.empty();
}

uint64_t InvalidationRounds::Start(uint64_t ino, Invalidations inv) {
  kRounds.Add();
  auto rounds = Of(ino);
  uint64_t seq;
  {
    MutexLock lock(&rounds->mu);
    seq = rounds->next++;
    rounds->running.insert(seq);
  }
  struct Progress {
    std::atomic<size_t> left{0};
    Mutex mu;
    Status first GUARDED_BY(mu);
  };
  auto progress = std::make_shared<Progress>();
  progress->left = inv.size();
  if (inv.empty()) {
    Finish(ino, rounds, seq, Status::Ok());
    return seq;
  }
  auto ack = [this, ino, rounds, seq, progress](uint32_t node, const Status& s) {
    if (!s.ok()) {
      // Its copy may still be readable there: the release cannot promise
      // otherwise.
      spdlog::warn("invalidation of inode {} on node {} failed: {}", ino, node, s.message());
      MutexLock lock(&progress->mu);
      if (progress->first.ok())
        progress->first =
            Unavailable("node " + std::to_string(node) + " did not acknowledge an invalidation: " + s.message());
    }
    if (--progress->left == 0) {
      Status first;
      {
        MutexLock lock(&progress->mu);
        first = progress->first;
      }
      Finish(ino, rounds, seq, first);
    }
  };
  for (auto& [node, ranges] : inv)
    env_.invalidate(node, ino, std::move(ranges), [ack, node = node](const Status& s) { ack(node, s); });
  return seq;
}

void InvalidationRounds::AnswerAfter(uint64_t ino, uint64_t seq, std::chrono::microseconds hold,
                                     std::function<void()> answer) {
  auto rounds = Of(ino);
  {
    MutexLock lock(&rounds->mu);
    if (rounds->RunningBelow(seq + 1)) {
      rounds->answers.emplace_back(seq + 1, answer);
      env_.after(hold, std::move(answer));
      return;
    }
  }
  answer();
}

bool InvalidationRounds::Done(uint64_t ino, Rounds& r, uint64_t upto, Status* st) {
  if (r.RunningBelow(upto)) return false;
  // A failed round is reported to the next release that waits for it, once.
  auto end = r.failed.lower_bound(upto);
  if (r.failed.begin() != end) {
    r.failed.erase(r.failed.begin(), end);
    *st = Unavailable("a node did not acknowledge the invalidation of inode " + std::to_string(ino) +
                      " (see the log); its copy may be stale until it reconnects");
  }
  return true;
}

void InvalidationRounds::Finish(uint64_t ino, const std::shared_ptr<Rounds>& rounds, uint64_t seq, const Status& st) {
  std::vector<std::pair<std::function<void(const Status&)>, Status>> ready;
  std::vector<std::function<void()>> held;
  {
    MutexLock lock(&rounds->mu);
    rounds->running.erase(seq);
    if (!st.ok()) rounds->failed.insert(seq);
    rounds->done.NotifyAll();
    // Held write-back answers: a failed round stays for a release to report
    // (the answer then says a round is pending).
    auto& answers = rounds->answers;
    for (size_t i = 0; i < answers.size();) {
      if (!rounds->RunningBelow(answers[i].first)) {
        held.push_back(std::move(answers[i].second));
        answers.erase(answers.begin() + static_cast<long>(i));
      } else {
        i++;
      }
    }
    auto& waiters = rounds->waiters;
    for (size_t i = 0; i < waiters.size();) {
      Status ws;
      if (Done(ino, *rounds, waiters[i].first, &ws)) {
        ready.emplace_back(std::move(waiters[i].second), ws);
        waiters.erase(waiters.begin() + static_cast<long>(i));
      } else {
        i++;
      }
    }
  }
  for (auto& [answer, ws] : ready) answer(ws);
  for (auto& answer : held) answer();
}

Status InvalidationRounds::Wait(uint64_t ino) {
  auto rounds = Of(ino);
  MutexLock lock(&rounds->mu);
  const uint64_t target = rounds->next;
  const auto deadline = std::chrono::steady_clock::now() + env_.deadline;
  Status st;
  if (!rounds->done.WaitUntil(lock, deadline, [&]() REQUIRES(rounds->mu) { return Done(ino, *rounds, target, &st); }))
    return TimedOut("invalidations of inode " + std::to_string(ino) + " are still unacknowledged");
  return st;
}

void InvalidationRounds::WhenDone(uint64_t ino, std::function<void(const Status&)> answer) {
  auto rounds = Of(ino);
  Status st;
  {
    MutexLock lock(&rounds->mu);
    if (!Done(ino, *rounds, rounds->next, &st)) {
      // Answered by the round's last ack (Finish); each round has a deadline.
      rounds->waiters.emplace_back(rounds->next, std::move(answer));
      return;
    }
  }
  answer(st);
}

}  // namespace cshm::ownership
