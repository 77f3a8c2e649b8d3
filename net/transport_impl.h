// The Asio transport's insides, shared by net/transport.cc (the node's end:
// listening, heartbeats and leases, dispatch to the pools, the Messenger
// calls) and net/connection.cc (one TCP connection: handshake, frames,
// requests in flight). Not for use outside net/.
#pragma once

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

#include "common/mutex.h"
#include "net/frame_codec.h"
#include "net/transport.h"

namespace cshm::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

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
    MutexLock lock(&lease_mu);
    auto it = leases.find(node);
    if (it == leases.end() || !it->second.have_timed_out) return false;
    const PeerLease& l = it->second;
    if (!l.have_heard) return true;
    return l.heard < l.timed_out && Clock::now() - l.heard > 2 * std::chrono::milliseconds(opts.config.heartbeat_ms);
  }
  void TimedOutOn(uint32_t node) {
    MutexLock lock(&lease_mu);
    PeerLease& l = leases[node];
    l.timed_out = Clock::now();
    l.have_timed_out = true;
  }
  mutable Mutex lease_mu;
  std::map<uint32_t, PeerLease> leases GUARDED_BY(lease_mu);
};

// One TCP connection, client or server side. All members are touched on the
// I/O thread only; Responders post to it.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Transport::Impl* t, tcp::socket s, bool client, uint32_t peer)
      : t_(t), socket_(std::move(s)), timer_(t->io), client_(client), peer_(peer) {}

  void StartServer();

  // Connects at `when` (after a failed attempt's backoff); calls queue meanwhile.
  void StartClient(const tcp::endpoint& ep, Clock::time_point when);
  // A connection waiting out its backoff connects at once.
  void ConnectNow();

  void StartClient(const tcp::endpoint& ep);

  // Queues a request (client side); sent once the handshake is done.
  void Call(uint64_t id, uint16_t type, std::string payload, std::shared_ptr<Pending> p);

  void Forget(uint64_t id) { pending_.erase(id); }

  void Respond(uint64_t id, uint16_t type, const Status& st, std::string payload);

  void Close(const std::string& why);

  bool closed() const { return closed_; }
  bool client() const { return client_; }
  bool authenticated() const { return ready_; }
  asio::ip::address remote_address() const;

  // Called every heartbeat interval: say we are alive, and give up on a peer
  // that has said nothing for a whole lease (a partition, a hung host): its
  // calls fail now instead of at TCP's own timeouts, and on_peer_down releases
  // what it held (its locks, its copyset entries).
  void Tick(Clock::duration lease, bool beat);

 private:
  void ArmHandshakeTimer();

  // A frame to send: its header, and the payload as the caller gave it (a
  // fetch reply is a megabyte; it is not copied into a frame).
  struct OutFrame {
    Clock::time_point at;
    std::string head, payload;
    uint16_t type = 0;     // for the drop seam
    bool request = false;
  };

  static OutFrame MakeFrame(const FrameHeader& h, std::string payload);

  void Write(const FrameHeader& h, std::string payload) { WriteRaw(MakeFrame(h, std::move(payload))); }

  void WriteRaw(OutFrame frame);

  void WriteNext();

  void ReadHeader();

  void ReadPayload(const FrameHeader& h);

  // Returns false after closing the connection.
  bool Handshake(const Frame& f);

  bool Refuse(const std::string& why);

  void Handle(Frame f);

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

}  // namespace cshm::net
