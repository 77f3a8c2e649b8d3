#include "ownership/lock_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/metrics.h"

namespace cshm::ownership {

namespace {
metrics::Counter kLockGrants("cshm_lock_grants_total", "lock requests this node granted as an owner");
metrics::Counter kLockRefusals("cshm_lock_conflicts_total",
                               "lock requests this node answered as an owner with a conflict (the asker retries)");
}  // namespace

LockService::LockService(Env env) : env_(std::move(env)) { grace_until_ = env_.now() + env_.lease; }

void LockService::Start() {
  MutexLock lock(&mu_);
  grace_until_ = env_.now() + env_.lease;
}

Result<LockReply> LockService::Serve(uint32_t from, const LockMessage& m, bool wait) {
  // Locks live with the segment: a forwarding entry (or a freeze) answers first.
  CSHM_RETURN_IF_ERROR(env_.serving(m.ino, wait));
  LockMessage local = m;
  local.lock.who.node = from;  // a peer speaks for itself only
  MutexLock lock(&mu_);
  LockReply out;
  switch (m.op) {
    case LockOp::kGet: {
      auto c = locks_.Conflict(m.ino, local.lock);
      if (c) out.conflict = *c;
      else out.conflict.type = F_UNLCK;
      return out;
    }
    case LockOp::kSet:
      if (auto c = cancelled_.find(CancelKey{from, m.lock.who.owner, m.ino});
          c != cancelled_.end() && m.seq <= c->second) {
        kLockRefusals.Add();  // its asker gave up on it and cancelled it; nobody waits for this answer
        return out;
      }
      if (InGrace()) {
        kLockRefusals.Add();
        out.grace = true;  // holders of the previous incarnation's locks may still think they hold them
        return out;
      }
      out.granted = locks_.TrySet(m.ino, local.lock);
      (out.granted ? kLockGrants : kLockRefusals).Add();
      if (!out.granted) {
        auto c = locks_.Conflict(m.ino, local.lock);
        if (c) out.conflict = *c;
      }
      return out;
    case LockOp::kUnlock:
      if (m.cancels != 0) {
        uint64_t& c = cancelled_[CancelKey{from, m.lock.who.owner, m.ino}];
        c = std::max(c, m.cancels);
      }
      locks_.Unlock(m.ino, local.lock.who, local.lock.flock, local.lock.start, local.lock.end);
      out.granted = true;
      return out;
  }
  return Invalid("unknown lock operation");
}

void LockService::Confirmed(uint32_t node) {
  MutexLock lock(&mu_);
  confirmed_.insert(node);
}

bool LockService::ConfirmedBy(uint32_t node) {
  MutexLock lock(&mu_);
  return confirmed_.contains(node);
}

void LockService::ForgetNode(uint32_t node) {
  MutexLock lock(&mu_);
  locks_.ReleaseNode(node);
  std::erase_if(cancelled_, [node](const auto& c) { return std::get<0>(c.first) == node; });
}

std::vector<Lock> LockService::Locks(uint64_t ino) {
  MutexLock lock(&mu_);
  return locks_.Locks(ino);
}

void LockService::Replace(uint64_t ino, std::vector<Lock> locks) {
  MutexLock lock(&mu_);
  locks_.Take(ino);
  if (!locks.empty()) locks_.Put(ino, std::move(locks));
}

bool LockService::InGrace() {
  if (grace_over_) return false;
  size_t seen = 0;
  for (uint32_t n : env_.peers) seen += confirmed_.count(n);
  if (seen < env_.peers.size() && env_.now() < grace_until_) return true;
  grace_over_ = true;
  env_.log->info("lock grace period over ({}): new locks are granted", seen == env_.peers.size() ? "every node "
                 "gave up the locks of this node's previous incarnation" : "a lease has passed since the start");
  return false;
}

}  // namespace cshm::ownership
