#include "net/transport.h"

#include <spdlog/spdlog.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <atomic>
#include <boost/asio.hpp>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>

#include "net/auth.h"
#include "common/log.h"
#include "net/frame_codec.h"

namespace cshm::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

// Handshake frame types; application types start at 16.
constexpr uint16_t kHello = 1;
constexpr uint16_t kAuth = 2;
constexpr uint16_t kWelcome = 3;
constexpr uint16_t kHeartbeat = 4;  // one-way, every heartbeat interval on every connection: {u64 sent at}
constexpr uint16_t kHeartbeatEcho = 5;  // one-way answer to a heartbeat, with its payload: renews the lease
constexpr auto kHandshakeTimeout = std::chrono::seconds(5);
// Before authentication a peer is anybody: it may send only handshake-sized
// frames, and only so many such connections are kept open, in all and per
// source address (a thousand hostile connections cost a few MB, not GBs).
constexpr uint32_t kMaxHandshakePayload = 1024;
constexpr size_t kMaxUnauthenticated = 64;
constexpr size_t kMaxUnauthenticatedPerSource = 8;
// accept() out of descriptors: wait this long before the next try, instead
// of spinning on the error.
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);

// One request awaiting its response: a blocked Call's promise, or a
// CallAsync's callback (then every Finish runs on the I/O thread, and the
// deadline timer is cancelled by the first).
struct Pending {
  std::promise<Result<std::string>> promise;
  std::function<void(Result<std::string>)> callback;
  std::unique_ptr<boost::asio::steady_timer> deadline;
  std::atomic<bool> done{false};
  void Finish(Result<std::string> r) {
    if (done.exchange(true)) return;
    if (!callback) return promise.set_value(std::move(r));
    if (deadline) deadline->cancel();
    callback(std::move(r));
  }
};

}  // namespace

class Connection;

class Transport::Impl {
 public:
  explicit Impl(TransportOptions o)
      : opts(std::move(o)),
        acceptor(io),
        fast(static_cast<size_t>(opts.fast_threads)),
        slow(static_cast<size_t>(opts.slow_threads)) {}

  Status Listen();
  void Run() {
    io_thread = std::thread([this] {
      auto guard = asio::make_work_guard(io);
      // An exception must not end the I/O thread (and the node with it): log
      // it once and keep serving; the connection it came from is closed by
      // its own error path or its deadlines.
      while (!io.stopped()) {
        try {
          io.run();
        } catch (const std::exception& e) {
          spdlog::error("transport: internal error in an I/O handler: {}", e.what());
        } catch (...) {
          spdlog::error("transport: internal error in an I/O handler");
        }
      }
    });
  }
  void Stop();
  void Accept();
  // I/O thread: whether a new connection may start its handshake (bounded in
  // all and per source address).
  bool AdmitUnauthenticated(const tcp::socket& s);
  void Heartbeat();  // I/O thread: every tick, Tick every connection and check the leases
  // I/O thread: a frame from `peer` arrived; it echoed a heartbeat sent at `sent`.
  void Heard(uint32_t peer);
  void Renewed(uint32_t peer, Clock::time_point sent);
  Clock::duration TickPeriod() const {
    return std::max<Clock::duration>(std::chrono::milliseconds(10), std::chrono::milliseconds(opts.config.heartbeat_ms) / 4);
  }
  void Dispatch(std::shared_ptr<Connection> c, Frame f);
  void RunOnPool(Request r);  // on the pool r.slow names
  std::shared_ptr<Connection> ClientFor(uint32_t node);  // I/O thread only
  void ClientFailed(uint32_t node, const std::shared_ptr<Connection>& c);
  // I/O thread: `node` connected to us, so it is up: our own connection to
  // it, if it waits out a backoff, is made now, and the backoff starts over.
  // (Seen: one-way messages queued for a restarted peer waited up to the
  // whole backoff, 2 s, after it was back; the lock grace with them.)
  void PeerIsUp(uint32_t node);

  TransportOptions opts;
  asio::io_context io;
  tcp::acceptor acceptor;
  asio::thread_pool fast, slow;
  std::thread io_thread;
  std::atomic<uint64_t> next_id{1};
  std::atomic<bool> stopping{false};
  std::atomic<uint64_t> refused{0}, bad{0};
  std::mt19937_64 rng{std::random_device{}()};  // I/O thread only
  bool Chance(uint32_t ppm) { return rng() % 1000000 < ppm; }
  uint32_t dropped_seen = 0;  // I/O thread only: requests of the drop seam's type so far

  // I/O thread only.
  std::map<uint32_t, std::shared_ptr<Connection>> clients;
  std::map<uint32_t, Clock::time_point> retry_after;
  std::map<uint32_t, Clock::duration> backoff;
  std::vector<std::weak_ptr<Connection>> all;
  std::unique_ptr<asio::steady_timer> heartbeat;
  Clock::time_point last_heartbeat{};  // I/O thread only

  // Both ends of every lease with a peer (DESIGN.md "Faults"): when we last
  // heard from it (its grants from us end a lease after that), and the send
  // time of the latest heartbeat it echoed (our grants from it end a lease
  // minus the margin after that, by our clock: before it can forget them).
  struct PeerLease {
    Clock::time_point heard{}, renewed{};
    bool have_heard = false, have_lease = false;
    bool forgotten = false, lease_lost = false;
    // A request to the peer timed out at `timed_out` (and nothing was heard
    // from it since, if heard < timed_out): the next ones fail at once.
    Clock::time_point timed_out{};
    bool have_timed_out = false;
  };
  // Whether calls to `node` fail at once: one timed out and nothing was
  // heard from it since, for two heartbeats now (an operation that needs several requests then
  // fails within one deadline, not one per request). A connection attempt
  // is kicked off, so that an answer ends it.
  // A live peer is heard at least every heartbeat, however slow one of its
  // answers is: only a peer silent for two heartbeats counts.
  bool Silent(uint32_t node) {
    std::lock_guard<std::mutex> lock(lease_mu);
    auto it = leases.find(node);
    if (it == leases.end() || !it->second.have_timed_out) return false;
    const PeerLease& l = it->second;
    if (!l.have_heard) return true;
    return l.heard < l.timed_out && Clock::now() - l.heard > 2 * std::chrono::milliseconds(opts.config.heartbeat_ms);
  }
  void TimedOutOn(uint32_t node) {
    std::lock_guard<std::mutex> lock(lease_mu);
    PeerLease& l = leases[node];
    l.timed_out = Clock::now();
    l.have_timed_out = true;
  }
  mutable std::mutex lease_mu;
  std::map<uint32_t, PeerLease> leases;  // GUARDED_BY(lease_mu)
};

// One TCP connection, client or server side. All members are touched on the
// I/O thread only; Responders post to it.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Transport::Impl* t, tcp::socket s, bool client, uint32_t peer)
      : t_(t), socket_(std::move(s)), timer_(t->io), client_(client), peer_(peer) {}

  void StartServer() {
    started_ = Clock::now();
    server_nonce_ = RandomNonce();
    Hello h{t_->opts.self, server_nonce_, t_->opts.incarnation};
    Write(FrameHeader{Kind::kOneWay, kHello, 0, 0, 0}, h.Encode());
    ArmHandshakeTimer();
    ReadHeader();
  }

  // Connects at `when` (after a failed attempt's backoff); calls queue meanwhile.
  void StartClient(const tcp::endpoint& ep, Clock::time_point when) {
    if (when <= Clock::now()) return StartClient(ep);
    waiting_for_ = ep;
    timer_.expires_at(when);
    auto self = shared_from_this();
    timer_.async_wait([this, self](const boost::system::error_code& ec) {
      if (ec || closed_) return;
      ConnectNow();
    });
  }
  // A connection waiting out its backoff connects at once.
  void ConnectNow() {
    if (!waiting_for_ || closed_) return;
    const tcp::endpoint ep = *waiting_for_;
    waiting_for_.reset();
    StartClient(ep);  // re-arms timer_ for the handshake: the backoff's wait is cancelled
  }

  void StartClient(const tcp::endpoint& ep) {
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

  // Queues a request (client side); sent once the handshake is done.
  void Call(uint64_t id, uint16_t type, std::string payload, std::shared_ptr<Pending> p) {
    const Kind kind = p ? Kind::kRequest : Kind::kOneWay;
    if (p) pending_[id] = std::move(p);
    OutFrame frame = MakeFrame(FrameHeader{kind, type, id, 0, 0}, std::move(payload));
    if (ready_) WriteRaw(std::move(frame));
    else queued_.push_back(std::move(frame));
  }

  void Forget(uint64_t id) { pending_.erase(id); }

  void Respond(uint64_t id, uint16_t type, const Status& st, std::string payload) {
    if (closed_) return;
    Write(FrameHeader{Kind::kResponse, type, id, StatusToWire(st), 0},
          st.ok() ? std::move(payload) : st.message());
  }

  void Close(const std::string& why) {
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

  bool closed() const { return closed_; }
  bool client() const { return client_; }
  bool authenticated() const { return ready_; }
  asio::ip::address remote_address() const {
    boost::system::error_code ec;
    auto ep = socket_.remote_endpoint(ec);
    return ec ? asio::ip::address() : ep.address();
  }

  // Called every heartbeat interval: say we are alive, and give up on a peer
  // that has said nothing for a whole lease (a partition, a hung host): its
  // calls fail now instead of at TCP's own timeouts, and on_peer_down releases
  // what it held (its locks, its copyset entries).
  void Tick(Clock::duration lease, bool beat) {
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

 private:
  void ArmHandshakeTimer() {
    timer_.expires_after(kHandshakeTimeout);
    auto self = shared_from_this();
    timer_.async_wait([this, self](const boost::system::error_code& ec) {
      if (!ec && !ready_) Close("handshake timed out");
    });
  }

  // A frame to send: its header, and the payload as the caller gave it (a
  // fetch reply is a megabyte; it is not copied into a frame).
  struct OutFrame {
    Clock::time_point at;
    std::string head, payload;
    uint16_t type = 0;     // for the drop seam
    bool request = false;
  };

  static OutFrame MakeFrame(const FrameHeader& h, std::string payload) {
    OutFrame f{Clock::time_point{}, std::string(), std::move(payload), h.type, h.kind == Kind::kRequest};
    EncodeHeader(h, static_cast<uint32_t>(f.payload.size()), &f.head);
    return f;
  }

  void Write(const FrameHeader& h, std::string payload) { WriteRaw(MakeFrame(h, std::move(payload))); }

  void WriteRaw(OutFrame frame) {
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

  void WriteNext() {
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

  void ReadHeader() {
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

  void ReadPayload(const FrameHeader& h) {
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

  // Returns false after closing the connection.
  bool Handshake(const Frame& f) {
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

  bool Refuse(const std::string& why) {
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

  void Handle(Frame f) {
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

 public:
  uint32_t peer() const { return peer_; }

 private:
  Transport::Impl* t_;
  tcp::socket socket_;
  asio::steady_timer timer_;
  const bool client_;
  uint32_t peer_;  // UINT32_MAX until a server connection is authenticated
  bool ready_ = false;
  bool closed_ = false;
  bool silent_ = false;  // closed because the peer said nothing for a lease
  std::optional<tcp::endpoint> waiting_for_;  // client: connects there when its backoff ends
  std::string server_nonce_, client_nonce_;
  uint64_t peer_incarnation_ = 0;
  Clock::time_point started_ = Clock::now();  // before this side sent anything
  Clock::time_point last_rx_ = Clock::now();
  char header_buf_[kHeaderSize];
  std::string payload_;
  std::deque<OutFrame> out_;
  asio::steady_timer delay_timer_{t_->io};
  std::vector<OutFrame> queued_;
  std::unordered_map<uint64_t, std::shared_ptr<Pending>> pending_;
};

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
    std::lock_guard<std::mutex> lock(lease_mu);
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
  std::lock_guard<std::mutex> lock(lease_mu);
  PeerLease& l = leases[peer];
  l.heard = Clock::now();
  l.have_heard = true;
  l.forgotten = false;
}

void Transport::Impl::Renewed(uint32_t peer, Clock::time_point sent) {
  std::lock_guard<std::mutex> lock(lease_mu);
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
  stopping = true;
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
  std::lock_guard<std::mutex> lock(impl_->lease_mu);
  auto it = impl_->leases.find(node);
  return it == impl_->leases.end() || !it->second.have_heard || it->second.forgotten;
}

bool Transport::LeaseHeld(uint32_t node) const {
  std::lock_guard<std::mutex> lock(impl_->lease_mu);
  auto it = impl_->leases.find(node);
  return it != impl_->leases.end() && it->second.have_lease && !it->second.lease_lost;
}

std::vector<PeerState> Transport::Peers() const {
  std::vector<PeerState> out;
  const auto now = Clock::now();
  std::lock_guard<std::mutex> lock(impl_->lease_mu);
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
