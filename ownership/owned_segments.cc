#include "ownership/owned_segments.h"

#include <fcntl.h>
#include <linux/falloc.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

namespace cshm::ownership {

uint64_t RunBytes(const std::vector<WriteRun>& runs) {
  uint64_t n = 0;
  for (const WriteRun& run : runs) n += run.bytes.size();
  return n;
}

using store::kPageSize;

void AddPageRange(std::vector<Range>* ranges, uint64_t page) {
  const uint64_t off = page * kPageSize;
  if (!ranges->empty() && ranges->back().off + ranges->back().len == off) {
    ranges->back().len += kPageSize;
  } else {
    ranges->push_back(Range{off, kPageSize});
  }
}

std::vector<Range> PagesTouched(const std::vector<WriteRun>& runs) {
  std::vector<Range> out;
  for (const WriteRun& r : runs)
    for (uint64_t p = r.off / kPageSize; !r.bytes.empty() && p <= (r.off + r.bytes.size() - 1) / kPageSize; p++)
      AddPageRange(&out, p);
  return out;
}

namespace {
constexpr auto kFreezeWait = std::chrono::seconds(10);
}  // namespace

Status Moved(uint32_t node) { return Status::MovedTo(node, "moved to node " + std::to_string(node)); }

std::optional<uint32_t> MovedTo(const Status& s) { return s.moved_to(); }

double OwnedSegments::Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

OwnedSegments::OwnedSegments(store::PageStore* pages, uint32_t self, LoadFn load, double half_life_s)
    : pages_(pages), self_(self), load_(std::move(load)), half_life_s_(half_life_s) {}

Result<std::pair<std::shared_ptr<OwnedSegments::State>, std::unique_lock<std::mutex>>> OwnedSegments::Lock(
    uint64_t ino) {
  std::shared_ptr<State> s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto& slot = segments_[ino];
    if (!slot) {
      slot = std::make_shared<State>();
      slot->stats = migrator::AccessStats(half_life_s_);
    }
    s = slot;
  }
  std::unique_lock<std::mutex> lock(s->mu);
  if (!s->loaded) {
    // Ask without holding the lock (it may be a network call).
    lock.unlock();
    CSHM_ASSIGN_OR_RETURN(SegmentInfo info, load_(ino));
    lock.lock();
    if (!s->loaded) {
      s->size = info.size;
      s->pinned = info.pinned;
      if (info.owner != self_) {
        s->moved_to = info.owner;
        NoteForward(ino);
      }
      s->loaded = true;
    }
  }
  return std::make_pair(std::move(s), std::move(lock));
}

Result<std::pair<std::shared_ptr<OwnedSegments::State>, std::unique_lock<std::mutex>>> OwnedSegments::LockServing(
    uint64_t ino) {
  CSHM_ASSIGN_OR_RETURN(auto locked, Lock(ino));
  State* s = locked.first.get();
  if (!s->unfrozen.wait_for(locked.second, kFreezeWait, [s] { return !s->frozen; }))
    return TimedOut("segment " + std::to_string(ino) + " stayed frozen (a migration) past the deadline");
  if (s->moved_to >= 0) return Moved(static_cast<uint32_t>(s->moved_to));
  return locked;
}

Result<std::pair<std::shared_ptr<OwnedSegments::State>, std::unique_lock<std::mutex>>> OwnedSegments::TryLockServing(
    uint64_t ino) {
  std::shared_ptr<State> s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = segments_.find(ino);
    if (it == segments_.end()) return Busy("segment not loaded yet");
    s = it->second;
  }
  std::unique_lock<std::mutex> lock(s->mu, std::try_to_lock);
  if (!lock.owns_lock() || !s->loaded || s->frozen) return Busy("segment busy");
  if (s->moved_to >= 0) return Moved(static_cast<uint32_t>(s->moved_to));
  return std::make_pair(std::move(s), std::move(lock));
}

Result<uint64_t> OwnedSegments::Fetch(uint64_t ino, uint32_t node, uint64_t off, uint64_t len, char* out,
                                      uint64_t* size, bool wait, const store::FileSink* sink, bool* sent) {
  uint64_t n = 0;
  {
    CSHM_ASSIGN_OR_RETURN(auto locked, wait ? LockServing(ino) : TryLockServing(ino));
    // The page store only under the segment's lock: taken before it, it
    // could be the file of an earlier stay that a move away (and back) has
    // since removed, and what is read or written there would be lost.
    CSHM_ASSIGN_OR_RETURN(auto seg, pages_->Get(ino));
    State* s = locked.first.get();
    *size = s->size;
    if (off >= s->size || len == 0) return n;  // nothing read: no copyset to join
    n = std::min<uint64_t>(len, s->size - off);
    // Read under the segment's lock so that a concurrent Apply is either wholly before (and
    // we join the copyset after its round chose its targets: we read its bytes)
    // or wholly after (and its round invalidates us).
    bool spliced = false;
    if (sink != nullptr) {
      CSHM_ASSIGN_OR_RETURN(spliced, seg->SendTo(off, n, *sink));
      if (sent != nullptr) *sent = spliced;
    }
    if (!spliced) CSHM_RETURN_IF_ERROR(seg->Read(off, n, out));
    if (node == self_ && owner_twins_ != nullptr) owner_twins_->Discard(ino, off, n);
    const uint64_t last = (off + n - 1) / kPageSize;
    if (s->copyset.size() <= last) s->copyset.resize(last + 1, 0);
    for (uint64_t p = off / kPageSize; p <= last; p++) s->copyset[p] |= 1ull << node;
    s->stats.Add(node, static_cast<double>(last - off / kPageSize + 1), Now());
  }
  return n;
}

Result<std::string> OwnedSegments::OwnerTwins(uint64_t ino, uint64_t first, uint64_t count) {
  CSHM_ASSIGN_OR_RETURN(auto locked, LockServing(ino));
  CSHM_ASSIGN_OR_RETURN(auto seg, pages_->Get(ino));  // under the lock, as in Fetch
  std::lock_guard<std::mutex> seg_lock(seg->mu());
  std::string out(count * kPageSize, '\0');
  CSHM_RETURN_IF_ERROR(seg->Read(first * kPageSize, out.size(), out.data()));
  if (owner_twins_ != nullptr) {
    for (uint64_t i = 0; i < count; i++)
      if (auto kept = owner_twins_->Get(ino, first + i)) out.replace(i * kPageSize, kPageSize, *kept);
  }
  return out;
}

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
  CSHM_ASSIGN_OR_RETURN(auto locked, wait ? LockServing(ino) : TryLockServing(ino));
  CSHM_ASSIGN_OR_RETURN(auto seg, pages_->Get(ino));  // under the lock, as in Fetch
  State* s = locked.first.get();
  if (!wait) {
    for (const WriteRun& r : all_runs)
      if (r.off + r.bytes.size() > s->size) return Busy("the write grows the segment");
  }
  std::lock_guard<std::mutex> seg_lock(seg->mu());
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
  auto flush = [&]() -> Status {
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
  s->stats.Add(node, static_cast<double>(touched.size()), Now());
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
  CSHM_ASSIGN_OR_RETURN(auto locked, LockServing(ino));
  CSHM_ASSIGN_OR_RETURN(auto seg, pages_->Get(ino));  // under the lock, as in Fetch
  State* s = locked.first.get();
  std::lock_guard<std::mutex> seg_lock(seg->mu());
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
  CSHM_ASSIGN_OR_RETURN(auto locked, LockServing(ino));
  CSHM_ASSIGN_OR_RETURN(auto seg, pages_->Get(ino));  // under the lock, as in Fetch
  State* s = locked.first.get();
  std::lock_guard<std::mutex> seg_lock(seg->mu());
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

void OwnedSegments::DropNode(uint32_t node) {
  std::vector<std::shared_ptr<State>> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [ino, s] : segments_) all.push_back(s);
  }
  const uint64_t mask = ~(1ull << node);
  for (auto& s : all) {
    std::lock_guard<std::mutex> lock(s->mu);
    for (uint64_t& c : s->copyset) c &= mask;
  }
}

Status OwnedSegments::Remove(uint64_t ino) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    segments_.erase(ino);
  }
  return pages_->Remove(ino);
}

uint64_t OwnedSegments::CopysetOf(uint64_t ino, uint64_t page) {
  std::shared_ptr<State> s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = segments_.find(ino);
    if (it == segments_.end()) return 0;
    s = it->second;
  }
  std::lock_guard<std::mutex> lock(s->mu);
  return page < s->copyset.size() ? s->copyset[page] : 0;
}

std::vector<Range> OwnedSegments::PagesNotCachedBy(uint64_t ino, uint32_t node) {
  std::shared_ptr<State> s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = segments_.find(ino);
    if (it == segments_.end()) return {Range{0, 0}};
    s = it->second;
  }
  std::lock_guard<std::mutex> lock(s->mu);
  // Frozen: moving away (or staged here), and the target's copysets, not
  // these, may be the ones that count: a node that has forgotten this one
  // drops its bits there while this one still believes it serves the
  // segment (seed 249: the old owner, frozen while the directory could not
  // say whether the move was made, kept its kernel's copy for good).
  if (!s->loaded || s->moved_to >= 0 || s->frozen) return {Range{0, 0}};
  std::vector<Range> out;
  const uint64_t bit = 1ull << node;
  for (uint64_t p = 0; p < s->copyset.size(); p++)
    if (!(s->copyset[p] & bit)) AddPageRange(&out, p);
  const uint64_t end = s->copyset.size() * store::kPageSize;
  if (!out.empty() && out.back().off + out.back().len == end)
    out.back().len = 0;  // to the end
  else
    out.push_back(Range{end, 0});
  return out;
}

Result<SegmentSnapshot> OwnedSegments::Freeze(uint64_t ino) {
  CSHM_ASSIGN_OR_RETURN(auto locked, LockServing(ino));
  State* s = locked.first.get();
  s->frozen = true;
  return SegmentSnapshot{s->size, s->copyset, s->pinned};
}

void OwnedSegments::Unfreeze(uint64_t ino, std::optional<uint32_t> moved_to) {
  std::shared_ptr<State> s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = segments_.find(ino);
    if (it == segments_.end()) return;
    s = it->second;
  }
  std::lock_guard<std::mutex> lock(s->mu);
  s->frozen = false;
  s->last_move_s = Now();
  if (moved_to) {
    s->moved_to = *moved_to;
    std::vector<uint64_t>().swap(s->copyset);
    s->stats.Reset();
    NoteForward(ino);
  }
  s->unfrozen.notify_all();
}

void OwnedSegments::NoteForward(uint64_t ino) {
  constexpr size_t kMaxForwards = 4096;
  constexpr double kMinAge = 60;  // s: the directory update of a move is long done
  std::lock_guard<std::mutex> lock(mu_);
  forwards_.push_back(ino);
  const double now = Now();
  while (forwards_.size() > kMaxForwards) {
    const uint64_t old = forwards_.front();
    if (old == ino) {  // ours, locked by this thread, and just pushed again
      forwards_.pop_front();
      continue;
    }
    auto it = segments_.find(old);
    if (it != segments_.end()) {
      std::unique_lock<std::mutex> sl(it->second->mu, std::try_to_lock);
      if (!sl.owns_lock() || it->second->frozen) break;  // in use: another time
      if (it->second->moved_to >= 0) {
        if (now - it->second->last_move_s < kMinAge) break;  // young, and so is every later one
        sl.unlock();
        segments_.erase(it);
      }
    }
    forwards_.pop_front();
  }
}

void OwnedSegments::Install(uint64_t ino, const SegmentSnapshot& snap) {
  auto s = std::make_shared<State>();
  s->stats = migrator::AccessStats(half_life_s_);
  s->loaded = true;
  s->size = snap.size;
  s->copyset = snap.copyset;
  s->pinned = snap.pinned;
  s->last_move_s = Now();
  s->frozen = true;  // served from the commit on
  std::lock_guard<std::mutex> lock(mu_);
  segments_[ino] = std::move(s);
}

std::vector<std::pair<uint64_t, uint32_t>> OwnedSegments::Candidates(const migrator::PolicyConfig& policy) {
  std::vector<std::pair<uint64_t, std::shared_ptr<State>>> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [ino, s] : segments_) all.emplace_back(ino, s);
  }
  std::vector<std::pair<uint64_t, uint32_t>> out;
  const double now = Now();
  for (auto& [ino, s] : all) {
    std::lock_guard<std::mutex> lock(s->mu);
    if (!s->loaded || s->frozen || s->moved_to >= 0) continue;
    if (s->stats.Prune(now)) continue;  // idle: most segments, at no cost per node
    auto target = migrator::ChooseTarget(policy, self_, s->stats.Rates(now), s->pinned, now - s->last_move_s);
    if (target) out.emplace_back(ino, *target);
  }
  return out;
}

Status OwnedSegments::SetPinned(uint64_t ino, bool pinned) {
  CSHM_ASSIGN_OR_RETURN(auto locked, LockServing(ino));
  locked.first->pinned = pinned;
  return Status::Ok();
}

Result<bool> OwnedSegments::Pinned(uint64_t ino) {
  CSHM_ASSIGN_OR_RETURN(auto locked, LockServing(ino));
  return locked.first->pinned;
}

Result<std::string> OwnedSegments::Describe(uint64_t ino) {
  CSHM_ASSIGN_OR_RETURN(auto locked, LockServing(ino));
  State* s = locked.first.get();
  return "owner=node" + std::to_string(self_) + " pinned=" + (s->pinned ? "1" : "0") +
         " size=" + std::to_string(s->size) + " rates(pages/s): " + s->stats.Describe(Now());
}

}  // namespace cshm::ownership
