// The owner side of the data path, for the segments this node serves:
// write-backs, truncation and fallocate applied to OwnedSegments, the
// invalidation rounds they start (with the grace period's extra targets),
// the times told to the metadata node, the control requests (user.cshm.*:
// asked here, served at the owner) and the migrator loop that moves this
// node's segments toward their users. The fetch, write-back and sync
// handlers themselves are in fs/cluster_dispatch.cc.
#include <linux/falloc.h>
#include <spdlog/spdlog.h>

#include "common/metrics.h"
#include "fs/cluster.h"
#include "ownership/messages.h"

namespace cshm::fs {

using namespace ownership;

namespace {
metrics::Counter kWriteBacksApplied("cshm_writebacks_applied_total",
                                    "write-backs this node merged as an owner (its own included)");
metrics::Counter kWriteBackBytesApplied("cshm_writeback_bytes_applied_total", "changed bytes in them");
}  // namespace

Result<uint64_t> Cluster::FallocateAsOwner(uint32_t from, const FallocateRequest& f) {
  CSHM_ASSIGN_OR_RETURN(ApplyOutcome out, owned_.Allocate(f.ino, from, static_cast<int>(f.mode), f.off, f.len));
  if (!out.invalidate.empty()) {
    rounds_->Start(f.ino, std::move(out.invalidate));
    CSHM_RETURN_IF_ERROR(rounds_->Wait(f.ino));
  }
  // The size grows at the metadata node; a hole changes the data (mtime).
  if (out.grew || (f.mode & FALLOC_FL_PUNCH_HOLE))
    CSHM_RETURN_IF_ERROR(meta().NoteWrite(f.ino, out.grew ? out.size : 0, (f.mode & FALLOC_FL_PUNCH_HOLE) != 0).status());
  return out.size;
}

Result<Cluster::Applied> Cluster::ApplyAsOwner(uint32_t from, const WriteBackRequest& wb, bool wait) {
  // Without waiting, one that grows the segment (it tells the metadata node) is kBusy.
  CSHM_ASSIGN_OR_RETURN(ApplyOutcome out,
                        owned_.Apply(wb.ino, from, wb.runs, wait, wb.late ? &wb.expect : nullptr, wb.keeps_copy));
  CountApplied(wb.runs);
  if (out.dropped > 0)
    log_->warn("late write-back of inode {} from node {}: {} page(s) changed since it was made and were not "
               "written (a late write never lands on newer bytes)", wb.ino, from, out.dropped);
  if (out.grew) {
    CSHM_RETURN_IF_ERROR(meta().NoteWrite(wb.ino, out.size, false).status());  // the times with it
  } else {
    TimesDue(wb.ino, wb.runs);
  }
  AddGraceTargets(from, wb.runs, &out.invalidate);
  Applied applied;
  if (!out.invalidate.empty()) applied.round = rounds_->Start(wb.ino, std::move(out.invalidate));
  applied.reply = WriteBackReply{out.size, rounds_->Pending(wb.ino), out.dropped};
  return applied;
}

void Cluster::AddGraceTargets(uint32_t writer, const std::vector<WriteRun>& runs, Invalidations* invalidate) {
  if (!InDataGrace()) return;
  const std::vector<Range> touched = PagesTouched(runs);
  if (touched.empty()) return;
  for (const net::NodeConfig& n : config_.nodes) {
    // Heard from is not enough: a restarted peer's drop runs on its pool
    // after it connected, and until then it still has what our previous
    // incarnation granted (a reachable node answers at once).
    if (n.id == self_ || n.id == writer || ConfirmedSinceStart(n.id)) continue;
    std::vector<Range>& to = (*invalidate)[n.id];
    to.insert(to.end(), touched.begin(), touched.end());
  }
}

void Cluster::InvalidateRemote(uint32_t node, std::string payload, std::function<void(const Status&)> done) {
  if (InDataGrace() && !HeardSinceStart(node)) {
    // Not heard from since this node started: it may hold a copy our
    // previous incarnation granted, until its lease with us runs out.
    transport_->After(std::chrono::milliseconds(100), [this, node, payload = std::move(payload),
                                                       done = std::move(done)]() mutable {
      InvalidateRemote(node, std::move(payload), std::move(done));
    });
    return;
  }
  if (transport_->Forgotten(node)) {
    // Silent for a whole lease: it gave up its copies of our pages before.
    log_->info("node {} could not be asked to drop pages, but its lease has run out: its copy is gone", node);
    return done(Status::Ok());
  }
  transport_->CallAsync(node, kInvalidate, payload,
                        [this, node, payload, done = std::move(done)](Result<std::string> r) mutable {
    const Status& s = r.status();
    if (s.code() != Status::Code::kUnavailable && s.code() != Status::Code::kTimedOut) return done(s);
    // Unreachable: its copy is gone once its lease with us has run out (it
    // gives up our pages before we can forget it). Until then, ask again.
    transport_->After(std::chrono::milliseconds(100), [this, node, payload = std::move(payload),
                                                       done = std::move(done)]() mutable {
      InvalidateRemote(node, std::move(payload), std::move(done));
    });
  });
}

Result<uint64_t> Cluster::TruncateAsOwner(uint64_t ino, uint32_t from, uint64_t size) {
  CSHM_ASSIGN_OR_RETURN(ApplyOutcome out, owned_.Truncate(ino, from, size));
  rounds_->Start(ino, std::move(out.invalidate));
  CSHM_RETURN_IF_ERROR(rounds_->Wait(ino));
  return out.size;
}

void Cluster::CountApplied(const std::vector<WriteRun>& runs) {
  kWriteBacksApplied.Add();
  kWriteBackBytesApplied.Add(RunBytes(runs));
}

void Cluster::TimesDue(uint64_t ino, const std::vector<WriteRun>& runs) {
  if (runs.empty()) return;
  MutexLock lock(&mu_);
  times_due_.insert(ino);
}

void Cluster::CommitTimes() {
  // Not while the metadata node is unreachable: the tick also delivers
  // kept write-backs and unlocks, and must not wait a deadline per inode.
  if (config_.metadata_node != self_ && !transport_->LeaseHeld(config_.metadata_node)) return;
  std::set<uint64_t> due;
  {
    MutexLock lock(&mu_);
    due.swap(times_due_);
  }
  for (auto it = due.begin(); it != due.end(); ++it) {
    const Status st = meta().NoteWrite(*it, 0, /*touch_mtime=*/true).status();
    if (st.code() != Status::Code::kUnavailable && st.code() != Status::Code::kTimedOut) continue;  // done, or gone
    MutexLock lock(&mu_);
    times_due_.insert(it, due.end());  // at the next tick
    return;
  }
}

Result<std::string> Cluster::ServeControl(const ControlRequest& c) {
  switch (c.op) {
    case ControlOp::kDescribe: {
      CSHM_ASSIGN_OR_RETURN(std::string d, owned_.Describe(c.ino));
      return d + " rates(pages/s): " + ledger_.Describe(c.ino);
    }
    case ControlOp::kPin: {
      CSHM_RETURN_IF_ERROR(owned_.SetPinned(c.ino, c.arg != 0));
      // Persist with the inode, so that a restarted or new owner knows.
      CSHM_RETURN_IF_ERROR(meta().SetXattr(c.ino, "user.cshm.pin", c.arg ? "1" : "0", 0));
      return std::string();
    }
    case ControlOp::kMigrate:
      if (c.arg == self_) {
        CSHM_RETURN_IF_ERROR(owned_.Pinned(c.ino).status());  // ours (or kMoved)
        return std::string();
      }
      CSHM_RETURN_IF_ERROR(transfer_->Move(c.ino, c.arg, "manual"));
      return std::string();
  }
  return Invalid("unknown control operation");
}

Result<uint32_t> Cluster::CurrentOwner(uint64_t ino) {
  CSHM_ASSIGN_OR_RETURN(auto rec, meta().GetAttr(ino));
  if (!rec.IsReg()) return Invalid("only regular files have owners");
  NoteOwner(ino, rec.owner_node);
  return rec.owner_node;
}

uint64_t Cluster::remote_fetches(uint64_t ino) {
  MutexLock lock(&mu_);
  auto it = fetches_from_.find(ino);
  return it == fetches_from_.end() ? 0 : it->second;
}

Result<std::string> Cluster::Control(uint64_t ino, ControlOp op, uint32_t arg) {
  const std::string payload = ControlRequest{ino, op, arg}.Encode();
  return AtOwner(ino, [&](uint32_t owner) -> Result<std::string> {
    if (owner == self_) return ServeControl(ControlRequest{ino, op, arg});
    // A migration can take longer than one request's deadline.
    return transport_->Call(owner, kControl, payload, std::chrono::milliseconds(config_.request_timeout_ms * 4));
  });
}

Status Cluster::Migrate(uint64_t ino, uint32_t target) {
  if (!config_.Find(target)) return Invalid("node " + std::to_string(target) + " is not in the cluster");
  CSHM_RETURN_IF_ERROR(CurrentOwner(ino).status());
  return Control(ino, ControlOp::kMigrate, target).status();
}

void Cluster::MigratorLoop() {
  migrator::PolicyConfig policy;
  policy.half_life_s = config_.migrate.half_life_s;
  policy.ratio = config_.migrate.ratio;
  policy.min_rate = config_.migrate.min_rate;
  policy.cooldown_s = config_.migrate.cooldown_s;
  const auto interval = std::chrono::duration<double>(config_.migrate.check_s);
  MutexLock lock(&stop_mu_);
  while (!stop_cv_.WaitFor(lock, interval, [this]() REQUIRES(stop_mu_) { return stopping_; })) {
    lock.Unlock();
    CommitTimes();
    DeliverPending();
    locks_held_->RetryUnlocks();
    transfer_->Resolve();
    if (!config_.migrate.enabled) {
      lock.Lock();
      continue;
    }
    for (auto [ino, target] : ledger_.Candidates(policy, self_)) {
      if (!owned_.MayMove(ino)) continue;  // pinned, frozen, or no longer ours
      Status s = transfer_->Move(ino, target, "node " + std::to_string(target) + " dominates its accesses");
      (void)s;  // logged by Move
    }
    lock.Lock();
  }
}

}  // namespace cshm::fs
