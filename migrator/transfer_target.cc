// The target's end of a move (migrator/segment_transfer.h): a move is staged
// by its query, filled by its pages, installed frozen, and served from its
// commit on; one whose commit never came is decided by the directory.
#include "migrator/segment_transfer.h"

#include <spdlog/spdlog.h>

#include <unistd.h>

namespace cshm::migrator {

using namespace ownership;
using store::kPageSize;

Result<std::string> SegmentTransfer::Query(const MoveRef& ref) {
  {
    MutexLock lock(&mu_);
    auto it = staged_.find(ref.ino);
    if (it != staged_.end() && it->second.installed)
      return Busy("an earlier move of inode " + std::to_string(ref.ino) + " is still staged here");
    staged_[ref.ino] = Staged{ref.move_id, std::chrono::steady_clock::now(), false};
  }
  return env_.twins->Bitmap(ref.ino);
}

Result<MigratePagesReply> SegmentTransfer::Pages(const MigratePages& m) {
  CSHM_RETURN_IF_ERROR(CheckStaged(MoveRef{m.ino, m.move_id}));
  if (env_.die_in_migration) {
    env_.log->error("CSHM_TEST_DIE_IN_MIGRATION: dying in the middle of a migration, as asked");
    _exit(3);
  }
  CSHM_ASSIGN_OR_RETURN(auto seg, env_.pages->Get(m.ino));
  MutexLock lock(&seg->mu());
  if (m.first_page == 0 && !m.repair) CSHM_RETURN_IF_ERROR(seg->Truncate(0));
  // Consecutive pages with content are written with one call: a write per
  // page costs the page store's space accounting each time.
  std::string run;
  uint64_t run_start = 0;
  auto flush = [&]() REQUIRES(seg->mu()) -> Status {
    if (run.empty()) return Status::Ok();
    Status st = seg->Write(run_start * kPageSize, run.data(), run.size());
    run.clear();
    return st;
  };
  MigratePagesReply reply;
  size_t d = 0, h = 0;
  for (size_t i = 0; i < m.kinds.size(); i++) {
    const uint64_t p = m.first_page + i;
    std::optional<std::string> twin;
    std::optional<std::string_view> content;
    switch (m.kinds[i]) {
      case PageKind::kZero:
      case PageKind::kSkip:
        break;
      case PageKind::kData:
        content = m.data[d++];
        break;
      case PageKind::kYourTwin:
        // Only a twin equal to the owner's page (see messages.h): one this
        // node's own write-back has changed may not be updated yet.
        twin = env_.twins->Get(m.ino, p);
        if (twin && PageHash(*twin) == m.twin_hashes[h]) {
          content = *twin;
        } else {
          reply.need.push_back(p);
        }
        h++;
        break;
    }
    if (!content) {
      CSHM_RETURN_IF_ERROR(flush());
      continue;
    }
    if (run.empty()) {
      run_start = p;
      run.reserve((m.kinds.size() - i) * kPageSize);
    }
    run.append(*content);
  }
  CSHM_RETURN_IF_ERROR(flush());
  return reply;
}

Status SegmentTransfer::CheckStaged(const MoveRef& ref) {
  MutexLock lock(&mu_);
  auto it = staged_.find(ref.ino);
  if (it == staged_.end() || it->second.move_id != ref.move_id)
    return Invalid("not the move of inode " + std::to_string(ref.ino) + " being staged here (late or reordered)");
  return Status::Ok();
}

Status SegmentTransfer::Install(const MigrateInstall& m) {
  CSHM_RETURN_IF_ERROR(CheckStaged(MoveRef{m.ino, m.move_id}));
  // Every node the copysets name must be one this node could tell to drop
  // its copy, or count it gone by the lease rule: one that holds a lease
  // with this node now gives its copies up when that lease runs out. A node
  // this one cannot reach (or has never heard from: it restarted) may hold
  // its copy with no lease here at all; counted gone after the move, it
  // would read that copy, stale, for as long as the two stay apart (found by
  // the simulated cluster, seed 1544). The move is refused; the old owner,
  // which granted those copies, keeps serving.
  uint64_t sharers = 0;
  for (uint64_t c : m.snapshot.copyset) sharers |= c;
  net::Messenger* net = env_.net();
  for (uint32_t n = 0; sharers >> n != 0; n++) {
    if (n == env_.self || !((sharers >> n) & 1)) continue;
    if (net->Forgotten(n) || !net->LeaseHeld(n))
      return Unavailable("node " + std::to_string(n) + " caches pages of inode " + std::to_string(m.ino) +
                         " and node " + std::to_string(env_.self) +
                         " holds no lease with it: the move waits until it does (or the old owner forgets it)");
  }
  CSHM_ASSIGN_OR_RETURN(auto seg, env_.pages->Get(m.ino));
  {
    MutexLock lock(&seg->mu());
    CSHM_RETURN_IF_ERROR(seg->Truncate(m.snapshot.size));  // bytes past the end are zero or absent
  }
  // Staged: it serves nothing (requests wait) until the move commits.
  env_.owned->Install(m.ino, m.snapshot);
  env_.set_locks(m.ino, m.locks);
  MutexLock lock(&mu_);
  auto it = staged_.find(m.ino);
  if (it != staged_.end() && it->second.move_id == m.move_id) {
    it->second.installed = true;
    it->second.since = std::chrono::steady_clock::now();
  }
  return Status::Ok();
}

Status SegmentTransfer::Commit(const MoveRef& ref) {
  {
    MutexLock lock(&mu_);
    auto it = staged_.find(ref.ino);
    if (it == staged_.end() || it->second.move_id != ref.move_id || !it->second.installed) {
      // A commit sent again after its answer was lost finds the segment ours.
      if (it == staged_.end() && env_.owner_cached(ref.ino) == env_.self) return Status::Ok();
      return Invalid("no staged move of inode " + std::to_string(ref.ino) + " to commit");
    }
    staged_.erase(it);
  }
  env_.note_owner(ref.ino, env_.self);
  env_.owned->Unfreeze(ref.ino, std::nullopt);
  env_.log->info("inode {} is served here from now on (the directory names this node)", ref.ino);
  return Status::Ok();
}

void SegmentTransfer::Abort(const MoveRef& ref, const std::string& why) {
  {
    MutexLock lock(&mu_);
    auto it = staged_.find(ref.ino);
    if (it == staged_.end() || it->second.move_id != ref.move_id) return;  // another move's, or done
    staged_.erase(it);
  }
  env_.log->info("dropping the staged move of inode {}: {}", ref.ino, why);
  (void)env_.owned->Remove(ref.ino);
  env_.set_locks(ref.ino, {});
}

void SegmentTransfer::Resolve() {
  // An installed move normally commits within a request or two; one older
  // than that lost its commit or its old owner. The directory decides: a
  // move it names is committed here. One it does not name is dropped only
  // much later, when no directory update of it can still be in flight.
  const auto now = std::chrono::steady_clock::now();
  const auto ask_after = std::chrono::milliseconds(2 * env_.config.request_timeout_ms);
  const auto drop_after = 10 * std::chrono::milliseconds(env_.config.request_timeout_ms + env_.config.lease_ms);
  std::vector<std::pair<MoveRef, bool>> check;  // (move, old enough to drop)
  {
    MutexLock lock(&mu_);
    for (auto& [ino, st] : staged_)
      if (now - st.since > ask_after) check.emplace_back(MoveRef{ino, st.move_id}, now - st.since > drop_after);
  }
  for (auto& [ref, droppable] : check) {
    auto rec = env_.meta().GetAttr(ref.ino);
    if (!rec.ok()) continue;  // the directory cannot say yet
    // CommitStaged and AbortStaged act only on this very move, if still staged.
    if (rec->owner_node == env_.self) {
      if (Commit(ref).ok()) env_.log->warn("inode {}: the move's commit never came, the directory names this node",
                                                 ref.ino);
    } else if (rec->owner_node != env_.self && droppable) {
      Abort(ref, "the directory names node " + std::to_string(rec->owner_node));
    }
  }
}

}  // namespace cshm::migrator
