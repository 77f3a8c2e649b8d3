// ReferenceSync's loop over a real namespace, with the network replaced by
// functions: who is asked, who is declared gone, when an orphan goes.
#include "fs/reference_sync.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <mutex>
#include <set>

#include <thread>

#include "tests/support/temp_dir.h"

namespace cshm::fs {
namespace {

using namespace std::chrono_literals;
// Polls `cond` until it holds or `timeout` passes.
bool WaitFor(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

TEST(ReferenceSyncTest, AnOrphanGoesOnlyWhenTheNodeThatHoldsItSaysSoAndSilentNodesAreGone) {
  cshm::testing::TempDir dir;
  auto store = std::move(*store::MetaStore::Open(dir / "db"));
  std::mutex mu;
  std::set<uint64_t> purged;
  std::vector<uint64_t> told;
  auto ns = std::move(*meta::Namespace::Open(store.get(), 0, {}, [&](uint64_t ino, uint32_t) {
    std::lock_guard<std::mutex> lock(mu);
    purged.insert(ino);
    return Status::Ok();
  }));
  std::atomic<uint64_t> held_ino{0};  // what node 1's kernel holds
  std::atomic<int> asks{0};
  ReferenceSync::Options o;
  o.peers = {1, 2};
  o.heartbeat = 5ms;
  o.lease = 100ms;
  o.request_timeout = 10ms;
  o.heard = [](uint32_t node) { return node == 1; };  // node 2 never speaks
  o.ask = [&](uint32_t node) -> Result<meta::ReferenceSnapshot> {
    EXPECT_EQ(node, 1u);
    asks++;
    meta::ReferenceSnapshot s{static_cast<uint64_t>(1000 + asks.load()), {}};
    if (held_ino) s.held.emplace_back(held_ino.load(), 1);
    return s;
  };
  o.tell_orphans = [&](uint32_t node, const std::vector<uint64_t>& inos) {
    std::lock_guard<std::mutex> lock(mu);
    if (node == 1) told = inos;
  };
  ReferenceSync sync(ns.get(), o);
  // Before Start (as before the transport is up): a name removed now is kept.
  uint64_t f = ns->Mknod(store::kRootIno, "f", S_IFREG | 0644, 0, meta::Caller{0, 0, 1, 5})->ino;
  held_ino = f;
  ASSERT_TRUE(ns->Unlink(store::kRootIno, "f", {}).ok());
  sync.Start();
  EXPECT_EQ(ns->node_state(2), meta::Namespace::NodeState::kUnknown);  // a lease has not passed
  ASSERT_TRUE(WaitFor([&] { return ns->node_state(2) == meta::Namespace::NodeState::kGone; }, 10s));
  ASSERT_TRUE(WaitFor([&] {
    std::lock_guard<std::mutex> lock(mu);
    return told == std::vector<uint64_t>{f};
  }, 10s)) << "node 1 was never told that it holds an orphan";
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(purged.empty()) << "purged while node 1 holds it";
  }
  held_ino = 0;  // node 1 let go, and its Forget was lost: the next ask finds out
  EXPECT_TRUE(WaitFor([&] {
    std::lock_guard<std::mutex> lock(mu);
    return purged.count(f) == 1;
  }, 10s));
  sync.Stop();
}

}  // namespace
}  // namespace cshm::fs
