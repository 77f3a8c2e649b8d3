// RandomId: a fresh 64-bit value from the system's entropy (an incarnation,
// a move's id): unique across restarts and nodes with overwhelming odds.
#pragma once

#include <cstdint>
#include <random>

namespace cshm {

inline uint64_t RandomId() {
  std::random_device rd;
  return rd() | (static_cast<uint64_t>(rd()) << 32);
}

}  // namespace cshm
