#include "fs/name_coherence.h"

#include <memory>

#include "common/mutex.h"

namespace cshm::fs {

void NameCoherence::Changed(const meta::NameChange& change) {
  using Clock = meta::NameGrants::Clock;
  if (change.empty()) return;
  const std::string payload = change.Encode();
  struct Waiting {
    Mutex mu;
    CondVar cv;
    int left GUARDED_BY(mu) = 0;  // calls not yet answered
    // The latest window of a node whose call failed: it did not drop what
    // it may hold, so that much is waited for anyway.
    Clock::time_point unconfirmed_until GUARDED_BY(mu);
  };
  auto waiting = std::make_shared<Waiting>();
  const Clock::time_point now = Clock::now();
  Clock::time_point until = now;
  for (uint32_t node : env_.peers) {
    if (node == change.by) continue;
    const Clock::time_point window = env_.grants->Until(node);
    if (window <= now) {
      env_.send(node, payload);
      continue;
    }
    until = std::max(until, window);
    {
      MutexLock lock(&waiting->mu);
      waiting->left++;
    }
    const auto timeout = std::chrono::ceil<std::chrono::milliseconds>(window - now);
    env_.call(node, payload,
              [waiting, window](bool confirmed) {
                MutexLock lock(&waiting->mu);
                waiting->left--;
                if (!confirmed) waiting->unconfirmed_until = std::max(waiting->unconfirmed_until, window);
                waiting->cv.NotifyAll();
              },
              timeout);
  }
  // This node's kernel, here, meanwhile: a change made through it updated it.
  if (change.by != env_.self) env_.drop_local(change);
  // Every node confirmed, or its window is over: then its kernel holds
  // nothing older than the change.
  MutexLock lock(&waiting->mu);
  for (;;) {
    const Clock::time_point deadline = waiting->left == 0 ? waiting->unconfirmed_until : until;
    if (Clock::now() >= deadline) break;
    waiting->cv.WaitUntil(lock, deadline);
  }
}

}  // namespace cshm::fs
