#include "fs/twin_cache.h"

#include <spdlog/spdlog.h>

#include <filesystem>

namespace cshm::fs {

using store::kPageSize;

Result<std::unique_ptr<TwinCache>> TwinCache::Open(const std::string& dir) {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (ec) return IoError("cannot clear twin directory " + dir + ": " + ec.message());
  CSHM_ASSIGN_OR_RETURN(auto pages, store::PageStore::Open(dir, store::PageStore::kUnlimited));
  return std::unique_ptr<TwinCache>(new TwinCache(std::move(pages)));
}

bool TwinCache::Has(uint64_t ino, uint64_t page) {
  MutexLock lock(&mu_);
  return HasLocked(ino, page);
}

bool TwinCache::HasLocked(uint64_t ino, uint64_t page) {
  auto it = stored_.find(ino);
  return it != stored_.end() && page < it->second.size() && it->second[page] != 0;
}

Status TwinCache::Put(uint64_t ino, uint64_t off, std::string_view data) {
  if (data.empty()) return Status::Ok();
  if (off % kPageSize != 0) return Invalid("twins start at a page");
  // The file under mu_: DropInodeUpTo may remove it meanwhile otherwise, and
  // the twin would go to a file no later Get reads.
  MutexLock lock(&mu_);
  auto seg = pages_->Get(ino);
  if (!seg.ok()) {
    spdlog::warn("cannot store twins of inode {}: {}", ino, seg.status().message());
    return seg.status();
  }
  // The last page past the data (past EOF) is zeros, as the kernel sees it.
  const size_t whole = (data.size() + kPageSize - 1) / kPageSize * kPageSize;
  const std::string zeros(whole - data.size(), '\0');
  {
    MutexLock seg_lock(&(*seg)->mu());
    Status st = (*seg)->Write(off, data.data(), data.size());
    if (st.ok() && !zeros.empty()) st = (*seg)->Write(off + data.size(), zeros.data(), zeros.size());
    if (!st.ok()) {
      // What is there may be half written: none of these pages has a twin.
      auto it = stored_.find(ino);
      for (uint64_t p = off / kPageSize; it != stored_.end() && p < it->second.size() && p * kPageSize < off + whole; p++)
        it->second[p] = 0;
      spdlog::warn("cannot store twins of inode {} ({}); those pages are not given to this node's kernel", ino,
                   st.message());
      return st;
    }
  }
  auto& stamps = stored_[ino];
  const uint64_t first = off / kPageSize, last = (off + whole) / kPageSize;
  if (stamps.size() < last) stamps.resize(last, 0);
  const uint64_t stamp = ++last_stamp_;
  for (uint64_t p = first; p < last; p++) stamps[p] = stamp;
  return Status::Ok();
}

std::optional<std::string> TwinCache::Get(uint64_t ino, uint64_t page) {
  MutexLock lock(&mu_);
  if (!HasLocked(ino, page)) return std::nullopt;
  auto seg = pages_->Get(ino);
  if (!seg.ok()) return std::nullopt;
  std::string out(kPageSize, '\0');
  if (!(*seg)->Read(page * kPageSize, kPageSize, out.data()).ok()) return std::nullopt;
  return out;
}

void TwinCache::Patch(uint64_t ino, uint64_t off, std::string_view data, bool whole_pages) {
  if (data.empty()) return;
  const uint64_t end = off + data.size();
  MutexLock lock(&mu_);
  // No twin file for a write that patches no twin (every write on the owner).
  auto known = stored_.find(ino);
  const bool covers_a_page = whole_pages && (off + store::kPageSize - 1) / store::kPageSize * store::kPageSize +
                                                    store::kPageSize <= end;
  if (!covers_a_page) {
    if (known == stored_.end()) return;
    bool any = false;
    for (uint64_t p = off / kPageSize; p * kPageSize < end && p < known->second.size() && !any; p++)
      any = known->second[p] != 0;
    if (!any) return;
  }
  auto seg = pages_->Get(ino);
  if (!seg.ok()) return;
  auto& stamps = stored_[ino];
  for (uint64_t p = off / kPageSize; p * kPageSize < end; p++) {
    const uint64_t ps = p * kPageSize, pe = ps + kPageSize;
    const bool whole = whole_pages && off <= ps && end >= pe;
    const bool had = p < stamps.size() && stamps[p] != 0;
    if (!whole && !had) continue;
    const uint64_t s = std::max(ps, off), e = std::min(pe, end);
    MutexLock seg_lock(&(*seg)->mu());
    if (!(*seg)->Write(s, data.data() + (s - off), e - s).ok()) {
      if (had) stamps[p] = 0;  // no twin beats a wrong one
      continue;
    }
    if (stamps.size() <= p) stamps.resize(p + 1, 0);
    if (!had) stamps[p] = ++last_stamp_;  // a patched twin keeps its age
  }
}

void TwinCache::Drop(uint64_t ino, const ownership::Range& range, uint64_t stored_by) {
  MutexLock lock(&mu_);
  auto it = stored_.find(ino);
  if (it == stored_.end()) return;
  auto& stamps = it->second;
  const uint64_t first = range.off / kPageSize;
  const uint64_t last = range.len == 0 ? stamps.size() : std::min<uint64_t>(stamps.size(), (range.off + range.len + kPageSize - 1) / kPageSize);
  for (uint64_t p = first; p < last; p++)
    if (stamps[p] <= stored_by) stamps[p] = 0;
}

uint64_t TwinCache::Mark() {
  MutexLock lock(&mu_);
  return last_stamp_;
}

void TwinCache::DropInodeUpTo(uint64_t ino, uint64_t stored_by) {
  MutexLock lock(&mu_);
  auto it = stored_.find(ino);
  if (it != stored_.end()) {
    for (uint64_t& stamp : it->second)
      if (stamp <= stored_by) stamp = 0;
    for (uint64_t stamp : it->second)
      if (stamp != 0) return;  // stored since: the kernel holds those pages again
    stored_.erase(it);
  }
  (void)pages_->Remove(ino);
}

void TwinCache::DropInode(uint64_t ino) {
  {
    MutexLock lock(&mu_);
    stored_.erase(ino);
  }
  (void)pages_->Remove(ino);
}

std::string TwinCache::Bitmap(uint64_t ino) {
  MutexLock lock(&mu_);
  auto it = stored_.find(ino);
  if (it == stored_.end()) return "";
  std::string out(it->second.size(), '\0');
  for (size_t p = 0; p < it->second.size(); p++) out[p] = it->second[p] != 0 ? 1 : 0;
  return out;
}

uint64_t TwinCache::count() {
  MutexLock lock(&mu_);
  uint64_t n = 0;
  for (const auto& [ino, stamps] : stored_)
    for (uint64_t stamp : stamps) n += stamp != 0;
  return n;
}

}  // namespace cshm::fs
