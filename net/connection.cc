// One TCP connection of the transport (net/transport_impl.h), client or
// server side: the handshake of net/auth.h, frames in and out (with the
// delay/loss seam), the requests in flight on it, heartbeats and their echoes.
#include <netinet/in.h>
#include <sys/socket.h>

#include <spdlog/spdlog.h>

#include <array>
#include <cstring>

#include "common/log.h"
#include "net/auth.h"
#include "net/transport_impl.h"

namespace cshm::net {

void Connection::StartServer() {
  started_ = Clock::now();
  server_nonce_ = RandomNonce();
  Hello h{t_->opts.self, server_nonce_, t_->opts.incarnation};
  Write(FrameHeader{Kind::kOneWay, kHello, 0, 0, 0}, h.Encode());
  ArmHandshakeTimer();
  ReadHeader();
}

void Connection::StartClient(const tcp::endpoint& ep, Clock::time_point when) {
  if (when <= Clock::now()) return StartClient(ep);
  waiting_for_ = ep;
  timer_.expires_at(when);
  auto self = shared_from_this();
  timer_.async_wait([this, self](const boost::system::error_code& ec) {
    if (ec || closed_) return;
    ConnectNow();
  });
}

void Connection::ConnectNow() {
  if (!waiting_for_ || closed_) return;
  const tcp::endpoint ep = *waiting_for_;
  waiting_for_.reset();
  StartClient(ep);  // re-arms timer_ for the handshake: the backoff's wait is cancelled
}

void Connection::StartClient(const tcp::endpoint& ep) {
  started_ = Clock::now();
  ArmHandshakeTimer();
  auto self = shared_from_this();
  // From this node's own configured address: peers check that a node
  // connects from where the config says it is.
  boost::system::error_code bind_ec;
  if (const NodeConfig* me = t_->opts.config.Find(t_->opts.self)) {
    auto addr = asio::ip::make_address(me->host, bind_ec);
    if (!bind_ec && !addr.is_unspecified()) {
      socket_.open(ep.protocol(), bind_ec);
      // The port is still chosen at connect time, per destination: a bind
      // to port 0 would take one out of the ephemeral range for good.
      int one = 1;
      if (!bind_ec) setsockopt(socket_.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
      if (!bind_ec) socket_.bind(tcp::endpoint(addr, 0), bind_ec);
      if (bind_ec) return Close("cannot connect from " + me->host + ": " + bind_ec.message());
    }
  }
  socket_.async_connect(ep, [this, self](const boost::system::error_code& ec) {
    if (ec) return Close("connect: " + ec.message());
    socket_.set_option(tcp::no_delay(true));
    ReadHeader();
  });
}

void Connection::Call(uint64_t id, uint16_t type, std::string payload, std::shared_ptr<Pending> p) {
  const Kind kind = p ? Kind::kRequest : Kind::kOneWay;
  if (p) pending_[id] = std::move(p);
  OutFrame frame = MakeFrame(FrameHeader{kind, type, id, 0, 0}, std::move(payload));
  if (ready_) WriteRaw(std::move(frame));
  else queued_.push_back(std::move(frame));
}

void Connection::Respond(uint64_t id, uint16_t type, const Status& st, std::string payload) {
  if (closed_) return;
  Write(FrameHeader{Kind::kResponse, type, id, StatusToWire(st), 0},
        st.ok() ? std::move(payload) : st.message());
}

void Connection::Close(const std::string& why) {
  if (closed_) return;
  closed_ = true;
  boost::system::error_code ignored;
  timer_.cancel();
  delay_timer_.cancel();
  socket_.close(ignored);
  if (!t_->stopping) spdlog::debug("connection {} node {} closed: {}", client_ ? "to" : "from", peer_, why);
  // Requests in flight fail now; so do the next ones, until the peer is
  // heard again (see Silent): a new connection to a cut-off peer would only
  // wait for the next request's whole deadline.
  if ((!pending_.empty() || silent_) && peer_ != UINT32_MAX && !t_->stopping) t_->TimedOutOn(peer_);
  for (auto& [id, p] : pending_) p->Finish(Unavailable("node " + std::to_string(peer_) + ": " + why));
  pending_.clear();
  if (client_) t_->ClientFailed(peer_, shared_from_this());
  if (ready_ && t_->opts.on_peer_down && !t_->stopping) t_->opts.on_peer_down(peer_);
}

asio::ip::address Connection::remote_address() const {
  boost::system::error_code ec;
  auto ep = socket_.remote_endpoint(ec);
  return ec ? asio::ip::address() : ep.address();
}

void Connection::Tick(Clock::duration lease, bool beat) {
  if (!ready_ || closed_) return;
  if (Clock::now() - last_rx_ > lease) {
    silent_ = true;
    return Close("nothing heard for the lease; assuming the node is cut off");
  }
  if (!beat) return;
  const auto sent = static_cast<uint64_t>(Clock::now().time_since_epoch().count());
  std::string payload(reinterpret_cast<const char*>(&sent), sizeof(sent));
  Write(FrameHeader{Kind::kOneWay, kHeartbeat, 0, 0, 0}, std::move(payload));
}

void Connection::ArmHandshakeTimer() {
  timer_.expires_after(kHandshakeTimeout);
  auto self = shared_from_this();
  timer_.async_wait([this, self](const boost::system::error_code& ec) {
    if (!ec && !ready_) Close("handshake timed out");
  });
}

Connection::OutFrame Connection::MakeFrame(const FrameHeader& h, std::string payload) {
  OutFrame f{Clock::time_point{}, std::string(), std::move(payload), h.type, h.kind == Kind::kRequest};
  EncodeHeader(h, static_cast<uint32_t>(f.payload.size()), &f.head);
  return f;
}

void Connection::WriteRaw(OutFrame frame) {
  const FaultSeam& f = t_->opts.faults;
  // The loss seam drops whole frames of an established connection (the
  // request then misses its deadline); the handshake is never dropped.
  if (ready_ && f.loss_ppm > 0 && t_->Chance(f.loss_ppm)) return;
  if (f.drop_type != 0 && frame.type == f.drop_type && frame.request) {
    const uint32_t n = t_->dropped_seen++;
    if (n >= f.drop_skip && n - f.drop_skip < f.drop_count) {
      spdlog::warn("CSHM_NET_DROP: request {} of type {} dropped, as asked", n, f.drop_type);
      return;
    }
  }
  frame.at = Clock::now() + std::chrono::microseconds(f.delay_us);
  out_.push_back(std::move(frame));
  if (out_.size() == 1) WriteNext();
}

void Connection::WriteNext() {
  auto self = shared_from_this();
  if (out_.front().at > Clock::now()) {  // the delay seam: a slower LAN
    delay_timer_.expires_at(out_.front().at);
    delay_timer_.async_wait([this, self](const boost::system::error_code& ec) {
      if (!ec && !closed_) WriteNext();
    });
    return;
  }
  const OutFrame& f = out_.front();
  const std::array<asio::const_buffer, 2> bufs{asio::buffer(f.head), asio::buffer(f.payload)};
  asio::async_write(socket_, bufs,
                    [this, self](const boost::system::error_code& ec, size_t) {
                      if (ec) return Close("write: " + ec.message());
                      out_.pop_front();
                      if (!out_.empty()) WriteNext();
                    });
}

void Connection::ReadHeader() {
  auto self = shared_from_this();
  asio::async_read(socket_, asio::buffer(header_buf_, kHeaderSize),
                   [this, self](const boost::system::error_code& ec, size_t) {
                     if (ec) return Close(ec == asio::error::eof ? "peer closed" : "read: " + ec.message());
                     std::string why;
                     FrameHeader h;
                     bool good =
                         DecodeHeader(std::string_view(header_buf_, kHeaderSize), &h, &why) == DecodeResult::kGood;
                     if (good && !ready_ && h.length > kMaxHandshakePayload) {
                       good = false;
                       why = "a frame of " + std::to_string(h.length) + " bytes before authentication";
                     }
                     if (!good) {
                       t_->bad++;
                       static RateLimit limit(std::chrono::seconds(10));
                       if (uint64_t more = 0; limit.Allow(&more))
                         spdlog::warn("bad frame {} node {}: {}; closing the connection ({} more since the last such line)",
                                      client_ ? "from" : "on connection from",
                                      peer_ == UINT32_MAX ? std::string("(unauthenticated)") : std::to_string(peer_), why,
                                      more);
                       return Close("bad frame");
                     }
                     ReadPayload(h);
                   });
}

void Connection::ReadPayload(const FrameHeader& h) {
  auto self = shared_from_this();
  payload_.resize(h.length);
  asio::async_read(socket_, asio::buffer(payload_), [this, self, h](const boost::system::error_code& ec, size_t) {
    if (ec) return Close("read: " + ec.message());
    last_rx_ = Clock::now();
    Frame f{h, std::move(payload_)};
    payload_.clear();
    if (!ready_) {
      if (!Handshake(f)) return;
    } else {
      t_->Heard(peer_);
      Handle(std::move(f));
    }
    if (!closed_) ReadHeader();
  });
}

bool Connection::Handshake(const Frame& f) {
  const ClusterConfig& cfg = t_->opts.config;
  if (client_) {
    if (f.header.type == kHello) {
      auto h = Hello::Decode(f.payload);
      if (!h.ok() || h->node != peer_) return Refuse("bad hello from node " + std::to_string(peer_));
      server_nonce_ = h->nonce;
      peer_incarnation_ = h->incarnation;
      client_nonce_ = RandomNonce();
      AuthRequest a{t_->opts.self, client_nonce_, t_->opts.incarnation,
                    ClientProof(cfg.secret, server_nonce_, client_nonce_, t_->opts.self, peer_)};
      Write(FrameHeader{Kind::kOneWay, kAuth, 0, 0, 0}, a.Encode());
      return true;
    }
    if (f.header.type == kWelcome && !server_nonce_.empty()) {
      if (!ProofEquals(f.payload, ServerProof(cfg.secret, server_nonce_, client_nonce_, t_->opts.self, peer_)))
        return Refuse("node " + std::to_string(peer_) + " could not prove the cluster secret");
      ready_ = true;
      timer_.cancel();
      t_->backoff.erase(peer_);
      t_->retry_after.erase(peer_);
      // The peer answered what we sent after started_: a lease from then.
      t_->Heard(peer_);
      t_->Renewed(peer_, started_);
      for (auto& q : queued_) WriteRaw(std::move(q));
      queued_.clear();
      if (t_->opts.on_peer_up) t_->opts.on_peer_up(peer_, peer_incarnation_);
      return true;
    }
    return Refuse("unexpected frame during the handshake with node " + std::to_string(peer_));
  }
  // Server side: the only acceptable frame is the client's Auth.
  if (f.header.type != kAuth) return Refuse("frame before authentication");
  auto a = AuthRequest::Decode(f.payload);
  if (!a.ok()) return Refuse("malformed authentication");
  if (a->node == t_->opts.self || !cfg.Find(a->node))
    return Refuse("peer claims node id " + std::to_string(a->node) + ", which is not another node of the config");
  // Every node connects from its configured address (StartClient binds
  // it): a holder of the secret elsewhere cannot speak for that node.
  const std::string& host = cfg.Find(a->node)->host;
  boost::system::error_code ec;
  const auto want = asio::ip::make_address(host, ec);
  const auto from = socket_.remote_endpoint(ec).address();
  if (!ec && !want.is_unspecified() && from != want)
    return Refuse("peer at " + from.to_string() + " claims node " + std::to_string(a->node) + ", whose address is " +
                  host + " in the config");
  if (!ProofEquals(a->proof, ClientProof(cfg.secret, server_nonce_, a->nonce, a->node, t_->opts.self)))
    return Refuse("peer claiming node " + std::to_string(a->node) + " does not know the cluster secret");
  peer_ = a->node;
  ready_ = true;
  timer_.cancel();
  t_->PeerIsUp(peer_);
  Write(FrameHeader{Kind::kResponse, kWelcome, 0, 0, 0},
        ServerProof(cfg.secret, server_nonce_, a->nonce, peer_, t_->opts.self));
  spdlog::info("node {} connected (incarnation {:x})", peer_, a->incarnation);
  t_->Heard(peer_);
  t_->Renewed(peer_, started_);  // it answered our hello
  if (t_->opts.on_peer_up) t_->opts.on_peer_up(peer_, a->incarnation);
  return true;
}

bool Connection::Refuse(const std::string& why) {
  t_->refused++;
  boost::system::error_code ec;
  auto ep = socket_.remote_endpoint(ec);
  static RateLimit limit(std::chrono::seconds(10));
  if (uint64_t more = 0; limit.Allow(&more))
    spdlog::warn("refused connection {} {}: {} ({} more refused since the last such line)", client_ ? "to" : "from",
                 ec ? std::string("?") : ep.address().to_string() + ":" + std::to_string(ep.port()), why, more);
  Close(why);
  return false;
}

void Connection::Handle(Frame f) {
  if (f.header.type == kHeartbeat) {
    // Proof of life (last_rx_ is set); the echo renews the peer's lease with us.
    if (f.payload.size() == sizeof(uint64_t)) Write(FrameHeader{Kind::kOneWay, kHeartbeatEcho, 0, 0, 0}, f.payload);
    return;
  }
  if (f.header.type == kHeartbeatEcho) {
    uint64_t sent = 0;
    if (f.payload.size() != sizeof(sent)) return;
    std::memcpy(&sent, f.payload.data(), sizeof(sent));
    const Clock::time_point at{Clock::duration(static_cast<Clock::rep>(sent))};
    if (at <= Clock::now()) t_->Renewed(peer_, at);  // our own clock's value, echoed
    return;
  }
  if (f.header.kind == Kind::kResponse) {
    auto it = pending_.find(f.header.request_id);
    if (it == pending_.end()) return;  // answered after its deadline
    auto p = std::move(it->second);
    pending_.erase(it);
    if (f.header.status == 0) {
      p->Finish(std::move(f.payload));
    } else {
      p->Finish(StatusFromWire(f.header.status, "node " + std::to_string(peer_) + ": " + f.payload));
    }
    return;
  }
  if (client_) return;  // peers send requests on their own connections
  t_->Dispatch(shared_from_this(), std::move(f));
}

}  // namespace cshm::net
