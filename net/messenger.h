// Messenger: what a node needs of the network, as an interface, so that the
// same cluster core runs over TCP (net::Transport) and over the simulated
// network of the component tests (tests/sim/sim_network.h), where links are
// delayed, lossy, partitioned or reordered and nodes crash and restart
// (STYLE.md, "Seams for testing").
//
// The contract, which every implementation keeps:
// - Every Call has a deadline: a peer that cannot be reached, or does not
//   answer in time, is kUnavailable / kTimedOut, never a hang.
// - Requests run on one of two pools: "fast" for types that never wait on the
//   network, "slow" for those that may (MessengerOptions::is_slow); a fast
//   request that finds it would wait is Defer()red to the slow pool.
// - `try_inline` is offered every request first, on the messenger's own
//   thread, which must never block; so are the peer callbacks and every
//   CallAsync answer and After timer.
// - Leases: `on_lease_lost` comes when a peer has not echoed our heartbeats
//   for a lease (minus a margin); `on_peer_forgotten` when we have not heard
//   from it for a whole lease. For the same silence the first always comes
//   before the second on the other side.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

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

struct MessengerOptions {
  ClusterConfig config;
  uint32_t self = 0;
  uint64_t incarnation = 0;  // changes at every start of this node
  int fast_threads = 4;
  int slow_threads = 8;
  // Which request types may wait on the network (run on the slow pool).
  std::function<bool(uint16_t type)> is_slow;
  std::function<void(Request)> handler;
  // Optional: offered every request first, on the messenger's thread, before
  // a pool gets it. Returns true if it answered the request; it must never
  // block (no locks that others hold long, no network, no waiting). A fault
  // served here saves two thread hand-offs, each a wake-up of a sleeping
  // thread.
  std::function<bool(Request&)> try_inline;
  // A connection with a peer (either direction) completed its handshake, with
  // the peer's incarnation, or closed after it had. On the messenger's
  // thread: must not block or Call().
  std::function<void(uint32_t node, uint64_t incarnation)> on_peer_up;
  std::function<void(uint32_t node)> on_peer_down;
  // Leases (DESIGN.md "Faults: leases, epochs and fencing"), on the
  // messenger's thread, must not block: see the contract above.
  std::function<void(uint32_t node)> on_lease_lost;
  std::function<void(uint32_t node)> on_peer_forgotten;
};

// What a node knows of each peer it has a lease entry for (for status and
// metrics): when it last heard from it, and the lease both ways.
struct PeerState {
  uint32_t node = 0;
  bool heard = false;                        // ever, since this node started
  std::chrono::milliseconds since_heard{0};  // when heard
  bool lease_held = false;                   // our lease with it holds (it echoed recently)
  bool forgotten = false;                    // it was silent for a whole lease
};

class Messenger {
 public:
  // The destructor stops it too (Stop).
  virtual ~Messenger() = default;
  // Ends the messenger: once this returns, none of its handlers, callbacks
  // or timers runs, and its pools are joined; calls made meanwhile, and
  // after, fail. Its owner calls it before letting go of the messenger, so
  // that a handler still running while the pools are joined finds the
  // messenger where it was (not a pointer being reset). Idempotent.
  virtual void Stop() = 0;

  // Sends a request and waits for its response payload, at most `timeout`
  // (0: the config's request_timeout_ms). A non-ok response status comes back
  // as that Status. Never on the messenger's own thread.
  virtual Result<std::string> Call(uint32_t node, uint16_t type, std::string payload,
                                   std::chrono::milliseconds timeout) = 0;
  Result<std::string> Call(uint32_t node, uint16_t type, std::string payload) {
    return Call(node, type, std::move(payload), std::chrono::milliseconds(0));
  }
  // The same without blocking: `done` gets the response or the error (at the
  // deadline at the latest), once, on the messenger's thread, so it must not
  // block or Call(). Once the messenger is stopping it may not be called at all.
  virtual void CallAsync(uint32_t node, uint16_t type, std::string payload,
                         std::function<void(Result<std::string>)> done, std::chrono::milliseconds timeout) = 0;
  void CallAsync(uint32_t node, uint16_t type, std::string payload, std::function<void(Result<std::string>)> done) {
    CallAsync(node, type, std::move(payload), std::move(done), std::chrono::milliseconds(0));
  }
  // Best effort, no response.
  virtual void Send(uint32_t node, uint16_t type, std::string payload) = 0;
  // Hands a request the fast pool took to the slow pool (with slow = true).
  // Not at all once stopping (its responder then answers nothing; its
  // caller's deadline does).
  virtual void Defer(Request r) = 0;
  // Runs `fn` on the messenger's thread after `delay` (so it must not block
  // or Call()); not at all once the messenger is stopping.
  virtual void After(std::chrono::microseconds delay, std::function<void()> fn) = 0;

  // Whether `node` has been silent for a whole lease (or never spoke): what
  // it held from us is gone, and so is its cached copy of our pages.
  virtual bool Forgotten(uint32_t node) const = 0;
  // Whether our lease with `node` holds (it echoed a heartbeat recently).
  virtual bool LeaseHeld(uint32_t node) const = 0;
  virtual std::vector<PeerState> Peers() const = 0;

  // Connections refused (a peer could not prove the secret) and malformed
  // frames received: what a real network has, 0 elsewhere.
  virtual uint64_t refused_peers() const { return 0; }
  virtual uint64_t bad_frames() const { return 0; }
};

// Starts a node's messenger (the Asio transport unless a test gives another).
using MessengerFactory = std::function<Result<std::unique_ptr<Messenger>>(MessengerOptions)>;

}  // namespace cshm::net
