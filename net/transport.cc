// The transport's node end (net/transport.h): listening and admitting
// connections, heartbeats and the leases they keep, dispatch of requests to
// the pools, and the Messenger calls. One connection's work is in
// net/connection.cc; what both share is net/transport_impl.h.
#include "net/transport.h"

#include <spdlog/spdlog.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdio>

#include "common/log.h"
#include "net/transport_impl.h"

namespace cshm::net {

namespace {

class ConnResponder : public Responder {
 public:
  ConnResponder(asio::io_context& io, std::weak_ptr<Connection> c, uint64_t id, uint16_t type)
      : io_(io), c_(std::move(c)), id_(id), type_(type) {}
  void Reply(const Status& st, std::string payload) override {
    if (replied_.exchange(true)) return;
    // On the I/O thread (an inline handler) this writes at once.
    asio::dispatch(io_, [c = c_, id = id_, type = type_, st, payload = std::move(payload)]() mutable {
      if (auto conn = c.lock()) conn->Respond(id, type, st, std::move(payload));
    });
  }

 private:
  asio::io_context& io_;
  std::weak_ptr<Connection> c_;
  uint64_t id_;
  uint16_t type_;
  std::atomic<bool> replied_{false};
};

}  // namespace

Status Transport::Impl::Listen() {
  const NodeConfig* me = opts.config.Find(opts.self);
  if (!me) return Invalid("node " + std::to_string(opts.self) + " is not in the config");
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(me->host, ec);
  if (ec) return Invalid("node " + std::to_string(opts.self) + " host '" + me->host + "' is not an IP address");
  tcp::endpoint ep(addr, me->port);
  acceptor.open(ep.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec == asio::error::address_in_use)
    return Busy("port " + std::to_string(me->port) + " of node " + std::to_string(opts.self) + " (" + me->host +
                ") is in use by another process; stop it or change the port in the config");
  if (ec) return Unavailable("cannot listen on " + me->host + ":" + std::to_string(me->port) + ": " + ec.message());
  return Status::Ok();
}

void Transport::Impl::Accept() {
  acceptor.async_accept([this](const boost::system::error_code& ec, tcp::socket s) {
    if (ec) {
      if (stopping || ec == asio::error::operation_aborted) return;
      static RateLimit limit(std::chrono::seconds(10));
      if (uint64_t more = 0; limit.Allow(&more))
        spdlog::warn("accept: {} ({} more failures since the last such line){}", ec.message(), more,
                     ec == asio::error::no_descriptors ? "; raise the open-files limit (ulimit -n)" : "");
      // Out of descriptors (EMFILE, ENFILE) or memory: retrying at once
      // would fail at once, for ever. Try again a little later.
      auto timer = std::make_shared<asio::steady_timer>(io, kAcceptBackoff);
      timer->async_wait([this, timer](const boost::system::error_code& e) {
        if (!e && !stopping) Accept();
      });
      return;
    }
    s.set_option(tcp::no_delay(true));
    if (!AdmitUnauthenticated(s)) {
      refused++;
      boost::system::error_code ignored;
      s.close(ignored);
    } else {
      auto c = std::make_shared<Connection>(this, std::move(s), false, UINT32_MAX);
      all.push_back(c);
      c->StartServer();
    }
    Accept();
  });
}

bool Transport::Impl::AdmitUnauthenticated(const tcp::socket& s) {
  boost::system::error_code ec;
  const auto from = s.remote_endpoint(ec).address();
  size_t total = 0, same = 0;
  for (auto& w : all) {
    auto c = w.lock();
    if (!c || c->closed() || c->client() || c->authenticated()) continue;
    total++;
    if (!ec && c->remote_address() == from) same++;
  }
  if (total < kMaxUnauthenticated && same < kMaxUnauthenticatedPerSource) return true;
  static RateLimit limit(std::chrono::seconds(10));
  if (uint64_t more = 0; limit.Allow(&more))
    spdlog::warn("refused a connection from {}: {} connections are still authenticating ({} from there; {} more "
                 "refused since the last such line)",
                 ec ? std::string("?") : from.to_string(), total, same, more);
  return false;
}

void Transport::Impl::Heartbeat() {
  if (stopping) return;
  const auto now = Clock::now();
  const auto lease = std::chrono::milliseconds(opts.config.lease_ms);
  const bool beat = now - last_heartbeat >= std::chrono::milliseconds(opts.config.heartbeat_ms);
  if (beat) last_heartbeat = now;
  std::vector<std::weak_ptr<Connection>> live;
  for (auto& w : all) {
    if (auto c = w.lock()) {
      if (c->closed()) continue;
      c->Tick(lease, beat);
      live.push_back(w);
    }
  }
  all = std::move(live);
  // The leases, after the silent connections closed (so nothing more is read
  // from a peer this tick forgets). Our grants from a peer end first: a
  // lease minus a tenth for clock drift minus a tick for this check's
  // lateness, counted from a heartbeat's send time; the peer counts its
  // lease from when it received that heartbeat, later.
  const auto margin = lease / 10 + TickPeriod();
  std::vector<uint32_t> lost, forgotten;
  {
    MutexLock lock(&lease_mu);
    for (auto& [node, l] : leases) {
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
  for (uint32_t node : lost) {
    spdlog::warn("lease with node {} ran out (no heartbeat of ours answered for {} ms): what it granted us is "
                 "given up", node, std::chrono::duration_cast<std::chrono::milliseconds>(lease - margin).count());
    if (opts.on_lease_lost) opts.on_lease_lost(node);
  }
  for (uint32_t node : forgotten) {
    spdlog::warn("node {} silent for the lease ({} ms): what we granted it is forgotten", node, opts.config.lease_ms);
    if (opts.on_peer_forgotten) opts.on_peer_forgotten(node);
  }
  heartbeat->expires_after(TickPeriod());
  heartbeat->async_wait([this](const boost::system::error_code& ec) {
    if (!ec) Heartbeat();
  });
}

void Transport::Impl::Heard(uint32_t peer) {
  MutexLock lock(&lease_mu);
  PeerLease& l = leases[peer];
  l.heard = Clock::now();
  l.have_heard = true;
  l.forgotten = false;
}

void Transport::Impl::Renewed(uint32_t peer, Clock::time_point sent) {
  MutexLock lock(&lease_mu);
  PeerLease& l = leases[peer];
  if (l.have_lease && sent <= l.renewed) return;
  l.renewed = sent;
  l.have_lease = true;
  l.lease_lost = false;
}

void Transport::Impl::Dispatch(std::shared_ptr<Connection> c, Frame f) {
  Request r;
  r.from = c->peer();
  r.type = f.header.type;
  r.payload = std::move(f.payload);
  if (f.header.kind == Kind::kRequest)
    r.responder = std::make_shared<ConnResponder>(io, c, f.header.request_id, f.header.type);
  if (opts.try_inline) {
    try {
      if (opts.try_inline(r)) return;
    } catch (const std::exception& e) {
      spdlog::error("inline handler for request type {}: internal error: {}", r.type, e.what());
      if (r.responder) r.responder->Reply(IoError("internal error"), "");
      return;
    }
  }
  r.slow = opts.is_slow && opts.is_slow(r.type);
  RunOnPool(std::move(r));
}

void Transport::Impl::RunOnPool(Request r) {
  asio::post(r.slow ? slow : fast, [this, r = std::move(r)]() mutable {
    auto responder = r.responder;
    try {
      opts.handler(std::move(r));
    } catch (const std::exception& e) {
      spdlog::error("handler for request type {}: internal error: {}", r.type, e.what());
      if (responder) responder->Reply(IoError("internal error"), "");
    }
  });
}

std::shared_ptr<Connection> Transport::Impl::ClientFor(uint32_t node) {
  auto it = clients.find(node);
  if (it != clients.end() && !it->second->closed()) return it->second;
  // After a failure, the next attempt waits for its backoff; calls made
  // meanwhile queue on it and fail at their own deadlines if it fails too.
  auto ra = retry_after.find(node);
  const Clock::time_point when = ra == retry_after.end() ? Clock::now() : ra->second;
  const NodeConfig* n = opts.config.Find(node);
  if (!n) return nullptr;
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(n->host, ec);
  if (ec) return nullptr;
  auto c = std::make_shared<Connection>(this, tcp::socket(io), true, node);
  clients[node] = c;
  all.push_back(c);
  c->StartClient(tcp::endpoint(addr, n->port), when);
  return c;
}

void Transport::Impl::ClientFailed(uint32_t node, const std::shared_ptr<Connection>& c) {
  auto it = clients.find(node);
  if (it != clients.end() && it->second == c) clients.erase(it);
  auto& b = backoff[node];
  b = b == Clock::duration::zero() ? Clock::duration(opts.reconnect_min)
                                   : std::min<Clock::duration>(b * 2, opts.reconnect_max);
  retry_after[node] = Clock::now() + b;
}

void Transport::Impl::PeerIsUp(uint32_t node) {
  backoff.erase(node);
  retry_after.erase(node);
  auto it = clients.find(node);
  if (it != clients.end()) it->second->ConnectNow();
}

void Transport::Impl::Stop() {
  if (stopping.exchange(true)) return;  // stopped already (Stop, then the destructor)
  asio::post(io, [this] {
    boost::system::error_code ec;
    acceptor.close(ec);
    if (heartbeat) heartbeat->cancel();
    for (auto& w : all)
      if (auto c = w.lock()) c->Close("shutting down");
    all.clear();
    clients.clear();
  });
  fast.join();
  slow.join();
  io.stop();
  if (io_thread.joinable()) io_thread.join();
}

Transport::Transport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Transport::~Transport() { impl_->Stop(); }

void Transport::Stop() { impl_->Stop(); }

FaultSeam FaultSeam::FromEnvironment() {
  FaultSeam f;
  if (const char* d = getenv("CSHM_NET_DELAY_US")) f.delay_us = static_cast<uint32_t>(std::strtoul(d, nullptr, 10));
  if (const char* l = getenv("CSHM_NET_LOSS_PPM")) f.loss_ppm = static_cast<uint32_t>(std::strtoul(l, nullptr, 10));
  if (const char* d = getenv("CSHM_NET_DROP")) {
    unsigned type = 0, skip = 0, count = 0;
    if (std::sscanf(d, "%u:%u:%u", &type, &skip, &count) == 3) {
      f.drop_type = static_cast<uint16_t>(type);
      f.drop_skip = skip;
      f.drop_count = count;
    }
  }
  return f;
}

MessengerFactory TransportWithFaults(FaultSeam faults) {
  return [faults](MessengerOptions options) -> Result<std::unique_ptr<Messenger>> {
    TransportOptions t;
    static_cast<MessengerOptions&>(t) = std::move(options);
    t.faults = faults;
    CSHM_ASSIGN_OR_RETURN(std::unique_ptr<Transport> started, Transport::Start(std::move(t)));
    return std::unique_ptr<Messenger>(std::move(started));
  };
}

Result<std::unique_ptr<Messenger>> StartTransport(MessengerOptions options) {
  return TransportWithFaults(FaultSeam{})(std::move(options));
}

Result<std::unique_ptr<Transport>> Transport::Start(TransportOptions options) {
  if (options.faults.delay_us || options.faults.loss_ppm)
    spdlog::warn("network fault seam on: every frame delayed {} us, {} per million frames dropped",
                 options.faults.delay_us, options.faults.loss_ppm);
  auto impl = std::make_unique<Impl>(std::move(options));
  CSHM_RETURN_IF_ERROR(impl->Listen());
  impl->Accept();
  impl->heartbeat = std::make_unique<asio::steady_timer>(impl->io);
  asio::post(impl->io, [t = impl.get()] { t->Heartbeat(); });
  impl->Run();
  return std::unique_ptr<Transport>(new Transport(std::move(impl)));
}

void Transport::Defer(Request r) {
  if (impl_->stopping) return;
  r.slow = true;
  impl_->RunOnPool(std::move(r));
}

Result<std::string> Transport::Call(uint32_t node, uint16_t type, std::string payload,
                                    std::chrono::milliseconds timeout) {
  if (timeout.count() == 0) timeout = std::chrono::milliseconds(impl_->opts.config.request_timeout_ms);
  if (impl_->stopping) return Unavailable("shutting down");
  if (impl_->Silent(node)) {
    Impl* t = impl_.get();
    asio::post(t->io, [t, node] { (void)t->ClientFor(node); });
    return Unavailable("node " + std::to_string(node) + " has not answered since a request to it timed out");
  }
  auto p = std::make_shared<Pending>();
  auto fut = p->promise.get_future();
  const uint64_t id = impl_->next_id++;
  Impl* t = impl_.get();
  asio::post(t->io, [t, node, type, id, p, payload = std::move(payload)]() mutable {
    auto c = t->ClientFor(node);
    if (!c) return p->Finish(Unavailable("node " + std::to_string(node) + " is unreachable (retrying with backoff)"));
    c->Call(id, type, std::move(payload), p);
  });
  if (fut.wait_for(timeout) != std::future_status::ready) {
    t->TimedOutOn(node);
    p->Finish(TimedOut("node " + std::to_string(node) + " did not answer within " +
                       std::to_string(timeout.count()) + " ms"));
    asio::post(t->io, [t, node, id] {
      auto it = t->clients.find(node);
      if (it != t->clients.end()) it->second->Forget(id);
    });
  }
  return fut.get();
}

void Transport::CallAsync(uint32_t node, uint16_t type, std::string payload,
                          std::function<void(Result<std::string>)> done, std::chrono::milliseconds timeout) {
  if (timeout.count() == 0) timeout = std::chrono::milliseconds(impl_->opts.config.request_timeout_ms);
  auto p = std::make_shared<Pending>();
  p->callback = std::move(done);
  if (impl_->stopping) {
    Impl* t = impl_.get();
    asio::post(t->io, [p] { p->Finish(Unavailable("shutting down")); });
    return;
  }
  const uint64_t id = impl_->next_id++;
  Impl* t = impl_.get();
  if (t->Silent(node)) {
    asio::post(t->io, [t, node, p] {
      (void)t->ClientFor(node);
      p->Finish(Unavailable("node " + std::to_string(node) + " has not answered since a request to it timed out"));
    });
    return;
  }
  asio::post(t->io, [t, node, type, id, p, timeout, payload = std::move(payload)]() mutable {
    p->deadline = std::make_unique<asio::steady_timer>(t->io, timeout);
    p->deadline->async_wait([t, node, id, p, timeout](const boost::system::error_code& ec) {
      if (ec) return;  // answered first
      t->TimedOutOn(node);
      auto it = t->clients.find(node);
      if (it != t->clients.end()) it->second->Forget(id);
      p->Finish(TimedOut("node " + std::to_string(node) + " did not answer within " +
                         std::to_string(timeout.count()) + " ms"));
    });
    auto c = t->ClientFor(node);
    if (!c) return p->Finish(Unavailable("node " + std::to_string(node) + " is unreachable (retrying with backoff)"));
    c->Call(id, type, std::move(payload), p);
  });
}

void Transport::Send(uint32_t node, uint16_t type, std::string payload) {
  if (impl_->stopping) return;
  Impl* t = impl_.get();
  const uint64_t id = impl_->next_id++;
  asio::post(t->io, [t, node, type, id, payload = std::move(payload)]() mutable {
    if (auto c = t->ClientFor(node)) c->Call(id, type, std::move(payload), nullptr);
  });
}

void Transport::After(std::chrono::microseconds delay, std::function<void()> fn) {
  if (impl_->stopping) return;
  auto timer = std::make_shared<asio::steady_timer>(impl_->io, delay);
  timer->async_wait([timer, fn = std::move(fn)](const boost::system::error_code& ec) {
    if (!ec) fn();
  });
}

bool Transport::Forgotten(uint32_t node) const {
  MutexLock lock(&impl_->lease_mu);
  auto it = impl_->leases.find(node);
  return it == impl_->leases.end() || !it->second.have_heard || it->second.forgotten;
}

bool Transport::LeaseHeld(uint32_t node) const {
  MutexLock lock(&impl_->lease_mu);
  auto it = impl_->leases.find(node);
  return it != impl_->leases.end() && it->second.have_lease && !it->second.lease_lost;
}

std::vector<PeerState> Transport::Peers() const {
  std::vector<PeerState> out;
  const auto now = Clock::now();
  MutexLock lock(&impl_->lease_mu);
  for (const NodeConfig& n : impl_->opts.config.nodes) {
    if (n.id == impl_->opts.self) continue;
    PeerState p;
    p.node = n.id;
    p.forgotten = true;
    auto it = impl_->leases.find(n.id);
    if (it != impl_->leases.end()) {
      const auto& l = it->second;
      p.heard = l.have_heard;
      if (l.have_heard) p.since_heard = std::chrono::duration_cast<std::chrono::milliseconds>(now - l.heard);
      p.lease_held = l.have_lease && !l.lease_lost;
      p.forgotten = !l.have_heard || l.forgotten;
    }
    out.push_back(p);
  }
  return out;
}

uint32_t Transport::self() const { return impl_->opts.self; }
const ClusterConfig& Transport::config() const { return impl_->opts.config; }
uint64_t Transport::refused_peers() const { return impl_->refused; }
uint64_t Transport::bad_frames() const { return impl_->bad; }

}  // namespace cshm::net
