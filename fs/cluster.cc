#include "fs/cluster.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <thread>

#include "common/metrics.h"
#include "common/random_id.h"
#include "fs/semaphores.h"
#include "ownership/messages.h"

namespace cshm::fs {

using namespace ownership;
using store::kPageSize;

namespace {

// What the peers' side counts (docs/operations.md "Metrics" lists them).
metrics::Counter kLeaseExpiries("cshm_lease_expiries_total",
                                "times this node's lease with a peer ran out (its cached pages and locks given up)");
metrics::Counter kNameChangesUnconfirmed(
    "cshm_name_changes_unconfirmed_total",
    "namespace changes that waited out a node's cache window because it did not confirm the drop");
metrics::Counter kPeersForgotten("cshm_peers_forgotten_total",
                                 "times a peer was silent for a whole lease and this node forgot what it held");

}  // namespace

Cluster::Cluster(net::ClusterConfig config, uint32_t self, store::PageStore* pages, std::unique_ptr<TwinCache> twins,
                 std::unique_ptr<PendingWrites> pending, net::MessengerFactory messenger, TestSeams seams)
    : config_(std::move(config)),
      self_(self),
      seams_(seams),
      log_("node " + std::to_string(self)),
      pages_(pages),
      twins_(std::move(twins)),
      pending_(std::move(pending)),
      ledger_(config_.migrate.half_life_s),
      owned_(pages, self,
             [this](uint64_t ino) -> Result<SegmentInfo> {
               CSHM_ASSIGN_OR_RETURN(auto rec, meta().GetAttr(ino));
               auto pin = meta().GetXattr(ino, "user.cshm.pin");
               return SegmentInfo{rec.size, rec.owner_node, pin.ok() && *pin == "1"};
             }),
      lock_service_(LockServiceEnv()),
      start_messenger_(std::move(messenger)) {
  owned_.SetOwnerTwins(twins_.get());
  owned_.SetAccessObserver(&ledger_);
  LockClient::Env env;
  env.self = self_;
  env.request_timeout = std::chrono::milliseconds(config_.request_timeout_ms);
  env.at_owner = [this](uint64_t ino, const LockMessage& m) { return LockAtOwner(ino, m); };
  env.release = [this](uint64_t ino) { return Sync(ino); };
  env.drop_local = [this](uint64_t ino, uint64_t off, uint64_t len) { InvalidateLocal(ino, {Range{off, len}}); };
  env.errors_reported = [this](uint64_t ino) {
    MutexLock lock(&mu_);
    write_errors_.erase(ino);
  };
  locks_held_ = std::make_unique<LockClient>(std::move(env));
  InvalidationRounds::Env re;
  re.invalidate = [this](uint32_t node, uint64_t ino, std::vector<Range> ranges,
                         std::function<void(const Status&)> done) {
    if (node == self_) {
      // The kernel may write dirty pages back first, to this daemon: not on
      // the caller's thread, which may be the I/O thread.
      boost::asio::post(*async_rounds_, [this, ino, ranges = std::move(ranges), done = std::move(done)] {
        InvalidateLocal(ino, ranges);
        done(Status::Ok());
      });
      return;
    }
    InvalidateRemote(node, InvalidateRequest{ino, std::move(ranges)}.Encode(), std::move(done));
  };
  re.after = [this](std::chrono::microseconds delay, std::function<void()> fn) {
    transport_->After(delay, std::move(fn));
  };
  re.deadline = RoundDeadline();
  rounds_ = std::make_unique<InvalidationRounds>(std::move(re));
  migrator::SegmentTransfer::Env te;
  te.self = self_;
  te.config = config_;
  te.slow_chunk = seams_.slow_migrate_chunk;
  te.die_in_migration = seams_.die_in_migration;
  te.log = log_;
  te.owned = &owned_;
  te.pages = pages_;
  te.twins = twins_.get();
  te.rounds = rounds_.get();
  te.net = [this] { return transport_.get(); };
  te.meta = [this]() -> meta::MetaService& { return meta(); };
  te.locks_of = [this](uint64_t ino) { return lock_service_.Locks(ino); };
  te.set_locks = [this](uint64_t ino, std::vector<Lock> locks) { lock_service_.Replace(ino, std::move(locks)); };
  te.owner_cached = [this](uint64_t ino) { return CachedOwner(ino); };
  te.note_owner = [this](uint64_t ino, uint32_t owner) { NoteOwner(ino, owner); };
  te.drop_local_later = [this](uint64_t ino, std::vector<Range> ranges) { DropLocalLater(ino, std::move(ranges)); };
  te.stays = [this](uint64_t ino) { return semaphores_ != nullptr && semaphores_->Serves(ino); };
  te.wait_stop = [this](std::chrono::milliseconds d) {
    MutexLock lock(&stop_mu_);
    return stop_cv_.WaitFor(lock, d, [this]() REQUIRES(stop_mu_) { return stopping_; });
  };
  transfer_ = std::make_unique<migrator::SegmentTransfer>(std::move(te));
}

Cluster::~Cluster() { Stop(); }

LockService::Env Cluster::LockServiceEnv() {
  LockService::Env env;
  env.self = self_;
  for (const net::NodeConfig& n : config_.nodes)
    if (n.id != self_) env.peers.push_back(n.id);
  env.lease = std::chrono::milliseconds(config_.lease_ms);
  env.log = log_;
  env.serving = [this](uint64_t ino, bool wait) { return owned_.Serving(ino, wait); };
  return env;
}

Status Cluster::Start(meta::Namespace* ns) {
  ns_ = ns;
  remote_meta_ = std::make_unique<meta::RemoteMeta>(
      [this](std::string p) { return transport_->Call(config_.metadata_node, kMetaRequest, std::move(p)); },
      [this](std::string p) { transport_->Send(config_.metadata_node, kMetaForget, std::move(p)); },
      config_.name_cache_ms);
  async_rounds_ = std::make_unique<boost::asio::thread_pool>(4);
  net::MessengerOptions o;
  o.config = config_;
  o.self = self_;
  incarnation_ = RandomId();
  o.incarnation = incarnation_;
  lock_service_.Start();
  o.is_slow = IsSlow;
  // Requests can arrive before Transport::Start has returned (issue 15,
  // item 11): they wait on the pools until transport_ is stored, and none is
  // served inline before.
  o.handler = [this](net::Request r) {
    AwaitTransport();
    (void)Serve(r, r.slow ? On::kSlowPool : On::kFastPool);
  };
  o.try_inline = [this](net::Request& r) { return net_.load() != nullptr && Serve(r, On::kIoThread); };
  // A peer that restarted lost its copysets, its locks and its kernel's
  // cache, and a link that broke may have lost invalidations either way.
  // When such a peer is back, drop every copy we hold of its segments (their
  // dirty pages are written back to it first: it is reachable again). Until
  // then its pages stay as they were, for at most our lease with it.
  o.on_peer_up = [this](uint32_t node, uint64_t incarnation) {
    bool forget = false, restarted = false, first = false;
    {
      MutexLock lock(&mu_);
      auto it = incarnations_.find(node);
      first = it == incarnations_.end();
      restarted = !first && it->second != incarnation;
      forget = restarted || lost_[node];
      incarnations_[node] = incarnation;
      lost_[node] = false;
    }
    // kIncarnationSeen goes after giving up what its old incarnation granted
    // (its locks, and our copies of its pages: once they are dropped, DATA
    // grace), on our own connection to it, so that it arrives after
    // everything we sent under them. Seen first: we hold nothing of an
    // older incarnation.
    if (restarted) {
      ForgetNode(node, "it restarted");
      LoseGrantsOf(node, "it restarted", [this, node, incarnation] { SendIncarnationSeen(node, incarnation); });
      if (ref_sync_) ref_sync_->Restarted(node);
    } else if (first) {
      SendIncarnationSeen(node, incarnation);
    }
    if (!forget) return;
    log_->info("node {} is back: dropping its copysets here and our copies of segments served elsewhere", node);
    owned_.DropNode(node);
    boost::asio::post(*async_rounds_, [this] { DropRemoteCopies(); });
  };
  // A connection closing forgets nothing by itself: the leases decide.
  o.on_peer_down = [this](uint32_t node) {
    MutexLock lock(&mu_);
    lost_[node] = true;
  };
  o.on_lease_lost = [this](uint32_t node) {
    kLeaseExpiries.Add();
    {
      MutexLock lock(&mu_);
      lost_[node] = true;
      lease_lost_.emplace(node, std::chrono::steady_clock::time_point{});
    }
    LoseGrantsOf(node, "our lease with it ran out");
  };
  o.on_peer_forgotten = [this](uint32_t node) {
    kPeersForgotten.Add();
    ForgetNode(node, "it was silent for the lease");
    if (ref_sync_) ref_sync_->Forgotten(node);
  };
  if (ns_) {
    ReferenceSync::Options ro;
    for (const net::NodeConfig& n : config_.nodes)
      if (n.id != self_) ro.peers.push_back(n.id);
    ro.heartbeat = std::chrono::milliseconds(config_.heartbeat_ms);
    ro.lease = std::chrono::milliseconds(config_.lease_ms);
    ro.request_timeout = std::chrono::milliseconds(config_.request_timeout_ms);
    ro.heard = [this](uint32_t node) { return !net_.load()->Forgotten(node); };
    ro.ask = [this](uint32_t node) -> Result<meta::ReferenceSnapshot> {
      CSHM_ASSIGN_OR_RETURN(std::string reply, net_.load()->Call(node, kMetaRefs, ""));
      return meta::ReferenceSnapshot::Decode(reply);
    };
    ro.tell_orphans = [this](uint32_t node, const std::vector<uint64_t>& inos) {
      std::string payload;
      for (uint64_t ino : inos) payload += EncodeU64(ino);
      net_.load()->Send(node, kHeldOrphans, std::move(payload));
    };
    ref_sync_ = std::make_unique<ReferenceSync>(ns_, std::move(ro));
  }
  if (ns_) {
    NameCoherence::Env ne;
    ne.self = self_;
    for (const net::NodeConfig& n : config_.nodes)
      if (n.id != self_) ne.peers.push_back(n.id);
    ne.grants = &name_grants_;
    ne.call = [this](uint32_t node, std::string payload, std::function<void(bool)> done,
                     std::chrono::milliseconds timeout) {
      net_.load()->CallAsync(
          node, kNamesChanged, std::move(payload), [done = std::move(done)](Result<std::string> r) { done(r.ok()); },
          timeout);
    };
    ne.send = [this](uint32_t node, std::string payload) { net_.load()->Send(node, kNamesChanged, std::move(payload)); };
    ne.drop_local = [this](const meta::NameChange& change) { DropNamesLocal(change); };
    ne.unconfirmed = [this](uint32_t node) {
      kNameChangesUnconfirmed.Add();
      log_->warn("node {} did not confirm that its kernel dropped the names a change made; the change waited "
                 "until that node's kernel could no longer hold them (name_cache_ms)", node);
    };
    names_ = std::make_unique<NameCoherence>(std::move(ne));
    ns_->SetChangeHook([this](const meta::NameChange& change) { names_->Changed(change); });
  }
  CSHM_ASSIGN_OR_RETURN(transport_, start_messenger_(std::move(o)));
  {
    MutexLock lock(&net_mu_);
    net_ = transport_.get();
    for (auto [node, incarnation] : seen_before_start_) transport_->Send(node, kIncarnationSeen, EncodeU64(incarnation));
    seen_before_start_.clear();
  }
  net_cv_.NotifyAll();
  if (ref_sync_) ref_sync_->Start();  // only now, with the transport up: settling may purge (and tell owners)
  for (const net::NodeConfig& n : config_.nodes)
    if (n.id != self_) transport_->Send(n.id, kPing, "");
  if (pending_->size() > 0)
    log_->warn("{} write-backs that no owner took before are kept; delivering them when owners answer",
               pending_->size());
  AddGauges();
  migrator_ = std::thread([this] { MigratorLoop(); });
  locks_held_->Start();
  return Status::Ok();
}

void Cluster::AwaitTransport() {
  MutexLock lock(&net_mu_);
  // Start() stores it right after Transport::Start returns; the pools that
  // call this are only joined once it has.
  net_cv_.Wait(lock, [&] { return net_.load() != nullptr; });
}

std::optional<uint32_t> Cluster::CachedOwner(uint64_t ino) {
  MutexLock lock(&mu_);
  auto it = owner_of_.find(ino);
  if (it == owner_of_.end()) return std::nullopt;
  return it->second;
}

bool Cluster::LeaseLostWith(uint32_t node) {
  {
    MutexLock lock(&mu_);
    if (!lease_lost_.contains(node)) return false;
  }
  const bool held = transport_->LeaseHeld(node);  // (asked without mu_: the messenger calls us under its own lock)
  const auto now = std::chrono::steady_clock::now();
  bool ping = false;
  {
    MutexLock lock(&mu_);
    auto it = lease_lost_.find(node);
    if (it == lease_lost_.end()) return false;
    if (held) {
      lease_lost_.erase(it);
      return false;
    }
    ping = now - it->second >= std::chrono::milliseconds(config_.heartbeat_ms);
    if (ping) it->second = now;
  }
  if (ping) transport_->Send(node, kPing, "");
  return true;
}

bool Cluster::ConfirmedSinceStart(uint32_t node) { return lock_service_.ConfirmedBy(node); }

bool Cluster::HeardSinceStart(uint32_t node) {
  if (ConfirmedSinceStart(node)) return true;
  for (const net::PeerState& p : transport_->Peers())
    if (p.node == node) return p.heard;
  return false;
}

void Cluster::SendIncarnationSeen(uint32_t node, uint64_t incarnation) {
  MutexLock lock(&net_mu_);
  if (net::Messenger* t = net_.load())
    t->Send(node, kIncarnationSeen, EncodeU64(incarnation));
  else
    seen_before_start_.emplace_back(node, incarnation);
}

void Cluster::LoseGrantsOf(uint32_t node, const std::string& why, std::function<void()> then) {
  std::set<uint64_t> inos;
  {
    MutexLock lock(&mu_);
    for (const auto& [ino, owner] : owner_of_)
      if (owner == node) inos.insert(ino);
  }
  const size_t lost = locks_held_->Lose(inos);
  if (lost > 0)
    log_->error("{} lock(s) taken through this node at node {} are lost ({}): writes and releases of those files "
                "here, and the locks' unlock, fail with EIO until they are unlocked or closed", lost, node, why);
  log_->warn("dropping this node's cached pages of segments served elsewhere (node {}: {})", node, why);
  if (semaphores_) semaphores_->OwnerLost(node);
  boost::asio::post(*async_rounds_, [this, then = std::move(then)] {
    DropRemoteCopies();
    if (then) then();
  });
}

void Cluster::ForgetNode(uint32_t node, const std::string& why) {
  log_->warn("node {}'s locks here are released and its cached copies forgotten ({})", node, why);
  owned_.DropNode(node);
  if (semaphores_) semaphores_->NodeGone(node);
  lock_service_.ForgetNode(node);
}

void Cluster::Stop() {
  metrics::Registry::Default().RemoveGauges(this);  // before what they read goes
  {
    MutexLock lock(&stop_mu_);
    stopping_ = true;
  }
  stop_cv_.NotifyAll();
  if (migrator_.joinable()) migrator_.join();
  if (transfer_) transfer_->Stop();  // a move the directory has not confirmed: decided at the next start
  locks_held_->Stop();
  if (ref_sync_) ref_sync_->Stop();
  // Rounds in flight finish (each wait has its deadline) while the transport
  // they reply through is alive; work posted after this is dropped.
  if (async_rounds_) async_rounds_->join();
  // Stopped before it is let go: a handler still running while the pools
  // are joined reads transport_, which must not change under it (seen by
  // ThreadSanitizer: a move's Fail on the slow pool against the reset).
  if (transport_) transport_->Stop();
  transport_.reset();
}

void Cluster::SetNotifier(Notifier n) {
  MutexLock lock(&mu_);
  notifier_ = std::move(n);
}

void Cluster::SetEntryNotifier(EntryNotifier n) {
  MutexLock lock(&mu_);
  entry_notifier_ = std::move(n);
}

void Cluster::DropEntryLocal(uint64_t parent, const std::string& name) {
  // Never on a FUSE request thread: the kernel may hold the directory's lock
  // for the very request that removed the name.
  boost::asio::post(*async_rounds_, [this, parent, name] {
    EntryNotifier notify;
    {
      MutexLock lock(&mu_);
      notify = entry_notifier_;
    }
    if (notify) notify(parent, name);
  });
}

void Cluster::DropNamesLocal(const meta::NameChange& change) {
  Notifier attrs;
  EntryNotifier entry;
  {
    MutexLock lock(&mu_);
    attrs = notifier_;
    entry = entry_notifier_;
  }
  for (uint64_t dir : change.dirs)
    if (attrs) attrs(dir, kAttributesOnly, 0);
  if (!entry) return;
  // Where another node changes names, this node's kernel keeps none for a while.
  if (change.by != self_)
    for (const auto& [parent, name] : change.names) kernel_names_.Contended(parent);
  std::vector<std::pair<uint64_t, std::string>> held;
  const auto now = KernelNames::Clock::now();
  KernelNames::Clock::time_point latest = now;
  for (const auto& [parent, name] : change.names) {
    const auto until = kernel_names_.HeldUntil(parent, name);
    if (until <= now) {
      // Never given to the kernel, or timed out there: nothing to wait for.
      // But a dentry past its timeout may still be in the dcache, holding an
      // unlinked file's inode (and so its pages at the owner) until the
      // kernel needs the memory: dropped, later, as before names were cached.
      DropEntryLocal(parent, name);
      continue;
    }
    held.emplace_back(parent, name);
    latest = std::max(latest, until);
  }
  if (held.empty()) return;
  struct Drop {
    Mutex mu;
    CondVar cv;
    bool done GUARDED_BY(mu) = false;
  };
  auto drop = std::make_shared<Drop>();
  // The drop takes the kernel's lock of the directory, which a request of
  // this node's own may hold while it waits for the metadata node.
  boost::asio::post(*async_rounds_, [drop, entry, held = std::move(held)] {
    for (const auto& [parent, name] : held) entry(parent, name);
    MutexLock lock(&drop->mu);
    drop->done = true;
    drop->cv.NotifyAll();
  });
  MutexLock lock(&drop->mu);
  drop->cv.WaitUntil(lock, latest, [&]() REQUIRES(drop->mu) { return drop->done; });
}

meta::MetaService& Cluster::meta() {
  if (ns_) return *ns_;
  return *remote_meta_;
}

void Cluster::ForgetInodeState(uint64_t ino) {
  {
    MutexLock lock(&mu_);
    auto o = owner_of_.find(ino);
    if (o != owner_of_.end() && o->second != self_) owner_of_.erase(o);
    fetches_from_.erase(ino);
    write_errors_.erase(ino);  // no handle is left to report it to
  }
  rounds_->Forget(ino);
  MutexLock lock(&writers_mu_);
  auto w = writers_.find(ino);
  if (w != writers_.end() && w->second.idle()) writers_.erase(w);
}

void Cluster::KernelForgot(uint64_t ino) {
  // The mark first: a twin stored after it belongs to a lookup (and fault)
  // that came after the forget, and stays.
  const uint64_t mark = twins_->Mark();
  const bool held = ns_ ? ns_->HeldBy(ino, self_) : remote_meta_->held().Count(ino) > 0;
  if (held) return;
  twins_->DropInodeUpTo(ino, mark);  // the kernel's pages went with its inode
  ForgetInodeState(ino);
}

Status Cluster::Purge(uint64_t ino, uint32_t owner) {
  if (owner == self_) {
    twins_->DropInode(ino);
    ForgetInodeState(ino);
    return owned_.Remove(ino);
  }
  transport_->Send(owner, kDrop, EncodeU64(ino));
  return Status::Ok();
}

void Cluster::NoteOwner(uint64_t ino, uint32_t owner) {
  MutexLock lock(&mu_);
  owner_of_[ino] = owner;
}

Result<uint32_t> Cluster::OwnerOf(uint64_t ino) {
  {
    MutexLock lock(&mu_);
    auto it = owner_of_.find(ino);
    if (it != owner_of_.end()) return it->second;
  }
  CSHM_ASSIGN_OR_RETURN(auto rec, meta().GetAttr(ino));
  if (!rec.IsReg()) return rec.IsDir() ? IsDir("is a directory") : Invalid("not a regular file");
  NoteOwner(ino, rec.owner_node);
  return rec.owner_node;
}

Result<LockReply> Cluster::LockAtOwner(uint64_t ino, const LockMessage& m) {
  return AtOwner(ino, [&](uint32_t owner) -> Result<LockReply> {
    if (owner == self_) return lock_service_.Serve(self_, m, /*wait=*/true);
    CSHM_ASSIGN_OR_RETURN(std::string reply, transport_->Call(owner, kLock, m.Encode()));
    return LockReply::Decode(reply);
  });
}

Result<Lock> Cluster::GetLock(uint64_t ino, const Lock& want) {
  CSHM_ASSIGN_OR_RETURN(LockReply r, LockAtOwner(ino, LockMessage{LockOp::kGet, ino, want}));
  return r.conflict;
}

Status Cluster::SetLock(uint64_t ino, const Lock& want) { return locks_held_->SetLock(ino, want); }

void Cluster::SetLockLater(uint64_t ino, const Lock& want, std::function<bool()> interrupted,
                           std::function<void(const Status&)> done) {
  locks_held_->SetLockLater(ino, want, std::move(interrupted), std::move(done));
}

Status Cluster::ReleaseLocks(uint64_t ino, uint64_t owner, bool flock) {
  return locks_held_->ReleaseLocks(ino, owner, flock);
}

Status Cluster::CheckLocksHeld(uint64_t ino) { return locks_held_->CheckHeld(ino); }

Result<std::string> Cluster::CallPeer(uint32_t node, uint16_t type, std::string payload) {
  return transport_->Call(node, type, std::move(payload));
}

void Cluster::CallPeerAsync(uint32_t node, uint16_t type, std::string payload, std::function<void(bool)> done) {
  transport_->CallAsync(node, type, std::move(payload),
                        [done = std::move(done)](Result<std::string> r) { done(r.ok()); });
}

}  // namespace cshm::fs
