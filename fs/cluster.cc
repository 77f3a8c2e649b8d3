#include "fs/cluster.h"

#include <linux/falloc.h>
#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <future>
#include <random>
#include <thread>

#include "common/metrics.h"
#include "common/random_id.h"
#include "fs/delay_seam.h"
#include "fs/page_diff.h"
#include "fs/semaphores.h"
#include "ownership/messages.h"

namespace cshm::fs {

using namespace ownership;
using store::kPageSize;

namespace {
const DelaySeam kSlowFetch("CSHM_TEST_SLOW_FETCH_MS");
const DelaySeam kSlowTwinPatch("CSHM_TEST_SLOW_TWIN_PATCH_MS");
const DelaySeam kSlowInvalidate("CSHM_TEST_SLOW_INVALIDATE_MS");

// What the data path counts (docs/operations.md "Metrics" lists them).
metrics::Counter kFetchesServed("cshm_fetches_served_total", "page fetches this node answered as a segment's owner");
metrics::Histogram kRemoteFetch("cshm_remote_fetch_seconds",
                                "faults and reads this node sent to another node, by how long they took");
metrics::Counter kWriteBacksSent("cshm_writebacks_sent_total", "write-backs this node sent to other nodes");
metrics::Counter kWriteBackBytesSent("cshm_writeback_bytes_sent_total", "changed bytes in them");
metrics::Counter kWriteBacksApplied("cshm_writebacks_applied_total",
                                    "write-backs this node merged as an owner (its own included)");
metrics::Counter kWriteBackBytesApplied("cshm_writeback_bytes_applied_total", "changed bytes in them");
metrics::Histogram kRelease("cshm_release_seconds",
                            "releases (msync, fsync, close, unlock) by the time they waited for owners' "
                            "invalidation rounds (0 when none was running)");
metrics::Counter kLockGrants("cshm_lock_grants_total", "lock requests this node granted as an owner");
metrics::Counter kLockRefusals("cshm_lock_conflicts_total",
                               "lock requests this node answered as an owner with a conflict (the asker retries)");
metrics::Counter kLeaseExpiries("cshm_lease_expiries_total",
                                "times this node's lease with a peer ran out (its cached pages and locks given up)");
metrics::Counter kPeersForgotten("cshm_peers_forgotten_total",
                                 "times a peer was silent for a whole lease and this node forgot what it held");

}  // namespace

Cluster::Cluster(net::ClusterConfig config, uint32_t self, store::PageStore* pages, std::unique_ptr<TwinCache> twins,
                 std::unique_ptr<PendingWrites> pending, net::MessengerFactory messenger)
    : config_(std::move(config)),
      self_(self),
      log_("node " + std::to_string(self)),
      pages_(pages),
      twins_(std::move(twins)),
      pending_(std::move(pending)),
      owned_(pages, self,
             [this](uint64_t ino) -> Result<SegmentInfo> {
               CSHM_ASSIGN_OR_RETURN(auto rec, meta().GetAttr(ino));
               auto pin = meta().GetXattr(ino, "user.cshm.pin");
               return SegmentInfo{rec.size, rec.owner_node, pin.ok() && *pin == "1"};
             },
             config_.migrate.half_life_s),
      start_messenger_(std::move(messenger)) {
  owned_.SetOwnerTwins(twins_.get());
  LockClient::Env env;
  env.self = self_;
  env.request_timeout = std::chrono::milliseconds(config_.request_timeout_ms);
  env.at_owner = [this](uint64_t ino, const LockMessage& m) { return LockAtOwner(ino, m); };
  env.release = [this](uint64_t ino) { return Sync(ino); };
  env.drop_local = [this](uint64_t ino, uint64_t off, uint64_t len) { InvalidateLocal(ino, {Range{off, len}}); };
  env.errors_reported = [this](uint64_t ino) {
    std::lock_guard<std::mutex> lock(mu_);
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
  SegmentTransfer::Env te;
  te.self = self_;
  te.config = config_;
  te.log = log_;
  te.owned = &owned_;
  te.pages = pages_;
  te.twins = twins_.get();
  te.rounds = rounds_.get();
  te.net = [this] { return transport_.get(); };
  te.meta = [this]() -> meta::MetaService& { return meta(); };
  te.locks_of = [this](uint64_t ino) {
    std::lock_guard<std::mutex> lock(locks_mu_);
    return locks_.Locks(ino);
  };
  te.set_locks = [this](uint64_t ino, std::vector<Lock> locks) {
    std::lock_guard<std::mutex> lock(locks_mu_);
    locks_.Take(ino);
    if (!locks.empty()) locks_.Put(ino, std::move(locks));
  };
  te.owner_cached = [this](uint64_t ino) { return CachedOwner(ino); };
  te.note_owner = [this](uint64_t ino, uint32_t owner) { NoteOwner(ino, owner); };
  te.drop_local_later = [this](uint64_t ino, std::vector<Range> ranges) { DropLocalLater(ino, std::move(ranges)); };
  te.stays = [this](uint64_t ino) { return semaphores_ != nullptr && semaphores_->Serves(ino); };
  te.wait_stop = [this](std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> lock(stop_mu_);
    return stop_cv_.wait_for(lock, d, [this] { return stopping_; });
  };
  transfer_ = std::make_unique<SegmentTransfer>(std::move(te));
}

Cluster::~Cluster() { Stop(); }

Status Cluster::Start(meta::Namespace* ns) {
  ns_ = ns;
  remote_meta_ = std::make_unique<meta::RemoteMeta>(
      [this](std::string p) { return transport_->Call(config_.metadata_node, kMetaRequest, std::move(p)); },
      [this](std::string p) { transport_->Send(config_.metadata_node, kMetaForget, std::move(p)); });
  async_rounds_ = std::make_unique<boost::asio::thread_pool>(4);
  net::MessengerOptions o;
  o.config = config_;
  o.self = self_;
  incarnation_ = RandomId();
  o.incarnation = incarnation_;
  {
    std::lock_guard<std::mutex> lock(mu_);
    grace_until_ = std::chrono::steady_clock::now() + std::chrono::milliseconds(config_.lease_ms);
  }
  o.is_slow = [](uint16_t type) {
    return type == kTruncate || type == kFallocate || type == kInvalidate || type == kControl || type == kSync ||
           type == kMigratePages || type == kMigrateInstall || type == kMigrateCommit || type == kMetaRefs;
  };
  // Requests can arrive before Transport::Start has returned (issue 15,
  // item 11): they wait on the pools until transport_ is stored, and none is
  // served inline before.
  o.handler = [this](net::Request r) {
    AwaitTransport();
    Handle(std::move(r));
  };
  o.try_inline = [this](net::Request& r) { return net_.load() != nullptr && TryServeInline(r); };
  // A peer that restarted lost its copysets, its locks and its kernel's
  // cache, and a link that broke may have lost invalidations either way.
  // When such a peer is back, drop every copy we hold of its segments (their
  // dirty pages are written back to it first: it is reachable again). Until
  // then its pages stay as they were, for at most our lease with it.
  o.on_peer_up = [this](uint32_t node, uint64_t incarnation) {
    bool forget = false, restarted = false, first = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
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
    std::lock_guard<std::mutex> lock(mu_);
    lost_[node] = true;
  };
  o.on_lease_lost = [this](uint32_t node) {
    kLeaseExpiries.Add();
    {
      std::lock_guard<std::mutex> lock(mu_);
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
  if (ns_)
    ns_->SetEntryRemovedHook([this](uint64_t parent, const std::string& name) { BroadcastEntryGone(parent, name); });
  CSHM_ASSIGN_OR_RETURN(transport_, start_messenger_(std::move(o)));
  {
    std::lock_guard<std::mutex> lock(net_mu_);
    net_ = transport_.get();
    for (auto [node, incarnation] : seen_before_start_) transport_->Send(node, kIncarnationSeen, EncodeU64(incarnation));
    seen_before_start_.clear();
  }
  net_cv_.notify_all();
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

NodeStatus Cluster::OwnStatus() {
  NodeStatus st;
  st.node = self_;
  st.incarnation = incarnation_;
  st.uptime_ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started_).count());
  st.segments_owned = owned_.segment_count();
  st.page_bytes = pages_->used();
  st.capacity_bytes = pages_->capacity();
  st.twin_bytes = twins_->count() * kPageSize;
  st.kept_writebacks = pending_->size();
  st.queued_unlocks = QueuedUnlocks();
  if (semaphores_) {
    st.semaphore_sets = semaphores_->sets();
    st.semaphore_ops = semaphores_->ops_served();
  }
  st.version = CSHM_VERSION;
  uint64_t target = 0;
  transfer_->Progress(&st.moving_ino, &target, &st.moving_done, &st.moving_total);
  st.moving_target = static_cast<uint32_t>(target);
  return st;
}

namespace {
std::string JsonString(std::string_view v) {
  std::string out = "\"";
  for (char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}
}  // namespace

std::string Cluster::StatusJson() {
  // Every peer asked at once; each answer (or its deadline) counts down.
  struct Answers {
    std::mutex mu;
    std::condition_variable cv;
    size_t left = 0;
    std::map<uint32_t, Result<NodeStatus>> got;
  };
  auto answers = std::make_shared<Answers>();
  const auto deadline = std::chrono::milliseconds(std::min<uint32_t>(config_.request_timeout_ms, 2000));
  for (const net::NodeConfig& n : config_.nodes) {
    if (n.id == self_) continue;
    {
      std::lock_guard<std::mutex> lock(answers->mu);
      answers->left++;
    }
    transport_->CallAsync(
        n.id, kNodeStatus, "",
        [answers, id = n.id](Result<std::string> r) {
          Result<NodeStatus> st = r.ok() ? NodeStatus::Decode(*r) : Result<NodeStatus>(r.status());
          std::lock_guard<std::mutex> lock(answers->mu);
          answers->got.emplace(id, std::move(st));
          if (--answers->left == 0) answers->cv.notify_all();
        },
        deadline);
  }
  {
    std::unique_lock<std::mutex> lock(answers->mu);
    // CallAsync answers by its deadline; the margin covers the I/O thread's delay.
    answers->cv.wait_for(lock, deadline + std::chrono::seconds(1), [&] { return answers->left == 0; });
  }
  std::map<uint32_t, net::PeerState> peers;
  for (const auto& p : transport_->Peers()) peers[p.node] = p;
  std::string out = "{\"self\": " + std::to_string(self_) + ", \"metadata_node\": " +
                    std::to_string(config_.metadata_node) + ", \"nodes\": [";
  bool first = true;
  for (const net::NodeConfig& n : config_.nodes) {
    out += first ? "\n  {" : ",\n  {";
    first = false;
    out += "\"id\": " + std::to_string(n.id) + ", \"address\": " + JsonString(n.host + ":" + std::to_string(n.port));
    Result<NodeStatus> st = NodeStatus{};
    if (n.id == self_) {
      st = OwnStatus();
      out += ", \"self\": true";
    } else {
      const auto& p = peers[n.id];
      out += std::string(", \"lease_held\": ") + (p.lease_held ? "true" : "false");
      out += std::string(", \"forgotten\": ") + (p.forgotten ? "true" : "false");
      if (p.heard) out += ", \"last_heard_ms\": " + std::to_string(p.since_heard.count());
      std::lock_guard<std::mutex> lock(answers->mu);
      auto it = answers->got.find(n.id);
      st = it != answers->got.end() ? it->second : Result<NodeStatus>(TimedOut("no answer in time"));
    }
    out += std::string(", \"reachable\": ") + (st.ok() ? "true" : "false");
    if (!st.ok()) {
      out += ", \"error\": " + JsonString(st.status().message());
    } else {
      char inc[24];
      snprintf(inc, sizeof inc, "%016llx", static_cast<unsigned long long>(st->incarnation));
      out += ", \"incarnation\": " + JsonString(inc) + ", \"version\": " + JsonString(st->version);
      for (auto [key, v] : {std::pair<const char*, uint64_t>{"uptime_ms", st->uptime_ms},
                            {"segments", st->segments_owned},
                            {"page_bytes", st->page_bytes},
                            {"capacity_bytes", st->capacity_bytes},
                            {"twin_bytes", st->twin_bytes},
                            {"kept_writebacks", st->kept_writebacks},
                            {"queued_unlocks", st->queued_unlocks},
                            {"semaphore_sets", st->semaphore_sets},
                            {"semaphore_ops", st->semaphore_ops}})
        out += std::string(", \"") + key + "\": " + std::to_string(v);
      if (st->moving_ino != 0)
        out += ", \"moving\": {\"ino\": " + std::to_string(st->moving_ino) + ", \"target\": " +
               std::to_string(st->moving_target) + ", \"done_pages\": " + std::to_string(st->moving_done) +
               ", \"total_pages\": " + std::to_string(st->moving_total) + "}";
    }
    out += "}";
  }
  return out + "\n]}\n";
}

std::string Cluster::DescribePage(uint64_t ino, uint64_t page) {
  const std::optional<uint32_t> owner = CachedOwner(ino);
  std::string out = "node " + std::to_string(self_) + ": owner " +
                    (owner ? "node " + std::to_string(*owner) : std::string("unknown"));
  Status serving = owned_.TryServing(ino);
  out += ", serving here: " + (serving.ok() ? std::string("yes") : serving.message());
  char mask[32];
  snprintf(mask, sizeof mask, "%#llx", static_cast<unsigned long long>(owned_.CopysetOf(ino, page)));
  return out + ", copyset of page " + std::to_string(page) + " here " + mask;
}

size_t Cluster::QueuedUnlocks() { return locks_held_->QueuedUnlocks(); }

namespace {
// The changed bytes a write-back carries (counted once per write-back: a
// diff of interleaved writers is many small runs).
uint64_t RunBytes(const std::vector<WriteRun>& runs) {
  uint64_t n = 0;
  for (const WriteRun& run : runs) n += run.bytes.size();
  return n;
}
}  // namespace

void Cluster::CountApplied(const std::vector<WriteRun>& runs) {
  kWriteBacksApplied.Add();
  kWriteBackBytesApplied.Add(RunBytes(runs));
}

void Cluster::AddGauges() {
  auto& r = metrics::Registry::Default();
  auto one = [](double v) { return std::vector<metrics::Sample>{{{}, v}}; };
  auto per_peer = [this](auto value) {
    std::vector<metrics::Sample> out;
    for (const net::PeerState& p : transport_->Peers())
      out.push_back({{{"node", std::to_string(p.node)}}, value(p)});
    return out;
  };
  r.AddGauge(this, "cshm_peer_up", "1 while this node's lease with the peer holds (it answered recently)",
             [per_peer] { return per_peer([](const net::PeerState& p) { return p.lease_held ? 1.0 : 0.0; }); });
  r.AddGauge(this, "cshm_peer_last_heard_seconds", "seconds since this node last heard from the peer (-1: never)",
             [per_peer] {
               return per_peer([](const net::PeerState& p) {
                 return p.heard ? static_cast<double>(p.since_heard.count()) / 1000 : -1.0;
               });
             });
  r.AddGauge(this, "cshm_kept_writebacks", "write-backs an unreachable owner did not take, kept in the state dir",
             [this, one] { return one(static_cast<double>(pending_->size())); });
  r.AddGauge(this, "cshm_semaphore_sets", "SysV semaphore sets this node serves (it made them)", [this] {
    return std::vector<metrics::Sample>{{{}, semaphores_ ? static_cast<double>(semaphores_->sets()) : 0.0}};
  });
  r.AddGauge(this, "cshm_queued_unlocks", "unlocks the owner did not answer, to be sent again",
             [this, one] { return one(static_cast<double>(QueuedUnlocks())); });
  r.AddGauge(this, "cshm_twin_bytes", "bytes of the twins this node keeps in its state dir (a copy of each page "
             "its kernel fetched from another node, as fetched)",
             [this, one] { return one(static_cast<double>(twins_->count() * kPageSize)); });
  r.AddGauge(this, "cshm_connections_refused_total", "connections refused: the peer could not prove the secret or "
             "spoke from another node's address", [this, one] { return one(static_cast<double>(transport_->refused_peers())); },
             "counter");
  r.AddGauge(this, "cshm_bad_frames_total", "malformed frames received (the connection was closed)",
             [this, one] { return one(static_cast<double>(transport_->bad_frames())); }, "counter");
}

void Cluster::AwaitTransport() {
  std::unique_lock<std::mutex> lock(net_mu_);
  // Start() stores it right after Transport::Start returns; the pools that
  // call this are only joined once it has.
  net_cv_.wait(lock, [&] { return net_.load() != nullptr; });
}

std::optional<uint32_t> Cluster::CachedOwner(uint64_t ino) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = owner_of_.find(ino);
  if (it == owner_of_.end()) return std::nullopt;
  return it->second;
}

bool Cluster::LeaseLostWith(uint32_t node) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!lease_lost_.contains(node)) return false;
  }
  const bool held = transport_->LeaseHeld(node);  // (asked without mu_: the messenger calls us under its own lock)
  const auto now = std::chrono::steady_clock::now();
  bool ping = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
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

bool Cluster::ConfirmedSinceStart(uint32_t node) {
  std::lock_guard<std::mutex> lock(mu_);
  return grace_seen_.contains(node);
}

bool Cluster::HeardSinceStart(uint32_t node) {
  if (ConfirmedSinceStart(node)) return true;
  for (const net::PeerState& p : transport_->Peers())
    if (p.node == node) return p.heard;
  return false;
}

void Cluster::SendIncarnationSeen(uint32_t node, uint64_t incarnation) {
  std::lock_guard<std::mutex> lock(net_mu_);
  if (net::Messenger* t = net_.load())
    t->Send(node, kIncarnationSeen, EncodeU64(incarnation));
  else
    seen_before_start_.emplace_back(node, incarnation);
}

void Cluster::LoseGrantsOf(uint32_t node, const std::string& why, std::function<void()> then) {
  std::set<uint64_t> inos;
  {
    std::lock_guard<std::mutex> lock(mu_);
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
  std::lock_guard<std::mutex> lock(locks_mu_);
  locks_.ReleaseNode(node);
  // Its lock requests are numbered anew after a restart.
  std::erase_if(cancelled_, [node](const auto& c) { return std::get<0>(c.first) == node; });
}

bool Cluster::InGrace() {
  std::lock_guard<std::mutex> lock(mu_);
  if (grace_over_) return false;
  size_t others = 0, seen = 0;
  for (const net::NodeConfig& n : config_.nodes) {
    if (n.id == self_) continue;
    others++;
    seen += grace_seen_.count(n.id);
  }
  if (seen < others && std::chrono::steady_clock::now() < grace_until_) return true;
  grace_over_ = true;
  log_->info("lock grace period over ({}): new locks are granted", seen == others ? "every node gave up the locks "
             "of this node's previous incarnation" : "a lease has passed since the start");
  return false;
}


void Cluster::Stop() {
  metrics::Registry::Default().RemoveGauges(this);  // before what they read goes
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (migrator_.joinable()) migrator_.join();
  locks_held_->Stop();
  if (ref_sync_) ref_sync_->Stop();
  // Rounds in flight finish (each wait has its deadline) while the transport
  // they reply through is alive; work posted after this is dropped.
  if (async_rounds_) async_rounds_->join();
  transport_.reset();  // joins the handler pools
}

void Cluster::SetNotifier(Notifier n) {
  std::lock_guard<std::mutex> lock(mu_);
  notifier_ = std::move(n);
}

void Cluster::SetEntryNotifier(EntryNotifier n) {
  std::lock_guard<std::mutex> lock(mu_);
  entry_notifier_ = std::move(n);
}

void Cluster::DropEntryLocal(uint64_t parent, const std::string& name) {
  // Never on a FUSE request thread: the kernel may hold the directory's lock
  // for the very request that removed the name.
  boost::asio::post(*async_rounds_, [this, parent, name] {
    EntryNotifier notify;
    {
      std::lock_guard<std::mutex> lock(mu_);
      notify = entry_notifier_;
    }
    if (notify) notify(parent, name);
  });
}

void Cluster::BroadcastEntryGone(uint64_t parent, const std::string& name) {
  std::string payload = EncodeU64(parent) + name;
  for (const net::NodeConfig& n : config_.nodes)
    if (n.id != self_) transport_->Send(n.id, kEntryGone, payload);
  DropEntryLocal(parent, name);
}

meta::MetaService& Cluster::meta() {
  if (ns_) return *ns_;
  return *remote_meta_;
}

void Cluster::ForgetInodeState(uint64_t ino) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto o = owner_of_.find(ino);
    if (o != owner_of_.end() && o->second != self_) owner_of_.erase(o);
    fetches_from_.erase(ino);
    write_errors_.erase(ino);  // no handle is left to report it to
  }
  rounds_->Forget(ino);
  std::lock_guard<std::mutex> lock(writers_mu_);
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
  std::lock_guard<std::mutex> lock(mu_);
  owner_of_[ino] = owner;
}

Result<uint32_t> Cluster::OwnerOf(uint64_t ino) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = owner_of_.find(ino);
    if (it != owner_of_.end()) return it->second;
  }
  CSHM_ASSIGN_OR_RETURN(auto rec, meta().GetAttr(ino));
  if (!rec.IsReg()) return rec.IsDir() ? IsDir("is a directory") : Invalid("not a regular file");
  NoteOwner(ino, rec.owner_node);
  return rec.owner_node;
}

template <typename F>
auto Cluster::AtOwner(uint64_t ino, F call) -> decltype(call(0u)) {
  for (int attempt = 0;; attempt++) {
    auto owner = OwnerOf(ino);
    if (!owner.ok()) return owner.status();
    auto r = call(*owner);
    auto moved = MovedTo(r.status());
    if (!moved || attempt >= 4) return r;
    NoteOwner(ino, *moved);  // the segment migrated: follow it
  }
}

Result<std::string_view> Cluster::Read(uint64_t ino, uint64_t off, size_t len, char* buf, ReadScratch* scratch) {
  // Write-backs of this segment that no owner took go first: landing late,
  // they change the owner's pages, and a copy fetched before they land would
  // be the twin of the next write-back here, which would then leave out
  // bytes this node wrote where the late ones put older bytes of its own
  // (found by the simulation, seed 31: a torn record).
  if (pending_->Has(ino)) CSHM_RETURN_IF_ERROR(DrainPending(ino));
  bool local = false;
  std::string* frame = scratch != nullptr ? &scratch->frame : nullptr;
  auto got = AtOwner(ino, [&](uint32_t owner) -> Result<std::string_view> {
    uint64_t size = 0;
    // The owner's pages are their own twins (OwnerTwinStore): none to store.
    if ((local = owner == self_)) {
      const store::FileSink* sink = scratch != nullptr && scratch->from_file ? &scratch->from_file : nullptr;
      bool sent = false;
      CSHM_ASSIGN_OR_RETURN(uint64_t n, owned_.Fetch(ino, self_, off, len, buf, &size, true, sink, &sent));
      return sent ? std::string_view() : std::string_view(buf, n);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      fetches_from_[ino]++;
    }
    // The kernel holds the folios locked meanwhile.
    kSlowFetch.At("the fetch of inode", ino);
    const auto t0 = std::chrono::steady_clock::now();
    CSHM_ASSIGN_OR_RETURN(std::string bytes, transport_->Call(owner, kFetch, FetchRequest{ino, off, len}.Encode()));
    kRemoteFetch.Since(t0);
    CSHM_ASSIGN_OR_RETURN(std::string_view data, FetchReply::View(bytes, &size));
    if (data.size() > len) return IoError("owner returned more bytes than asked");
    if (frame == nullptr) {
      std::memcpy(buf, data.data(), data.size());
      return std::string_view(buf, data.size());
    }
    const size_t at = static_cast<size_t>(data.data() - bytes.data()), n = data.size();
    *frame = std::move(bytes);
    return std::string_view(*frame).substr(at, n);
  });
  if (!got.ok()) return got.status();
  if (local || got->empty()) return *got;  // the owner's pages are their own twins
  if (scratch != nullptr) {
    std::unique_lock<std::mutex> lock(writers_mu_);
    Writers& w = writers_[ino];
    if (w.writable == 0) {
      // No twin (see Read's comment): OpenedForWrite waits until the kernel has these pages.
      w.twinless_reads++;
      w.twinless_cached = true;
      scratch->twinless = std::shared_ptr<void>(nullptr, [this, ino](void*) {
        std::lock_guard<std::mutex> l(writers_mu_);
        if (--writers_[ino].twinless_reads == 0) twinless_done_.notify_all();
      });
      return *got;
    }
  }
  // The kernel now holds these pages: remember them as they were. A page
  // that could become writable here without its twin could only be written
  // back whole, over other nodes' bytes: without a twin, no page.
  Status kept = twins_->Put(ino, off, *got);
  if (!kept.ok()) return kept;
  return *got;
}

Status Cluster::OpenedForWrite(uint64_t ino) {
  bool drop = false;
  {
    std::unique_lock<std::mutex> lock(writers_mu_);
    Writers& w = writers_[ino];
    w.writable++;  // READs from now on keep twins
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(config_.request_timeout_ms);
    if (!twinless_done_.wait_until(lock, deadline, [&] { return writers_[ino].twinless_reads == 0; })) {
      writers_[ino].writable--;
      return TimedOut("reads of inode " + std::to_string(ino) + " without twins are still being answered");
    }
    drop = std::exchange(writers_[ino].twinless_cached, false);
  }
  // Clean pages (nothing here could write them): the kernel just drops them.
  if (drop) InvalidateLocal(ino, {Range{0, 0}});
  return Status::Ok();
}

void Cluster::ClosedForWrite(uint64_t ino) {
  std::lock_guard<std::mutex> lock(writers_mu_);
  auto it = writers_.find(ino);
  if (it == writers_.end()) return;
  if (it->second.writable > 0) it->second.writable--;
  if (it->second.idle()) writers_.erase(it);
}

Status Cluster::Write(uint64_t ino, uint64_t off, const char* data, size_t len, bool writeback) {
  Status st = WriteOnce(ino, off, data, len, writeback);
  if (!st.ok() && writeback) {
    // The kernel keeps no error of a write-back that the page's invalidation
    // (an unlock, another node's write) started: the next release reports it.
    // (One the kernel made for msync or fsync, it reports itself.)
    std::lock_guard<std::mutex> lock(mu_);
    if (notifying_.contains(ino)) write_errors_.try_emplace(ino, st);
  }
  return st;
}

Status Cluster::WriteOnce(uint64_t ino, uint64_t off, const char* data, size_t len, bool writeback) {
  CSHM_ASSIGN_OR_RETURN(const uint32_t owner, OwnerOf(ino));  // a regular file
  // Written under a lock that is no longer held, these bytes could land on
  // a newer holder's: refused, as Linux's NFS client refuses them.
  CSHM_RETURN_IF_ERROR(CheckLocksHeld(ino));
  std::string_view now(data, len);
  // Earlier write-backs of this segment that no owner took go first, and
  // before this one is diffed: a page they change at the owner loses its
  // twin here (DrainPending), and this write-back of it is refused rather
  // than diffed against bytes the owner no longer has.
  const Status drained = pending_->Has(ino) ? DrainPending(ino) : Status::Ok();
  WriteBackRequest wb{ino, {}};
  // On the owner, the twins are mostly its own pages (OwnerTwinStore).
  std::optional<std::string> owner_twins;
  if (!writeback) {
    // write(2): the caller stored exactly these bytes.
    wb.runs.push_back(WriteRun{off, std::string(now)});
  } else if (len > 0) {
    const uint64_t first = off / kPageSize, last = (off + len - 1) / kPageSize;
    if (owner == self_) {
      auto t = owned_.OwnerTwins(ino, first, last - first + 1);
      if (t.ok()) owner_twins = std::move(*t);  // else it moved away: the twins are stored ones now
    }
    for (uint64_t p = first; p <= last; p++) {
      const uint64_t ps = std::max(p * kPageSize, off), pe = std::min((p + 1) * kPageSize, off + len);
      std::optional<std::string> stored;
      std::optional<std::string_view> twin;
      if (owner_twins) {
        twin = std::string_view(*owner_twins).substr((p - first) * kPageSize, kPageSize);
      } else if ((stored = twins_->Get(ino, p))) {
        twin = *stored;
      }
      if (!twin) {
        // Without the copy it was fetched as, the page's changed bytes cannot
        // be told from other nodes' bytes it merely holds: sending the whole
        // page would overwrite their newer bytes at the owner (a twin that
        // could not be stored, or one dropped after a failed write-back).
        log_->error("write-back of page {} of inode {} refused: this node holds no twin of it, so what changed "
                    "here is unknown; the page is dropped from this node's cache", p, ino);
        DropLocalLater(ino, {Range{first * kPageSize, (last - first + 1) * kPageSize}});
        return IoError("no twin of page " + std::to_string(p) + " of inode " + std::to_string(ino));
      }
      DiffInto(ps, twin->substr(ps - p * kPageSize, pe - ps), now.substr(ps - off, pe - ps), &wb.runs);
    }
    if (wb.runs.empty()) return Status::Ok();  // written back unchanged
    std::lock_guard<std::mutex> lock(mu_);
    wb.keeps_copy = !Dropping(ino, off, len);
  }
  Status st = drained;
  bool rounds_pending = true;
  if (st.ok()) st = Deliver(wb, &rounds_pending);
  if (!st.ok()) {
    // The kernel forgets these bytes when it gets the error (it marks the
    // pages clean), and its copy of them no longer matches the owner's:
    // drop the twins now (a later write-back of these pages is refused
    // rather than diffed against them) and the kernel's pages soon after
    // this answer (they are under writeback until then).
    // With them, what the pages held as this node last saw them (for a
    // write(2), which was diffed against nothing, the twins as they are:
    // without one, the page is not written late at all).
    std::vector<Range> ranges;
    for (uint64_t p = off / kPageSize; len > 0 && p <= (off + len - 1) / kPageSize; p++) {
      AddPageRange(&ranges, p);
      if (owner_twins) {
        wb.expect.push_back(
            PageExpect{p, PageHash(std::string_view(*owner_twins).substr((p - off / kPageSize) * kPageSize, kPageSize))});
      } else if (auto t = twins_->Get(ino, p)) {
        wb.expect.push_back(PageExpect{p, PageHash(*t)});
      }
    }
    if (owner != self_) {
      // (Not on the owner: its saved twins stand for pages another node
      // changed under its kernel, which the round of that change drops.)
      const uint64_t mark = twins_->Mark();
      for (const Range& r : ranges) twins_->Drop(ino, r, mark);
    }
    DropLocalLater(ino, ranges);
    const bool unreachable = st.code() == Status::Code::kUnavailable || st.code() == Status::Code::kTimedOut;
    if (unreachable || pending_->Has(ino)) {
      // Kept, to be delivered as a late write-back: it lands only on pages
      // that have not changed since (never over newer acknowledged bytes).
      wb.late = true;
      Status kept = pending_->Add(ino, wb.Encode());
      if (kept.ok())
        log_->warn("write-back of inode {} not delivered ({}); kept in the state dir until its owner answers", ino,
                   st.message());
      else
        log_->error("write-back of inode {} not delivered ({}) and could not be kept: {}", ino, st.message(),
                    kept.message());
    }
    return st;
  }
  // What the owner has now, as far as this node knows.
  // The answer arrived, the twin is not updated yet: a move that asks for
  // this node's twins meanwhile must not trust them.
  kSlowTwinPatch.At("the twin update of inode", ino);
  twins_->Patch(ino, off, now, /*whole_pages=*/owner != self_);
  // The next release waits for the owner's rounds, unless none was
  // pending when this write-back was answered (then there is nothing this
  // write, or any before it, could still be waiting for).
  std::lock_guard<std::mutex> lock(mu_);
  if (rounds_pending) unsynced_[ino] = ++writes_;
  return st;
}

void Cluster::DropLocalLater(uint64_t ino, std::vector<Range> ranges) {
  boost::asio::post(*async_rounds_, [this, ino, ranges = std::move(ranges)] { InvalidateLocal(ino, ranges); });
}

Status Cluster::Truncate(uint64_t ino, uint64_t size) {
  return AtOwner(ino, [&](uint32_t owner) -> Result<uint64_t> {
           if (owner == self_) return TruncateAsOwner(ino, self_, size);
           CSHM_ASSIGN_OR_RETURN(std::string r, transport_->Call(owner, kTruncate, TruncateRequest{ino, size}.Encode()));
           return DecodeU64(r);
         })
      .status();
}

Status Cluster::Fallocate(uint64_t ino, int mode, uint64_t off, uint64_t len) {
  const FallocateRequest f{ino, static_cast<uint32_t>(mode), off, len};
  return AtOwner(ino, [&](uint32_t owner) -> Result<uint64_t> {
           if (owner == self_) return FallocateAsOwner(self_, f);
           CSHM_ASSIGN_OR_RETURN(std::string r, transport_->Call(owner, kFallocate, f.Encode()));
           return DecodeU64(r);
         })
      .status();
}

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

Result<WriteBackReply> Cluster::ApplyAsOwner(uint32_t from, const WriteBackRequest& wb, bool wait) {
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
  if (!out.invalidate.empty()) rounds_->Start(wb.ino, std::move(out.invalidate));
  return WriteBackReply{out.size, rounds_->Pending(wb.ino), out.dropped};
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

// How long a write-back's answer may wait for the round it started. If the
// round is over by then, the answer says no round is pending and the
// writer's release sends no Sync: a release with sharers costs one network
// round trip instead of two. Never longer, and no thread waits: a round can
// itself wait for a write-back (a sharer's kernel writing a dirty page back
// before it drops it), and write-backs that waited for rounds without bound
// could wait for each other (ownership/coherence.pml, WRITE_WAITS_FOR_ROUND).
constexpr auto kWriteBackHold = std::chrono::microseconds(250);

void Cluster::AnswerAfterRound(uint64_t ino, uint64_t seq, uint64_t size,
                               std::shared_ptr<net::Responder> responder) {
  // Whichever comes first answers; the Responder ignores the second.
  rounds_->AnswerAfter(ino, seq, kWriteBackHold, [this, ino, size, responder] {
    responder->Reply(Status::Ok(), WriteBackReply{size, rounds_->Pending(ino)}.Encode());
  });
}




Status Cluster::Sync(uint64_t ino) {
  CSHM_RETURN_IF_ERROR(CheckLocksHeld(ino));
  uint64_t upto;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto e = write_errors_.find(ino); e != write_errors_.end()) {
      const std::string why = e->second.message();
      write_errors_.erase(e);
      return IoError("a write-back of inode " + std::to_string(ino) + " failed since the last release (" + why +
                     "); what it carried is kept, and lands later only on pages nobody changed since");
    }
    auto it = unsynced_.find(ino);
    if (it == unsynced_.end()) {  // nothing here waits for a round since the last release
      kRelease.Observe(std::chrono::nanoseconds(0));
      return Status::Ok();
    }
    upto = it->second;
  }
  const auto t0 = std::chrono::steady_clock::now();
  Status s = AtOwner(ino, [&](uint32_t owner) -> Result<std::string> {
               if (owner == self_) {
                 CSHM_RETURN_IF_ERROR(rounds_->Wait(ino));
                 return std::string();
               }
               return transport_->Call(owner, kSync, EncodeU64(ino),
                                       RoundDeadline() + std::chrono::milliseconds(config_.request_timeout_ms));
             }).status();
  kRelease.Since(t0);
  if (s.ok()) {
    // Done up to `upto`; a write made meanwhile keeps the inode unsynced.
    std::lock_guard<std::mutex> lock(mu_);
    auto it = unsynced_.find(ino);
    if (it != unsynced_.end() && it->second == upto) unsynced_.erase(it);
  }
  return s;
}

Result<uint64_t> Cluster::TruncateAsOwner(uint64_t ino, uint32_t from, uint64_t size) {
  CSHM_ASSIGN_OR_RETURN(ApplyOutcome out, owned_.Truncate(ino, from, size));
  rounds_->Start(ino, std::move(out.invalidate));
  CSHM_RETURN_IF_ERROR(rounds_->Wait(ino));
  return out.size;
}

void Cluster::InvalidateLocal(uint64_t ino, const std::vector<Range>& ranges) {
  Notifier notify;
  {
    std::lock_guard<std::mutex> lock(mu_);
    notify = notifier_;
    notifying_[ino]++;  // the write-backs it causes have nobody else to report to
    for (const Range& r : ranges) dropping_.emplace(ino, r);
  }
  // The kernel writes dirty pages of the range back first: WRITEs to this
  // daemon on other threads, which the owner applies without waiting for any
  // round, so this returns. Only then are the twins dropped, so that those
  // write-backs are still diffed against them; a page fetched again
  // meanwhile (after the notify dropped it) keeps the twin of that fetch.
  const uint64_t mark = twins_->Mark();
  for (const Range& r : ranges)
    if (notify) notify(ino, r.off, r.len);
  for (const Range& r : ranges) twins_->Drop(ino, r, mark);
  std::lock_guard<std::mutex> lock(mu_);
  if (--notifying_[ino] == 0) notifying_.erase(ino);
  for (const Range& r : ranges) {
    auto [b, e] = dropping_.equal_range(ino);
    for (auto it = b; it != e; ++it)
      if (it->second == r) {
        dropping_.erase(it);
        break;
      }
  }
}

bool Cluster::Dropping(uint64_t ino, uint64_t off, uint64_t len) {
  auto [b, e] = dropping_.equal_range(ino);
  for (auto it = b; it != e; ++it) {
    const Range& r = it->second;
    if (off >= r.off && (r.len == 0 || off + len <= r.off + r.len)) return true;
  }
  return false;
}

void Cluster::DropRemoteCopies() {
  // Every segment cached here and served elsewhere, not only those this node
  // believes the forgetting peer serves: a segment may have moved to it
  // without this node hearing of it, and its copyset, with this node in it,
  // went along — which the peer has now forgotten (found by the simulation, seed 1544: a
  // node kept a stale page for good, read it after becoming the owner itself).
  // And of the segments served here, the pages whose copysets leave this
  // node out: a copy fetched while another node served the segment, which
  // that node (or one the segment moved to before it came here) counted as
  // gone when it could not reach this node, came here without this node in
  // its copyset, and no write would ever drop it (seed 1544 again).
  // A lease or a restart is rare; fetching again is the price.
  std::vector<std::pair<uint64_t, bool>> inos;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [ino, o] : owner_of_) inos.emplace_back(ino, o == self_);
  }
  for (auto [ino, here] : inos) {
    std::vector<Range> ranges{Range{0, 0}};
    if (here) ranges = owned_.PagesNotCachedBy(ino, self_);
    if (ranges.size() > 64) ranges = {Range{0, 0}};  // one notify rather than thousands
    InvalidateLocal(ino, ranges);
  }
}

constexpr size_t kInlineWriteBack = 256 << 10;

bool Cluster::TryServeInline(net::Request& r) {
  if (!r.responder) return false;
  if (r.type == kSync) {
    // Answered at once if no round is running, else by the last ack of the
    // last round: no thread waits.
    auto ino = DecodeU64(r.payload);
    if (!ino.ok() || !owned_.TryServing(*ino).ok()) return false;
    rounds_->WhenDone(*ino, [responder = r.responder](const Status& st) { responder->Reply(st, std::string()); });
    return true;
  }
  if (r.type == kLock) {
    // The lock table is in memory: nothing to wait for once the segment is known here.
    auto m = LockMessage::Decode(r.payload);
    if (!m.ok()) return false;
    auto out = ServeLock(r.from, *m, /*wait=*/false);
    if (!out.ok()) return false;  // busy, moved: a worker answers
    r.responder->Reply(Status::Ok(), out->Encode());
    return true;
  }
  if (r.type == kWriteBack) {
    // A small write-back inside the segment (the usual release of a few
    // pages): merged here. A large one would hold the I/O thread for
    // milliseconds; one that grows the segment must tell the metadata node.
    if (r.payload.size() > kInlineWriteBack) return false;
    auto req = WriteBackRequest::Decode(r.payload);
    if (!req.ok() || req->late) return false;  // Handle answers it; a late one is logged there
    auto out = owned_.Apply(req->ino, r.from, req->runs, /*wait=*/false, nullptr, req->keeps_copy);
    if (!out.ok()) return false;  // busy, growing, moved, an error: a worker does it the slow way
    CountApplied(req->runs);
    TimesDue(req->ino, req->runs);  // (one that grows is not served here)
    AddGraceTargets(r.from, req->runs, &out->invalidate);
    if (out->invalidate.empty()) {
      r.responder->Reply(Status::Ok(), WriteBackReply{out->size, rounds_->Pending(req->ino)}.Encode());
    } else {
      AnswerAfterRound(req->ino, rounds_->Start(req->ino, std::move(out->invalidate)), out->size, r.responder);
    }
    return true;
  }
  if (r.type != kFetch) return false;
  auto req = FetchRequest::Decode(r.payload);
  if (!req.ok()) return false;  // Handle answers it
  std::string frame = FetchReply::Frame(req->len);
  uint64_t size = 0;
  auto n = owned_.Fetch(req->ino, r.from, req->off, req->len, frame.data() + FetchReply::kDataOffset, &size,
                        /*wait=*/false);
  if (!n.ok()) return false;  // busy, moved, an error: a worker does it the slow way
  FetchReply::Finish(&frame, size, *n);
  kFetchesServed.Add();
  r.responder->Reply(Status::Ok(), std::move(frame));
  return true;
}

void Cluster::Handle(net::Request r) {
  auto reply = [&](Result<std::string> res) {
    if (r.responder) r.responder->Reply(res.status(), res.ok() ? std::move(res).value() : std::string());
  };
  // The fast pool never waits: what would (kBusy: frozen, not loaded,
  // growing) goes on on the slow pool, where it may.
  auto deferred = [&](const Status& s) {
    if (r.slow || s.code() != Status::Code::kBusy) return false;
    net_.load()->Defer(std::move(r));
    return true;
  };
  switch (r.type) {
    case kMetaRequest:
      if (!ns_) return reply(Unavailable("node " + std::to_string(self_) + " is not the metadata node"));
      return reply(meta::ServeMetaRequest(*ns_, r.from, r.payload));
    case kMetaForget:
      if (ns_) (void)meta::ServeMetaRequest(*ns_, r.from, r.payload);
      return;
    case kMetaRefs: {
      if (ns_ || r.from != config_.metadata_node) return reply(Invalid("only the metadata node asks for references"));
      // Half a deadline: the asker's Call must still be waiting for the answer.
      auto snap = remote_meta_->held().Snapshot(std::chrono::milliseconds(config_.request_timeout_ms / 2));
      if (!snap.ok()) return reply(snap.status());
      return reply(snap->Encode());
    }
    case kFetch: {
      auto req = FetchRequest::Decode(r.payload);
      if (!req.ok()) return reply(req.status());
      std::string frame = FetchReply::Frame(req->len);
      uint64_t size = 0;
      auto n = owned_.Fetch(req->ino, r.from, req->off, req->len, frame.data() + FetchReply::kDataOffset, &size,
                            /*wait=*/r.slow);
      if (!n.ok() && deferred(n.status())) return;
      if (!n.ok()) return reply(n.status());
      FetchReply::Finish(&frame, size, *n);
      kFetchesServed.Add();
      return reply(std::move(frame));
    }
    case kWriteBack: {
      auto req = WriteBackRequest::Decode(r.payload);
      if (!req.ok()) return reply(req.status());
      auto out = ApplyAsOwner(r.from, *req, /*wait=*/r.slow);
      if (!out.ok() && deferred(out.status())) return;
      if (!out.ok()) return reply(out.status());
      return reply(out->Encode());
    }
    case kTruncate: {
      auto req = TruncateRequest::Decode(r.payload);
      if (!req.ok()) return reply(req.status());
      auto size = TruncateAsOwner(req->ino, r.from, req->size);
      if (!size.ok()) return reply(size.status());
      return reply(EncodeU64(*size));
    }
    case kFallocate: {
      auto req = FallocateRequest::Decode(r.payload);
      if (!req.ok()) return reply(req.status());
      auto size = FallocateAsOwner(r.from, *req);
      if (!size.ok()) return reply(size.status());
      return reply(EncodeU64(*size));
    }
    case kInvalidate: {
      auto req = InvalidateRequest::Decode(r.payload);
      if (!req.ok()) return reply(req.status());
      // The owner's round is running, this node's kernel not yet told.
      kSlowInvalidate.At("the invalidation of inode", req->ino);
      InvalidateLocal(req->ino, req->ranges);
      return reply(std::string());
    }
    case kDrop: {
      auto ino = DecodeU64(r.payload);
      if (ino.ok()) {
        twins_->DropInode(*ino);
        ForgetInodeState(*ino);
        Status s = owned_.Remove(*ino);
        if (!s.ok()) log_->warn("freeing the pages of deleted inode {}: {}", *ino, s.message());
        if (semaphores_) semaphores_->Forget(*ino);
      }
      return;
    }
    case kPing:
      return;
    case kNodeStatus:
      return reply(OwnStatus().Encode());
    case kIncarnationSeen: {
      auto inc = DecodeU64(r.payload);
      if (inc.ok() && *inc == incarnation_) {
        std::lock_guard<std::mutex> lock(mu_);
        grace_seen_.insert(r.from);
      }
      return;
    }
    case kHeldOrphans:
      if (ns_ || r.from != config_.metadata_node) return;
      for (size_t at = 0; at + 8 <= r.payload.size(); at += 8) {
        auto ino = DecodeU64(std::string_view(r.payload).substr(at, 8));
        if (!ino.ok()) continue;
        if (auto name = remote_meta_->held().NameOf(*ino)) DropEntryLocal(name->first, name->second);
      }
      return;
    case kEntryGone:
      if (r.payload.size() >= 8) {
        auto parent = DecodeU64(std::string_view(r.payload).substr(0, 8));
        if (parent.ok()) DropEntryLocal(*parent, r.payload.substr(8));
      }
      return;
    case kSync: {
      auto ino = DecodeU64(r.payload);
      if (!ino.ok()) return reply(ino.status());
      // Rounds live with the owner: a moved segment answers kMoved.
      Status owned = owned_.Pinned(*ino).status();
      if (!owned.ok()) return reply(owned);
      Status st = rounds_->Wait(*ino);
      return reply(st.ok() ? Result<std::string>(std::string()) : Result<std::string>(st));
    }
    case kMigrateAbort: {
      auto ref = MoveRef::Decode(r.payload);
      if (ref.ok()) transfer_->Abort(*ref, "node " + std::to_string(r.from) + " aborted the move");
      return;
    }
    case kMigrateQuery: {
      auto ref = MoveRef::Decode(r.payload);
      if (!ref.ok()) return reply(ref.status());
      return reply(transfer_->Query(*ref));
    }
    case kMigratePages: {
      auto m = MigratePages::Decode(r.payload);
      if (!m.ok()) return reply(m.status());
      auto need = transfer_->Pages(*m);
      if (!need.ok()) return reply(need.status());
      return reply(need->Encode());
    }
    case kMigrateInstall: {
      auto m = MigrateInstall::Decode(r.payload);
      if (!m.ok()) return reply(m.status());
      Status st = transfer_->Install(*m);
      return reply(st.ok() ? Result<std::string>(std::string()) : Result<std::string>(st));
    }
    case kMigrateCommit: {
      auto ref = MoveRef::Decode(r.payload);
      if (!ref.ok()) return reply(ref.status());
      Status st = transfer_->Commit(*ref);
      return reply(st.ok() ? Result<std::string>(std::string()) : Result<std::string>(st));
    }
    case kControl: {
      auto c = ControlRequest::Decode(r.payload);
      if (!c.ok()) return reply(c.status());
      return reply(ServeControl(*c));
    }
    case kLock: {
      auto m = LockMessage::Decode(r.payload);
      if (!m.ok()) return reply(m.status());
      auto out = ServeLock(r.from, *m, /*wait=*/r.slow);
      if (!out.ok() && deferred(out.status())) return;
      if (!out.ok()) return reply(out.status());
      return reply(out->Encode());
    }
    case kSem: {
      auto m = SemRequest::Decode(r.payload);
      if (!m.ok()) return reply(m.status());
      if (!semaphores_) return reply(Unavailable("semaphores are not served here yet"));
      return reply(semaphores_->Serve(r.from, *m).Encode());
    }
    case kSemWake: {
      auto m = SemWake::Decode(r.payload);
      if (!m.ok()) return reply(m.status());
      if (semaphores_) semaphores_->Woken(*m);
      return reply(std::string());
    }
    default:
      log_->warn("node {} sent unknown message type {}", r.from, r.type);
      return reply(NotSupported("unknown message type " + std::to_string(r.type)));
  }
}

}  // namespace cshm::fs

namespace cshm::fs {

Result<LockReply> Cluster::ServeLock(uint32_t from, const LockMessage& m, bool wait) {
  // Locks live with the segment: a forwarding entry (or a freeze) answers first.
  CSHM_RETURN_IF_ERROR(wait ? owned_.Pinned(m.ino).status() : owned_.TryServing(m.ino));
  LockMessage local = m;
  local.lock.who.node = from;  // a peer speaks for itself only
  std::lock_guard<std::mutex> lock(locks_mu_);
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

Result<LockReply> Cluster::LockAtOwner(uint64_t ino, const LockMessage& m) {
  return AtOwner(ino, [&](uint32_t owner) -> Result<LockReply> {
    if (owner == self_) return ServeLock(self_, m);
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

}  // namespace cshm::fs

namespace cshm::fs {

Result<std::string> Cluster::CallPeer(uint32_t node, uint16_t type, std::string payload) {
  return transport_->Call(node, type, std::move(payload));
}

void Cluster::CallPeerAsync(uint32_t node, uint16_t type, std::string payload, std::function<void(bool)> done) {
  transport_->CallAsync(node, type, std::move(payload),
                        [done = std::move(done)](Result<std::string> r) { done(r.ok()); });
}

Result<uint32_t> Cluster::CurrentOwner(uint64_t ino) {
  CSHM_ASSIGN_OR_RETURN(auto rec, meta().GetAttr(ino));
  if (!rec.IsReg()) return Invalid("only regular files have owners");
  NoteOwner(ino, rec.owner_node);
  return rec.owner_node;
}

uint64_t Cluster::remote_fetches(uint64_t ino) {
  std::lock_guard<std::mutex> lock(mu_);
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

Result<std::string> Cluster::ServeControl(const ControlRequest& c) {
  switch (c.op) {
    case ControlOp::kDescribe:
      return owned_.Describe(c.ino);
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


Status Cluster::Deliver(const WriteBackRequest& wb, bool* rounds_pending, uint32_t* dropped) {
  // Encoded only for a remote owner (and once, across kMoved retries): the
  // owner's own writes go straight to ApplyAsOwner.
  std::string payload;
  auto reply = AtOwner(wb.ino, [&](uint32_t at) -> Result<WriteBackReply> {
    if (at == self_) return ApplyAsOwner(self_, wb);
    if (LeaseLostWith(at)) {
      return Unavailable("our lease with node " + std::to_string(at) + ", which serves inode " +
                         std::to_string(wb.ino) + ", ran out: write-backs to it are kept here and delivered once it "
                         "is heard again");
    }
    if (payload.empty()) payload = wb.Encode();
    kWriteBacksSent.Add();
    kWriteBackBytesSent.Add(RunBytes(wb.runs));
    CSHM_ASSIGN_OR_RETURN(std::string r, transport_->Call(at, kWriteBack, payload));
    return WriteBackReply::Decode(r);
  });
  if (reply.ok() && rounds_pending != nullptr) *rounds_pending = reply->rounds_running;
  if (reply.ok() && dropped != nullptr) *dropped = reply->dropped;
  return reply.status();
}

Status Cluster::DrainPending(uint64_t ino) {
  return pending_->Drain(ino, [&](const std::string& p) -> Status {
    auto wb = WriteBackRequest::Decode(p);
    if (!wb.ok()) return Corruption("a kept write-back of inode " + std::to_string(ino) + " does not decode");
    wb->late = true;  // whatever its file says: it failed once, its writer was told so
    uint32_t dropped = 0;
    Status st = Deliver(*wb, nullptr, &dropped);
    if (!st.ok()) return st;
    if (dropped > 0)
      log_->warn("a kept write-back of inode {} was delivered late: {} page(s) had changed since and kept the "
                 "newer bytes", ino, dropped);
    // Whatever landed, this node's kernel may hold other bytes of these
    // pages than the owner now has: it drops them and fetches again. Their
    // twins go at once: a write-back of them before the kernel has dropped
    // them is refused, not diffed against bytes the owner no longer has
    // (which would leave out bytes equal there: a torn record, seed 31).
    // (Not where the segment is served: the owner's twins are its pages.)
    std::vector<Range> ranges = PagesTouched(wb->runs);
    if (CachedOwner(ino) != self_) {
      const uint64_t mark = twins_->Mark();
      for (const Range& r : ranges) twins_->Drop(ino, r, mark);
    }
    DropLocalLater(ino, std::move(ranges));
    return st;
  });
}

void Cluster::DeliverPending() {
  for (uint64_t ino : pending_->Inodes()) {
    Status st = DrainPending(ino);
    if (st.ok()) log_->info("delivered the kept write-backs of inode {}", ino);
  }
}

void Cluster::TimesDue(uint64_t ino, const std::vector<WriteRun>& runs) {
  if (runs.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  times_due_.insert(ino);
}

void Cluster::CommitTimes() {
  // Not while the metadata node is unreachable: the tick also delivers
  // kept write-backs and unlocks, and must not wait a deadline per inode.
  if (config_.metadata_node != self_ && !transport_->LeaseHeld(config_.metadata_node)) return;
  std::set<uint64_t> due;
  {
    std::lock_guard<std::mutex> lock(mu_);
    due.swap(times_due_);
  }
  for (auto it = due.begin(); it != due.end(); ++it) {
    const Status st = meta().NoteWrite(*it, 0, /*touch_mtime=*/true).status();
    if (st.code() != Status::Code::kUnavailable && st.code() != Status::Code::kTimedOut) continue;  // done, or gone
    std::lock_guard<std::mutex> lock(mu_);
    times_due_.insert(it, due.end());  // at the next tick
    return;
  }
}

void Cluster::MigratorLoop() {
  migrator::PolicyConfig policy;
  policy.half_life_s = config_.migrate.half_life_s;
  policy.ratio = config_.migrate.ratio;
  policy.min_rate = config_.migrate.min_rate;
  policy.cooldown_s = config_.migrate.cooldown_s;
  const auto interval = std::chrono::duration<double>(config_.migrate.check_s);
  std::unique_lock<std::mutex> lock(stop_mu_);
  while (!stop_cv_.wait_for(lock, interval, [this] { return stopping_; })) {
    lock.unlock();
    CommitTimes();
    DeliverPending();
    locks_held_->RetryUnlocks();
    transfer_->Resolve();
    if (!config_.migrate.enabled) {
      lock.lock();
      continue;
    }
    for (auto [ino, target] : owned_.Candidates(policy)) {
      Status s = transfer_->Move(ino, target, "node " + std::to_string(target) + " dominates its accesses");
      (void)s;  // logged by Move
    }
    lock.lock();
  }
}

}  // namespace cshm::fs
