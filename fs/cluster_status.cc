// A node's figures: its own (NodeStatus, for `cshmctl status`), every
// node's as one JSON object (user.cshm.cluster), the gauges of its metrics
// endpoint, and a page's state for a failing test's message.
#include <cstdio>

#include "common/metrics.h"
#include "fs/cluster.h"
#include "fs/semaphores.h"

namespace cshm::fs {

using namespace ownership;
using store::kPageSize;

NodeStatus Cluster::OwnStatus() {
  NodeStatus st;
  st.node = self_;
  st.incarnation = incarnation_;
  st.uptime_ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started_).count());
  st.segments_owned = owned_.segment_count();
  st.page_bytes = pages_->used();
  st.capacity_bytes = pages_->capacity();
  st.twin_bytes = twins_->count() * kPageSize;
  st.kept_writebacks = pending_->size();
  st.queued_unlocks = QueuedUnlocks();
  if (semaphores_) {
    st.semaphore_sets = semaphores_->sets();
    st.semaphore_ops = semaphores_->ops_served();
  }
  st.version = CSHM_VERSION;
  uint64_t target = 0;
  transfer_->Progress(&st.moving_ino, &target, &st.moving_done, &st.moving_total);
  st.moving_target = static_cast<uint32_t>(target);
  return st;
}

namespace {
std::string JsonString(std::string_view v) {
  std::string out = "\"";
  for (char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}
}  // namespace

std::string Cluster::StatusJson() {
  // Every peer asked at once; each answer (or its deadline) counts down.
  struct Answers {
    std::mutex mu;
    std::condition_variable cv;
    size_t left = 0;
    std::map<uint32_t, Result<NodeStatus>> got;
  };
  auto answers = std::make_shared<Answers>();
  const auto deadline = std::chrono::milliseconds(std::min<uint32_t>(config_.request_timeout_ms, 2000));
  for (const net::NodeConfig& n : config_.nodes) {
    if (n.id == self_) continue;
    {
      std::lock_guard<std::mutex> lock(answers->mu);
      answers->left++;
    }
    transport_->CallAsync(
        n.id, kNodeStatus, "",
        [answers, id = n.id](Result<std::string> r) {
          Result<NodeStatus> st = r.ok() ? NodeStatus::Decode(*r) : Result<NodeStatus>(r.status());
          std::lock_guard<std::mutex> lock(answers->mu);
          answers->got.emplace(id, std::move(st));
          if (--answers->left == 0) answers->cv.notify_all();
        },
        deadline);
  }
  {
    std::unique_lock<std::mutex> lock(answers->mu);
    // CallAsync answers by its deadline; the margin covers the I/O thread's delay.
    answers->cv.wait_for(lock, deadline + std::chrono::seconds(1), [&] { return answers->left == 0; });
  }
  std::map<uint32_t, net::PeerState> peers;
  for (const auto& p : transport_->Peers()) peers[p.node] = p;
  std::string out = "{\"self\": " + std::to_string(self_) + ", \"metadata_node\": " +
                    std::to_string(config_.metadata_node) + ", \"nodes\": [";
  bool first = true;
  for (const net::NodeConfig& n : config_.nodes) {
    out += first ? "\n  {" : ",\n  {";
    first = false;
    out += "\"id\": " + std::to_string(n.id) + ", \"address\": " + JsonString(n.host + ":" + std::to_string(n.port));
    Result<NodeStatus> st = NodeStatus{};
    if (n.id == self_) {
      st = OwnStatus();
      out += ", \"self\": true";
    } else {
      const auto& p = peers[n.id];
      out += std::string(", \"lease_held\": ") + (p.lease_held ? "true" : "false");
      out += std::string(", \"forgotten\": ") + (p.forgotten ? "true" : "false");
      if (p.heard) out += ", \"last_heard_ms\": " + std::to_string(p.since_heard.count());
      std::lock_guard<std::mutex> lock(answers->mu);
      auto it = answers->got.find(n.id);
      st = it != answers->got.end() ? it->second : Result<NodeStatus>(TimedOut("no answer in time"));
    }
    out += std::string(", \"reachable\": ") + (st.ok() ? "true" : "false");
    if (!st.ok()) {
      out += ", \"error\": " + JsonString(st.status().message());
    } else {
      char inc[24];
      snprintf(inc, sizeof inc, "%016llx", static_cast<unsigned long long>(st->incarnation));
      out += ", \"incarnation\": " + JsonString(inc) + ", \"version\": " + JsonString(st->version);
      for (auto [key, v] : {std::pair<const char*, uint64_t>{"uptime_ms", st->uptime_ms},
                            {"segments", st->segments_owned},
                            {"page_bytes", st->page_bytes},
                            {"capacity_bytes", st->capacity_bytes},
                            {"twin_bytes", st->twin_bytes},
                            {"kept_writebacks", st->kept_writebacks},
                            {"queued_unlocks", st->queued_unlocks},
                            {"semaphore_sets", st->semaphore_sets},
                            {"semaphore_ops", st->semaphore_ops}})
        out += std::string(", \"") + key + "\": " + std::to_string(v);
      if (st->moving_ino != 0)
        out += ", \"moving\": {\"ino\": " + std::to_string(st->moving_ino) + ", \"target\": " +
               std::to_string(st->moving_target) + ", \"done_pages\": " + std::to_string(st->moving_done) +
               ", \"total_pages\": " + std::to_string(st->moving_total) + "}";
    }
    out += "}";
  }
  return out + "\n]}\n";
}

std::string Cluster::DescribePage(uint64_t ino, uint64_t page) {
  const std::optional<uint32_t> owner = CachedOwner(ino);
  std::string out = "node " + std::to_string(self_) + ": owner " +
                    (owner ? "node " + std::to_string(*owner) : std::string("unknown"));
  Status serving = owned_.TryServing(ino);
  out += ", serving here: " + (serving.ok() ? std::string("yes") : serving.message());
  char mask[32];
  snprintf(mask, sizeof mask, "%#llx", static_cast<unsigned long long>(owned_.CopysetOf(ino, page)));
  return out + ", copyset of page " + std::to_string(page) + " here " + mask;
}

size_t Cluster::QueuedUnlocks() { return locks_held_->QueuedUnlocks(); }

void Cluster::AddGauges() {
  auto& r = metrics::Registry::Default();
  auto one = [](double v) { return std::vector<metrics::Sample>{{{}, v}}; };
  auto per_peer = [this](auto value) {
    std::vector<metrics::Sample> out;
    for (const net::PeerState& p : transport_->Peers())
      out.push_back({{{"node", std::to_string(p.node)}}, value(p)});
    return out;
  };
  r.AddGauge(this, "cshm_peer_up", "1 while this node's lease with the peer holds (it answered recently)",
             [per_peer] { return per_peer([](const net::PeerState& p) { return p.lease_held ? 1.0 : 0.0; }); });
  r.AddGauge(this, "cshm_peer_last_heard_seconds", "seconds since this node last heard from the peer (-1: never)",
             [per_peer] {
               return per_peer([](const net::PeerState& p) {
                 return p.heard ? static_cast<double>(p.since_heard.count()) / 1000 : -1.0;
               });
             });
  r.AddGauge(this, "cshm_kept_writebacks", "write-backs an unreachable owner did not take, kept in the state dir",
             [this, one] { return one(static_cast<double>(pending_->size())); });
  r.AddGauge(this, "cshm_semaphore_sets", "SysV semaphore sets this node serves (it made them)", [this] {
    return std::vector<metrics::Sample>{{{}, semaphores_ ? static_cast<double>(semaphores_->sets()) : 0.0}};
  });
  r.AddGauge(this, "cshm_queued_unlocks", "unlocks the owner did not answer, to be sent again",
             [this, one] { return one(static_cast<double>(QueuedUnlocks())); });
  r.AddGauge(this, "cshm_twin_bytes", "bytes of the twins this node keeps in its state dir (a copy of each page "
             "its kernel fetched from another node, as fetched)",
             [this, one] { return one(static_cast<double>(twins_->count() * kPageSize)); });
  r.AddGauge(this, "cshm_connections_refused_total", "connections refused: the peer could not prove the secret or "
             "spoke from another node's address", [this, one] { return one(static_cast<double>(transport_->refused_peers())); },
             "counter");
  r.AddGauge(this, "cshm_bad_frames_total", "malformed frames received (the connection was closed)",
             [this, one] { return one(static_cast<double>(transport_->bad_frames())); }, "counter");
}

}  // namespace cshm::fs
