// The simulated cluster (STYLE.md, "Simulate the cluster"): three nodes of
// the real core (fs::FileSystem with its Cluster, namespace, page store,
// twins) in this process, on the simulated network (sim_network.h) and each
// under a fake kernel page cache (fake_kernel.h). One seed drives the
// workload and the nemesis; afterwards every node checks the contract:
//
// - lock exclusion, no lost update: a counter incremented under a
//   cluster-wide lock by every node ends at least at the number of
//   increments whose lock and unlock both succeeded (and at most at the
//   number tried);
// - no lost acknowledged write under false sharing: every node writes
//   checksummed records into its own slots of shared pages and msyncs; on
//   every node afterwards each slot holds a valid record at least as new as
//   the last one whose msync succeeded, read through that node's own cache
//   (a stale copy left behind is a failure too);
// - nothing acknowledged is lost across a crash: nodes, owners included,
//   are crashed and restarted on their state dirs meanwhile.
// The fake kernels read ahead 1 to 4 pages per fault, by the seed (a fault's
// READ then spans pages other nodes are writing, and an invalidation of any
// of them waits for the whole READ).
//
// CSHM_SIM_SEED=N runs that one seed (printed by a failure);
// CSHM_SIM_SEEDS=K runs K seeds from CSHM_SIM_FIRST (default 1).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <random>
#include <set>
#include <shared_mutex>
#include <thread>

#include "fs/cluster.h"
#include "fs/filesystem.h"
#include "tests/sim/sim_cluster.h"
#include "tests/support/temp_dir.h"

namespace cshm::sim {
namespace {

using namespace std::chrono_literals;
using store::kPageSize;

constexpr uint64_t kRecordPages = 4;
constexpr uint64_t kSlot = 64;  // each node's slot in each record page

uint64_t Mix(uint64_t x) {  // splitmix64's finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// CSHM_SIM_TRACE=1: what the workload and the nemesis do, with times, to stderr.
const bool kTrace = getenv("CSHM_SIM_TRACE") != nullptr;
const auto kStart = std::chrono::steady_clock::now();
template <typename... Args>
void Trace(fmt::format_string<Args...> f, Args&&... args) {
  if (!kTrace) return;
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - kStart).count();
  fprintf(stderr, "%9.2f %s\n", ms, fmt::format(f, std::forward<Args>(args)...).c_str());
}

// The daemons' newest log lines (unless tracing, when they go to stderr),
// for the message of a failure or a hang.
std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> daemon_log;
void PrintDaemonLog() {
  if (!daemon_log) return;
  std::string lines;
  for (const std::string& l : daemon_log->last_formatted()) lines += l;
  fprintf(stderr, "the daemons' last log lines:\n%s", lines.c_str());
}

// What each node's worker is doing (for the message of a hang).
std::atomic<const char*> doing[kNodes];

struct Record {
  uint32_t node = 0, page = 0;
  uint64_t seq = 0, check = 0;
  static uint64_t Check(uint32_t node, uint32_t page, uint64_t seq) { return Mix(Mix(node * 131 + page) ^ seq); }
  std::string Encode() const {
    std::string out(sizeof(Record), '\0');
    std::memcpy(out.data(), this, sizeof(Record));
    return out;
  }
  static Record Decode(std::string_view b) {
    Record r;
    std::memcpy(&r, b.data(), sizeof(Record));
    return r;
  }
  bool valid() const { return (seq == 0 && check == 0 && node == 0 && page == 0) || check == Check(node, page, seq); }
};

// What the workload was told, which the nodes' final views must show.
struct Ledger {
  std::atomic<uint64_t> counter_acked{0}, counter_tried{0};
  std::mutex mu;
  uint64_t record_acked[kNodes][kRecordPages] = {};  // GUARDED_BY(mu)
  std::atomic<uint64_t> ops{0}, failed_ops{0};
  std::vector<std::string> problems;  // GUARDED_BY(mu): seen while the workload runs
};

ownership::Lock CounterLock(uint32_t node, int type) {
  ownership::Lock l;
  l.type = type;
  l.start = 0;
  l.end = 7;
  l.who = ownership::LockOwner{node, 1000 + node};
  return l;
}

// One increment of the shared counter under the cluster-wide lock.
// `think`: how long the application works under the lock, between its load
// and its store (a partition may start meanwhile).
void Increment(SimCluster& c, uint32_t node, std::chrono::milliseconds think, Ledger& ledger) {
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  Status locked;
  for (auto backoff = 1ms;; backoff = std::min(backoff * 2, 20ms)) {
    locked = c.On(node, "counter", [&](fs::FileSystem& fs, FakeKernel&, uint64_t ino) {
      return fs.SetLock(ino, CounterLock(node, F_WRLCK));
    });
    if (locked.code() != Status::Code::kWouldBlock || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(backoff);
  }
  if (!locked.ok()) Trace("node {}: lock: {}", node, locked.message());
  if (!locked.ok()) return ledger.failed_ops++, void();
  Trace("node {}: counter locked", node);
  ledger.counter_tried++;
  // Every increment acknowledged before this grant is visible under it.
  const uint64_t acked_before = ledger.counter_acked;
  uint64_t loaded = 0;
  Status st = c.On(node, "counter", [&](fs::FileSystem& fs, FakeKernel& k, uint64_t ino) -> Status {
    auto v = k.Load(ino, 0, 8);
    Status stored = v.ok() ? Status::Ok() : v.status();
    if (v.ok()) {
      uint64_t n;
      std::memcpy(&n, v->data(), 8);
      loaded = n;
      std::this_thread::sleep_for(think);
      n++;
      stored = k.Store(ino, 0, std::string_view(reinterpret_cast<const char*>(&n), 8));
      Trace("node {}: counter loaded {}, stored {}: {}", node, n - 1, n, stored.message());
    }
    Status unlocked = fs.SetLock(ino, CounterLock(node, F_UNLCK));  // a release: the page goes back first
    Trace("node {}: unlock: {}", node, unlocked.ok() ? "ok" : unlocked.message());
    return stored.ok() ? unlocked : stored;
  });
  if (!st.ok()) return ledger.failed_ops++, void();
  ledger.counter_acked++;
  if (loaded < acked_before) {
    // (Only for an increment that succeeded: under a lock that was lost
    // meanwhile a stale read is possible, and its unlock fails.)
    std::lock_guard<std::mutex> lock(ledger.mu);
    ledger.problems.push_back("node " + std::to_string(node) + " loaded the counter at " + std::to_string(loaded) +
                              " under the lock, after " + std::to_string(acked_before) +
                              " acknowledged increments: a stale copy under the lock");
  }
}

void WriteRecord(SimCluster& c, uint32_t node, uint32_t page, uint64_t seq, Ledger& ledger) {
  Record r{node, page, seq, Record::Check(node, page, seq)};
  Status st = c.On(node, "records", [&](fs::FileSystem&, FakeKernel& k, uint64_t ino) -> Status {
    CSHM_RETURN_IF_ERROR(k.Store(ino, page * kPageSize + node * kSlot, r.Encode()));
    return k.Msync(ino);
  });
  if (!st.ok()) return ledger.failed_ops++, void();
  std::lock_guard<std::mutex> lock(ledger.mu);
  ledger.record_acked[node][page] = std::max(ledger.record_acked[node][page], seq);
}

// Every slot of every record page as node `node` sees it now; a failure
// message, or empty.
// The slots of a record page, as the kernel logs render them.
std::string DescribeSlots(std::string_view head) {
  std::string out;
  for (uint32_t w = 0; w < kNodes && (w + 1) * kSlot <= head.size(); w++) {
    Record r = Record::Decode(head.substr(w * kSlot, sizeof(Record)));
    out += (w ? " " : "") + std::to_string(w) + ":" + (r.valid() ? std::to_string(r.seq) : std::string("torn"));
  }
  return out;
}

std::string CheckRecords(SimCluster& c, uint32_t node, Ledger& ledger, bool final_check) {
  std::string problem;
  uint32_t bad_page = 0;
  Status st = c.On(node, "records", [&](fs::FileSystem&, FakeKernel& k, uint64_t ino) -> Status {
    for (uint32_t p = 0; p < kRecordPages; p++) {
      CSHM_ASSIGN_OR_RETURN(std::string page, k.Load(ino, p * kPageSize, kPageSize));
      for (uint32_t w = 0; w < kNodes; w++) {
        Record r = Record::Decode(std::string_view(page).substr(w * kSlot, sizeof(Record)));
        if (!r.valid() || (r.seq != 0 && (r.node != w || r.page != p))) {
          // What it holds, to tell a torn record (bytes of two versions) from
          // a misplaced one, and which versions they came from.
          char hex[3 * sizeof(Record) + 1] = {};
          for (size_t i = 0; i < sizeof(Record); i++)
            snprintf(hex + 3 * i, 4, "%02x ", static_cast<unsigned char>(page[w * kSlot + i]));
          uint64_t acked;
          {
            std::lock_guard<std::mutex> lock(ledger.mu);
            acked = ledger.record_acked[w][p];
          }
          bad_page = p;
          problem = "node " + std::to_string(node) + " sees a torn or misplaced record in node " + std::to_string(w) +
                    "'s slot of page " + std::to_string(p) + (final_check ? " (final check)" : " (while running)") +
                    ": node " + std::to_string(r.node) + " page " + std::to_string(r.page) + " seq " +
                    std::to_string(r.seq) + ", record " + std::to_string(acked) + " acknowledged; bytes " + hex;
          return Status::Ok();
        }
        if (!final_check) continue;
        std::lock_guard<std::mutex> lock(ledger.mu);
        if (r.seq < ledger.record_acked[w][p]) {
          bad_page = p;
          problem = "node " + std::to_string(node) + " sees record " + std::to_string(r.seq) + " in node " +
                    std::to_string(w) + "'s slot of page " + std::to_string(p) + ", but record " +
                    std::to_string(ledger.record_acked[w][p]) + " was acknowledged: an acknowledged write is lost";
          return Status::Ok();
        }
      }
    }
    return Status::Ok();
  });
  if (!st.ok() && problem.empty() && final_check) problem = "node " + std::to_string(node) + " cannot read the records: " + st.message();
  if (!problem.empty() && problem.find("cannot read") == std::string::npos)
    problem += "\npage " + std::to_string(bad_page) + " as each node knows it, and its kernel's events:\n" +
               c.Explain("records", bad_page, DescribeSlots);
  return problem;
}

void RunSeed(uint64_t seed) {
  SCOPED_TRACE("seed " + std::to_string(seed) + "; replay: CSHM_SIM_SEED=" + std::to_string(seed) +
               " build/bin/sim_test");
  // A seed takes seconds; one that has not ended in two minutes hangs:
  // said with its seed, and the test dies rather than wait for ctest's timeout.
  std::mutex watch_mu;
  std::condition_variable watch_cv;
  bool finished = false;
  std::thread watchdog([&] {
    std::unique_lock<std::mutex> lock(watch_mu);
    if (watch_cv.wait_for(lock, 120s, [&] { return finished; })) return;
    PrintDaemonLog();
    for (uint32_t i = 0; i < kNodes; i++) {
      const char* what = doing[i].load();
      fprintf(stderr, "node %u's worker: %s\n", i, what ? what : "-");
    }
    fprintf(stderr, "sim seed %llu did not finish within 120 s (a hang); replay: CSHM_SIM_SEED=%llu build/bin/sim_test\n",
            static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
    std::abort();
  });
  struct Finish {
    std::mutex& mu;
    std::condition_variable& cv;
    bool& finished;
    std::thread& watchdog;
    ~Finish() {
      {
        std::lock_guard<std::mutex> lock(mu);
        finished = true;
      }
      cv.notify_all();
      watchdog.join();
    }
  } finish{watch_mu, watch_cv, finished, watchdog};
  cshm::testing::TempDir dir;
  SimCluster c(seed, dir.path());
  const uint64_t readahead = 1 + Mix(seed ^ 0x5eed) % kRecordPages;
  c.SetReadahead(readahead);
  for (uint32_t i = 0; i < kNodes; i++) ASSERT_TRUE(c.Up(i).ok()) << "node " << i;
  // Each file owned by a node that the nemesis may crash.
  ASSERT_TRUE(c.Create(1, "counter", kPageSize).ok());
  ASSERT_TRUE(c.Create(2, "records", kRecordPages * kPageSize).ok());

  Ledger ledger;
  std::atomic<bool> stop{false};
  std::mutex problems_mu;
  std::vector<std::string> problems;
  std::vector<std::thread> workers;
  for (uint32_t node = 0; node < kNodes; node++) {
    workers.emplace_back([&, node] {
      std::mt19937_64 rng(Mix(seed * kNodes + node));
      uint64_t seq[kRecordPages] = {};
      while (!stop) {
        ledger.ops++;
        const uint64_t failed = ledger.failed_ops.load();
        const uint64_t pick = rng() % 9;
        if (pick < 3) {
          doing[node] = "an increment";
          Increment(c, node, std::chrono::milliseconds(rng() % 16 == 0 ? rng() % 600 : 0), ledger);
        } else if (pick < 6) {
          const auto page = static_cast<uint32_t>(rng() % kRecordPages);
          doing[node] = "a record write";
          WriteRecord(c, node, page, ++seq[page], ledger);
        } else if (pick < 7) {
          doing[node] = "a check of the records";
          std::string p = CheckRecords(c, node, ledger, /*final_check=*/false);
          if (!p.empty()) {
            std::lock_guard<std::mutex> lock(problems_mu);
            problems.push_back(p);
          }
        } else if (pick < 8 || rng() % 8 != 0) {
          doing[node] = "a kernel write-back";
          (void)c.On(node, "records", [&](fs::FileSystem&, FakeKernel& k, uint64_t ino) {
            k.WriteBackSome(ino, rng() % kRecordPages);
            return Status::Ok();
          });
        } else {
          // A move of a file to another owner (user.cshm.owner), under the workload.
          const char* name = rng() % 2 ? "records" : "counter";
          const auto target = static_cast<uint32_t>(rng() % kNodes);
          doing[node] = "a move";
          Status moved = c.On(node, name, [&](fs::FileSystem& fs, FakeKernel&, uint64_t ino) {
            return fs.SetXattr(ino, "user.cshm.owner", std::to_string(target), 0);
          });
          Trace("node {}: move of {} to node {}: {}", node, name, target, moved.ok() ? "ok" : moved.message());
        }
        // Down, or cut off: a moment before the next try, as an application's retry would.
        if (!c.up(node)) std::this_thread::sleep_for(5ms);
        else if (ledger.failed_ops.load() != failed) std::this_thread::sleep_for(1ms);
      }
    });
  }

  // The nemesis: partitions, loss, crashes and restarts, from the seed.
  std::mt19937_64 nemesis(Mix(seed));
  std::set<uint32_t> crashed;
  const auto end = std::chrono::steady_clock::now() + 2500ms;
  while (std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + nemesis() % 250));
    switch (nemesis() % 6) {
      case 0: {  // one node cut off from the others
        const auto node = static_cast<uint32_t>(nemesis() % kNodes);
        c.net().Partition({node}, c.all());
        Trace("nemesis: node {} cut off", node);
        break;
      }
      case 1:
        c.net().Heal(c.all());
        Trace("nemesis: healed");
        break;
      case 2: {  // a lossy link
        const auto a = static_cast<uint32_t>(nemesis() % kNodes), b = static_cast<uint32_t>(nemesis() % kNodes);
        if (a != b) c.net().SetLink(a, b, LinkFaults{20, 2000, 0.2, false});
        if (a != b) Trace("nemesis: link {} -> {} lossy", a, b);
        break;
      }
      case 3: {  // a crash: of an owner, of the metadata node
        const auto node = static_cast<uint32_t>(nemesis() % kNodes);
        if (crashed.insert(node).second) c.Down(node);
        Trace("nemesis: node {} crashed", node);
        break;
      }
      default:  // restarts
        for (uint32_t node : crashed) ASSERT_TRUE(c.Up(node).ok()) << "restart of node " << node;
        if (!crashed.empty()) Trace("nemesis: restarted {} node(s)", crashed.size());
        crashed.clear();
        break;
    }
  }
  c.net().Heal(c.all());
  for (uint32_t node : crashed) ASSERT_TRUE(c.Up(node).ok()) << "restart of node " << node;
  stop = true;
  for (auto& w : workers) w.join();
  for (auto& d : doing) d = "the settling and the final checks";

  // Settled: every node's dirty pages released, then each node's own view.
  const auto settle = std::chrono::steady_clock::now() + 10s;
  for (uint32_t node = 0; node < kNodes; node++) {
    for (const char* name : {"records", "counter"}) {
      Status st;
      do {
        st = c.On(node, name, [](fs::FileSystem&, FakeKernel& k, uint64_t ino) { return k.Msync(ino); });
        if (!st.ok()) std::this_thread::sleep_for(20ms);
      } while (!st.ok() && std::chrono::steady_clock::now() < settle);
      // Healed, every node up: a release must work again within the settle time.
      if (!st.ok())
        problems.push_back("node " + std::to_string(node) + " cannot release " + name + " after the heal: " +
                           st.message());
    }
  }
  for (uint32_t node = 0; node < kNodes; node++) {
    std::string p;
    do {
      p = CheckRecords(c, node, ledger, /*final_check=*/true);
      if (p.find("cannot read") == std::string::npos) break;
      std::this_thread::sleep_for(20ms);
    } while (std::chrono::steady_clock::now() < settle);
    if (!p.empty()) problems.push_back(p);
    uint64_t counter = 0;
    Status st;
    do {
      st = c.On(node, "counter", [&](fs::FileSystem&, FakeKernel& k, uint64_t ino) -> Status {
        CSHM_ASSIGN_OR_RETURN(std::string v, k.Load(ino, 0, 8));
        std::memcpy(&counter, v.data(), 8);
        return Status::Ok();
      });
      if (!st.ok()) std::this_thread::sleep_for(20ms);
    } while (!st.ok() && std::chrono::steady_clock::now() < settle);
    if (!st.ok()) {
      problems.push_back("node " + std::to_string(node) + " cannot read the counter: " + st.message());
    } else if (counter < ledger.counter_acked || counter > ledger.counter_tried) {
      problems.push_back("node " + std::to_string(node) + " sees the counter at " + std::to_string(counter) + " after " +
                         std::to_string(ledger.counter_acked.load()) + " acknowledged increments (of " +
                         std::to_string(ledger.counter_tried.load()) + " tried): " +
                         (counter < ledger.counter_acked ? "an update was lost (lock exclusion or a release broke)"
                                                         : "more increments than were made"));
    }
  }
  printf("sim seed %llu (readahead %llu): %llu operations, %llu failed under the faults, counter %llu acknowledged of "
         "%llu tried\n",
         static_cast<unsigned long long>(seed), static_cast<unsigned long long>(readahead),
         static_cast<unsigned long long>(ledger.ops.load()),
         static_cast<unsigned long long>(ledger.failed_ops.load()),
         static_cast<unsigned long long>(ledger.counter_acked.load()),
         static_cast<unsigned long long>(ledger.counter_tried.load()));
  for (const auto& p : ledger.problems) ADD_FAILURE() << p;
  for (const auto& p : problems) ADD_FAILURE() << p;
}

std::vector<uint64_t> Seeds() {
  if (const char* one = getenv("CSHM_SIM_SEED")) return {std::strtoull(one, nullptr, 10)};
  const uint64_t n = getenv("CSHM_SIM_SEEDS") ? std::strtoull(getenv("CSHM_SIM_SEEDS"), nullptr, 10) : 4;
  const uint64_t first = getenv("CSHM_SIM_FIRST") ? std::strtoull(getenv("CSHM_SIM_FIRST"), nullptr, 10) : 1;
  std::vector<uint64_t> out;
  for (uint64_t s = first; s < first + n; s++) out.push_back(s);
  return out;
}

TEST(SimClusterTest, acknowledged_writes_and_lock_exclusion_survive_partitions_loss_and_crashes) {
  // The daemons' log: to stderr when tracing, else its newest lines are kept
  // for a failure's message.
  if (!kTrace) {
    daemon_log = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(3000);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("sim", daemon_log));
  }
  spdlog::set_pattern("%H:%M:%S.%f [%n] %l: %v", spdlog::pattern_time_type::utc);
  spdlog::set_level(spdlog::level::info);
  setvbuf(stdout, nullptr, _IOLBF, 0);  // a seed's line as it ends
  for (uint64_t seed : Seeds()) {
    RunSeed(seed);
    if (::testing::Test::HasFailure()) {
      PrintDaemonLog();
      break;  // the first failing seed is the one to replay
    }
  }
}

}  // namespace
}  // namespace cshm::sim
