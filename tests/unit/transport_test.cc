// Component tests of the transport: real sockets on loopback, in-process nodes.
#include "net/transport.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "net/auth.h"
#include "net/frame_codec.h"
#include "tests/support/ports.h"

namespace cshm::net {
namespace {

using namespace std::chrono_literals;
using cshm::testing::FreePort;

constexpr uint16_t kEcho = 100;
constexpr uint16_t kFail = 101;
constexpr uint16_t kSilent = 102;
constexpr uint16_t kNote = 103;
constexpr uint16_t kDeferred = 104;  // the fast pool hands it to the slow pool, where it waits for `release`

ClusterConfig Config(int n, const std::string& secret = "the-cluster-secret-0123") {
  ClusterConfig c;
  c.secret = secret;
  c.request_timeout_ms = 2000;
  for (int i = 0; i < n; i++) c.nodes.push_back(NodeConfig{static_cast<uint32_t>(i), "127.0.0.1", FreePort()});
  return c;
}

struct Node {
  std::unique_ptr<Transport> t;
  std::atomic<int> notes{0};
  std::atomic<int> waiting_slow{0};
  std::atomic<bool> release{false};
  std::atomic<int> ups{0}, downs{0};
};

std::unique_ptr<Node> StartNode(const ClusterConfig& c, uint32_t self, FaultSeam faults = {},
                                std::chrono::milliseconds backoff = 0ms) {
  auto node = std::make_unique<Node>();
  TransportOptions o;
  o.faults = faults;
  if (backoff.count() != 0) o.reconnect_min = o.reconnect_max = backoff;
  o.config = c;
  o.self = self;
  o.incarnation = 1000 + self;
  Node* raw = node.get();
  o.handler = [raw, self](Request r) {
    switch (r.type) {
      case kEcho: r.responder->Reply(Status::Ok(), "node" + std::to_string(self) + ":" + r.payload); break;
      case kFail: r.responder->Reply(NotFound("no such thing"), ""); break;
      case kSilent: break;  // never answers
      case kNote: raw->notes++; break;
      case kDeferred:
        if (!r.slow) return raw->t->Defer(std::move(r));
        raw->waiting_slow++;
        // Held until the test lets go, or its deadline (a failed test must
        // not leave the pool's threads spinning while the transport joins them).
        for (auto until = std::chrono::steady_clock::now() + 30s; !raw->release && std::chrono::steady_clock::now() < until;)
          std::this_thread::sleep_for(1ms);
        r.responder->Reply(Status::Ok(), "slow");
        break;
    }
  };
  o.on_peer_up = [raw](uint32_t, uint64_t) { raw->ups++; };
  o.on_peer_down = [raw](uint32_t) { raw->downs++; };
  auto t = Transport::Start(o);
  EXPECT_TRUE(t.ok()) << t.status().message();
  if (!t.ok()) return nullptr;
  node->t = std::move(*t);
  return node;
}

bool WaitFor(const std::function<bool()>& cond) {
  for (int i = 0; i < 1000 && !cond(); i++) std::this_thread::sleep_for(5ms);
  return cond();
}

TEST(Transport, CallsGetAnswersAndErrors) {
  ClusterConfig c = Config(2);
  auto a = StartNode(c, 0), b = StartNode(c, 1);
  auto r = a->t->Call(1, kEcho, "hi");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(*r, "node1:hi");
  auto back = b->t->Call(0, kEcho, "yo");
  EXPECT_EQ(*back, "node0:yo");
  auto f = a->t->Call(1, kFail, "");
  EXPECT_EQ(f.status().code(), Status::Code::kNotFound);
  EXPECT_NE(f.status().message().find("no such thing"), std::string::npos);
  a->t->Send(1, kNote, "");
  EXPECT_TRUE(WaitFor([&] { return b->notes == 1; }));
  EXPECT_EQ(b->ups, 2);  // a's connection to b, and b's to a
}

TEST(Transport, AnInlineHandlerAnswersOnTheIoThreadOrPassesToThePool) {
  ClusterConfig c = Config(2);
  auto a = StartNode(c, 0);
  TransportOptions o;
  o.config = c;
  o.self = 1;
  std::atomic<int> inline_answers{0}, pool_answers{0};
  std::thread::id io_thread;
  o.try_inline = [&](Request& r) {
    io_thread = std::this_thread::get_id();
    if (r.payload != "quick") return false;  // left intact for the pool
    inline_answers++;
    r.responder->Reply(Status::Ok(), "inline");
    return true;
  };
  o.handler = [&](Request r) {
    pool_answers++;
    EXPECT_NE(std::this_thread::get_id(), io_thread);
    r.responder->Reply(Status::Ok(), "pool:" + r.payload);
  };
  auto b = Transport::Start(o);
  ASSERT_TRUE(b.ok()) << b.status().message();
  EXPECT_EQ(*a->t->Call(1, kEcho, "quick"), "inline");
  EXPECT_EQ(*a->t->Call(1, kEcho, "slow"), "pool:slow");
  EXPECT_EQ(inline_answers, 1);
  EXPECT_EQ(pool_answers, 1);
}

TEST(Transport, LargePayloadsArriveWhole) {
  ClusterConfig c = Config(2);
  auto a = StartNode(c, 0), b = StartNode(c, 1);
  std::string big(8 << 20, 'x');
  big[12345] = 'y';
  auto r = a->t->Call(1, kEcho, big);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->size(), big.size() + 6);
  EXPECT_EQ((*r)[6 + 12345], 'y');
}

TEST(Transport, SilentPeerTimesOutAtTheDeadline) {
  ClusterConfig c = Config(2);
  auto a = StartNode(c, 0), b = StartNode(c, 1);
  auto t0 = std::chrono::steady_clock::now();
  auto r = a->t->Call(1, kSilent, "", 200ms);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.status().code(), Status::Code::kTimedOut);
  EXPECT_LT(took, 2s);
  EXPECT_TRUE(a->t->Call(1, kEcho, "after").ok());  // the connection still works
}

TEST(Transport, CallAsyncAnswersWithTheResponseTheDeadlineOrTheError) {
  ClusterConfig c = Config(3);
  auto a = StartNode(c, 0), b = StartNode(c, 1);  // node 2 is never started
  std::mutex mu;
  std::vector<std::pair<std::string, Result<std::string>>> got;
  auto collect = [&](std::string what) {
    return [&, what](Result<std::string> r) {
      std::lock_guard<std::mutex> lock(mu);
      got.emplace_back(what, std::move(r));
    };
  };
  a->t->CallAsync(1, kEcho, "hi", collect("echo"));
  a->t->CallAsync(1, kSilent, "", collect("silent"), 200ms);
  a->t->CallAsync(2, kEcho, "x", collect("dead"), 1000ms);
  ASSERT_TRUE(WaitFor([&] {
    std::lock_guard<std::mutex> lock(mu);
    return got.size() == 3;
  }));
  std::lock_guard<std::mutex> lock(mu);
  for (auto& [what, r] : got) {
    if (what == "echo") {
      EXPECT_EQ(r.ok() ? *r : r.status().message(), "node1:hi");
    } else if (what == "silent") {
      EXPECT_EQ(r.status().code(), Status::Code::kTimedOut);
    } else if (what == "dead") {
      EXPECT_EQ(r.status().code(), Status::Code::kUnavailable) << r.status().message();
    }
  }
}

// The fast pool never waits: a request it finds would wait goes to the slow
// pool (Defer), and while every slow thread is held the fast pool answers.
TEST(Transport, ADeferredRequestRunsOnTheSlowPoolAndTheFastPoolGoesOn) {
  ClusterConfig c = Config(2);
  auto a = StartNode(c, 0), b = StartNode(c, 1);
  constexpr int kHeld = 8;  // TransportOptions::slow_threads
  std::atomic<int> answered{0};
  for (int i = 0; i < kHeld; i++)
    a->t->CallAsync(1, kDeferred, "", [&](Result<std::string> r) {
      if (r.ok() && *r == "slow") answered++;
    }, 30s);
  ASSERT_TRUE(WaitFor([&] { return b->waiting_slow.load() == kHeld; }));
  // Every slow thread waits; the fast pool still answers.
  auto echo = a->t->Call(1, kEcho, "hi", 10s);
  ASSERT_TRUE(echo.ok()) << echo.status().message();
  EXPECT_EQ(*echo, "node1:hi");
  EXPECT_EQ(answered.load(), 0);
  b->release = true;
  EXPECT_TRUE(WaitFor([&] { return answered.load() == kHeld; }));
}

TEST(Transport, DeadPeerIsUnavailableAndComesBack) {
  ClusterConfig c = Config(2);
  auto a = StartNode(c, 0);
  auto r = a->t->Call(1, kEcho, "x", 1000ms);
  EXPECT_EQ(r.status().code(), Status::Code::kUnavailable) << r.status().message();
  auto b = StartNode(c, 1);
  // Reconnects after its backoff.
  EXPECT_TRUE(WaitFor([&] { return a->t->Call(1, kEcho, "x", 500ms).ok(); }));
  b.reset();
  EXPECT_FALSE(a->t->Call(1, kEcho, "x", 500ms).ok());
}

// A peer that connects to us is up: what we queued for it while our
// connection waited out its backoff goes at once, not when the backoff ends
// (issue 14: a restarted owner's lock grace and a restarted node's
// kIncarnationSeen waited up to the 2 s backoff). The backoff here is a
// minute, so only the peer's connection can let the message go in time.
TEST(Transport, WhatWaitsOutABackoffGoesAsSoonAsThePeerConnects) {
  ClusterConfig c = Config(2);
  auto a = StartNode(c, 0, {}, 60s);
  ASSERT_EQ(a->t->Call(1, kEcho, "x", 1000ms).status().code(), Status::Code::kUnavailable);  // refused: backoff
  a->t->Send(1, kNote, "");  // queued on the connection that waits a minute
  auto b = StartNode(c, 1);
  ASSERT_TRUE(b->t->Call(0, kEcho, "x").ok());  // node 1 connects to node 0
  EXPECT_TRUE(WaitFor([&] { return b->notes == 1; })) << "the queued message waited for the backoff";
  EXPECT_TRUE(a->t->Call(1, kEcho, "x", 1000ms).ok());
}

TEST(Transport, PeerDownIsReported) {
  ClusterConfig c = Config(2);
  auto a = StartNode(c, 0);
  auto b = StartNode(c, 1);
  ASSERT_TRUE(b->t->Call(0, kEcho, "x").ok());
  EXPECT_EQ(a->ups, 1);
  ASSERT_TRUE(a->t->Call(1, kEcho, "x").ok());
  EXPECT_EQ(a->ups, 2);
  b.reset();
  EXPECT_TRUE(WaitFor([&] { return a->downs == 2; }));  // both connections
}

TEST(Transport, WrongSecretIsRefused) {
  ClusterConfig c = Config(2);
  ClusterConfig bad = c;
  bad.secret = "some-other-secret-xxxx";
  auto a = StartNode(c, 0);
  auto b = StartNode(bad, 1);
  auto r = b->t->Call(0, kEcho, "x", 1000ms);
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(WaitFor([&] { return a->t->refused_peers() >= 1; }));
  EXPECT_EQ(a->ups, 0);
}

TEST(Transport, PortInUseIsAClearError) {
  ClusterConfig c = Config(1);
  auto a = StartNode(c, 0);
  TransportOptions o;
  o.config = c;
  o.self = 0;
  o.handler = [](Request) {};
  auto again = Transport::Start(o);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), Status::Code::kBusy);
  EXPECT_NE(again.status().message().find("is in use"), std::string::npos);
}

TEST(Transport, DelaySeamSlowsEveryFrameAndLossSeamDropsThem) {
  ClusterConfig c = Config(2);
  auto a = StartNode(c, 0, FaultSeam{20000, 0}), b = StartNode(c, 1);
  ASSERT_TRUE(a->t->Call(1, kEcho, "warm").ok());  // connect first
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(a->t->Call(1, kEcho, "x").ok());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 20ms);  // the request was held back
  // Every frame of an established connection lost: the call misses its
  // deadline (the handshake itself is never dropped).
  ClusterConfig c2 = Config(2);
  auto x = StartNode(c2, 0, FaultSeam{0, 1000000}), y = StartNode(c2, 1);
  auto r = x->t->Call(1, kEcho, "lost", 300ms);
  EXPECT_EQ(r.status().code(), Status::Code::kTimedOut) << r.status().message();
}

TEST(Transport, APeerSilentForTheLeaseIsCutOff) {
  ClusterConfig c = Config(2);
  c.heartbeat_ms = 50;
  c.lease_ms = 300;
  auto a = StartNode(c, 0);
  auto b = StartNode(c, 1);
  ASSERT_TRUE(a->t->Call(1, kEcho, "x").ok());
  ASSERT_TRUE(b->t->Call(0, kEcho, "x").ok());
  // Heartbeats keep quiet connections up well past the lease.
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(a->downs, 0);
  // A node whose frames all vanish (a partition): cut off after the lease.
  ClusterConfig c2 = Config(2);
  c2.heartbeat_ms = 50;
  c2.lease_ms = 300;
  auto x = StartNode(c2, 0), y = StartNode(c2, 1, FaultSeam{0, 1000000});
  (void)y->t->Call(0, kEcho, "hello", 200ms);  // connects; the request itself is lost
  EXPECT_TRUE(WaitFor([&] { return x->downs >= 1; })) << "the silent peer was never cut off";
}

// A TCP connection to `to`:`port`, from `from` (any port).
int RawConnect(uint16_t port, const char* to = "127.0.0.1", const char* from = "127.0.0.1") {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in src{};
  src.sin_family = AF_INET;
  inet_pton(AF_INET, from, &src.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof(src)) != 0) {
    close(fd);
    return -1;
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, to, &a.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Runs the client side of the handshake by hand, claiming `claimed`, with a
// correct proof; returns true if the node answered with a Welcome.
bool HandshakeAs(uint16_t port, const std::string& secret, uint32_t claimed, uint32_t server,
                 const char* to = "127.0.0.1", const char* from = "127.0.0.1") {
  int fd = RawConnect(port, to, from);
  if (fd < 0) return false;
  char hdr[kHeaderSize];
  auto read_all = [&](char* p, size_t n) {
    size_t got = 0;
    while (got < n) {
      ssize_t r = read(fd, p + got, n - got);
      if (r <= 0) return false;
      got += static_cast<size_t>(r);
    }
    return true;
  };
  FrameHeader h;
  std::string why, payload;
  if (!read_all(hdr, kHeaderSize) || DecodeHeader(std::string_view(hdr, kHeaderSize), &h, &why) != DecodeResult::kGood)
    return close(fd), false;
  payload.resize(h.length);
  if (!read_all(payload.data(), h.length)) return close(fd), false;
  auto hello = Hello::Decode(payload);
  if (!hello.ok()) return close(fd), false;
  AuthRequest a{claimed, RandomNonce(), 1, ""};
  a.proof = ClientProof(secret, hello->nonce, a.nonce, claimed, server);
  std::string frame;
  EncodeFrame(FrameHeader{Kind::kOneWay, 2, 0, 0, 0}, a.Encode(), &frame);
  if (write(fd, frame.data(), frame.size()) != static_cast<ssize_t>(frame.size())) return close(fd), false;
  const bool welcomed = read_all(hdr, kHeaderSize);  // a Welcome, or the connection closes
  close(fd);
  return welcomed;
}

TEST(Transport, HandshakeByHandWorksAndAClaimOfTheNodesOwnIdIsRefused) {
  ClusterConfig c = Config(3);
  auto node1 = StartNode(c, 1);
  EXPECT_TRUE(HandshakeAs(c.nodes[1].port, c.secret, 2, 1));  // a proper peer: welcomed
  EXPECT_FALSE(HandshakeAs(c.nodes[1].port, c.secret, 1, 1));  // claims to be node 1 itself
  EXPECT_FALSE(HandshakeAs(c.nodes[1].port, c.secret, 9, 1));  // an id not in the config
  EXPECT_FALSE(HandshakeAs(c.nodes[1].port, "wrong-secret-0123456789", 2, 1));
  EXPECT_GE(node1->t->refused_peers(), 3u);
}

TEST(Transport, APeerMustConnectFromTheAddressOfTheNodeItClaims) {
  // Three nodes on three loopback addresses; each connects from its own.
  ClusterConfig c = Config(3);
  for (int i = 0; i < 3; i++) c.nodes[i].host = "127.0.0." + std::to_string(i + 1);
  auto n0 = StartNode(c, 0), n1 = StartNode(c, 1), n2 = StartNode(c, 2);
  ASSERT_TRUE(n0 && n1 && n2);
  EXPECT_EQ(*n0->t->Call(1, kEcho, "a"), "node1:a");
  EXPECT_EQ(*n2->t->Call(1, kEcho, "b"), "node1:b");
  EXPECT_EQ(*n1->t->Call(0, kEcho, "c"), "node0:c");
  // Knowing the secret is not enough to speak for node 2 from node 0's address.
  EXPECT_TRUE(HandshakeAs(c.nodes[1].port, c.secret, 0, 1, "127.0.0.2", "127.0.0.1"));
  EXPECT_FALSE(HandshakeAs(c.nodes[1].port, c.secret, 2, 1, "127.0.0.2", "127.0.0.1"));
  EXPECT_TRUE(HandshakeAs(c.nodes[1].port, c.secret, 2, 1, "127.0.0.2", "127.0.0.3"));
  EXPECT_GE(n1->t->refused_peers(), 1u);
}

// Reads one frame from a raw connection; false on EOF or a bad header.
bool ReadFrame(int fd, FrameHeader* h, std::string* payload) {
  auto read_all = [&](char* p, size_t n) {
    for (size_t got = 0; got < n;) {
      ssize_t r = read(fd, p + got, n - got);
      if (r <= 0) return false;
      got += static_cast<size_t>(r);
    }
    return true;
  };
  char hdr[kHeaderSize];
  std::string why;
  if (!read_all(hdr, kHeaderSize) || DecodeHeader(std::string_view(hdr, kHeaderSize), h, &why) != DecodeResult::kGood)
    return false;
  payload->resize(h->length);
  return read_all(payload->data(), h->length);
}

TEST(Transport, AReplayedAuthenticationIsRefused) {
  ClusterConfig c = Config(2);
  auto a = StartNode(c, 0);
  // A genuine handshake as node 1, recorded...
  int fd = RawConnect(c.nodes[0].port);
  ASSERT_GE(fd, 0);
  FrameHeader h;
  std::string payload;
  ASSERT_TRUE(ReadFrame(fd, &h, &payload));
  auto hello = Hello::Decode(payload);
  ASSERT_TRUE(hello.ok());
  AuthRequest auth{1, RandomNonce(), 1, ""};
  auth.proof = ClientProof(c.secret, hello->nonce, auth.nonce, 1, 0);
  std::string recorded;
  EncodeFrame(FrameHeader{Kind::kOneWay, 2, 0, 0, 0}, auth.Encode(), &recorded);
  ASSERT_EQ(write(fd, recorded.data(), recorded.size()), static_cast<ssize_t>(recorded.size()));
  EXPECT_TRUE(ReadFrame(fd, &h, &payload));  // welcomed
  close(fd);
  const uint64_t refused_before = a->t->refused_peers();
  // ...and replayed on a new connection: the node's nonce is new, the proof is not.
  fd = RawConnect(c.nodes[0].port);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(ReadFrame(fd, &h, &payload));  // a fresh Hello
  ASSERT_EQ(write(fd, recorded.data(), recorded.size()), static_cast<ssize_t>(recorded.size()));
  EXPECT_FALSE(ReadFrame(fd, &h, &payload));  // closed, no Welcome
  close(fd);
  EXPECT_EQ(a->t->refused_peers(), refused_before + 1);
}

TEST(Transport, GarbageAndUnauthenticatedFramesAreRefusedAndTheNodeKeepsWorking) {
  ClusterConfig c = Config(2);
  auto a = StartNode(c, 0), b = StartNode(c, 1);
  // Garbage bytes.
  int fd = RawConnect(c.nodes[0].port);
  ASSERT_GE(fd, 0);
  std::string junk(100, 'j');
  ASSERT_EQ(write(fd, junk.data(), junk.size()), 100);
  char buf[256];
  // The node closes the connection (EOF, or a reset as our bytes were unread).
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) {
  }
  EXPECT_LE(n, 0);
  close(fd);
  // A well-formed request before authenticating.
  fd = RawConnect(c.nodes[0].port);
  std::string frame;
  EncodeFrame(FrameHeader{Kind::kRequest, kEcho, 1, 0, 0}, "sneaky", &frame);
  ASSERT_EQ(write(fd, frame.data(), frame.size()), static_cast<ssize_t>(frame.size()));
  while ((n = read(fd, buf, sizeof(buf))) > 0) {
  }
  close(fd);
  EXPECT_EQ(a->t->bad_frames(), 1u);
  EXPECT_GE(a->t->refused_peers(), 1u);
  EXPECT_TRUE(b->t->Call(0, kEcho, "still fine").ok());
}

// Whether the node closes `fd` within two seconds (EOF or a reset), rather
// than leaving us waiting.
bool ClosedByPeer(int fd) {
  timeval tv{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char buf[256];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) {
  }
  return n == 0 || errno == ECONNRESET;
}

// A header claiming 64 MiB before authentication used to make the node
// allocate and wait for 64 MiB per connection, for the handshake timeout;
// and any number of connections could sit in their handshakes.
TEST(Transport, BeforeAuthenticationOnlyHandshakeFramesAreReadAndFewHandshakesWait) {
  ClusterConfig c = Config(2);
  auto a = StartNode(c, 0), b = StartNode(c, 1);
  ASSERT_TRUE(b->t->Call(0, kEcho, "before").ok());  // b's connection is up before the flood
  int fd = RawConnect(c.nodes[0].port);
  ASSERT_GE(fd, 0);
  std::string header;
  EncodeHeader(FrameHeader{Kind::kOneWay, 2, 0, 0, 0}, 64u << 20, &header);
  ASSERT_EQ(write(fd, header.data(), header.size()), static_cast<ssize_t>(header.size()));
  EXPECT_TRUE(ClosedByPeer(fd)) << "the node waited for a 64 MiB handshake frame";
  close(fd);
  EXPECT_EQ(a->t->bad_frames(), 1u);

  const uint64_t refused_before = a->t->refused_peers();
  std::vector<int> idle;
  for (int i = 0; i < 20; i++) idle.push_back(RawConnect(c.nodes[0].port));  // and say nothing
  EXPECT_TRUE(WaitFor([&] { return a->t->refused_peers() - refused_before >= 12; }))
      << "connections from one address beyond the bound were kept: "
      << a->t->refused_peers() - refused_before << " refused";
  for (int f : idle) close(f);
  EXPECT_TRUE(b->t->Call(0, kEcho, "still fine").ok());
}

}  // namespace
}  // namespace cshm::net
