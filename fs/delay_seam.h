// Test seams of the daemon: where a test widens a race (the fault and
// migration tests start daemons with them). The core reads no environment:
// cshmfs's main reads CSHM_TEST_* and CSHM_NET_* into TestSeams and gives
// them through FileSystemOptions; the simulated cluster gives hooks of its
// own. All off by default, and each logs loudly when it acts.
#pragma once

#include "common/delay_seam.h"
#include "net/transport.h"

namespace cshm::fs {

struct TestSeams {
  DelaySeam slow_fetch;          // CSHM_TEST_SLOW_FETCH_MS: a fetch from a remote owner, before it is sent
  DelaySeam slow_twin_patch;     // CSHM_TEST_SLOW_TWIN_PATCH_MS: a write-back's twin update, after it is answered
  DelaySeam slow_invalidate;     // CSHM_TEST_SLOW_INVALIDATE_MS: an owner's invalidation, before this node's kernel is told
  DelaySeam slow_migrate_chunk;  // CSHM_TEST_SLOW_MIGRATE_CHUNK_MS: each chunk of a move from here, before it is sent
  bool die_in_migration = false;  // CSHM_TEST_DIE_IN_MIGRATION: the target of a move exits (3) as pages arrive
  net::FaultSeam net;             // CSHM_NET_*: frames delayed, lost, dropped (net/transport.h)
};

}  // namespace cshm::fs
