// ConnectionWatch: a small process beside the daemon that aborts the daemon's
// FUSE connection when the daemon was killed but cannot die.
//
// Why: a thread of ours inside an invalidation notify waits (uninterruptibly)
// for a page lock that a read of the same file holds, and the read waits for
// our answer. Normally another thread answers it. After kill -9 (or the OOM
// killer) no thread is left to answer, the notifying thread never returns, so
// the process never exits and never closes /dev/fuse, so the kernel never
// aborts the connection: the mount and every process that touches it hang
// for ever. The watcher sees SIGKILL pending in the daemon for a few polls
// and writes /sys/fs/fuse/connections/N/abort, which fails the read, which
// frees the page, which lets the thread and the process die.
//
// The watcher is this binary run again (`cshmfs --watch-connection ...`), so
// that it holds none of the daemon's descriptors (not /dev/fuse: it would
// keep the connection alive itself) and needs none of its state. It exits
// when the daemon or the connection is gone.
#pragma once

#include <sys/types.h>

#include <string>

#include "common/status.h"

namespace cshm::fs {

// The first command-line argument that runs the watcher instead of a mount.
inline constexpr char kWatchConnectionFlag[] = "--watch-connection";

// Starts the watcher of this process's connection `minor` (the device minor
// of its mount). `log_file` gets one line if it ever aborts. Returns its pid.
// Only root can abort connections (and mount fusectl): for anyone else this
// returns NotSupported and starts nothing.
Result<pid_t> StartConnectionWatch(const std::string& minor, const std::string& log_file);

// Stops the watcher (at a clean exit, before the process ends).
void StopConnectionWatch(pid_t watcher);

// The watcher's main: `argv` is {flag, daemon pid, minor, log file}. Polls
// every 250 ms; returns once the daemon is gone.
int RunConnectionWatch(int argc, char** argv);

}  // namespace cshm::fs
