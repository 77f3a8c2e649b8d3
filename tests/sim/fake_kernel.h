// FakeKernel: what the protocol depends on of one node's kernel page cache,
// over that node's fs::FileSystem, for the simulated cluster. An application
// "maps" files and loads and stores bytes; the fake holds the pages as the
// kernel's FUSE page cache would:
// - a missing page is faulted in with one READ of the page, and stays locked
//   (loading) until it is answered: an invalidation of it waits, as
//   invalidate_inode_pages2 waits for the folio lock;
// - a store dirties the page; a store to a page under write-back waits for it
//   (fuse_page_mkwrite -> folio_wait_writeback);
// - an invalidation (the daemon's notify, fs::Cluster::Notifier) writes the
//   dirty pages of the range back first (WRITE with writeback = true), then
//   drops them; so does msync, which then asks for a release (FSYNC);
// - a failed write-back marks the page clean anyway, as the kernel does.
// No readahead: each fault is one page.
//
// Thread-safety: every method is thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "common/status.h"
#include "fs/filesystem.h"

namespace cshm::sim {

class FakeKernel {
 public:
  explicit FakeKernel(fs::FileSystem* fs) : fs_(fs) {}

  // The notifier the node's FileSystem is given (FileSystem::SetNotifier).
  void Invalidate(uint64_t ino, uint64_t off, uint64_t len);

  // An application's load and store through a shared mapping: kIoError if a
  // fault could not be served (SIGBUS).
  Result<std::string> Load(uint64_t ino, uint64_t off, size_t len);
  Status Store(uint64_t ino, uint64_t off, std::string_view bytes);
  // msync(MS_SYNC) of the whole file: its dirty pages written back, then a
  // release. The first error, if any.
  Status Msync(uint64_t ino);
  // The kernel's own write-back of one dirty page, at a time of its choosing.
  void WriteBackSome(uint64_t ino, uint64_t page);

 private:
  enum class State { kLoading, kClean, kDirty, kWriteBack };
  struct Page {
    State state = State::kLoading;
    std::string data;
  };
  using Key = std::pair<uint64_t, uint64_t>;  // inode, page number
  // (lock held) Waits until the page is absent or settled (clean or dirty).
  std::map<Key, Page>::iterator Settle(std::unique_lock<std::mutex>& lock, const Key& k);
  // (lock held) Faults the page in if absent; its iterator, settled.
  Result<std::map<Key, Page>::iterator> Fault(std::unique_lock<std::mutex>& lock, const Key& k);
  // (lock held, page dirty) Writes it back, dropping the lock meanwhile.
  Status WriteBack(std::unique_lock<std::mutex>& lock, const Key& k);

  fs::FileSystem* const fs_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::map<Key, Page> pages_;  // GUARDED_BY(mu_)
};

}  // namespace cshm::sim
