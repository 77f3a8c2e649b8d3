// Which SysV keys go to the cluster: CSHM_KEYS="0x1000-0x1fff,42,private".
// Unset: every key (and IPC_PRIVATE). Pure parsing, unit-tested.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace cshm::ipc {

class KeyScope {
 public:
  // nullopt: malformed (the caller warns and treats every key as out of scope).
  static std::optional<KeyScope> Parse(std::string_view spec);
  static KeyScope All();
  bool Contains(key_t key) const;

 private:
  bool all_ = false;
  bool private_ = false;
  std::vector<std::pair<unsigned long, unsigned long>> ranges_;
};

}  // namespace cshm::ipc
