/* What the shim's C checkers (shm_check.c, sem_check.c, psem_check.c) share:
 * the check macros, and the checksummed record of the producer/consumer
 * rings (the Python producer, psem_producer.py, computes the same sum). */
#pragma once

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                           \
  do {                                                                                     \
    if (!(c)) {                                                                            \
      fprintf(stderr, "check failed at line %d: %s (errno %d %s)\n", __LINE__, #c, errno, \
              strerror(errno));                                                            \
      exit(1);                                                                             \
    }                                                                                      \
  } while (0)
#define CHECK_ERR(call, err) CHECK((call) == -1 && errno == (err))

struct record {
  uint64_t seq;
  uint64_t sum;
  char text[64];
};

static inline uint64_t checksum(const struct record* r) {
  uint64_t h = 1469598103934665603ull ^ r->seq;
  for (size_t i = 0; i < sizeof(r->text); i++) h = (h ^ (unsigned char)r->text[i]) * 1099511628211ull;
  return h;
}
