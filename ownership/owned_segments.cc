// The owner side's segments (ownership/owned_segments.h): their states and
// how a request finds one ready (Find, Ready), fetches, copysets, and what a
// move does to a segment (freeze, install, forwarding entries, candidates).
// The writes (Apply, Truncate, Allocate) are in owned_segments_write.cc.
#include "ownership/owned_segments.h"

#include <fcntl.h>

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

OwnedSegments::OwnedSegments(store::PageStore* pages, uint32_t self, LoadFn load)
    : pages_(pages), self_(self), load_(std::move(load)) {}

Result<std::shared_ptr<OwnedSegments::State>> OwnedSegments::Find(uint64_t ino, bool make) {
  MutexLock lock(&mu_);
  auto it = segments_.find(ino);
  if (it != segments_.end()) return it->second;
  if (!make) return Busy("segment not loaded yet");
  auto s = std::make_shared<State>();
  segments_[ino] = s;
  return s;
}

Status OwnedSegments::Ready(uint64_t ino, State& s, MutexLock& lock, bool wait) {
  if (!s.loaded) {
    if (!wait) return Busy("segment busy");
    // Ask without holding the lock (it may be a network call).
    s.mu.Unlock();
    Result<SegmentInfo> info = load_(ino);
    s.mu.Lock();
    CSHM_RETURN_IF_ERROR(info.status());
    if (!s.loaded) {
      s.size = info->size;
      s.pinned = info->pinned;
      if (info->owner != self_) {
        s.moved_to = info->owner;
        NoteForward(ino);
      }
      s.loaded = true;
    }
  }
  if (s.frozen) {
    if (!wait) return Busy("segment busy");
    if (!s.unfrozen.WaitFor(lock, kFreezeWait, [&s]() REQUIRES(s.mu) { return !s.frozen; }))
      return TimedOut("segment " + std::to_string(ino) + " stayed frozen (a migration) past the deadline");
  }
  if (s.moved_to >= 0) return Moved(static_cast<uint32_t>(s.moved_to));
  return Status::Ok();
}

Status OwnedSegments::Serving(uint64_t ino, bool wait) {
  CSHM_ASSIGN_OR_RETURN(std::shared_ptr<State> s, Find(ino, wait));
  MutexLock lock(&s->mu, MutexLock::kDeferred);
  if (!lock.Acquire(wait)) return Busy("segment busy");
  return Ready(ino, *s, lock, wait);
}

Result<uint64_t> OwnedSegments::Fetch(uint64_t ino, uint32_t node, uint64_t off, uint64_t len, char* out,
                                      uint64_t* size, bool wait, const store::FileSink* sink, bool* sent) {
  uint64_t n = 0;
  {
    CSHM_ASSIGN_OR_RETURN(std::shared_ptr<State> s, Find(ino, wait));
    MutexLock lock(&s->mu, MutexLock::kDeferred);
    if (!lock.Acquire(wait)) return Busy("segment busy");
    CSHM_RETURN_IF_ERROR(Ready(ino, *s, lock, wait));
    // The page store only under the segment's lock: taken before it, it
    // could be the file of an earlier stay that a move away (and back) has
    // since removed, and what is read or written there would be lost.
    CSHM_ASSIGN_OR_RETURN(auto seg, pages_->Get(ino));
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
    if (observer_ != nullptr) observer_->Served(ino, node, last - off / kPageSize + 1);
  }
  return n;
}

Result<std::string> OwnedSegments::OwnerTwins(uint64_t ino, uint64_t first, uint64_t count) {
  CSHM_ASSIGN_OR_RETURN(std::shared_ptr<State> s, Find(ino, true));
  MutexLock lock(&s->mu);
  CSHM_RETURN_IF_ERROR(Ready(ino, *s, lock, true));
  CSHM_ASSIGN_OR_RETURN(auto seg, pages_->Get(ino));  // under the lock, as in Fetch
  MutexLock seg_lock(&seg->mu());
  std::string out(count * kPageSize, '\0');
  CSHM_RETURN_IF_ERROR(seg->Read(first * kPageSize, out.size(), out.data()));
  if (owner_twins_ != nullptr) {
    for (uint64_t i = 0; i < count; i++)
      if (auto kept = owner_twins_->Get(ino, first + i)) out.replace(i * kPageSize, kPageSize, *kept);
  }
  return out;
}

void OwnedSegments::DropNode(uint32_t node) {
  std::vector<std::shared_ptr<State>> all;
  {
    MutexLock lock(&mu_);
    for (auto& [ino, s] : segments_) all.push_back(s);
  }
  const uint64_t mask = ~(1ull << node);
  for (auto& s : all) {
    MutexLock lock(&s->mu);
    for (uint64_t& c : s->copyset) c &= mask;
  }
}

Status OwnedSegments::Remove(uint64_t ino) {
  {
    MutexLock lock(&mu_);
    segments_.erase(ino);
  }
  if (observer_ != nullptr) observer_->Forget(ino);
  return pages_->Remove(ino);
}

uint64_t OwnedSegments::CopysetOf(uint64_t ino, uint64_t page) {
  std::shared_ptr<State> s;
  {
    MutexLock lock(&mu_);
    auto it = segments_.find(ino);
    if (it == segments_.end()) return 0;
    s = it->second;
  }
  MutexLock lock(&s->mu);
  return page < s->copyset.size() ? s->copyset[page] : 0;
}

std::vector<Range> OwnedSegments::PagesNotCachedBy(uint64_t ino, uint32_t node) {
  std::shared_ptr<State> s;
  {
    MutexLock lock(&mu_);
    auto it = segments_.find(ino);
    if (it == segments_.end()) return {Range{0, 0}};
    s = it->second;
  }
  MutexLock lock(&s->mu);
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
  CSHM_ASSIGN_OR_RETURN(std::shared_ptr<State> s, Find(ino, true));
  MutexLock lock(&s->mu);
  CSHM_RETURN_IF_ERROR(Ready(ino, *s, lock, true));
  s->frozen = true;
  return SegmentSnapshot{s->size, s->copyset, s->pinned};
}

void OwnedSegments::Unfreeze(uint64_t ino, std::optional<uint32_t> moved_to) {
  std::shared_ptr<State> s;
  {
    MutexLock lock(&mu_);
    auto it = segments_.find(ino);
    if (it == segments_.end()) return;
    s = it->second;
  }
  MutexLock lock(&s->mu);
  s->frozen = false;
  s->last_move_s = Now();
  if (moved_to) {
    s->moved_to = *moved_to;
    std::vector<uint64_t>().swap(s->copyset);
    NoteForward(ino);
  }
  if (observer_ != nullptr) observer_->Moved(ino, moved_to.has_value());
  s->unfrozen.NotifyAll();
}

void OwnedSegments::NoteForward(uint64_t ino) {
  constexpr size_t kMaxForwards = 4096;
  constexpr double kMinAge = 60;  // s: the directory update of a move is long done
  MutexLock lock(&mu_);
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
      State* st = it->second.get();
      MutexLock sl(&st->mu, MutexLock::kDeferred);
      if (!sl.Acquire(false) || st->frozen) break;  // in use: another time
      if (st->moved_to >= 0) {
        if (now - st->last_move_s < kMinAge) break;  // young, and so is every later one
        sl.Unlock();
        segments_.erase(it);
      }
    }
    forwards_.pop_front();
  }
}

void OwnedSegments::Install(uint64_t ino, const SegmentSnapshot& snap) {
  auto s = std::make_shared<State>();
  {
    MutexLock init(&s->mu);  // nobody else has it yet: for the analysis
    s->loaded = true;
    s->size = snap.size;
    s->copyset = snap.copyset;
    s->pinned = snap.pinned;
    s->last_move_s = Now();
    s->frozen = true;  // served from the commit on
    if (observer_ != nullptr) observer_->Moved(ino, false);
  }
  MutexLock lock(&mu_);
  segments_[ino] = std::move(s);
}

bool OwnedSegments::MayMove(uint64_t ino) {
  std::shared_ptr<State> s;
  {
    MutexLock lock(&mu_);
    auto it = segments_.find(ino);
    if (it == segments_.end()) return false;
    s = it->second;
  }
  MutexLock lock(&s->mu);
  return s->loaded && !s->frozen && s->moved_to < 0 && !s->pinned;
}

Status OwnedSegments::SetPinned(uint64_t ino, bool pinned) {
  CSHM_ASSIGN_OR_RETURN(std::shared_ptr<State> s, Find(ino, true));
  MutexLock lock(&s->mu);
  CSHM_RETURN_IF_ERROR(Ready(ino, *s, lock, true));
  s->pinned = pinned;
  return Status::Ok();
}

Result<bool> OwnedSegments::Pinned(uint64_t ino) {
  CSHM_ASSIGN_OR_RETURN(std::shared_ptr<State> s, Find(ino, true));
  MutexLock lock(&s->mu);
  CSHM_RETURN_IF_ERROR(Ready(ino, *s, lock, true));
  return s->pinned;
}

Result<std::string> OwnedSegments::Describe(uint64_t ino) {
  CSHM_ASSIGN_OR_RETURN(std::shared_ptr<State> s, Find(ino, true));
  MutexLock lock(&s->mu);
  CSHM_RETURN_IF_ERROR(Ready(ino, *s, lock, true));
  return "owner=node" + std::to_string(self_) + " pinned=" + (s->pinned ? "1" : "0") +
         " size=" + std::to_string(s->size);
}

}  // namespace cshm::ownership
