// The old owner's end of a move (migrator/segment_transfer.h): Move, the
// pages in chunks, and how the move is decided (committed, undone, or left to
// a thread of its own when the directory does not answer).
#include "migrator/segment_transfer.h"

#include <spdlog/spdlog.h>

#include <future>
#include <random>
#include <thread>

#include "common/metrics.h"
#include "common/random_id.h"

namespace cshm::migrator {

using namespace ownership;
using store::kPageSize;

namespace {
metrics::Counter kMigrations("cshm_migrations_total", "segments this node moved to another node");
metrics::Counter kMigrationsFailed("cshm_migrations_failed_total", "moves from this node that failed (it kept the segment)");
metrics::Counter kMigrationBytes("cshm_migration_bytes_total", "page bytes sent by moves from this node");
metrics::Histogram kMigration("cshm_migration_seconds", "moves from this node, by how long they took");


}  // namespace

void SegmentTransfer::Progress(uint64_t* ino, uint64_t* target, uint64_t* done, uint64_t* total) const {
  *ino = moving_.ino;
  *target = moving_.target;
  *done = moving_.done;
  *total = moving_.total;
}

Status SegmentTransfer::Move(uint64_t ino, uint32_t target, const std::string& why) {
  if (env_.stays && env_.stays(ino))
    return Busy("inode " + std::to_string(ino) + " is a semaphore set: it stays with the node that created it");
  {
    MutexLock lock(&migrate_mu_);
    if (!migrate_done_.WaitFor(lock, std::chrono::milliseconds(env_.config.request_timeout_ms),
                               [this]() REQUIRES(migrate_mu_) { return !migrating_; }))
      return Busy("another migration from node " + std::to_string(env_.self) + " is under way; try again");
    migrating_ = true;
  }
  struct OneAtATime {
    SegmentTransfer* t;
    bool handed_on = false;  // to the thread that decides the move (DecideLater)
    ~OneAtATime() {
      if (!handed_on) t->EndMove();
    }
  } one_at_a_time{this};
  const auto t0 = std::chrono::steady_clock::now();
  // Rounds still running here would be unknown to the new owner, whose Sync
  // would then not wait for them: finish them first, and before freezing. A
  // round's invalidation can wait in the other node's kernel for a folio
  // that a read holds locked until its fetch is answered, and a frozen
  // segment would hold that fetch until the round timed out (the folio cycle
  // of DESIGN.md, through the freeze; ownership/migration.pml). A round
  // started between the wait and the freeze: unfreeze, wait again.
  SegmentSnapshot snap;
  for (int attempt = 0;; attempt++) {
    Status rounds_done = env_.rounds->Wait(ino);
    if (!rounds_done.ok()) env_.log->warn("before migrating inode {}: {}", ino, rounds_done.message());
    CSHM_ASSIGN_OR_RETURN(snap, env_.owned->Freeze(ino));
    if (!env_.rounds->Pending(ino)) break;
    env_.owned->Unfreeze(ino, std::nullopt);
    if (attempt == 20)
      return Busy("inode " + std::to_string(ino) + " keeps starting invalidations faster than it can be frozen " +
                  "for a move; try again");
  }
  Moving m;
  m.ino = ino;
  m.target = target;
  m.ref = MoveRef{ino, RandomId()};
  m.snap = snap;
  m.why = why;
  m.t0 = t0;
  const MoveRef& ref = m.ref;
  auto fail = [&](const Status& s) { return Fail(m, s); };
  auto bitmap = env_.net()->Call(target, kMigrateQuery, ref.Encode());
  if (!bitmap.ok()) return fail(bitmap.status());
  auto seg = env_.pages->Get(ino);
  if (!seg.ok()) return fail(seg.status());
  m.seg = *seg;
  const uint64_t pages = (snap.size + kPageSize - 1) / kPageSize;
  moving_.done = 0;
  moving_.total = pages;
  moving_.target = target;
  moving_.ino = ino;
  struct Done {
    MoveProgress& m;
    ~Done() { m.ino = 0; }
  } done_moving{moving_};
  m.pages = pages;
  if (Status st = SendPages(m, *bitmap); !st.ok()) return fail(st);
  MigrateInstall install;
  install.ino = ino;
  install.move_id = ref.move_id;
  install.snapshot = snap;
  install.locks = env_.locks_of(ino);
  auto r = env_.net()->Call(target, kMigrateInstall, install.Encode());
  if (!r.ok()) return fail(r.status());
  Status st = env_.meta().SetOwner(ino, target);
  if (st.ok()) return Finish(m);
  // The update may have been made and only its answer lost: then aborting
  // would leave the directory naming a node whose copy misses every write
  // taken here from now on (ownership/migration.pml finds that lost write).
  // Ask the directory which it is: meanwhile the segment stays frozen here
  // (requests wait, then time out) and served at the target only if the
  // directory names it, so nothing is lost either way. The caller waits a
  // few request deadlines for the answer, not for the directory to come back.
  auto named = DirectoryOwner(ino, st, std::chrono::steady_clock::now() + 2 * RequestDeadline());
  if (named.ok()) return Decided(m, *named, st);
  if (named.status().code() != Status::Code::kTimedOut) return named.status();  // stopping
  Status later = DecideLater(std::move(m), st);
  if (later.code() == Status::Code::kTimedOut) one_at_a_time.handed_on = true;
  return later;
}

Status SegmentTransfer::SendPages(Moving& m, const std::string& bitmap) {
  constexpr uint64_t kChunkPages = 2048;  // 8 MiB of data per message at most
  const uint64_t target_bit = 1ull << m.target;
  const std::string zero(kPageSize, '\0');
  // Two stages: while the target writes one chunk, the next is read and
  // encoded here. One chunk at a time is at the target, so they land in
  // order (the first one resets its file).
  Chunk in_flight;
  for (uint64_t first = 0; first < m.pages || first == 0; first += kChunkPages) {
    // Holes are zeros at the target too (its file is reset by the first
    // chunk): a move costs the pages that hold data, not the file's size.
    if (first > 0) {
      CSHM_ASSIGN_OR_RETURN(uint64_t next, m.seg->NextData(first * kPageSize));
      if (next == UINT64_MAX || next / kPageSize >= m.pages) break;
      first = std::max(first, next / kPageSize);
    }
    Chunk c;
    c.first = first;
    const uint64_t end = std::min(m.pages, first + kChunkPages);
    c.pages.resize((end - first) * kPageSize);  // read with one call, sent from where it was read
    CSHM_RETURN_IF_ERROR(m.seg->Read(first * kPageSize, c.pages.size(), c.pages.data()));
    MigratePages msg;
    msg.ino = m.ino;
    msg.move_id = m.ref.move_id;
    msg.first_page = first;
    for (uint64_t p = first; p < end; p++) {
      const bool has_twin = p < bitmap.size() && bitmap[p] != 0;
      const std::string_view page = std::string_view(c.pages).substr((p - first) * kPageSize, kPageSize);
      if (has_twin && p < m.snap.copyset.size() && (m.snap.copyset[p] & target_bit)) {
        msg.kinds.push_back(PageKind::kYourTwin);
        msg.twin_hashes.push_back(PageHash(page));
      } else if (page == zero) {
        msg.kinds.push_back(PageKind::kZero);
      } else {
        msg.kinds.push_back(PageKind::kData);
        msg.data.push_back(page);
        m.sent++;
      }
    }
    std::string payload = msg.Encode();
    c.kinds = std::move(msg.kinds);
    m.messages++;
    if (in_flight.answer.valid()) CSHM_RETURN_IF_ERROR(Answered(m, in_flight));
    env_.slow_chunk.At("a chunk of the move of inode", m.ino);
    // Its own thread, so that this one reads the next chunk meanwhile; the
    // call has its deadline, and an early return waits for it (~future).
    c.answer = std::async(std::launch::async, [net = env_.net(), target = m.target, p = std::move(payload)]() mutable {
      return net->Call(target, kMigratePages, std::move(p));
    });
    in_flight = std::move(c);
    if (m.pages == 0) break;
  }
  return in_flight.answer.valid() ? Answered(m, in_flight) : Status::Ok();
}

Status SegmentTransfer::Answered(Moving& m, Chunk& c) {
  CSHM_ASSIGN_OR_RETURN(std::string answer, c.answer.get());
  moving_.done = std::min(m.pages, c.first + c.kinds.size());
  CSHM_ASSIGN_OR_RETURN(MigratePagesReply reply, MigratePagesReply::Decode(answer));
  if (reply.need.empty()) return Status::Ok();
  // Twins the target does not have after all, or that differ: the pages.
  MigratePages repair;
  repair.ino = m.ino;
  repair.move_id = m.ref.move_id;
  repair.first_page = c.first;
  repair.repair = true;
  repair.kinds.assign(c.kinds.size(), PageKind::kSkip);
  for (uint64_t p : reply.need) {
    if (p < c.first || p - c.first >= c.kinds.size() || c.kinds[p - c.first] != PageKind::kYourTwin)
      return IoError("node " + std::to_string(m.target) + " asked for page " + std::to_string(p) +
                     ", which was not offered as its twin");
    repair.kinds[p - c.first] = PageKind::kData;
  }
  for (uint64_t i = 0; i < repair.kinds.size(); i++)
    if (repair.kinds[i] == PageKind::kData)
      repair.data.push_back(std::string_view(c.pages).substr(i * kPageSize, kPageSize));
  m.sent += repair.data.size();
  m.repaired += repair.data.size();
  return env_.net()->Call(m.target, kMigratePages, repair.Encode()).status();
}

Status SegmentTransfer::Decided(Moving& m, uint32_t named, const Status& why) {
  if (named != m.target) return Fail(m, why);
  env_.log->warn("migration of inode {}: the directory update answered '{}' but was made; committing", m.ino,
                 why.message());
  return Finish(m);
}

Status SegmentTransfer::DecideLater(Moving m, const Status& why) {
  const std::string unconfirmed = "the move of inode " + std::to_string(m.ino) + " to node " +
                                  std::to_string(m.target) + " is not confirmed: the directory (node " +
                                  std::to_string(env_.config.metadata_node) + ") does not answer whether it names node " +
                                  std::to_string(m.target);
  MutexLock lock(&deciding_mu_);
  if (stopped_) return Unavailable(unconfirmed + ", and this node is stopping: the directory decides at its next start");
  // The thread of the last such move has ended: it let this one begin (EndMove).
  if (deciding_.joinable()) deciding_.join();
  deciding_ = std::thread([this, m = std::move(m), why]() mutable {
    auto named = DirectoryOwner(m.ino, why, std::chrono::steady_clock::time_point::max());
    if (named.ok()) (void)Decided(m, *named, why);  // else stopping: both copies stay, the directory decides at restart
    EndMove();
  });
  return TimedOut(unconfirmed + "; the segment stays frozen on node " + std::to_string(env_.self) +
                  " until it does, then the move commits or is undone (user.cshm.owner says which)");
}

void SegmentTransfer::Stop() {
  std::thread deciding;
  {
    MutexLock lock(&deciding_mu_);
    stopped_ = true;
    deciding = std::move(deciding_);
  }
  if (deciding.joinable()) deciding.join();
}

void SegmentTransfer::EndMove() {
  MutexLock lock(&migrate_mu_);
  migrating_ = false;
  migrate_done_.NotifyOne();
}

Status SegmentTransfer::Fail(const Moving& m, const Status& why) {
  kMigrationsFailed.Add();
  env_.owned->Unfreeze(m.ino, std::nullopt);  // the segment stays here, intact
  env_.net()->Send(m.target, kMigrateAbort, m.ref.Encode());
  env_.log->warn("migration of inode {} to node {} failed, it stays on node {}: {}", m.ino, m.target, env_.self,
                 why.message());
  return why;
}

Status SegmentTransfer::Finish(Moving& m) {
  const uint64_t ino = m.ino;
  const uint32_t target = m.target;
  // Committed: the directory names the target, which may serve it now. If
  // this does not reach it, it finds out from the directory (Resolve).
  Status committed = env_.net()->Call(target, kMigrateCommit, m.ref.Encode()).status();
  if (!committed.ok())
    env_.log->warn("migration of inode {}: node {} did not take the commit ({}); it will find the directory naming it",
                   ino, target, committed.message());
  // This node's kernel copies had the pages here as their twins: store
  // those before the pages go.
  KeepOwnTwins(ino, m.snap, *m.seg);
  // Forward from now on.
  env_.set_locks(ino, {});
  env_.note_owner(ino, target);
  env_.owned->Unfreeze(ino, target);
  m.seg.reset();
  Status removed = env_.pages->Remove(ino);
  if (!removed.ok()) env_.log->warn("freeing the pages of migrated inode {}: {}", ino, removed.message());
  kMigrations.Add();
  kMigrationBytes.Add(m.sent * kPageSize);
  kMigration.Since(m.t0);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - m.t0).count();
  env_.log->info("migrated inode {} from node {} to node {} ({}): {} of {} pages sent ({} of them for twins that "
                 "differed) in {} chunks, {:.1f} ms",
                 ino, env_.self, target, m.why, m.sent, m.pages, m.repaired, m.messages, ms);
  return Status::Ok();
}

Result<uint32_t> SegmentTransfer::DirectoryOwner(uint64_t ino, const Status& why,
                                                 std::chrono::steady_clock::time_point deadline) {
  auto backoff = std::chrono::milliseconds(100);
  for (int attempt = 0;; attempt++) {
    auto rec = env_.meta().GetAttr(ino);
    if (rec.ok()) return rec->owner_node;
    if (attempt == 0)
      env_.log->error("migration of inode {}: the directory update failed ({}) and the directory cannot say whether "
                      "it was made ({}); the segment stays frozen until it can", ino, why.message(),
                      rec.status().message());
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return TimedOut("the directory did not say who owns inode " + std::to_string(ino));
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    if (env_.wait_stop(std::min(backoff, left)))
      return Unavailable("stopping before the directory said who owns inode " + std::to_string(ino));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
}

void SegmentTransfer::KeepOwnTwins(uint64_t ino, const SegmentSnapshot& snap, const store::Segment& seg) {
  const uint64_t self_bit = 1ull << env_.self;
  const uint64_t pages = std::min<uint64_t>(snap.copyset.size(), (snap.size + kPageSize - 1) / kPageSize);
  std::string run;
  for (uint64_t p = 0; p < pages;) {
    if (!(snap.copyset[p] & self_bit) || env_.twins->Has(ino, p)) {
      p++;
      continue;
    }
    uint64_t q = p;
    while (q < pages && q - p < 256 && (snap.copyset[q] & self_bit) && !env_.twins->Has(ino, q)) q++;
    run.resize((q - p) * kPageSize);
    Status st = seg.Read(p * kPageSize, run.size(), run.data());
    if (st.ok()) st = env_.twins->Put(ino, p * kPageSize, run);
    if (!st.ok()) {
      // Its pages could only be written back whole now: the kernel drops them.
      env_.log->warn("cannot keep the twins of migrated inode {} ({}); this node's cached pages of it are dropped", ino,
                     st.message());
      env_.drop_local_later(ino, {Range{0, 0}});
      return;
    }
    p = q;
  }
}

}  // namespace cshm::migrator
