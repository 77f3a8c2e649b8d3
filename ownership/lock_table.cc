#include "ownership/lock_table.h"

#include <algorithm>

namespace cshm::ownership {
namespace {

bool Overlap(const Lock& a, const Lock& b) { return a.start <= b.end && b.start <= a.end; }

}  // namespace

std::optional<Lock> LockTable::Conflict(uint64_t ino, const Lock& want) const {
  auto it = locks_.find(ino);
  if (it == locks_.end()) return std::nullopt;
  for (const Lock& l : it->second) {
    if (l.flock != want.flock || l.who == want.who || !Overlap(l, want)) continue;
    if (l.type == F_WRLCK || want.type == F_WRLCK) return l;
  }
  return std::nullopt;
}

void LockTable::Unlock(uint64_t ino, const LockOwner& who, bool flock, uint64_t start, uint64_t end) {
  auto it = locks_.find(ino);
  if (it == locks_.end()) return;
  std::vector<Lock> out;
  for (const Lock& l : it->second) {
    if (l.flock != flock || !(l.who == who) || l.end < start || l.start > end) {
      out.push_back(l);
      continue;
    }
    // Keep the parts outside [start, end].
    if (l.start < start) {
      Lock left = l;
      left.end = start - 1;
      out.push_back(left);
    }
    if (l.end > end) {
      Lock right = l;
      right.start = end + 1;
      out.push_back(right);
    }
  }
  if (out.empty()) locks_.erase(it);
  else it->second = std::move(out);
}

bool LockTable::TrySet(uint64_t ino, const Lock& want) {
  if (Conflict(ino, want)) return false;
  Unlock(ino, want.who, want.flock, want.start, want.end);
  auto& v = locks_[ino];
  Lock merged = want;
  // Merge with the owner's adjacent or overlapping locks of the same type.
  for (auto it = v.begin(); it != v.end();) {
    const bool adjacent = (it->end != kLockEof && it->end + 1 == merged.start) ||
                          (merged.end != kLockEof && merged.end + 1 == it->start);
    if (it->who == merged.who && it->flock == merged.flock && it->type == merged.type &&
        (Overlap(*it, merged) || adjacent)) {
      merged.start = std::min(merged.start, it->start);
      merged.end = std::max(merged.end, it->end);
      it = v.erase(it);
    } else {
      ++it;
    }
  }
  v.push_back(merged);
  return true;
}

void LockTable::ReleaseNode(uint32_t node) {
  for (auto it = locks_.begin(); it != locks_.end();) {
    auto& v = it->second;
    v.erase(std::remove_if(v.begin(), v.end(), [&](const Lock& l) { return l.who.node == node; }), v.end());
    it = v.empty() ? locks_.erase(it) : std::next(it);
  }
}

std::vector<Lock> LockTable::Locks(uint64_t ino) const {
  auto it = locks_.find(ino);
  return it == locks_.end() ? std::vector<Lock>{} : it->second;
}

std::vector<Lock> LockTable::Take(uint64_t ino) {
  auto it = locks_.find(ino);
  if (it == locks_.end()) return {};
  std::vector<Lock> out = std::move(it->second);
  locks_.erase(it);
  return out;
}

void LockTable::Put(uint64_t ino, std::vector<Lock> locks) {
  if (locks.empty()) return;
  auto& v = locks_[ino];
  v.insert(v.end(), locks.begin(), locks.end());
}

}  // namespace cshm::ownership
