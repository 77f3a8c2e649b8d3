// Checksummed 64-byte records for tests that write under faults (kill -9,
// migrations) and then check that every acknowledged record is intact.
#pragma once

#include <cstdint>

namespace cshm::testing {

struct Record {
  uint32_t writer, seq;
  char pattern[48];
  uint64_t sum;
};
static_assert(sizeof(Record) == 64);

inline uint64_t Sum(const Record& r) {
  uint64_t s = 1469598103934665603ull ^ (uint64_t{r.writer} << 32 | r.seq);
  for (char ch : r.pattern) s = (s ^ static_cast<unsigned char>(ch)) * 1099511628211ull;
  return s;
}

// Fills `r` as record `seq` of `writer`, checksum included.
inline void MakeRecord(Record& r, uint32_t writer, uint32_t seq) {
  r.writer = writer;
  r.seq = seq;
  for (int k = 0; k < 48; k++) r.pattern[k] = static_cast<char>('a' + (seq + k + writer) % 26);
  r.sum = Sum(r);
}

inline bool Intact(const Record& r, uint32_t writer, uint32_t seq) {
  return r.writer == writer && r.seq == seq && r.sum == Sum(r);
}

}  // namespace cshm::testing
