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
//   drops them; msync writes the dirty pages back, waiting for those already
//   under write-back, and then asks for a release (FSYNC);
// - a failed write-back marks the page clean anyway, as the kernel does;
// - readahead: a fault reads the missing page and the absent pages after it,
//   up to a window (`readahead` pages; 1: none), in one READ, all of them
//   locked until it is answered; pages read ahead past the end of the file
//   are not cached.
//
// Thread-safety: every method is thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>

#include "common/mutex.h"
#include "common/status.h"
#include "fs/filesystem.h"

namespace cshm::sim {

// What one node's kernel did to each page, the newest few thousand events,
// kept across the node's crashes: what a failure of the simulation prints
// for the page it is about (a trace would change the timing it depends on).
class KernelLog {
 public:
  struct Event {
    std::chrono::system_clock::time_point at;  // as the daemons' log says it
    std::string what;    // "fault", "faulted", "store", "write-back", ...
    uint64_t ino = 0, page = 0;
    std::string head;    // the page's first bytes then, if it had any
    std::string status;  // an outcome, if the event has one
  };
  void Add(std::string what, uint64_t ino, uint64_t page, std::string_view data = {}, std::string status = {});
  // The events of one page, oldest first, one per line; `describe` renders a
  // page's first bytes.
  std::string Of(uint64_t ino, uint64_t page, const std::function<std::string(std::string_view)>& describe);

 private:
  static constexpr size_t kKeep = 20000;
  static constexpr size_t kHead = 256;
  Mutex mu_;
  std::deque<Event> events_ GUARDED_BY(mu_);
};

class FakeKernel {
 public:
  FakeKernel(fs::FileSystem* fs, KernelLog* log = nullptr, uint64_t readahead = 1)
      : fs_(fs), log_(log), readahead_(readahead < 1 ? 1 : readahead) {}

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
  // With mu_ held by `lock`: waits until the page is absent or settled
  // (clean or dirty).
  std::map<Key, Page>::iterator Settle(MutexLock& lock, const Key& k) REQUIRES(mu_);
  // Faults the page in if absent (mu_ released while the daemon reads); its
  // iterator, settled.
  Result<std::map<Key, Page>::iterator> Fault(MutexLock& lock, const Key& k) REQUIRES(mu_);
  // The page is dirty: writes it back, mu_ released meanwhile.
  Status WriteBack(const Key& k) REQUIRES(mu_);

  void Note(std::string what, const Key& k, std::string_view data = {}, std::string status = {}) {
    if (log_) log_->Add(std::move(what), k.first, k.second, data, std::move(status));
  }

  fs::FileSystem* const fs_;
  KernelLog* const log_;
  const uint64_t readahead_;  // pages a fault reads, at most
  Mutex mu_;
  CondVar changed_;  // a page settled, or was dropped
  std::map<Key, Page> pages_ GUARDED_BY(mu_);
};

}  // namespace cshm::sim
