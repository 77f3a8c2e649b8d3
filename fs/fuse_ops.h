// The table of FUSE low-level callbacks. The session's userdata must be the
// fs::FileSystem that serves them.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include "fs/filesystem.h"

namespace cshm::fs {

using store::Timestamp;

const fuse_lowlevel_ops& FuseOps();

}  // namespace cshm::fs
