#include "meta/name_cache.h"

#include <algorithm>

#include "common/bytes.h"

namespace cshm::meta {

// Enough for any real change (a rename names two entries and four
// directories); a longer list is malformed.
constexpr uint32_t kMaxListed = 64;

std::string NameChange::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU32(static_cast<uint32_t>(dirs.size()));
  for (uint64_t d : dirs) w.PutU64(d);
  w.PutU32(static_cast<uint32_t>(names.size()));
  for (const auto& [parent, name] : names) {
    w.PutU64(parent);
    w.PutBytes(name);
  }
  return out;
}

Result<NameChange> NameChange::Decode(std::string_view in) {
  NameChange c;
  ByteReader r(in);
  uint32_t n = 0;
  if (!r.GetU32(&n) || n > kMaxListed) return Invalid("malformed name change");
  for (uint32_t i = 0; i < n && r.ok(); i++) r.GetU64(&c.dirs.emplace_back());
  if (!r.GetU32(&n) || n > kMaxListed) return Invalid("malformed name change");
  for (uint32_t i = 0; i < n && r.ok(); i++) {
    auto& [parent, name] = c.names.emplace_back();
    r.GetU64(&parent);
    r.GetBytes(&name);
  }
  if (!r.AtEnd()) return Invalid("malformed name change");
  return c;
}

void NameGrants::Granted(uint32_t node, uint32_t cache_ms) {
  if (cache_ms == 0) return;
  const Clock::time_point until = Clock::now() + std::chrono::milliseconds(cache_ms) + kMargin;
  MutexLock lock(&mu_);
  Clock::time_point& t = until_[node];
  t = std::max(t, until);
}

NameGrants::Clock::time_point NameGrants::Until(uint32_t node) {
  MutexLock lock(&mu_);
  auto it = until_.find(node);
  return it == until_.end() ? Clock::time_point{} : it->second;
}

}  // namespace cshm::meta
