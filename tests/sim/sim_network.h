// SimNetwork: the network of the component tests (STYLE.md, "Tests in three
// rings", ring 2). Every node of a cluster runs in the test's process, its
// fs::FileSystem started with Factory() instead of the TCP transport, and
// the test decides what the network does: per-link delay (which reorders
// requests across the handler pools, as a real network does), loss,
// partitions, crashes and restarts of nodes.
//
// It keeps the net::Messenger contract (net/messenger.h) the way the Asio
// transport does:
// - frames between two nodes travel on a connection, in order; a connection
//   comes up (on_peer_up on both sides, with each other's incarnation)
//   before the first frame that needs it, and only while both nodes run and
//   the link is passable both ways;
// - a node that stops or crashes closes its connections (on_peer_down on the
//   other side at once, its calls fail kUnavailable); a connection silent for
//   a lease closes too (a partition);
// - heartbeats every heartbeat_ms, echoed; the leases and their callbacks
//   as net::Transport computes them;
// - a Call to a node that does not run fails kUnavailable after one delay
//   (connection refused); one lost on the way, or across a partition, times
//   out at its deadline.
//
// The clock is the real one, and the nodes' own threads run as the
// scheduler lets them: a seed fixes the faults' and the workload's choices,
// not the interleaving of threads (see docs/testing.md, "Simulated
// cluster").
//
// Thread-safety: every method is thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <thread>
#include <tuple>
#include <vector>

#include "common/mutex.h"
#include "net/messenger.h"

namespace cshm::sim {

struct LinkFaults {
  uint32_t min_delay_us = 20;
  uint32_t max_delay_us = 400;
  double loss = 0;   // the chance that a frame is dropped
  bool cut = false;  // nothing passes (one direction of a partition)
  // Requests and one-way messages of these types take this long instead
  // (what comes after them on the connection waits, frames stay in order).
  std::map<uint16_t, std::chrono::microseconds> slow_types;
};

class SimNode;

class SimNetwork {
 public:
  explicit SimNetwork(uint64_t seed);
  ~SimNetwork();

  // Starts a node's messenger (FileSystemOptions::messenger).
  net::MessengerFactory Factory();

  // The faults of the link from `from` to `to` (both directions: call twice).
  void SetLink(uint32_t from, uint32_t to, const LinkFaults& f);
  // Every link between `side` and the other nodes of `all` is cut both ways.
  void Partition(const std::set<uint32_t>& side, const std::set<uint32_t>& all);
  // Every link passes again, with the default delay and no loss.
  void Heal(const std::set<uint32_t>& all);
  // The node's messenger goes dead at once, as if its process died: nothing
  // in or out, its connections close, its calls fail. Its owner then
  // destroys it (FileSystem::~FileSystem); a later Factory() call for the
  // node starts a fresh one (a restart).
  void Crash(uint32_t node);

  // What the running node `node` knows of its peers (empty if it is down):
  // for scenarios that wait for a lease to run out.
  std::vector<net::PeerState> PeersOf(uint32_t node);
  // Requests delivered to `node` so far (to any of its incarnations).
  uint64_t RequestsTo(uint32_t node);
  // Requests and one-way messages of `type` that `from` sent to `to` while
  // it ran (what its messenger put on the network, lost on the way or not).
  uint64_t Sent(uint32_t from, uint32_t to, uint16_t type);
  // How many of `node`'s messengers were destroyed (the Cluster let go of
  // its network: a stop, or what follows a crash).
  uint64_t MessengersDestroyed(uint32_t node);

  // The network's own random numbers, from the seed.
  uint64_t Random();

  // For the endpoints.
  struct Frame {
    enum Kind { kRequest, kOneWay, kReply, kHeartbeat, kEcho } kind = kOneWay;
    uint32_t from = 0, to = 0;
    uint64_t from_incarnation = 0, to_incarnation = 0;  // the connection's ends
    uint64_t id = 0;  // request id (requests, replies); send time (heartbeats)
    uint16_t type = 0;
    Status status;
    std::string payload;
  };
  // Sends `f` from its `from` node; frames that cannot get there are dropped
  // or refused as the class comment says.
  void Transmit(Frame f);
  // Runs `fn` on the network's thread after `delay` (the endpoints' timers).
  void Schedule(std::chrono::microseconds delay, std::function<void()> fn);
  void Register(std::shared_ptr<SimNode> n);
  // The node stops or dies: its connections close.
  void Unregister(const SimNode* n);
  // Closes the connection between the two (silent for a lease).
  void Close(uint32_t a, uint32_t b);
  // A messenger of `node` is destroyed (MessengersDestroyed).
  void NoteDestroyed(uint32_t node);

 private:
  using Clock = std::chrono::steady_clock;
  struct Event {
    Clock::time_point at;
    uint64_t seq;
    std::function<void()> fn;
    bool operator>(const Event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };
  struct Connection {
    uint64_t incarnation[2] = {0, 0};  // of the lower and the higher node id
    Clock::time_point last[2];         // the last frame's delivery time, each direction (frames stay in order)
  };
  void Loop();
  void Deliver(Frame f);
  // Whether the connection between the two is up, bringing it up if it
  // can; the peer_up callbacks are queued into *up.
  bool Connect(uint32_t a, uint32_t b, std::vector<std::function<void()>>* up) REQUIRES(mu_);
  // Closes the connection, queueing the peer_down callbacks: of both ends,
  // or (only_a) of `a` alone, the other end not hearing of it.
  void Disconnect(uint32_t a, uint32_t b, std::vector<std::function<void()>>* down, bool only_a = false)
      REQUIRES(mu_);
  // `side` learns that its connection to `peer` closed: its calls there
  // fail, and its peer_down callback is queued.
  void Down(uint32_t side, uint32_t peer, std::vector<std::function<void()>>* down) REQUIRES(mu_);
  LinkFaults& Link(uint32_t from, uint32_t to) REQUIRES(mu_);

  Mutex mu_;  // a leaf: callbacks into the nodes run after it is released (queued, or Schedule'd)
  CondVar cv_;
  std::mt19937_64 rng_ GUARDED_BY(mu_);
  std::map<uint32_t, std::shared_ptr<SimNode>> nodes_ GUARDED_BY(mu_);  // the running ones
  std::map<std::pair<uint32_t, uint32_t>, LinkFaults> links_ GUARDED_BY(mu_);
  std::map<uint32_t, uint64_t> requests_to_ GUARDED_BY(mu_);
  std::map<std::tuple<uint32_t, uint32_t, uint16_t>, uint64_t> sent_ GUARDED_BY(mu_);
  std::map<uint32_t, uint64_t> destroyed_ GUARDED_BY(mu_);
  std::map<std::pair<uint32_t, uint32_t>, Connection> connections_ GUARDED_BY(mu_);  // (low, high) ids
  // (side, peer): `peer` closed their connection across a cut link, and
  // `side` has not noticed (the FIN was lost): its calls on it wait for
  // their deadlines until it closes the connection itself or the link
  // carries a new one, as TCP's do.
  std::set<std::pair<uint32_t, uint32_t>> unaware_ GUARDED_BY(mu_);
  std::vector<Event> events_ GUARDED_BY(mu_);  // a heap
  uint64_t next_seq_ GUARDED_BY(mu_) = 0;
  bool stopping_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace cshm::sim
