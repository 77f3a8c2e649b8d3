// TwinCache: for every page this node's kernel holds of a cluster segment, the
// copy as this node last fetched or wrote it back (DESIGN.md "twin"). Pages
// live in sparse files under <state-dir>/twins (page cache, not heap); which
// pages are present is kept in memory. Twins do not outlive the daemon: the
// kernel's cache does not either, so Open() starts empty.
//
// Thread-safety: all methods are thread-safe (one mutex; page I/O is small).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "migrator/move_twins.h"
#include "ownership/owned_segments.h"
#include "store/page_store.h"

namespace cshm::fs {

class TwinCache : public ownership::OwnerTwinStore, public migrator::MoveTwins {
 public:
  static Result<std::unique_ptr<TwinCache>> Open(const std::string& dir);

  // Stores `data` as the twins of the pages it covers, starting at the
  // page-aligned `off`; a short last page is padded with zeros. On failure
  // (the state dir's disk is full) no twin of those pages is kept.
  Status Put(uint64_t ino, uint64_t off, std::string_view data) override;
  std::optional<std::string> Get(uint64_t ino, uint64_t page) override;
  bool Has(uint64_t ino, uint64_t page) override;
  // Writes `data` at `off` into twins that exist; with `whole_pages`, pages
  // wholly covered by it get a twin if they had none (not on the owner, whose
  // pages are their own twins).
  void Patch(uint64_t ino, uint64_t off, std::string_view data, bool whole_pages = true);
  // The owner's saved twins (ownership::OwnerTwinStore).
  Status Keep(uint64_t ino, uint64_t page, std::string_view before) override {
    return Put(ino, page * store::kPageSize, before);
  }
  void Discard(uint64_t ino, uint64_t off, uint64_t len) override { Drop(ino, ownership::Range{off, len}); }
  // Drops the twins of `range` (len 0: to the end) that were stored at or
  // before `stored_by` (a Mark()): a notify drops the kernel's pages and then
  // their twins, and a page fetched again meanwhile keeps its fresh twin.
  void Drop(uint64_t ino, const ownership::Range& range, uint64_t stored_by = UINT64_MAX);
  // The stamp of the latest twin stored so far.
  uint64_t Mark();
  void DropInode(uint64_t ino);
  // Drops the twins of `ino` stored at or before `stored_by` (a Mark()), and
  // its file if none is left: the kernel forgot the inode, and with it its
  // pages, but may have looked it up and faulted pages in again since.
  void DropInodeUpTo(uint64_t ino, uint64_t stored_by);
  // One byte per page: 1 if this node holds a twin of it.
  std::string Bitmap(uint64_t ino) override;
  // How many twins this node holds (one page each).
  uint64_t count();

 private:
  explicit TwinCache(std::unique_ptr<store::PageStore> pages) : pages_(std::move(pages)) {}
  bool HasLocked(uint64_t ino, uint64_t page) REQUIRES(mu_);

  std::unique_ptr<store::PageStore> pages_;
  Mutex mu_;
  // Per inode and page: 0 = no twin, else when it was stored.
  std::unordered_map<uint64_t, std::vector<uint64_t>> stored_ GUARDED_BY(mu_);
  uint64_t last_stamp_ GUARDED_BY(mu_) = 0;
};

}  // namespace cshm::fs
