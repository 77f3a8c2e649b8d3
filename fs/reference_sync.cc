#include "fs/reference_sync.h"

#include <spdlog/spdlog.h>

namespace cshm::fs {

ReferenceSync::ReferenceSync(meta::Namespace* ns, Options o)
    : ns_(ns), o_(std::move(o)), started_(std::chrono::steady_clock::now()) {}

void ReferenceSync::Start() {
  ns_->ExpectNodes(o_.peers);
  // Logged before the daemon's log is set up (FileSystem::Open): debug only.
  if (!o_.peers.empty())
    spdlog::debug("orphans are purged once every node has registered its references or is declared gone");
  thread_ = std::thread([this] { Loop(); });
}

ReferenceSync::~ReferenceSync() { Stop(); }

void ReferenceSync::Stop() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  cv_.NotifyAll();
  if (thread_.joinable()) thread_.join();
}

void ReferenceSync::Restarted(uint32_t node) {
  {
    MutexLock lock(&mu_);
    events_.emplace_back(node, true);
  }
  cv_.NotifyAll();
}

void ReferenceSync::Forgotten(uint32_t node) {
  {
    MutexLock lock(&mu_);
    events_.emplace_back(node, false);
  }
  cv_.NotifyAll();
}

void ReferenceSync::Loop() {
  MutexLock lock(&mu_);
  while (!stopping_) {
    while (!events_.empty()) {
      auto [node, restarted] = events_.front();
      events_.pop_front();
      lock.Unlock();
      if (restarted) {
        ns_->NodeUnknown(node);  // its kernel now holds other inodes than we counted
      } else {
        spdlog::info("node {} is declared gone: the inodes its kernel held are no longer kept for it", node);
        ns_->NodeGone(node);
      }
      lock.Lock();
    }
    lock.Unlock();
    Round();
    lock.Lock();
    cv_.WaitFor(lock, o_.heartbeat, [&]() REQUIRES(mu_) { return stopping_ || !events_.empty(); });
  }
}

void ReferenceSync::Round() {
  using State = meta::Namespace::NodeState;
  const auto now = std::chrono::steady_clock::now();
  for (uint32_t node : o_.peers) {
    const State st = ns_->node_state(node);
    if (o_.heard(node)) {
      if (st == State::kRegistered) continue;
      if (st == State::kGone) ns_->NodeUnknown(node);  // back: until it registers, nothing is deleted
      Ask(node);
    } else if (st == State::kUnknown && now - started_ >= o_.lease) {
      spdlog::info("node {} was not heard for a lease: the inodes its kernel held are no longer kept for it", node);
      ns_->NodeGone(node);
    }
  }
  for (uint32_t node : ns_->Pinning(2 * o_.request_timeout)) {
    auto it = asked_.find(node);
    if (it != asked_.end() && now - it->second < o_.lease) continue;
    if (o_.heard(node)) Ask(node);
  }
}

void ReferenceSync::Ask(uint32_t node) {
  asked_[node] = std::chrono::steady_clock::now();
  ns_->Asking(node);
  auto snap = o_.ask(node);
  if (!snap.ok()) {
    ns_->Abandon(node);
    spdlog::debug("asking node {} for its references: {}", node, snap.status().ToString());
    return;
  }
  ns_->Register(node, *snap);
  spdlog::debug("node {} registered {} held inodes", node, snap->held.size());
  std::vector<uint64_t> orphans = ns_->OrphansHeldBy(node);
  if (!orphans.empty() && o_.tell_orphans) o_.tell_orphans(node, orphans);
}

}  // namespace cshm::fs
