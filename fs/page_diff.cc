#include "fs/page_diff.h"

#include <cstring>

namespace cshm::fs {

void DiffInto(uint64_t base, std::string_view twin, std::string_view now, std::vector<ownership::WriteRun>* out) {
  const size_t n = std::min(twin.size(), now.size());
  size_t i = 0;
  while (i < n) {
    // Skip equal bytes a word at a time.
    while (i + 8 <= n && std::memcmp(twin.data() + i, now.data() + i, 8) == 0) i += 8;
    while (i < n && twin[i] == now[i]) i++;
    if (i >= n) break;
    size_t j = i;
    while (j < n && twin[j] != now[j]) j++;
    out->push_back(ownership::WriteRun{base + i, std::string(now.substr(i, j - i))});
    i = j;
  }
}

}  // namespace cshm::fs
