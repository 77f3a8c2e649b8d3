// What a node does with each message a peer sends: one table from message
// type to its handler, and one handler per type (ownership/messages.h lists
// the messages).
//
// Where a request runs: the messenger offers it first to its I/O thread
// (if the table allows), which must never block; then to the fast pool,
// whose threads never wait on the network; types that may wait go to the
// slow pool. A handler is called with where it runs and, where it may not
// wait, returns false instead of waiting (having answered nothing): the I/O
// thread then hands the request to the fast pool, the fast pool to the slow
// pool (Messenger::Defer). So the same code serves a fetch on all three,
// with the same answer; only whether it may wait differs.
#include <spdlog/spdlog.h>

#include <array>

#include "common/metrics.h"
#include "fs/cluster.h"
#include "fs/semaphores.h"
#include "meta/meta_rpc.h"
#include "ownership/messages.h"

namespace cshm::fs {

using namespace ownership;

namespace {
metrics::Counter kFetchesServed("cshm_fetches_served_total", "page fetches this node answered as a segment's owner");

// A write-back larger than this is merged on a pool, not on the I/O thread:
// it would hold the thread for milliseconds.
constexpr size_t kInlineWriteBack = 256 << 10;

// How long a write-back's answer may wait for the round it started. If the
// round is over by then, the answer says no round is pending and the
// writer's release sends no Sync: a release with sharers costs one network
// round trip instead of two. Never longer, and no thread waits: a round can
// itself wait for a write-back (a sharer's kernel writing a dirty page back
// before it drops it), and write-backs that waited for rounds without bound
// could wait for each other (ownership/coherence.pml, WRITE_WAITS_FOR_ROUND).
constexpr auto kWriteBackHold = std::chrono::microseconds(250);
}  // namespace

struct Cluster::Handlers {
  using On = Cluster::On;

  // Each returns true once it answered (or, for a one-way message, did what
  // it says), false if it would have to wait where it may not.
  struct Route {
    uint16_t type;
    bool slow;       // may wait on the network: runs on the slow pool
    bool io_thread;  // may be tried on the messenger's I/O thread first
    bool (*serve)(Cluster& c, net::Request& r, On on);
  };

  static bool Reply(net::Request& r, Result<std::string> res) {
    if (r.responder) r.responder->Reply(res.status(), res.ok() ? std::move(res).value() : std::string());
    return true;
  }
  static bool Reply(net::Request& r, const Status& s) {
    if (r.responder) r.responder->Reply(s, std::string());
    return true;
  }
  // kBusy says the handler would have to wait: not answered where it may not.
  static bool Refuse(net::Request& r, const Status& s, On on) {
    if (s.code() == Status::Code::kBusy && on != On::kSlowPool) return false;
    return Reply(r, s);
  }
  static bool MayWait(On on) { return on == On::kSlowPool; }

  // The data path, as the segment's owner.
  static bool Fetch(Cluster& c, net::Request& r, On on) {
    auto req = FetchRequest::Decode(r.payload);
    if (!req.ok()) return Reply(r, req.status());
    std::string frame = FetchReply::Frame(req->len);
    uint64_t size = 0;
    auto n = c.owned_.Fetch(req->ino, r.from, req->off, req->len, frame.data() + FetchReply::kDataOffset, &size,
                            MayWait(on));
    if (!n.ok()) return Refuse(r, n.status(), on);
    FetchReply::Finish(&frame, size, *n);
    kFetchesServed.Add();
    return Reply(r, std::move(frame));
  }
  static bool WriteBack(Cluster& c, net::Request& r, On on) {
    if (on == On::kIoThread && r.payload.size() > kInlineWriteBack) return false;
    auto req = WriteBackRequest::Decode(r.payload);
    if (!req.ok()) return Reply(r, req.status());
    // A late one hashes every page it touches before it writes: not here.
    if (on == On::kIoThread && req->late) return false;
    auto out = c.ApplyAsOwner(r.from, *req, MayWait(on));
    if (!out.ok()) return Refuse(r, out.status(), on);
    if (!out->round) return Reply(r, out->reply.Encode());
    // Whichever comes first answers: the round's end, or the hold; the
    // Responder ignores the second.
    c.rounds_->AnswerAfter(req->ino, *out->round, kWriteBackHold,
                           [&c, ino = req->ino, reply = out->reply, responder = r.responder]() mutable {
                             reply.rounds_running = c.rounds_->Pending(ino);
                             if (responder) responder->Reply(Status::Ok(), reply.Encode());
                           });
    return true;
  }
  static bool Sync(Cluster& c, net::Request& r, On on) {
    auto ino = DecodeU64(r.payload);
    if (!ino.ok()) return Reply(r, ino.status());
    // Rounds live with the owner: a moved segment answers kMoved, a frozen
    // one is waited out on the slow pool. Answered at once if no round is
    // running, else by the last ack of the last round: no thread waits.
    Status here = c.owned_.Serving(*ino, MayWait(on));
    if (!here.ok()) return Refuse(r, here, on);
    c.rounds_->WhenDone(*ino, [responder = r.responder](const Status& st) {
      if (responder) responder->Reply(st, std::string());
    });
    return true;
  }
  static bool Truncate(Cluster& c, net::Request& r, On) {
    auto req = TruncateRequest::Decode(r.payload);
    if (!req.ok()) return Reply(r, req.status());
    auto size = c.TruncateAsOwner(req->ino, r.from, req->size);
    if (!size.ok()) return Reply(r, size.status());
    return Reply(r, EncodeU64(*size));
  }
  static bool Fallocate(Cluster& c, net::Request& r, On) {
    auto req = FallocateRequest::Decode(r.payload);
    if (!req.ok()) return Reply(r, req.status());
    auto size = c.FallocateAsOwner(r.from, *req);
    if (!size.ok()) return Reply(r, size.status());
    return Reply(r, EncodeU64(*size));
  }
  static bool Drop(Cluster& c, net::Request& r, On) {
    auto ino = DecodeU64(r.payload);
    if (!ino.ok()) return true;
    c.twins_->DropInode(*ino);
    c.ForgetInodeState(*ino);
    Status s = c.owned_.Remove(*ino);
    if (!s.ok()) c.log_->warn("freeing the pages of deleted inode {}: {}", *ino, s.message());
    if (c.semaphores_) c.semaphores_->Forget(*ino);
    return true;
  }
  static bool Lock(Cluster& c, net::Request& r, On on) {
    // The lock table is in memory: nothing to wait for once the segment is known here.
    auto m = LockMessage::Decode(r.payload);
    if (!m.ok()) return Reply(r, m.status());
    auto out = c.lock_service_.Serve(r.from, *m, MayWait(on));
    if (!out.ok()) return Refuse(r, out.status(), on);
    return Reply(r, out->Encode());
  }
  static bool Control(Cluster& c, net::Request& r, On) {
    auto m = ControlRequest::Decode(r.payload);
    if (!m.ok()) return Reply(r, m.status());
    return Reply(r, c.ServeControl(*m));
  }

  // As an accessor: the owner's round is running, this node's kernel not yet told.
  static bool Invalidate(Cluster& c, net::Request& r, On) {
    auto req = InvalidateRequest::Decode(r.payload);
    if (!req.ok()) return Reply(r, req.status());
    c.seams_.slow_invalidate.At("the invalidation of inode", req->ino);
    c.InvalidateLocal(req->ino, req->ranges);
    return Reply(r, std::string());
  }

  // The namespace, on the metadata node, and what it tells the others.
  static bool MetaRequest(Cluster& c, net::Request& r, On on) {
    if (!c.ns_) return Reply(r, Unavailable("node " + std::to_string(c.self_) + " is not the metadata node"));
    // A change waits for the other nodes' kernels to drop what it changed.
    if (on != On::kSlowPool && meta::MayWaitOnPeers(r.payload)) return false;
    return Reply(r, meta::ServeMetaRequest(*c.ns_, r.from, r.payload, &c.name_grants_));
  }
  static bool MetaForget(Cluster& c, net::Request& r, On) {
    if (c.ns_) (void)meta::ServeMetaRequest(*c.ns_, r.from, r.payload);
    return true;
  }
  static bool MetaRefs(Cluster& c, net::Request& r, On) {
    if (c.ns_ || r.from != c.config_.metadata_node) return Reply(r, Invalid("only the metadata node asks for references"));
    // Half a deadline: the asker's Call must still be waiting for the answer.
    auto snap = c.remote_meta_->held().Snapshot(std::chrono::milliseconds(c.config_.request_timeout_ms / 2));
    if (!snap.ok()) return Reply(r, snap.status());
    return Reply(r, snap->Encode());
  }
  static bool HeldOrphans(Cluster& c, net::Request& r, On) {
    if (c.ns_ || r.from != c.config_.metadata_node) return true;
    for (size_t at = 0; at + 8 <= r.payload.size(); at += 8) {
      auto ino = DecodeU64(std::string_view(r.payload).substr(at, 8));
      if (!ino.ok()) continue;
      if (auto name = c.remote_meta_->held().NameOf(*ino)) c.DropEntryLocal(name->first, name->second);
    }
    return true;
  }
  // On the slow pool: dropping an entry waits for the kernel's lock of its
  // directory, which a lookup holds until its answer, which the fast pool or
  // the I/O thread brings (fs/name_coherence.h).
  static bool NamesChanged(Cluster& c, net::Request& r, On) {
    if (r.from != c.config_.metadata_node) return Reply(r, Invalid("only the metadata node changes names"));
    auto change = meta::NameChange::Decode(r.payload);
    if (!change.ok()) return Reply(r, change.status());
    c.DropNamesLocal(*change);
    return Reply(r, std::string());
  }

  // Peers and leases.
  static bool Ping(Cluster&, net::Request&, On) { return true; }
  static bool NodeStatus(Cluster& c, net::Request& r, On) { return Reply(r, c.OwnStatus().Encode()); }
  static bool IncarnationSeen(Cluster& c, net::Request& r, On) {
    auto inc = DecodeU64(r.payload);
    if (inc.ok() && *inc == c.incarnation_) c.lock_service_.Confirmed(r.from);
    return true;
  }

  // Both ends of a move (migrator/segment_transfer.h).
  static bool MigrateAbort(Cluster& c, net::Request& r, On) {
    auto ref = MoveRef::Decode(r.payload);
    if (ref.ok()) c.transfer_->Abort(*ref, "node " + std::to_string(r.from) + " aborted the move");
    return true;
  }
  static bool MigrateQuery(Cluster& c, net::Request& r, On) {
    auto ref = MoveRef::Decode(r.payload);
    if (!ref.ok()) return Reply(r, ref.status());
    return Reply(r, c.transfer_->Query(*ref));
  }
  static bool MigratePages(Cluster& c, net::Request& r, On) {
    auto m = ownership::MigratePages::Decode(r.payload);
    if (!m.ok()) return Reply(r, m.status());
    auto need = c.transfer_->Pages(*m);
    if (!need.ok()) return Reply(r, need.status());
    return Reply(r, need->Encode());
  }
  static bool MigrateInstall(Cluster& c, net::Request& r, On) {
    auto m = ownership::MigrateInstall::Decode(r.payload);
    if (!m.ok()) return Reply(r, m.status());
    return Reply(r, c.transfer_->Install(*m));
  }
  static bool MigrateCommit(Cluster& c, net::Request& r, On) {
    auto ref = MoveRef::Decode(r.payload);
    if (!ref.ok()) return Reply(r, ref.status());
    return Reply(r, c.transfer_->Commit(*ref));
  }

  // SysV semaphores (fs/semaphores.h).
  static bool Sem(Cluster& c, net::Request& r, On) {
    auto m = SemRequest::Decode(r.payload);
    if (!m.ok()) return Reply(r, m.status());
    if (!c.semaphores_) return Reply(r, Unavailable("semaphores are not served here yet"));
    return Reply(r, c.semaphores_->Serve(r.from, *m).Encode());
  }
  static bool SemWake(Cluster& c, net::Request& r, On) {
    auto m = ownership::SemWake::Decode(r.payload);
    if (!m.ok()) return Reply(r, m.status());
    if (c.semaphores_) c.semaphores_->Woken(*m);
    return Reply(r, std::string());
  }

  //                                        slow   I/O thread
  static constexpr std::array<Route, 24> kRoutes{{
      {kFetch, false, true, Fetch},
      {kWriteBack, false, true, WriteBack},
      {kSync, false, true, Sync},
      {kLock, false, true, Lock},
      {kTruncate, true, false, Truncate},
      {kFallocate, true, false, Fallocate},
      {kDrop, false, false, Drop},
      {kControl, true, false, Control},
      {kInvalidate, true, false, Invalidate},
      {kMetaRequest, false, false, MetaRequest},
      {kMetaForget, false, false, MetaForget},
      {kMetaRefs, true, false, MetaRefs},
      {kHeldOrphans, false, false, HeldOrphans},
      {kNamesChanged, true, false, NamesChanged},
      {kPing, false, true, Ping},
      {kNodeStatus, false, false, NodeStatus},
      {kIncarnationSeen, false, false, IncarnationSeen},
      {kMigrateAbort, false, false, MigrateAbort},
      {kMigrateQuery, false, false, MigrateQuery},
      {kMigratePages, true, false, MigratePages},
      {kMigrateInstall, true, false, MigrateInstall},
      {kMigrateCommit, true, false, MigrateCommit},
      {kSem, false, false, Sem},
      {kSemWake, false, false, SemWake},
  }};

  static const Route* Find(uint16_t type) {
    for (const Route& route : kRoutes)
      if (route.type == type) return &route;
    return nullptr;
  }
};

bool Cluster::IsSlow(uint16_t type) {
  const Handlers::Route* route = Handlers::Find(type);
  return route != nullptr && route->slow;
}

bool Cluster::Serve(net::Request& r, On on) {
  const Handlers::Route* route = Handlers::Find(r.type);
  if (route == nullptr) {
    if (on == On::kIoThread) return false;  // logged once, on a pool
    log_->warn("node {} sent unknown message type {}", r.from, r.type);
    return Handlers::Reply(r, NotSupported("unknown message type " + std::to_string(r.type)));
  }
  if (on == On::kIoThread && !route->io_thread) return false;
  if (route->serve(*this, r, on)) return true;
  if (on == On::kIoThread) return false;  // a pool serves it
  if (on == On::kFastPool) {
    net_.load()->Defer(std::move(r));  // the fast pool never waits: the slow one may
    return true;
  }
  return Handlers::Reply(r, Busy("a request refused to wait where it may"));  // (no handler does)
}

}  // namespace cshm::fs
