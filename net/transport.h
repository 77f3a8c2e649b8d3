// Transport: authenticated request/response messaging between cshm nodes over
// TCP (Boost.Asio).
//
// Each node listens on its configured address. For its own requests a node
// keeps one outgoing connection per peer, made on first use and remade (with
// backoff) after a failure; requests from a peer arrive on the connection that
// peer made. Every connection completes the handshake of net/auth.h before any
// other frame is accepted; a malformed or oversized frame, or a failed
// handshake, closes the connection and is logged.
//
// Every Call has a deadline. A peer that cannot be reached, or does not answer
// in time, is kUnavailable / kTimedOut, never a hang. After a request to a
// peer timed out, while it has said nothing for two heartbeats, further
// requests to it fail at once (kUnavailable) until something is heard from
// it again (a heartbeat, an answer, a new
// connection; each such failure also tries to connect): an operation that
// needs several requests fails within one deadline.
//
// Threads: one I/O thread runs all socket work (and `try_inline`, if set).
// Incoming requests run on one of two worker pools: "fast" for requests that never wait on the network, "slow"
// for those that may (so a slow request can never starve a fast one that it is
// itself waiting for). Call() blocks its caller and may be used from any thread
// except the I/O thread.
#pragma once

#include <chrono>
#include <vector>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "net/cluster_config.h"

namespace cshm::net {

// Replies to one request (once; later calls are ignored). Safe to call from
// any thread, also after the connection closed (then it does nothing).
class Responder {
 public:
  virtual ~Responder() = default;
  virtual void Reply(const Status& status, std::string payload) = 0;
};

struct Request {
  uint32_t from = 0;
  uint16_t type = 0;
  std::string payload;
  std::shared_ptr<Responder> responder;  // null for one-way messages
  bool slow = false;  // running on the slow pool (its type is slow, or it was Defer()red)
};

// The delay/loss seam (DESIGN.md "Running it"): not every kernel has tc netem,
// so the transport itself can emulate a slower or lossy LAN. Off by default;
// cshmfs sets it from CSHM_NET_DELAY_US (one-way, per frame) and
// CSHM_NET_LOSS_PPM (frames dropped per million on established connections).
// A test can also lose chosen requests: CSHM_NET_DROP=TYPE:SKIP:COUNT lets
// SKIP requests of message TYPE through, then drops the next COUNT.
struct FaultSeam {
  uint32_t delay_us = 0;
  uint32_t loss_ppm = 0;
  uint16_t drop_type = 0;  // 0: none
  uint32_t drop_skip = 0, drop_count = 0;
  static FaultSeam FromEnvironment();
};

struct TransportOptions {
  ClusterConfig config;
  uint32_t self = 0;
  uint64_t incarnation = 0;  // changes at every start of this node
  int fast_threads = 4;
  int slow_threads = 8;
  // Which request types may wait on the network (run on the slow pool).
  std::function<bool(uint16_t type)> is_slow;
  std::function<void(Request)> handler;
  // Optional: offered every request first, on the I/O thread, before a pool
  // gets it. Returns true if it answered the request; it must never block
  // (no locks that others hold long, no network, no waiting). A fault served
  // here saves two thread hand-offs, each a wake-up of a sleeping thread.
  std::function<bool(Request&)> try_inline;
  // A connection with a peer (either direction) completed its handshake, with
  // the peer's incarnation, or closed after it had. Called on the I/O thread:
  // must not block or Call().
  std::function<void(uint32_t node, uint64_t incarnation)> on_peer_up;
  std::function<void(uint32_t node)> on_peer_down;
  // Leases (DESIGN.md "Faults: leases, epochs and fencing"), on the I/O
  // thread, must not block. Every heartbeat is echoed; a peer that has not
  // echoed one sent within the last lease minus a margin (a tenth, plus a
  // check's lateness) has lost our lease: `on_lease_lost` gives up what it
  // granted us. A peer we have not heard from for a whole lease is
  // `on_peer_forgotten`: what we granted it goes. The first always comes
  // before the second on the other side, for the same silence.
  std::function<void(uint32_t node)> on_lease_lost;
  std::function<void(uint32_t node)> on_peer_forgotten;
  FaultSeam faults;
};

class Transport {
 public:
  // Binds the listening socket (kBusy if the port is taken) and starts the
  // I/O thread and the pools.
  static Result<std::unique_ptr<Transport>> Start(TransportOptions options);
  ~Transport();

  // Sends a request and waits for its response payload, at most `timeout`
  // (default: the config's request_timeout_ms). A non-ok response status comes
  // back as that Status.
  Result<std::string> Call(uint32_t node, uint16_t type, std::string payload,
                           std::chrono::milliseconds timeout = std::chrono::milliseconds(0));
  // The same without blocking: `done` gets the response or the error (at the
  // deadline at the latest), once, on the I/O thread, so it must not block or
  // Call(). Once the transport is stopping it may not be called at all.
  void CallAsync(uint32_t node, uint16_t type, std::string payload, std::function<void(Result<std::string>)> done,
                 std::chrono::milliseconds timeout = std::chrono::milliseconds(0));
  // Best effort, no response.
  void Send(uint32_t node, uint16_t type, std::string payload);
  // Hands a request the fast pool took to the slow pool (with slow = true):
  // the fast pool never waits, so a request that finds it would (a frozen
  // segment, a network call) goes there. Not at all once stopping (a
  // request's responder then answers nothing; its caller's deadline does).
  void Defer(Request r);
  // Runs `fn` on the I/O thread after `delay` (so it must not block or
  // Call()); not at all once the transport is stopping.
  void After(std::chrono::microseconds delay, std::function<void()> fn);

  // Whether `node` has been silent for a whole lease (or never spoke): what
  // it held from us is gone, and so is its cached copy of our pages.
  bool Forgotten(uint32_t node) const;
  // Whether our lease with `node` holds (it echoed a heartbeat recently).
  bool LeaseHeld(uint32_t node) const;

  // What this node knows of each peer it has a lease entry for (for status
  // and metrics): when it last heard from it, and the lease both ways.
  struct PeerState {
    uint32_t node = 0;
    bool heard = false;                        // ever, since this node started
    std::chrono::milliseconds since_heard{0};  // when heard
    bool lease_held = false;                   // our lease with it holds (it echoed recently)
    bool forgotten = false;                    // it was silent for a whole lease
  };
  std::vector<PeerState> Peers() const;

  uint32_t self() const;
  const ClusterConfig& config() const;

  // Test seams: counters of refused handshakes and bad frames.
  uint64_t refused_peers() const;
  uint64_t bad_frames() const;

  class Impl;

 private:
  explicit Transport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cshm::net
