// The accessor side of the data path: what this node's kernel asks of the
// segments, wherever they are served (fs/cluster.h says how each goes).
//
//   Read      the owner's pages (a local call, or kFetch), with their twins
//   Write     a kernel write-back's runs that differ from the twins, or a
//             write(2)'s data, to the owner (kWriteBack); kept in the state
//             dir (PendingWrites) when no owner takes them, delivered later
//   Sync      a release: the owner's rounds so far are over (kSync)
//   Truncate, Fallocate   at the owner, with its invalidations
//   InvalidateLocal       an owner's round drops pages of this node's kernel
#include <linux/falloc.h>
#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include "common/metrics.h"
#include "fs/cluster.h"
#include "fs/page_diff.h"
#include "ownership/messages.h"

namespace cshm::fs {

using namespace ownership;
using store::kPageSize;

namespace {

// What the accessor side counts (docs/operations.md "Metrics" lists them).
metrics::Histogram kRemoteFetch("cshm_remote_fetch_seconds",
                                "faults and reads this node sent to another node, by how long they took");
metrics::Counter kWriteBacksSent("cshm_writebacks_sent_total", "write-backs this node sent to other nodes");
metrics::Counter kWriteBackBytesSent("cshm_writeback_bytes_sent_total", "changed bytes in them");
metrics::Histogram kRelease("cshm_release_seconds",
                            "releases (msync, fsync, close, unlock) by the time they waited for owners' "
                            "invalidation rounds (0 when none was running)");
}  // namespace

Result<std::string_view> Cluster::Read(uint64_t ino, uint64_t off, size_t len, char* buf, ReadScratch* scratch) {
  // Write-backs of this segment that no owner took go first: landing late,
  // they change the owner's pages, and a copy fetched before they land would
  // be the twin of the next write-back here, which would then leave out
  // bytes this node wrote where the late ones put older bytes of its own
  // (found by the simulation, seed 31: a torn record).
  if (pending_->Has(ino)) CSHM_RETURN_IF_ERROR(DrainPending(ino));
  bool local = false;
  std::string* frame = scratch != nullptr ? &scratch->frame : nullptr;
  auto got = AtOwner(ino, [&](uint32_t owner) -> Result<std::string_view> {
    uint64_t size = 0;
    // The owner's pages are their own twins (OwnerTwinStore): none to store.
    if ((local = owner == self_)) {
      const store::FileSink* sink = scratch != nullptr && scratch->from_file ? &scratch->from_file : nullptr;
      bool sent = false;
      CSHM_ASSIGN_OR_RETURN(uint64_t n, owned_.Fetch(ino, self_, off, len, buf, &size, true, sink, &sent));
      return sent ? std::string_view() : std::string_view(buf, n);
    }
    {
      MutexLock lock(&mu_);
      fetches_from_[ino]++;
    }
    // The kernel holds the folios locked meanwhile.
    seams_.slow_fetch.At("the fetch of inode", ino);
    const auto t0 = std::chrono::steady_clock::now();
    CSHM_ASSIGN_OR_RETURN(std::string bytes, transport_->Call(owner, kFetch, FetchRequest{ino, off, len}.Encode()));
    kRemoteFetch.Since(t0);
    CSHM_ASSIGN_OR_RETURN(std::string_view data, FetchReply::View(bytes, &size));
    if (data.size() > len) return IoError("owner returned more bytes than asked");
    if (frame == nullptr) {
      std::memcpy(buf, data.data(), data.size());
      return std::string_view(buf, data.size());
    }
    const size_t at = static_cast<size_t>(data.data() - bytes.data()), n = data.size();
    *frame = std::move(bytes);
    return std::string_view(*frame).substr(at, n);
  });
  if (!got.ok()) return got.status();
  if (local || got->empty()) return *got;  // the owner's pages are their own twins
  if (scratch != nullptr) {
    MutexLock lock(&writers_mu_);
    Writers& w = writers_[ino];
    if (w.writable == 0) {
      // No twin (see Read's comment): OpenedForWrite waits until the kernel has these pages.
      w.twinless_reads++;
      w.twinless_cached = true;
      scratch->twinless = std::shared_ptr<void>(nullptr, [this, ino](void*) {
        MutexLock l(&writers_mu_);
        if (--writers_[ino].twinless_reads == 0) twinless_done_.NotifyAll();
      });
      return *got;
    }
  }
  // The kernel now holds these pages: remember them as they were. A page
  // that could become writable here without its twin could only be written
  // back whole, over other nodes' bytes: without a twin, no page.
  Status kept = twins_->Put(ino, off, *got);
  if (!kept.ok()) return kept;
  return *got;
}

Status Cluster::OpenedForWrite(uint64_t ino) {
  bool drop = false;
  {
    MutexLock lock(&writers_mu_);
    Writers& w = writers_[ino];
    w.writable++;  // READs from now on keep twins
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(config_.request_timeout_ms);
    if (!twinless_done_.WaitUntil(lock, deadline, [&]() REQUIRES(writers_mu_) { return writers_[ino].twinless_reads == 0; })) {
      writers_[ino].writable--;
      return TimedOut("reads of inode " + std::to_string(ino) + " without twins are still being answered");
    }
    drop = std::exchange(writers_[ino].twinless_cached, false);
  }
  // Clean pages (nothing here could write them): the kernel just drops them.
  if (drop) InvalidateLocal(ino, {Range{0, 0}});
  return Status::Ok();
}

void Cluster::ClosedForWrite(uint64_t ino) {
  MutexLock lock(&writers_mu_);
  auto it = writers_.find(ino);
  if (it == writers_.end()) return;
  if (it->second.writable > 0) it->second.writable--;
  if (it->second.idle()) writers_.erase(it);
}

Status Cluster::Write(uint64_t ino, uint64_t off, const char* data, size_t len, bool writeback) {
  Status st = WriteOnce(ino, off, data, len, writeback);
  if (!st.ok() && writeback) {
    // The kernel keeps no error of a write-back that the page's invalidation
    // (an unlock, another node's write) started: the next release reports it.
    // (One the kernel made for msync or fsync, it reports itself.)
    MutexLock lock(&mu_);
    if (notifying_.contains(ino)) write_errors_.try_emplace(ino, st);
  }
  return st;
}

Status Cluster::WriteOnce(uint64_t ino, uint64_t off, const char* data, size_t len, bool writeback) {
  CSHM_ASSIGN_OR_RETURN(const uint32_t owner, OwnerOf(ino));  // a regular file
  // Written under a lock that is no longer held, these bytes could land on
  // a newer holder's: refused, as Linux's NFS client refuses them.
  CSHM_RETURN_IF_ERROR(CheckLocksHeld(ino));
  std::string_view now(data, len);
  // Earlier write-backs of this segment that no owner took go first, and
  // before this one is diffed: a page they change at the owner loses its
  // twin here (DrainPending), and this write-back of it is refused rather
  // than diffed against bytes the owner no longer has.
  const Status drained = pending_->Has(ino) ? DrainPending(ino) : Status::Ok();
  WriteBackRequest wb{ino, {}};
  // On the owner, the twins are mostly its own pages (OwnerTwinStore).
  std::optional<std::string> owner_twins;
  if (!writeback) {
    // write(2): the caller stored exactly these bytes.
    wb.runs.push_back(WriteRun{off, std::string(now)});
  } else if (len > 0) {
    const uint64_t first = off / kPageSize, last = (off + len - 1) / kPageSize;
    if (owner == self_) {
      auto t = owned_.OwnerTwins(ino, first, last - first + 1);
      if (t.ok()) owner_twins = std::move(*t);  // else it moved away: the twins are stored ones now
    }
    for (uint64_t p = first; p <= last; p++) {
      const uint64_t ps = std::max(p * kPageSize, off), pe = std::min((p + 1) * kPageSize, off + len);
      std::optional<std::string> stored;
      std::optional<std::string_view> twin;
      if (owner_twins) {
        twin = std::string_view(*owner_twins).substr((p - first) * kPageSize, kPageSize);
      } else if ((stored = twins_->Get(ino, p))) {
        twin = *stored;
      }
      if (!twin) {
        // Without the copy it was fetched as, the page's changed bytes cannot
        // be told from other nodes' bytes it merely holds: sending the whole
        // page would overwrite their newer bytes at the owner (a twin that
        // could not be stored, or one dropped after a failed write-back).
        log_->error("write-back of page {} of inode {} refused: this node holds no twin of it, so what changed "
                    "here is unknown; the page is dropped from this node's cache", p, ino);
        DropLocalLater(ino, {Range{first * kPageSize, (last - first + 1) * kPageSize}});
        return IoError("no twin of page " + std::to_string(p) + " of inode " + std::to_string(ino));
      }
      DiffInto(ps, twin->substr(ps - p * kPageSize, pe - ps), now.substr(ps - off, pe - ps), &wb.runs);
    }
    if (wb.runs.empty()) return Status::Ok();  // written back unchanged
    MutexLock lock(&mu_);
    wb.keeps_copy = !Dropping(ino, off, len);
  }
  Status st = drained;
  bool rounds_pending = true;
  if (st.ok()) st = Deliver(wb, &rounds_pending);
  if (!st.ok()) {
    // The kernel forgets these bytes when it gets the error (it marks the
    // pages clean), and its copy of them no longer matches the owner's:
    // drop the twins now (a later write-back of these pages is refused
    // rather than diffed against them) and the kernel's pages soon after
    // this answer (they are under writeback until then).
    // With them, what the pages held as this node last saw them (for a
    // write(2), which was diffed against nothing, the twins as they are:
    // without one, the page is not written late at all).
    std::vector<Range> ranges;
    for (uint64_t p = off / kPageSize; len > 0 && p <= (off + len - 1) / kPageSize; p++) {
      AddPageRange(&ranges, p);
      if (owner_twins) {
        wb.expect.push_back(
            PageExpect{p, PageHash(std::string_view(*owner_twins).substr((p - off / kPageSize) * kPageSize, kPageSize))});
      } else if (auto t = twins_->Get(ino, p)) {
        wb.expect.push_back(PageExpect{p, PageHash(*t)});
      }
    }
    if (owner != self_) {
      // (Not on the owner: its saved twins stand for pages another node
      // changed under its kernel, which the round of that change drops.)
      const uint64_t mark = twins_->Mark();
      for (const Range& r : ranges) twins_->Drop(ino, r, mark);
    }
    DropLocalLater(ino, ranges);
    const bool unreachable = st.code() == Status::Code::kUnavailable || st.code() == Status::Code::kTimedOut;
    if (unreachable || pending_->Has(ino)) {
      // Kept, to be delivered as a late write-back: it lands only on pages
      // that have not changed since (never over newer acknowledged bytes).
      wb.late = true;
      Status kept = pending_->Add(ino, wb.Encode());
      if (kept.ok())
        log_->warn("write-back of inode {} not delivered ({}); kept in the state dir until its owner answers", ino,
                   st.message());
      else
        log_->error("write-back of inode {} not delivered ({}) and could not be kept: {}", ino, st.message(),
                    kept.message());
    }
    return st;
  }
  // What the owner has now, as far as this node knows.
  // The answer arrived, the twin is not updated yet: a move that asks for
  // this node's twins meanwhile must not trust them.
  seams_.slow_twin_patch.At("the twin update of inode", ino);
  twins_->Patch(ino, off, now, /*whole_pages=*/owner != self_);
  // The next release waits for the owner's rounds, unless none was
  // pending when this write-back was answered (then there is nothing this
  // write, or any before it, could still be waiting for).
  MutexLock lock(&mu_);
  if (rounds_pending) unsynced_[ino] = ++writes_;
  return st;
}

void Cluster::DropLocalLater(uint64_t ino, std::vector<Range> ranges) {
  boost::asio::post(*async_rounds_, [this, ino, ranges = std::move(ranges)] { InvalidateLocal(ino, ranges); });
}

Status Cluster::Truncate(uint64_t ino, uint64_t size) {
  return AtOwner(ino, [&](uint32_t owner) -> Result<uint64_t> {
           if (owner == self_) return TruncateAsOwner(ino, self_, size);
           CSHM_ASSIGN_OR_RETURN(std::string r, transport_->Call(owner, kTruncate, TruncateRequest{ino, size}.Encode()));
           return DecodeU64(r);
         })
      .status();
}

Status Cluster::Fallocate(uint64_t ino, int mode, uint64_t off, uint64_t len) {
  const FallocateRequest f{ino, static_cast<uint32_t>(mode), off, len};
  return AtOwner(ino, [&](uint32_t owner) -> Result<uint64_t> {
           if (owner == self_) return FallocateAsOwner(self_, f);
           CSHM_ASSIGN_OR_RETURN(std::string r, transport_->Call(owner, kFallocate, f.Encode()));
           return DecodeU64(r);
         })
      .status();
}

Status Cluster::Sync(uint64_t ino) {
  CSHM_RETURN_IF_ERROR(CheckLocksHeld(ino));
  uint64_t upto;
  {
    MutexLock lock(&mu_);
    if (auto e = write_errors_.find(ino); e != write_errors_.end()) {
      const std::string why = e->second.message();
      write_errors_.erase(e);
      return IoError("a write-back of inode " + std::to_string(ino) + " failed since the last release (" + why +
                     "); what it carried is kept, and lands later only on pages nobody changed since");
    }
    auto it = unsynced_.find(ino);
    if (it == unsynced_.end()) {  // nothing here waits for a round since the last release
      kRelease.Observe(std::chrono::nanoseconds(0));
      return Status::Ok();
    }
    upto = it->second;
  }
  const auto t0 = std::chrono::steady_clock::now();
  Status s = AtOwner(ino, [&](uint32_t owner) -> Result<std::string> {
               if (owner == self_) {
                 CSHM_RETURN_IF_ERROR(rounds_->Wait(ino));
                 return std::string();
               }
               return transport_->Call(owner, kSync, EncodeU64(ino),
                                       RoundDeadline() + std::chrono::milliseconds(config_.request_timeout_ms));
             }).status();
  kRelease.Since(t0);
  if (s.ok()) {
    // Done up to `upto`; a write made meanwhile keeps the inode unsynced.
    MutexLock lock(&mu_);
    auto it = unsynced_.find(ino);
    if (it != unsynced_.end() && it->second == upto) unsynced_.erase(it);
  }
  return s;
}

void Cluster::InvalidateLocal(uint64_t ino, const std::vector<Range>& ranges) {
  Notifier notify;
  {
    MutexLock lock(&mu_);
    notify = notifier_;
    notifying_[ino]++;  // the write-backs it causes have nobody else to report to
    for (const Range& r : ranges) dropping_.emplace(ino, r);
  }
  // The kernel writes dirty pages of the range back first: WRITEs to this
  // daemon on other threads, which the owner applies without waiting for any
  // round, so this returns. Only then are the twins dropped, so that those
  // write-backs are still diffed against them; a page fetched again
  // meanwhile (after the notify dropped it) keeps the twin of that fetch.
  const uint64_t mark = twins_->Mark();
  for (const Range& r : ranges)
    if (notify) notify(ino, r.off, r.len);
  for (const Range& r : ranges) twins_->Drop(ino, r, mark);
  MutexLock lock(&mu_);
  if (--notifying_[ino] == 0) notifying_.erase(ino);
  for (const Range& r : ranges) {
    auto [b, e] = dropping_.equal_range(ino);
    for (auto it = b; it != e; ++it)
      if (it->second == r) {
        dropping_.erase(it);
        break;
      }
  }
}

bool Cluster::Dropping(uint64_t ino, uint64_t off, uint64_t len) {
  auto [b, e] = dropping_.equal_range(ino);
  for (auto it = b; it != e; ++it) {
    const Range& r = it->second;
    if (off >= r.off && (r.len == 0 || off + len <= r.off + r.len)) return true;
  }
  return false;
}

void Cluster::DropRemoteCopies() {
  // Every segment cached here and served elsewhere, not only those this node
  // believes the forgetting peer serves: a segment may have moved to it
  // without this node hearing of it, and its copyset, with this node in it,
  // went along — which the peer has now forgotten (found by the simulation, seed 1544: a
  // node kept a stale page for good, read it after becoming the owner itself).
  // And of the segments served here, the pages whose copysets leave this
  // node out: a copy fetched while another node served the segment, which
  // that node (or one the segment moved to before it came here) counted as
  // gone when it could not reach this node, came here without this node in
  // its copyset, and no write would ever drop it (seed 1544 again).
  // A lease or a restart is rare; fetching again is the price.
  std::vector<std::pair<uint64_t, bool>> inos;
  {
    MutexLock lock(&mu_);
    for (auto& [ino, o] : owner_of_) inos.emplace_back(ino, o == self_);
  }
  for (auto [ino, here] : inos) {
    std::vector<Range> ranges{Range{0, 0}};
    if (here) ranges = owned_.PagesNotCachedBy(ino, self_);
    if (ranges.size() > 64) ranges = {Range{0, 0}};  // one notify rather than thousands
    InvalidateLocal(ino, ranges);
  }
}

Status Cluster::Deliver(const WriteBackRequest& wb, bool* rounds_pending, uint32_t* dropped) {
  // Encoded only for a remote owner (and once, across kMoved retries): the
  // owner's own writes go straight to ApplyAsOwner.
  std::string payload;
  auto reply = AtOwner(wb.ino, [&](uint32_t at) -> Result<WriteBackReply> {
    if (at == self_) {
      CSHM_ASSIGN_OR_RETURN(Applied applied, ApplyAsOwner(self_, wb));
      return applied.reply;
    }
    if (LeaseLostWith(at)) {
      return Unavailable("our lease with node " + std::to_string(at) + ", which serves inode " +
                         std::to_string(wb.ino) + ", ran out: write-backs to it are kept here and delivered once it "
                         "is heard again");
    }
    if (payload.empty()) payload = wb.Encode();
    kWriteBacksSent.Add();
    kWriteBackBytesSent.Add(RunBytes(wb.runs));
    CSHM_ASSIGN_OR_RETURN(std::string r, transport_->Call(at, kWriteBack, payload));
    return WriteBackReply::Decode(r);
  });
  if (reply.ok() && rounds_pending != nullptr) *rounds_pending = reply->rounds_running;
  if (reply.ok() && dropped != nullptr) *dropped = reply->dropped;
  return reply.status();
}

Status Cluster::DrainPending(uint64_t ino) {
  return pending_->Drain(ino, [&](const std::string& p) -> Status {
    auto wb = WriteBackRequest::Decode(p);
    if (!wb.ok()) return Corruption("a kept write-back of inode " + std::to_string(ino) + " does not decode");
    wb->late = true;  // whatever its file says: it failed once, its writer was told so
    uint32_t dropped = 0;
    Status st = Deliver(*wb, nullptr, &dropped);
    if (!st.ok()) return st;
    if (dropped > 0)
      log_->warn("a kept write-back of inode {} was delivered late: {} page(s) had changed since and kept the "
                 "newer bytes", ino, dropped);
    // Whatever landed, this node's kernel may hold other bytes of these
    // pages than the owner now has: it drops them and fetches again. Their
    // twins go at once: a write-back of them before the kernel has dropped
    // them is refused, not diffed against bytes the owner no longer has
    // (which would leave out bytes equal there: a torn record, seed 31).
    // (Not where the segment is served: the owner's twins are its pages.)
    std::vector<Range> ranges = PagesTouched(wb->runs);
    if (CachedOwner(ino) != self_) {
      const uint64_t mark = twins_->Mark();
      for (const Range& r : ranges) twins_->Drop(ino, r, mark);
    }
    DropLocalLater(ino, std::move(ranges));
    return st;
  });
}

void Cluster::DeliverPending() {
  for (uint64_t ino : pending_->Inodes()) {
    Status st = DrainPending(ino);
    if (st.ok()) log_->info("delivered the kept write-backs of inode {}", ino);
  }
}

}  // namespace cshm::fs
