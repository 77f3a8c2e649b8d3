// The writes of the owner side (ownership/owned_segments.h): Apply merges a
// writer's runs (a late write only where the page is as its writer last saw
// it), keeps this node's own twins first, and names who must drop the pages;
// Truncate and Allocate change the size and the blocks the same way. Reads,
// the segments' states and their moves are in ownership/owned_segments.cc.
#include <linux/falloc.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <functional>
#include <map>

#include "ownership/owned_segments.h"

namespace cshm::ownership {

using store::kPageSize;

namespace {
// The pages [first, last] that `r` touches.
std::pair<uint64_t, uint64_t> PagesOf(const WriteRun& r) {
  return {r.off / kPageSize, (r.off + r.bytes.size() - 1) / kPageSize};
}

// The parts of `runs` on pages that `keep` accepts, split at page bounds.
std::vector<WriteRun> ClipToPages(const std::vector<WriteRun>& runs, const std::function<bool(uint64_t)>& keep) {
  std::vector<WriteRun> out;
  for (const WriteRun& r : runs) {
    if (r.bytes.empty()) continue;
    auto [first, last] = PagesOf(r);
    for (uint64_t p = first; p <= last; p++) {
      if (!keep(p)) continue;
      const uint64_t s = std::max(r.off, p * kPageSize), e = std::min(r.off + r.bytes.size(), (p + 1) * kPageSize);
      if (!out.empty() && out.back().off + out.back().bytes.size() == s) {
        out.back().bytes.append(r.bytes, s - r.off, e - s);
      } else {
        out.push_back(WriteRun{s, r.bytes.substr(s - r.off, e - s)});
      }
    }
  }
  return out;
}
}  // namespace

Result<ApplyOutcome> OwnedSegments::Apply(uint64_t ino, uint32_t node, const std::vector<WriteRun>& all_runs,
                                          bool wait, const std::vector<PageExpect>* expect, bool writer_keeps) {
  ApplyOutcome out;
  CSHM_ASSIGN_OR_RETURN(std::shared_ptr<State> s, Find(ino, wait));
  MutexLock lock(&s->mu, MutexLock::kDeferred);
  if (!lock.Acquire(wait)) return Busy("segment busy");
  CSHM_RETURN_IF_ERROR(Ready(ino, *s, lock, wait));
  CSHM_ASSIGN_OR_RETURN(auto seg, pages_->Get(ino));  // under the lock, as in Fetch
  if (!wait) {
    for (const WriteRun& r : all_runs)
      if (r.off + r.bytes.size() > s->size) return Busy("the write grows the segment");
  }
  MutexLock seg_lock(&seg->mu());
  // A late write lands only where the page is as the writer last saw it
  // (checked for every page before any is written: runs of one page must
  // all land or none).
  std::vector<WriteRun> clipped;
  std::vector<uint64_t> refused;
  if (expect != nullptr) {
    std::map<uint64_t, bool> fits;
    std::string page(kPageSize, '\0');
    for (const WriteRun& r : all_runs) {
      if (r.bytes.empty()) continue;
      auto [first, last] = PagesOf(r);
      for (uint64_t p = first; p <= last; p++) {
        if (fits.count(p)) continue;
        auto e = std::find_if(expect->begin(), expect->end(), [p](const PageExpect& x) { return x.page == p; });
        bool ok = false;
        if (e != expect->end()) {
          CSHM_RETURN_IF_ERROR(seg->Read(p * kPageSize, kPageSize, page.data()));
          ok = PageHash(page) == e->hash;
        }
        fits[p] = ok;
        if (!ok) refused.push_back(p);
      }
    }
    clipped = ClipToPages(all_runs, [&](uint64_t p) { return fits[p]; });
    out.dropped = static_cast<uint32_t>(refused.size());
  }
  const std::vector<WriteRun>& runs = expect != nullptr ? clipped : all_runs;
  if (node != self_ && owner_twins_ != nullptr) {
    // Pages this node's kernel holds are about to change under it: save each
    // as it was, once, as its twin (see OwnerTwinStore).
    const uint64_t self_bit = 1ull << self_;
    std::string before(kPageSize, '\0');
    for (const WriteRun& r : runs) {
      if (r.bytes.empty()) continue;
      for (uint64_t p = r.off / kPageSize; p <= (r.off + r.bytes.size() - 1) / kPageSize; p++) {
        if (p >= s->copyset.size() || !(s->copyset[p] & self_bit) || owner_twins_->Has(ino, p)) continue;
        CSHM_RETURN_IF_ERROR(seg->Read(p * kPageSize, kPageSize, before.data()));
        Status kept = owner_twins_->Keep(ino, p, before);
        if (!kept.ok())
          return kept.Annotate("nothing written: the owner cannot save its own copy of page " + std::to_string(p) +
                               " of inode " + std::to_string(ino) + " before this write changes it");
      }
    }
  }
  uint64_t end = s->size;
  std::vector<uint64_t> touched;
  // A diff of interleaved writers is many small runs: merge those into their
  // pages in memory and write each page once (one pread and one pwrite per
  // page instead of several system calls per run). Large runs go straight.
  std::string page(kPageSize, '\0');
  uint64_t page_no = UINT64_MAX;
  uint64_t page_end = 0;  // bytes of `page` that lie inside what was written
  auto flush = [&]() REQUIRES(s->mu, seg->mu()) -> Status {
    if (page_no == UINT64_MAX) return Status::Ok();
    // Never write past the bytes that exist or were written: the page's tail
    // past EOF stays a hole.
    const uint64_t valid = std::max<uint64_t>(page_end, std::min<uint64_t>(kPageSize, s->size > page_no * kPageSize ? s->size - page_no * kPageSize : 0));
    Status st = seg->Write(page_no * kPageSize, page.data(), valid);
    page_no = UINT64_MAX;
    return st;
  };
  for (const WriteRun& r : runs) {
    if (r.bytes.empty()) continue;
    end = std::max<uint64_t>(end, r.off + r.bytes.size());
    for (uint64_t p = r.off / kPageSize; p <= (r.off + r.bytes.size() - 1) / kPageSize; p++) touched.push_back(p);
    if (r.bytes.size() >= kPageSize) {
      CSHM_RETURN_IF_ERROR(flush());
      CSHM_RETURN_IF_ERROR(seg->Write(r.off, r.bytes.data(), r.bytes.size()));
      continue;
    }
    for (uint64_t done = 0; done < r.bytes.size();) {
      const uint64_t off = r.off + done;
      const uint64_t p = off / kPageSize, in = off % kPageSize;
      const uint64_t n = std::min<uint64_t>(r.bytes.size() - done, kPageSize - in);
      if (p != page_no) {
        CSHM_RETURN_IF_ERROR(flush());
        CSHM_RETURN_IF_ERROR(seg->Read(p * kPageSize, kPageSize, page.data()));
        page_no = p;
        page_end = 0;
      }
      std::memcpy(page.data() + in, r.bytes.data() + done, n);
      page_end = std::max(page_end, in + n);
      done += n;
    }
  }
  CSHM_RETURN_IF_ERROR(flush());
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  if (observer_ != nullptr) observer_->Served(ino, node, touched.size());
  // The writer's kernel holds what it wrote (a write(2) of whole pages never
  // fetched them): it stays, or enters, the copyset; everyone else leaves.
  // Not after a late write: the writer's kernel may hold what did not land,
  // or not hold what did; it drops the pages like everyone else.
  const uint64_t keep = expect != nullptr ? 0 : 1ull << node;
  for (uint64_t p : refused) {
    if (p < s->copyset.size() && (s->copyset[p] & (1ull << node))) {
      s->copyset[p] &= ~(1ull << node);
      AddPageRange(&out.invalidate[node], p);
    }
  }
  if (!touched.empty() && s->copyset.size() <= touched.back()) s->copyset.resize(touched.back() + 1, 0);
  for (uint64_t p : touched) {
    // A copy the writer keeps but this copyset does not count was declared
    // gone (its node could not be reached): it may miss bytes that others
    // wrote since, so it goes rather than being counted with them.
    const uint64_t mine = writer_keeps && !(s->copyset[p] & keep) ? 0 : keep;
    uint64_t others = (s->copyset[p] | keep) & ~mine;
    s->copyset[p] = mine;
    for (uint32_t n = 0; others != 0; n++, others >>= 1)
      if (others & 1) AddPageRange(&out.invalidate[n], p);
  }
  out.grew = end > s->size;
  s->size = end;
  out.size = end;
  return out;
}

Result<ApplyOutcome> OwnedSegments::Truncate(uint64_t ino, uint32_t node, uint64_t size) {
  ApplyOutcome out;
  CSHM_ASSIGN_OR_RETURN(std::shared_ptr<State> s, Find(ino, true));
  MutexLock lock(&s->mu);
  CSHM_RETURN_IF_ERROR(Ready(ino, *s, lock, true));
  CSHM_ASSIGN_OR_RETURN(auto seg, pages_->Get(ino));  // under the lock, as in Fetch
  MutexLock seg_lock(&seg->mu());
  if (size < s->size) {
    CSHM_RETURN_IF_ERROR(seg->Truncate(size));
    const uint64_t first = size / kPageSize;
    uint64_t holders = 0;
    for (uint64_t p = first; p < s->copyset.size(); p++) holders |= s->copyset[p];
    holders &= ~(1ull << node);  // the truncating node's kernel trims its own cache
    for (uint32_t n = 0; holders != 0; n++, holders >>= 1)
      if (holders & 1) out.invalidate[n].push_back(Range{first * kPageSize, 0});
    // Pages past the end are gone everywhere; the partial last page stays
    // cached by the nodes that hold it, but they were told to drop it.
    if (s->copyset.size() > first) s->copyset.resize(first);
  }
  out.grew = size > s->size;
  s->size = size;
  out.size = size;
  return out;
}

Result<ApplyOutcome> OwnedSegments::Allocate(uint64_t ino, uint32_t node, int mode, uint64_t off, uint64_t len) {
  ApplyOutcome out;
  CSHM_ASSIGN_OR_RETURN(std::shared_ptr<State> s, Find(ino, true));
  MutexLock lock(&s->mu);
  CSHM_RETURN_IF_ERROR(Ready(ino, *s, lock, true));
  CSHM_ASSIGN_OR_RETURN(auto seg, pages_->Get(ino));  // under the lock, as in Fetch
  MutexLock seg_lock(&seg->mu());
  if (mode & FALLOC_FL_PUNCH_HOLE) {
    // Nothing to free past the end: the backing file holds nothing there.
    if (off < s->size) {
      const uint64_t n = std::min<uint64_t>(len, s->size - off);
      CSHM_RETURN_IF_ERROR(seg->Allocate(mode, off, n));
      const uint64_t first = off / kPageSize, last = (off + n - 1) / kPageSize;
      uint64_t holders = 0;
      for (uint64_t p = first; p <= last && p < s->copyset.size(); p++) holders |= s->copyset[p];
      holders &= ~(1ull << node);  // the punching node's kernel drops its own cache of the range
      for (uint32_t h = 0; holders != 0; h++, holders >>= 1)
        if (holders & 1) out.invalidate[h].push_back(Range{first * kPageSize, (last - first + 1) * kPageSize});
    }
  } else {
    CSHM_RETURN_IF_ERROR(seg->Allocate(mode, off, len));
    if (!(mode & FALLOC_FL_KEEP_SIZE) && off + len > s->size) {
      s->size = off + len;
      out.grew = true;
    }
  }
  out.size = s->size;
  return out;
}

}  // namespace cshm::ownership
