// The table of FUSE low-level callbacks. The session's userdata must be the
// fs::FileSystem that serves them.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include "fs/filesystem.h"

namespace cshm::fs {

using store::Timestamp;

const fuse_lowlevel_ops& FuseOps();

// The largest READ the kernel sends (the max_read mount option): 252 pages.
// A READ answered from the page store is spliced from its file through a
// pipe, which holds at most 1 MiB (fs.pipe-max-size) with libfuse's margin
// of three pages; a 256-page READ would be copied instead.
constexpr uint32_t kMaxRead = (1u << 20) - 4 * 4096;

}  // namespace cshm::fs
