#include "tests/sim/sim_network.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <future>

namespace cshm::sim {

using Clock = std::chrono::steady_clock;
using Frame = SimNetwork::Frame;

// One running node's side of the network: its options, its pools, its calls
// in flight and its leases. Shared with the network and with the timers and
// responders that may outlive the node's messenger; once `stopped`, none of
// its callbacks runs again.
class SimNode : public std::enable_shared_from_this<SimNode> {
 public:
  SimNode(SimNetwork* net, net::MessengerOptions o)
      : net_(net),
        opts_(std::move(o)),
        fast_(std::make_unique<boost::asio::thread_pool>(static_cast<size_t>(opts_.fast_threads))),
        slow_(std::make_unique<boost::asio::thread_pool>(static_cast<size_t>(opts_.slow_threads))) {}

  uint32_t id() const { return opts_.self; }
  uint64_t incarnation() const { return opts_.incarnation; }
  const net::MessengerOptions& opts() const { return opts_; }
  bool dead() const { return dead_; }

  // The messenger is destroyed (or the node crashed): no callback of it runs
  // after this returns, and with `join` its pools are joined.
  void Stop(bool join) {
    {
      MutexLock gate(&gate_);
      dead_ = true;
    }
    FailCalls(std::nullopt, "node " + std::to_string(id()) + " is shutting down");
    if (!join) return;
    fast_->join();
    slow_->join();
  }

  // Runs `fn` (a callback into the node) unless the node stopped; callbacks
  // on the network's thread never overlap Stop.
  template <typename F>
  void Guarded(F fn) {
    MutexLock gate(&gate_);
    if (dead_) return;
    try {
      fn();
    } catch (const std::exception& e) {
      spdlog::error("sim: node {}: internal error in a network callback: {}", id(), e.what());
    }
  }

  // Calls in flight.
  struct Pending {
    uint32_t to = 0;
    std::promise<Result<std::string>> promise;
    std::function<void(Result<std::string>)> callback;
    std::atomic<bool> done{false};
    void Finish(Result<std::string> r) {
      if (done.exchange(true)) return;
      if (callback) return callback(std::move(r));
      promise.set_value(std::move(r));
    }
  };
  uint64_t AddCall(std::shared_ptr<Pending> p) {
    MutexLock lock(&mu_);
    const uint64_t id = next_id_++;
    calls_[id] = std::move(p);
    return id;
  }
  std::shared_ptr<Pending> TakeCall(uint64_t id) {
    MutexLock lock(&mu_);
    auto it = calls_.find(id);
    if (it == calls_.end()) return nullptr;
    auto p = std::move(it->second);
    calls_.erase(it);
    return p;
  }
  // Fails the calls to `to` (all: nullopt): its connection closed.
  void FailCalls(std::optional<uint32_t> to, const std::string& why) {
    std::vector<std::shared_ptr<Pending>> failed;
    {
      MutexLock lock(&mu_);
      for (auto it = calls_.begin(); it != calls_.end();) {
        if (!to || it->second->to == *to) {
          failed.push_back(std::move(it->second));
          it = calls_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& p : failed) p->Finish(Unavailable(why));
  }

  void Post(net::Request r) {
    if (dead_) return;
    auto self = shared_from_this();
    boost::asio::post(r.slow ? *slow_ : *fast_, [self, r = std::move(r)]() mutable {
      if (self->dead_) return;
      auto responder = r.responder;
      try {
        self->opts_.handler(std::move(r));
      } catch (const std::exception& e) {
        spdlog::error("sim: node {}: internal error in a handler: {}", self->id(), e.what());
        if (responder) responder->Reply(IoError("internal error"), "");
      }
    });
  }

  // Leases, as net::Transport keeps them.
  struct Lease {
    Clock::time_point heard, renewed;
    bool have_heard = false, forgotten = false, have_lease = false, lease_lost = false;
    bool timed_out = false;  // a call to it timed out, nothing heard since
  };
  void Heard(uint32_t peer) {
    MutexLock lock(&mu_);
    Lease& l = leases_[peer];
    l.heard = Clock::now();
    l.have_heard = true;
    l.forgotten = false;
    l.timed_out = false;
  }
  void Renewed(uint32_t peer, Clock::time_point sent) {
    MutexLock lock(&mu_);
    Lease& l = leases_[peer];
    if (l.have_lease && sent <= l.renewed) return;
    l.renewed = sent;
    l.have_lease = true;
    l.lease_lost = false;
  }
  void TimedOutOn(uint32_t peer) {
    MutexLock lock(&mu_);
    leases_[peer].timed_out = true;
  }
  // After a call to it timed out, while it has said nothing for two
  // heartbeats, calls to it fail at once (net/transport.h).
  bool Silent(uint32_t peer) {
    MutexLock lock(&mu_);
    auto it = leases_.find(peer);
    if (it == leases_.end() || !it->second.timed_out) return false;
    return !it->second.have_heard ||
           Clock::now() - it->second.heard > 2 * std::chrono::milliseconds(opts_.config.heartbeat_ms);
  }
  bool Forgotten(uint32_t node) {
    MutexLock lock(&mu_);
    auto it = leases_.find(node);
    return it == leases_.end() || !it->second.have_heard || it->second.forgotten;
  }
  bool LeaseHeld(uint32_t node) {
    MutexLock lock(&mu_);
    auto it = leases_.find(node);
    return it != leases_.end() && it->second.have_lease && !it->second.lease_lost;
  }
  std::vector<net::PeerState> Peers() {
    std::vector<net::PeerState> out;
    const auto now = Clock::now();
    MutexLock lock(&mu_);
    for (const net::NodeConfig& n : opts_.config.nodes) {
      if (n.id == id()) continue;
      net::PeerState p;
      p.node = n.id;
      p.forgotten = true;
      auto it = leases_.find(n.id);
      if (it != leases_.end()) {
        p.heard = it->second.have_heard;
        if (p.heard) p.since_heard = std::chrono::duration_cast<std::chrono::milliseconds>(now - it->second.heard);
        p.lease_held = it->second.have_lease && !it->second.lease_lost;
        p.forgotten = !it->second.have_heard || it->second.forgotten;
      }
      out.push_back(p);
    }
    return out;
  }

  Clock::duration TickPeriod() const {
    return std::max<Clock::duration>(std::chrono::milliseconds(10),
                                     std::chrono::milliseconds(opts_.config.heartbeat_ms) / 4);
  }
  // On the network's thread: heartbeats, silent connections, lease expiry.
  void Tick() {
    const auto now = Clock::now();
    const auto lease = std::chrono::milliseconds(opts_.config.lease_ms);
    const bool beat = now - last_beat_ >= std::chrono::milliseconds(opts_.config.heartbeat_ms);
    if (beat) last_beat_ = now;
    const auto margin = lease / 10 + TickPeriod();
    std::vector<uint32_t> lost, forgotten, silent;
    {
      MutexLock lock(&mu_);
      for (auto& [node, l] : leases_) {
        if (l.have_heard && now - l.heard > lease) silent.push_back(node);
        if (l.have_lease && !l.lease_lost && now > l.renewed + lease - margin) {
          l.lease_lost = true;
          lost.push_back(node);
        }
        if (l.have_heard && !l.forgotten && now > l.heard + lease) {
          l.forgotten = true;
          forgotten.push_back(node);
        }
      }
    }
    for (uint32_t node : silent) net_->Close(id(), node);
    if (beat) {
      for (const net::NodeConfig& n : opts_.config.nodes) {
        if (n.id == id()) continue;
        Frame f;
        f.kind = Frame::kHeartbeat;
        f.from = id();
        f.to = n.id;
        f.id = static_cast<uint64_t>(now.time_since_epoch().count());
        net_->Transmit(std::move(f));
      }
    }
    for (uint32_t node : lost)
      if (opts_.on_lease_lost) opts_.on_lease_lost(node);
    for (uint32_t node : forgotten)
      if (opts_.on_peer_forgotten) opts_.on_peer_forgotten(node);
  }

 private:
  SimNetwork* const net_;
  const net::MessengerOptions opts_;
  std::unique_ptr<boost::asio::thread_pool> fast_, slow_;
  Mutex gate_;  // held by every callback into the node on the network's thread, and by Stop
  std::atomic<bool> dead_{false};
  Mutex mu_;  // a leaf
  uint64_t next_id_ GUARDED_BY(mu_) = 1;
  std::map<uint64_t, std::shared_ptr<Pending>> calls_ GUARDED_BY(mu_);
  std::map<uint32_t, Lease> leases_ GUARDED_BY(mu_);
  Clock::time_point last_beat_;  // the network's thread only (Tick)
};

namespace {

// Answers one request with a frame back to the asker, once. Replies of a node
// that has died or restarted since are dropped by the network.
class SimResponder : public net::Responder {
 public:
  SimResponder(SimNetwork* net, uint32_t self, uint64_t incarnation, uint32_t to, uint64_t id, uint16_t type)
      : net_(net), self_(self), incarnation_(incarnation), to_(to), id_(id), type_(type) {}
  void Reply(const Status& status, std::string payload) override {
    if (replied_.exchange(true)) return;
    Frame f;
    f.kind = Frame::kReply;
    f.from = self_;
    f.from_incarnation = incarnation_;
    f.to = to_;
    f.id = id_;
    f.type = type_;
    f.status = status;
    f.payload = std::move(payload);
    net_->Transmit(std::move(f));
  }

 private:
  SimNetwork* const net_;
  const uint32_t self_;
  const uint64_t incarnation_;
  const uint32_t to_;
  const uint64_t id_;
  const uint16_t type_;
  std::atomic<bool> replied_{false};
};

class SimMessenger : public net::Messenger {
 public:
  SimMessenger(SimNetwork* net, std::shared_ptr<SimNode> node) : net_(net), node_(std::move(node)) {}
  ~SimMessenger() override {
    Stop();
    net_->NoteDestroyed(node_->id());
  }
  void Stop() override {
    net_->Unregister(node_.get());
    node_->Stop(/*join=*/true);
  }

  using Messenger::Call;
  using Messenger::CallAsync;
  Result<std::string> Call(uint32_t node, uint16_t type, std::string payload,
                           std::chrono::milliseconds timeout) override {
    if (timeout.count() == 0) timeout = std::chrono::milliseconds(node_->opts().config.request_timeout_ms);
    if (node_->dead()) return Unavailable("shutting down");
    if (node_->Silent(node))
      return Unavailable("node " + std::to_string(node) + " has not answered since a request to it timed out");
    auto p = std::make_shared<SimNode::Pending>();
    p->to = node;
    auto fut = p->promise.get_future();
    const uint64_t id = node_->AddCall(p);
    Send(node, type, std::move(payload), Frame::kRequest, id);
    if (fut.wait_for(timeout) != std::future_status::ready) {
      node_->TimedOutOn(node);
      if (auto mine = node_->TakeCall(id))
        mine->Finish(TimedOut("node " + std::to_string(node) + " did not answer within " +
                              std::to_string(timeout.count()) + " ms"));
    }
    return fut.get();
  }

  void CallAsync(uint32_t node, uint16_t type, std::string payload, std::function<void(Result<std::string>)> done,
                 std::chrono::milliseconds timeout) override {
    if (timeout.count() == 0) timeout = std::chrono::milliseconds(node_->opts().config.request_timeout_ms);
    auto p = std::make_shared<SimNode::Pending>();
    p->to = node;
    // Answers run on the network's thread, as the contract says, under the
    // node's gate (so never after it stopped).
    std::weak_ptr<SimNode> weak = node_;
    p->callback = [weak, done = std::move(done)](Result<std::string> r) {
      auto n = weak.lock();
      if (!n) return;
      n->Guarded([&] { done(std::move(r)); });
    };
    if (node_->dead() || node_->Silent(node)) {
      net_->Schedule(std::chrono::microseconds(0), [p, node] {
        p->Finish(Unavailable("node " + std::to_string(node) + " is unreachable"));
      });
      return;
    }
    const uint64_t id = node_->AddCall(p);
    net_->Schedule(timeout, [weak, id, node, timeout] {
      auto n = weak.lock();
      if (!n) return;
      if (auto mine = n->TakeCall(id)) {
        n->TimedOutOn(node);
        mine->Finish(TimedOut("node " + std::to_string(node) + " did not answer within " +
                              std::to_string(timeout.count()) + " ms"));
      }
    });
    Send(node, type, std::move(payload), Frame::kRequest, id);
  }

  void Send(uint32_t node, uint16_t type, std::string payload) override {
    Send(node, type, std::move(payload), Frame::kOneWay, 0);
  }
  void Defer(net::Request r) override {
    r.slow = true;
    node_->Post(std::move(r));
  }
  void After(std::chrono::microseconds delay, std::function<void()> fn) override {
    std::weak_ptr<SimNode> weak = node_;
    net_->Schedule(delay, [weak, fn = std::move(fn)] {
      if (auto n = weak.lock()) n->Guarded(fn);
    });
  }
  bool Forgotten(uint32_t node) const override { return node_->Forgotten(node); }
  bool LeaseHeld(uint32_t node) const override { return node_->LeaseHeld(node); }
  std::vector<net::PeerState> Peers() const override { return node_->Peers(); }

 private:
  void Send(uint32_t node, uint16_t type, std::string payload, Frame::Kind kind, uint64_t id) {
    Frame f;
    f.kind = kind;
    f.from = node_->id();
    f.to = node;
    f.id = id;
    f.type = type;
    f.payload = std::move(payload);
    net_->Transmit(std::move(f));
  }

  SimNetwork* const net_;
  const std::shared_ptr<SimNode> node_;
};

}  // namespace

SimNetwork::SimNetwork(uint64_t seed) : rng_(seed) {
  thread_ = std::thread([this] { Loop(); });
}

SimNetwork::~SimNetwork() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  cv_.NotifyAll();
  thread_.join();
}

net::MessengerFactory SimNetwork::Factory() {
  return [this](net::MessengerOptions o) -> Result<std::unique_ptr<net::Messenger>> {
    auto node = std::make_shared<SimNode>(this, std::move(o));
    Register(node);
    return std::unique_ptr<net::Messenger>(std::make_unique<SimMessenger>(this, node));
  };
}

uint64_t SimNetwork::Random() {
  MutexLock lock(&mu_);
  return rng_();
}

LinkFaults& SimNetwork::Link(uint32_t from, uint32_t to) { return links_[{from, to}]; }

void SimNetwork::SetLink(uint32_t from, uint32_t to, const LinkFaults& f) {
  MutexLock lock(&mu_);
  Link(from, to) = f;
}

void SimNetwork::Partition(const std::set<uint32_t>& side, const std::set<uint32_t>& all) {
  MutexLock lock(&mu_);
  for (uint32_t a : side)
    for (uint32_t b : all)
      if (!side.contains(b)) {
        Link(a, b).cut = true;
        Link(b, a).cut = true;
      }
}

void SimNetwork::Heal(const std::set<uint32_t>& all) {
  MutexLock lock(&mu_);
  for (uint32_t a : all)
    for (uint32_t b : all) Link(a, b) = LinkFaults{};
}

void SimNetwork::Crash(uint32_t node) {
  std::shared_ptr<SimNode> n;
  {
    MutexLock lock(&mu_);
    auto it = nodes_.find(node);
    if (it == nodes_.end()) return;
    n = it->second;
  }
  Unregister(n.get());
  n->Stop(/*join=*/false);  // its threads go on in this process, but nothing they send leaves
}

uint64_t SimNetwork::RequestsTo(uint32_t node) {
  MutexLock lock(&mu_);
  return requests_to_[node];
}

uint64_t SimNetwork::Sent(uint32_t from, uint32_t to, uint16_t type) {
  MutexLock lock(&mu_);
  auto it = sent_.find({from, to, type});
  return it == sent_.end() ? 0 : it->second;
}

uint64_t SimNetwork::MessengersDestroyed(uint32_t node) {
  MutexLock lock(&mu_);
  return destroyed_[node];
}

void SimNetwork::NoteDestroyed(uint32_t node) {
  MutexLock lock(&mu_);
  destroyed_[node]++;
}

std::vector<net::PeerState> SimNetwork::PeersOf(uint32_t node) {
  std::shared_ptr<SimNode> n;
  {
    MutexLock lock(&mu_);
    auto it = nodes_.find(node);
    if (it == nodes_.end()) return {};
    n = it->second;
  }
  return n->Peers();
}

void SimNetwork::Register(std::shared_ptr<SimNode> n) {
  {
    MutexLock lock(&mu_);
    nodes_[n->id()] = n;
  }
  std::weak_ptr<SimNode> weak = n;
  // The node's heartbeat timer, for as long as it runs.
  auto tick = std::make_shared<std::function<void()>>();
  *tick = [this, weak, tick] {
    auto node = weak.lock();
    if (!node || node->dead()) return;
    node->Guarded([&] { node->Tick(); });
    Schedule(std::chrono::duration_cast<std::chrono::microseconds>(node->TickPeriod()), *tick);
  };
  Schedule(std::chrono::microseconds(0), *tick);
}

void SimNetwork::Unregister(const SimNode* n) {
  std::vector<std::function<void()>> down;
  {
    MutexLock lock(&mu_);
    auto it = nodes_.find(n->id());
    if (it == nodes_.end() || it->second.get() != n) return;
    for (auto& [id, other] : nodes_)
      if (id != n->id()) Disconnect(n->id(), id, &down);
    std::erase_if(unaware_, [&](const auto& u) { return u.first == n->id(); });
    nodes_.erase(it);
  }
  for (auto& fn : down) Schedule(std::chrono::microseconds(0), std::move(fn));
}

void SimNetwork::Close(uint32_t a, uint32_t b) {
  std::vector<std::function<void()>> down;
  {
    MutexLock lock(&mu_);
    const auto key = std::minmax(a, b);
    if (!connections_.contains({key.first, key.second}) && unaware_.erase({a, b}) > 0) {
      Down(a, b, &down);  // closed by the peer long ago: now this end knows too
    } else {
      // Across a cut link the close does not reach the other end.
      Disconnect(a, b, &down, /*only_a=*/Link(a, b).cut);
    }
  }
  for (auto& fn : down) Schedule(std::chrono::microseconds(0), std::move(fn));
}

void SimNetwork::Disconnect(uint32_t a, uint32_t b, std::vector<std::function<void()>>* down, bool only_a) {
  auto key = std::minmax(a, b);
  auto it = connections_.find({key.first, key.second});
  if (it == connections_.end()) return;
  connections_.erase(it);
  Down(a, b, down);
  if (only_a) unaware_.insert({b, a});
  else Down(b, a, down);
}

void SimNetwork::Down(uint32_t side, uint32_t peer, std::vector<std::function<void()>>* down) {
  auto n = nodes_.find(side);
  if (n == nodes_.end()) return;
  std::shared_ptr<SimNode> node = n->second;
  down->push_back([node, peer] {
    node->FailCalls(peer, "the connection to node " + std::to_string(peer) + " closed");
    node->Guarded([&] {
      if (node->opts().on_peer_down) node->opts().on_peer_down(peer);
    });
  });
}

bool SimNetwork::Connect(uint32_t a, uint32_t b, std::vector<std::function<void()>>* up) {
  auto na = nodes_.find(a), nb = nodes_.find(b);
  if (na == nodes_.end() || nb == nodes_.end()) return false;
  const auto key = std::minmax(a, b);
  auto it = connections_.find({key.first, key.second});
  const uint64_t inc_low = nodes_[key.first]->incarnation(), inc_high = nodes_[key.second]->incarnation();
  // A cut link carries nothing from a to b, also on a connection that was
  // up before the cut (which closes only once it has been silent for a
  // lease, as TCP's does across a partition); what goes the other way on it
  // still arrives. A new connection needs both ways (its handshake).
  if (it != connections_.end()) {
    if (it->second.incarnation[0] == inc_low && it->second.incarnation[1] == inc_high) return !Link(a, b).cut;
    connections_.erase(it);  // a restarted end: that connection died with it
  }
  if (Link(a, b).cut || Link(b, a).cut) return false;
  Connection c;
  c.incarnation[0] = inc_low;
  c.incarnation[1] = inc_high;
  connections_[{key.first, key.second}] = c;
  // An end that missed the old connection's close learns of it first (its
  // next frame on it would have met a reset).
  for (auto [side, peer] : {std::pair{a, b}, std::pair{b, a}})
    if (unaware_.erase({side, peer}) > 0) Down(side, peer, up);
  for (auto [side, peer] : {std::pair{a, b}, std::pair{b, a}}) {
    std::shared_ptr<SimNode> node = nodes_[side];
    const uint64_t peer_incarnation = nodes_[peer]->incarnation();
    up->push_back([node, peer = peer, peer_incarnation] {
      node->Heard(peer);
      node->Guarded([&] {
        if (node->opts().on_peer_up) node->opts().on_peer_up(peer, peer_incarnation);
      });
    });
  }
  return true;
}

void SimNetwork::Transmit(Frame f) {
  std::vector<std::function<void()>> up;
  std::function<void()> refused;
  {
    MutexLock lock(&mu_);
    auto from = nodes_.find(f.from);
    // A dead node says nothing; nor does an old incarnation's responder.
    if (from == nodes_.end() || from->second->dead()) return;
    if (f.from_incarnation != 0 && f.from_incarnation != from->second->incarnation()) return;
    f.from_incarnation = from->second->incarnation();
    const bool message = f.kind == Frame::kRequest || f.kind == Frame::kOneWay;
    if (message) sent_[{f.from, f.to, f.type}]++;
    const LinkFaults& link = Link(f.from, f.to);
    std::uniform_int_distribution<uint32_t> delay_us(link.min_delay_us, std::max(link.min_delay_us, link.max_delay_us));
    auto delay = std::chrono::microseconds(delay_us(rng_));
    if (auto slow = link.slow_types.find(f.type); message && slow != link.slow_types.end()) delay = slow->second;
    auto to = nodes_.find(f.to);
    if (to == nodes_.end()) {
      // Nobody listens there: refused, after a delay, unless the link is cut.
      if (f.kind == Frame::kRequest && !link.cut) {
        std::shared_ptr<SimNode> caller = from->second;
        const uint64_t id = f.id;
        const uint32_t node = f.to;
        refused = [this, caller, id, node, delay] {
          Schedule(delay, [caller, id, node] {
            if (auto p = caller->TakeCall(id)) p->Finish(Unavailable("node " + std::to_string(node) + " refused the connection"));
          });
        };
      }
    } else {
      const bool connected = Connect(f.from, f.to, &up);
      // A new connection's up callbacks run before anything it carries is
      // delivered, as a handshake completes before the first frame.
      for (auto& fn : up) {
        events_.push_back(Event{Clock::now(), next_seq_++, std::move(fn)});
        std::push_heap(events_.begin(), events_.end(), std::greater<>());
        cv_.NotifyAll();
      }
      if (!connected) {
        // Cut: lost (a call times out at its deadline).
      } else if (link.loss > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < link.loss) {
        // Lost on the way.
      } else {
        f.to_incarnation = to->second->incarnation();
        const auto key = std::minmax(f.from, f.to);
        Connection& c = connections_[{key.first, key.second}];
        auto& last = c.last[f.from == key.first ? 0 : 1];
        const auto at = std::max(Clock::now() + delay, last + std::chrono::microseconds(1));
        last = at;
        Event e{at, next_seq_++, [this, f = std::move(f)]() mutable { Deliver(std::move(f)); }};
        events_.push_back(std::move(e));
        std::push_heap(events_.begin(), events_.end(), std::greater<>());
        cv_.NotifyAll();
      }
    }
  }
  if (refused) refused();
}

void SimNetwork::Deliver(Frame f) {
  std::shared_ptr<SimNode> to;
  {
    MutexLock lock(&mu_);
    auto it = nodes_.find(f.to);
    const auto key = std::minmax(f.from, f.to);
    auto c = connections_.find({key.first, key.second});
    // The connection it travelled on must still be up, between the same
    // incarnations: a closed connection loses what it carried.
    if (it == nodes_.end() || it->second->incarnation() != f.to_incarnation || c == connections_.end() ||
        c->second.incarnation[f.from == key.first ? 0 : 1] != f.from_incarnation)
      return;
    to = it->second;
  }
  to->Heard(f.from);
  switch (f.kind) {
    case Frame::kHeartbeat: {
      Frame echo;
      echo.kind = Frame::kEcho;
      echo.from = f.to;
      echo.to = f.from;
      echo.id = f.id;
      Transmit(std::move(echo));
      return;
    }
    case Frame::kEcho:
      to->Renewed(f.from, Clock::time_point(Clock::duration(f.id)));
      return;
    case Frame::kReply:
      if (auto p = to->TakeCall(f.id)) {
        if (f.status.ok()) p->Finish(std::move(f.payload));
        else p->Finish(f.status);
      }
      return;
    case Frame::kRequest:
    case Frame::kOneWay: {
      if (f.kind == Frame::kRequest) {
        MutexLock lock(&mu_);
        requests_to_[f.to]++;
      }
      net::Request r;
      r.from = f.from;
      r.type = f.type;
      r.payload = std::move(f.payload);
      if (f.kind == Frame::kRequest)
        r.responder = std::make_shared<SimResponder>(this, f.to, to->incarnation(), f.from, f.id, f.type);
      bool inline_done = false;
      to->Guarded([&] {
        if (to->opts().try_inline) inline_done = to->opts().try_inline(r);
      });
      if (inline_done) return;
      r.slow = to->opts().is_slow && to->opts().is_slow(r.type);
      to->Post(std::move(r));
      return;
    }
  }
}

void SimNetwork::Schedule(std::chrono::microseconds delay, std::function<void()> fn) {
  MutexLock lock(&mu_);
  if (stopping_) return;
  events_.push_back(Event{Clock::now() + delay, next_seq_++, std::move(fn)});
  std::push_heap(events_.begin(), events_.end(), std::greater<>());
  cv_.NotifyAll();
}

void SimNetwork::Loop() {
  MutexLock lock(&mu_);
  while (!stopping_) {
    if (events_.empty()) {
      cv_.Wait(lock, [this]() REQUIRES(mu_) { return stopping_ || !events_.empty(); });
      continue;
    }
    if (const Clock::time_point at = events_.front().at; at > Clock::now()) {
      // A copy: the wait reads it again after waking, and a Schedule
      // meanwhile may have moved the events (found by ThreadSanitizer).
      cv_.WaitUntil(lock, at);
      continue;
    }
    std::pop_heap(events_.begin(), events_.end(), std::greater<>());
    Event e = std::move(events_.back());
    events_.pop_back();
    lock.Unlock();
    e.fn();
    lock.Lock();
  }
}

}  // namespace cshm::sim
