// Transport: authenticated request/response messaging between cshm nodes over
// TCP (Boost.Asio).
//
// Each node listens on its configured address. For its own requests a node
// keeps one outgoing connection per peer, made on first use and remade (with
// backoff, which ends when the peer connects to us) after a failure; requests
// from a peer arrive on the connection that peer made. Every connection completes the handshake of net/auth.h before any
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
#include "net/messenger.h"

namespace cshm::net {

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

// The Asio transport's options: a messenger's, the delay/loss seam, and
// the backoff between attempts to connect to a peer (doubling from min to
// max after each failed one; a peer that connects to us ends it).
struct TransportOptions : MessengerOptions {
  FaultSeam faults;
  std::chrono::milliseconds reconnect_min{50}, reconnect_max{2000};
};

// The messenger factory for the real network, without faults; and one with
// the fault seam `faults` (cshmfs gives FaultSeam::FromEnvironment, which
// only its main calls).
Result<std::unique_ptr<Messenger>> StartTransport(MessengerOptions options);
MessengerFactory TransportWithFaults(FaultSeam faults);

class Transport final : public Messenger {
 public:
  // Binds the listening socket (kBusy if the port is taken) and starts the
  // I/O thread and the pools.
  static Result<std::unique_ptr<Transport>> Start(TransportOptions options);
  ~Transport();
  void Stop() override;

  // The Messenger (net/messenger.h), over TCP. Call() may be used from any
  // thread except the I/O thread. A request the fast pool Defer()s is one
  // that found it would wait (a frozen segment, a network call).
  using Messenger::Call;
  using Messenger::CallAsync;
  Result<std::string> Call(uint32_t node, uint16_t type, std::string payload,
                           std::chrono::milliseconds timeout) override;
  void CallAsync(uint32_t node, uint16_t type, std::string payload, std::function<void(Result<std::string>)> done,
                 std::chrono::milliseconds timeout) override;
  void Send(uint32_t node, uint16_t type, std::string payload) override;
  void Defer(Request r) override;
  void After(std::chrono::microseconds delay, std::function<void()> fn) override;
  bool Forgotten(uint32_t node) const override;
  bool LeaseHeld(uint32_t node) const override;
  std::vector<PeerState> Peers() const override;
  uint64_t refused_peers() const override;
  uint64_t bad_frames() const override;

  uint32_t self() const;
  const ClusterConfig& config() const;

  class Impl;

 private:
  explicit Transport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cshm::net
