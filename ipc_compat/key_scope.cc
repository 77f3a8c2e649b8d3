#include "ipc_compat/key_scope.h"

#include <sys/ipc.h>

#include <cerrno>
#include <cstdlib>
#include <string>

namespace cshm::ipc {
namespace {

std::optional<unsigned long> Number(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  std::string str(s);
  char* end = nullptr;
  errno = 0;
  unsigned long v = std::strtoul(str.c_str(), &end, 0);
  if (errno != 0 || end != str.c_str() + str.size() || v > 0xffffffffUL) return std::nullopt;
  return v;
}

}  // namespace

KeyScope KeyScope::All() {
  KeyScope k;
  k.all_ = true;
  return k;
}

std::optional<KeyScope> KeyScope::Parse(std::string_view spec) {
  KeyScope k;
  if (spec.empty()) return std::nullopt;
  size_t start = 0;
  while (start <= spec.size()) {
    size_t comma = spec.find(',', start);
    if (comma == std::string_view::npos) comma = spec.size();
    std::string_view item = spec.substr(start, comma - start);
    start = comma + 1;
    if (item == "all") {
      k.all_ = true;
    } else if (item == "private") {
      k.private_ = true;
    } else {
      size_t dash = item.find('-', 1);
      auto lo = Number(item.substr(0, dash));
      auto hi = dash == std::string_view::npos ? lo : Number(item.substr(dash + 1));
      if (!lo || !hi || *lo > *hi) return std::nullopt;
      k.ranges_.emplace_back(*lo, *hi);
    }
    if (comma == spec.size()) break;
  }
  return k;
}

bool KeyScope::Contains(key_t key) const {
  if (all_) return true;
  if (key == IPC_PRIVATE) return private_;
  const unsigned long u = static_cast<unsigned int>(key);
  for (auto [lo, hi] : ranges_)
    if (u >= lo && u <= hi) return true;
  return false;
}

}  // namespace cshm::ipc
