// PendingWrites: write-backs an unreachable owner could not take, kept in the
// state dir until they are delivered (DESIGN.md: "Never drop bytes the kernel
// handed us"). The kernel has been told EIO (it marks such pages clean and
// never sends them again), so these files are the only copy of those bytes
// besides the page cache: they survive a restart of this daemon too.
//
//   <state-dir>/pending/<seq hex>.<ino hex>   one encoded WriteBackRequest
//
// Delivery keeps the order per segment: a later write-back of a segment goes
// only after the earlier ones.
//
// Thread-safety: all methods are thread-safe; one Drain per inode at a time
// (drains of different inodes run side by side: one unreachable owner must
// not hold up the write-backs of every other segment).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"

namespace cshm::fs {

class PendingWrites {
 public:
  static Result<std::unique_ptr<PendingWrites>> Open(const std::string& dir);

  Status Add(uint64_t ino, const std::string& payload);
  bool Has(uint64_t ino);
  std::vector<uint64_t> Inodes();
  size_t size();
  // Sends the queued write-backs of `ino` in order; stops at the first that
  // `send` cannot deliver and returns its Status. `send` returning kNotFound
  // (the segment is gone) drops that write-back.
  Status Drain(uint64_t ino, const std::function<Status(const std::string& payload)>& send);

 private:
  explicit PendingWrites(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
  Mutex mu_;  // not held while sending
  CondVar drained_;
  std::set<uint64_t> draining_ GUARDED_BY(mu_);  // inodes a Drain is sending
  uint64_t next_ GUARDED_BY(mu_) = 0;
  std::map<uint64_t, std::map<uint64_t, std::string>> queue_ GUARDED_BY(mu_);  // ino -> seq -> file
};

}  // namespace cshm::fs
