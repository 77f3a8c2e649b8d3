#include "meta/references.h"

#include <algorithm>

#include "common/bytes.h"

namespace cshm::meta {

// A snapshot of a million held inodes is 16 MB; refuse anything claiming more.
constexpr uint32_t kMaxSnapshotEntries = 4u << 20;

std::string ReferenceSnapshot::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU64(seq);
  w.PutU32(static_cast<uint32_t>(held.size()));
  for (auto [ino, n] : held) {
    w.PutU64(ino);
    w.PutU64(n);
  }
  return out;
}

Result<ReferenceSnapshot> ReferenceSnapshot::Decode(std::string_view in) {
  ReferenceSnapshot s;
  ByteReader r(in);
  uint32_t count = 0;
  r.GetU64(&s.seq);
  r.GetU32(&count);
  if (!r.ok() || count > kMaxSnapshotEntries || count > (in.size() - 12) / 16)
    return Invalid("malformed reference snapshot");
  s.held.reserve(count);
  for (uint32_t i = 0; i < count; i++) {
    uint64_t ino = 0, n = 0;
    r.GetU64(&ino);
    r.GetU64(&n);
    if (n == 0 || ino == 0) return Invalid("malformed reference snapshot: empty entry");
    s.held.emplace_back(ino, n);
  }
  if (!r.AtEnd()) return Invalid("malformed reference snapshot");
  return s;
}

bool NodeReferences::Settled() const {
  if (!expected_) return false;
  for (auto& [id, n] : nodes_)
    if (n.state == State::kUnknown) return false;
  return true;
}

void NodeReferences::Expect(const std::vector<uint32_t>& peers) {
  expected_ = true;
  for (uint32_t p : peers)
    if (p != self_) nodes_[p].state = State::kUnknown;
}

NodeReferences::State NodeReferences::state(uint32_t node) const {
  if (node == self_) return State::kRegistered;
  auto it = nodes_.find(node);
  return it == nodes_.end() ? State::kRegistered : it->second.state;
}

void NodeReferences::Apply(uint64_t ino, uint32_t node, int64_t n) {
  auto& per_node = counts_[ino];
  uint64_t& c = per_node[node];
  if (n >= 0) c += static_cast<uint64_t>(n);
  else c = c > static_cast<uint64_t>(-n) ? c - static_cast<uint64_t>(-n) : 0;
  if (c == 0) per_node.erase(node);
  if (per_node.empty()) counts_.erase(ino);
}

bool NodeReferences::Admit(uint32_t node, uint64_t seq, uint64_t ino, int64_t n) {
  if (node == self_) return true;
  Node& st = nodes_[node];
  if (seq < st.floor) return false;  // in the table it registered
  if (st.asking) st.log.push_back(Delta{seq, ino, n});
  return true;
}

void NodeReferences::Take(uint64_t ino, uint32_t node, uint64_t seq) {
  if (Admit(node, seq, ino, 1)) Apply(ino, node, 1);
}

void NodeReferences::Drop(uint64_t ino, uint32_t node, uint64_t n, uint64_t seq) {
  const int64_t d = -static_cast<int64_t>(std::min<uint64_t>(n, INT64_MAX));
  if (Admit(node, seq, ino, d)) Apply(ino, node, d);
}

uint64_t NodeReferences::Count(uint64_t ino) const {
  auto it = counts_.find(ino);
  if (it == counts_.end()) return 0;
  uint64_t total = 0;
  for (auto& [node, c] : it->second) total += c;
  return total;
}

bool NodeReferences::HeldBy(uint64_t ino, uint32_t node) const {
  auto it = counts_.find(ino);
  return it != counts_.end() && it->second.count(node) != 0;
}

std::vector<uint32_t> NodeReferences::Holders(uint64_t ino) const {
  std::vector<uint32_t> out;
  auto it = counts_.find(ino);
  if (it == counts_.end()) return out;
  for (auto& [node, c] : it->second) out.push_back(node);
  return out;
}

void NodeReferences::EraseNode(uint32_t node) {
  for (auto it = counts_.begin(); it != counts_.end();) {
    it->second.erase(node);
    it = it->second.empty() ? counts_.erase(it) : std::next(it);
  }
}

void NodeReferences::Asking(uint32_t node) {
  if (node == self_) return;
  Node& st = nodes_[node];
  st.asking = true;
  st.log.clear();
}

void NodeReferences::Abandon(uint32_t node) {
  auto it = nodes_.find(node);
  if (it == nodes_.end()) return;
  it->second.asking = false;
  it->second.log.clear();
}

void NodeReferences::Register(uint32_t node, const ReferenceSnapshot& snap) {
  if (node == self_) return;
  Node& st = nodes_[node];
  if (!st.asking || snap.seq < st.floor) return;  // not what we asked for, or older than what we have
  EraseNode(node);
  for (auto [ino, n] : snap.held) Apply(ino, node, static_cast<int64_t>(std::min<uint64_t>(n, INT64_MAX)));
  for (const Delta& d : st.log)
    if (d.seq >= snap.seq) Apply(d.ino, node, d.n);
  st.floor = snap.seq;
  st.asking = false;
  st.log.clear();
  st.state = State::kRegistered;
}

void NodeReferences::Gone(uint32_t node) {
  if (node == self_) return;
  Node& st = nodes_[node];
  EraseNode(node);
  st.asking = false;
  st.log.clear();
  st.state = State::kGone;
}

void NodeReferences::Unknown(uint32_t node) {
  if (node == self_) return;
  nodes_[node].state = State::kUnknown;
}

uint64_t HeldReferences::Begin() {
  MutexLock lock(&mu_);
  cv_.Wait(lock, [&]() REQUIRES(mu_) { return !snapshotting_; });
  in_flight_++;
  return next_seq_++;
}

void HeldReferences::End(uint64_t ino, uint64_t parent, std::string_view name) {
  MutexLock lock(&mu_);
  if (ino != 0) held_[ino]++;
  if (ino != 0 && !name.empty()) names_[ino] = {parent, std::string(name)};
  if (--in_flight_ == 0) cv_.NotifyAll();
}

uint64_t HeldReferences::Forget(uint64_t ino, uint64_t n) {
  MutexLock lock(&mu_);
  auto it = held_.find(ino);
  if (it != held_.end()) {
    it->second = it->second > n ? it->second - n : 0;
    if (it->second == 0) {
      held_.erase(it);
      names_.erase(ino);
    }
  }
  return next_seq_++;
}

Result<ReferenceSnapshot> HeldReferences::Snapshot(std::chrono::milliseconds wait) {
  MutexLock lock(&mu_);
  // Writer first: new requests wait (at most `wait`) so that this one ends.
  cv_.Wait(lock, [&]() REQUIRES(mu_) { return !snapshotting_; });
  snapshotting_ = true;
  const bool idle = cv_.WaitFor(lock, wait, [&]() REQUIRES(mu_) { return in_flight_ == 0; });
  ReferenceSnapshot s;
  if (idle) {
    s.seq = next_seq_;
    s.held.assign(held_.begin(), held_.end());
  }
  snapshotting_ = false;
  cv_.NotifyAll();
  if (!idle) return Busy("metadata requests still in flight; the reference snapshot is retried");
  return s;
}

uint64_t HeldReferences::Count(uint64_t ino) {
  MutexLock lock(&mu_);
  auto it = held_.find(ino);
  return it == held_.end() ? 0 : it->second;
}

}  // namespace cshm::meta

namespace cshm::meta {

std::optional<std::pair<uint64_t, std::string>> HeldReferences::NameOf(uint64_t ino) {
  MutexLock lock(&mu_);
  auto it = names_.find(ino);
  if (it == names_.end()) return std::nullopt;
  return it->second;
}

}  // namespace cshm::meta
