// StateDir: a node's state directory, held exclusively by one running daemon.
//
//   <dir>/meta/        the RocksDB metadata store
//   <dir>/pages/       one sparse backing file per owned segment
//   <dir>/cshmfs.pid   the daemon's pid; flock()ed while it runs
//   <dir>/cshmfs.log   the log of a daemon that runs in the background
//
// Open() creates what is missing and fails with a message that says what to do
// when the directory cannot be created or written, or another daemon holds it.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"

namespace cshm::store {

class StateDir {
 public:
  static Result<std::unique_ptr<StateDir>> Open(const std::string& path);
  ~StateDir();

  const std::string& path() const { return path_; }
  std::string meta_dir() const { return path_ + "/meta"; }
  std::string pages_dir() const { return path_ + "/pages"; }
  std::string log_file() const { return path_ + "/cshmfs.log"; }
  std::string pid_file() const { return path_ + "/cshmfs.pid"; }
  // Rewrites the pid file (after the daemon forked into the background).
  Status WritePid();

 private:
  explicit StateDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
  int lock_fd_ = -1;
};

// The state dir used when --state-dir is not given: one per mount point, under
// /var/lib/cshm for root and $XDG_STATE_HOME/cshm (~/.local/state/cshm) otherwise.
std::string DefaultStateDir(const std::string& mountpoint);

}  // namespace cshm::store
