// The coherence protocol's messages (ownership/messages.h): fetch, write-back,
// truncate, fallocate, invalidation, locks, moves, status, migration and
// control, each an Encode and a Decode that refuses what does not parse.
// The semaphores' messages are in ownership/sem_messages.cc.
#include "ownership/messages.h"

#include <xxhash.h>

#include "common/bytes.h"

namespace cshm::ownership {
namespace {
constexpr uint32_t kMaxItems = 1 << 20;  // runs or ranges in one message
}  // namespace

Status Malformed(const char* what) { return Invalid(std::string("malformed ") + what); }

std::string FetchRequest::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU64(ino);
  w.PutU64(off);
  w.PutU64(len);
  return out;
}
Result<FetchRequest> FetchRequest::Decode(std::string_view in) {
  FetchRequest f;
  ByteReader r(in);
  r.GetU64(&f.ino);
  r.GetU64(&f.off);
  r.GetU64(&f.len);
  if (!r.AtEnd() || f.len == 0 || f.len > kMaxLen || f.off > kMaxWireOffset) return Malformed("fetch");
  return f;
}

std::string FetchReply::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU64(size);
  w.PutBytes(data);
  return out;
}
Result<FetchReply> FetchReply::Decode(std::string_view in) {
  FetchReply f;
  ByteReader r(in);
  r.GetU64(&f.size);
  r.GetBytes(&f.data);
  if (!r.AtEnd()) return Malformed("fetch reply");
  return f;
}

std::string FetchReply::Frame(size_t len) { return std::string(kDataOffset + len, '\0'); }

void FetchReply::Finish(std::string* frame, uint64_t size, size_t n) {
  frame->resize(kDataOffset + n);
  std::string head;
  ByteWriter w(&head);
  w.PutU64(size);
  w.PutU32(static_cast<uint32_t>(n));
  frame->replace(0, kDataOffset, head);
}

Result<std::string_view> FetchReply::View(std::string_view in, uint64_t* size) {
  ByteReader r(in);
  uint32_t n = 0;
  if (!r.GetU64(size) || !r.GetU32(&n) || in.size() != kDataOffset + n) return Malformed("fetch reply");
  return in.substr(kDataOffset, n);
}

std::string WriteBackReply::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU64(size);
  w.PutU8(rounds_running ? 1 : 0);
  w.PutU32(dropped);
  return out;
}
Result<WriteBackReply> WriteBackReply::Decode(std::string_view in) {
  WriteBackReply r;
  ByteReader b(in);
  uint8_t running = 0;
  b.GetU64(&r.size);
  b.GetU8(&running);
  b.GetU32(&r.dropped);
  if (!b.AtEnd() || running > 1) return Malformed("write-back reply");
  r.rounds_running = running == 1;
  return r;
}

std::string WriteBackRequest::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU64(ino);
  w.PutU32(static_cast<uint32_t>(runs.size()));
  for (const WriteRun& run : runs) {
    w.PutU64(run.off);
    w.PutBytes(run.bytes);
  }
  // Expectations mean something only for a late write-back.
  w.PutU8((late ? 1 : 0) | (keeps_copy ? 2 : 0));
  w.PutU32(late ? static_cast<uint32_t>(expect.size()) : 0);
  for (const PageExpect& e : late ? expect : std::vector<PageExpect>()) {
    w.PutU64(e.page);
    w.PutU64(e.hash);
  }
  return out;
}
Result<WriteBackRequest> WriteBackRequest::Decode(std::string_view in) {
  WriteBackRequest wb;
  ByteReader r(in);
  uint32_t n = 0;
  r.GetU64(&wb.ino);
  r.GetU32(&n);
  if (!r.ok() || n > kMaxItems) return Malformed("write-back");
  for (uint32_t i = 0; i < n && r.ok(); i++) {
    WriteRun run;
    r.GetU64(&run.off);
    r.GetBytes(&run.bytes);
    if (run.off > kMaxWireOffset) return Malformed("write-back offset");
    wb.runs.push_back(std::move(run));
  }
  uint8_t flags = 0;
  r.GetU8(&flags);
  r.GetU32(&n);
  if (!r.ok() || flags > 3 || n > kMaxItems || ((flags & 1) == 0 && n != 0)) return Malformed("write-back");
  wb.late = (flags & 1) != 0;
  wb.keeps_copy = (flags & 2) != 0;
  for (uint32_t i = 0; i < n && r.ok(); i++) {
    PageExpect e;
    r.GetU64(&e.page);
    r.GetU64(&e.hash);
    wb.expect.push_back(e);
  }
  if (!r.AtEnd()) return Malformed("write-back");
  return wb;
}

std::string TruncateRequest::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU64(ino);
  w.PutU64(size);
  return out;
}
Result<TruncateRequest> TruncateRequest::Decode(std::string_view in) {
  TruncateRequest t;
  ByteReader r(in);
  r.GetU64(&t.ino);
  r.GetU64(&t.size);
  if (!r.AtEnd()) return Malformed("truncate");
  return t;
}

std::string FallocateRequest::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU64(ino);
  w.PutU32(mode);
  w.PutU64(off);
  w.PutU64(len);
  return out;
}
Result<FallocateRequest> FallocateRequest::Decode(std::string_view in) {
  FallocateRequest f;
  ByteReader r(in);
  r.GetU64(&f.ino);
  r.GetU32(&f.mode);
  r.GetU64(&f.off);
  r.GetU64(&f.len);
  if (!r.AtEnd() || f.len == 0 || f.off > kMaxWireOffset || f.len > kMaxWireOffset) return Malformed("fallocate");
  return f;
}

std::string InvalidateRequest::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU64(ino);
  w.PutU32(static_cast<uint32_t>(ranges.size()));
  for (const Range& rg : ranges) {
    w.PutU64(rg.off);
    w.PutU64(rg.len);
  }
  return out;
}
Result<InvalidateRequest> InvalidateRequest::Decode(std::string_view in) {
  InvalidateRequest iv;
  ByteReader r(in);
  uint32_t n = 0;
  r.GetU64(&iv.ino);
  r.GetU32(&n);
  if (!r.ok() || n > kMaxItems) return Malformed("invalidate");
  for (uint32_t i = 0; i < n && r.ok(); i++) {
    Range rg;
    r.GetU64(&rg.off);
    r.GetU64(&rg.len);
    if (rg.off > kMaxWireOffset || rg.len > kMaxWireOffset) return Malformed("invalidate range");
    iv.ranges.push_back(rg);
  }
  if (!r.AtEnd()) return Malformed("invalidate");
  return iv;
}

namespace {
void PutLock(ByteWriter& w, const Lock& l) {
  w.PutU32(static_cast<uint32_t>(l.type));
  w.PutU64(l.start);
  w.PutU64(l.end);
  w.PutU32(l.pid);
  w.PutU32(l.who.node);
  w.PutU64(l.who.owner);
  w.PutU8(l.flock ? 1 : 0);
}
bool GetLock(ByteReader& r, Lock* l) {
  uint32_t type = 0;
  uint8_t flock = 0;
  r.GetU32(&type);
  r.GetU64(&l->start);
  r.GetU64(&l->end);
  r.GetU32(&l->pid);
  r.GetU32(&l->who.node);
  r.GetU64(&l->who.owner);
  r.GetU8(&flock);
  l->type = static_cast<int>(type);
  l->flock = flock != 0;
  return r.ok() && (type == F_RDLCK || type == F_WRLCK || type == F_UNLCK) && l->start <= l->end;
}
}  // namespace

std::string LockMessage::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU8(static_cast<uint8_t>(op));
  w.PutU64(ino);
  PutLock(w, lock);
  w.PutU64(seq);
  w.PutU64(cancels);
  return out;
}
Result<LockMessage> LockMessage::Decode(std::string_view in) {
  LockMessage m;
  ByteReader r(in);
  uint8_t op = 0;
  r.GetU8(&op);
  r.GetU64(&m.ino);
  const bool lock_ok = GetLock(r, &m.lock);
  r.GetU64(&m.seq);
  r.GetU64(&m.cancels);
  if (!lock_ok || !r.AtEnd() || op < 1 || op > 3) return Malformed("lock request");
  m.op = static_cast<LockOp>(op);
  return m;
}
std::string LockReply::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU8(granted ? 1 : grace ? 2 : 0);
  PutLock(w, conflict);
  return out;
}
Result<LockReply> LockReply::Decode(std::string_view in) {
  LockReply m;
  ByteReader r(in);
  uint8_t g = 0;
  r.GetU8(&g);
  if (!GetLock(r, &m.conflict) || !r.AtEnd() || g > 2) return Malformed("lock reply");
  m.granted = g == 1;
  m.grace = g == 2;
  return m;
}

std::string MoveRef::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU64(ino);
  w.PutU64(move_id);
  return out;
}
Result<MoveRef> MoveRef::Decode(std::string_view in) {
  MoveRef m;
  ByteReader r(in);
  r.GetU64(&m.ino);
  r.GetU64(&m.move_id);
  if (!r.AtEnd()) return Malformed("move reference");
  return m;
}

std::string NodeStatus::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU32(node);
  for (uint64_t v : {incarnation, uptime_ms, segments_owned, page_bytes, capacity_bytes, twin_bytes, kept_writebacks,
                     queued_unlocks, moving_ino, moving_target, moving_done, moving_total, semaphore_sets,
                     semaphore_ops})
    w.PutU64(v);
  w.PutBytes(version);
  return out;
}
Result<NodeStatus> NodeStatus::Decode(std::string_view in) {
  NodeStatus m;
  ByteReader r(in);
  r.GetU32(&m.node);
  for (uint64_t* v : {&m.incarnation, &m.uptime_ms, &m.segments_owned, &m.page_bytes, &m.capacity_bytes,
                      &m.twin_bytes, &m.kept_writebacks, &m.queued_unlocks, &m.moving_ino, &m.moving_target,
                      &m.moving_done, &m.moving_total, &m.semaphore_sets, &m.semaphore_ops})
    r.GetU64(v);
  r.GetBytes(&m.version);
  if (!r.AtEnd() || m.version.size() > 64) return Malformed("node status");
  return m;
}

uint64_t PageHash(std::string_view page) { return XXH3_64bits(page.data(), page.size()); }

std::string MigratePages::Encode() const {
  std::string out;
  // Up to 8 MiB: made once, not grown by doubling.
  out.reserve(29 + kinds.size() + data.size() * (4 + store::kPageSize) + twin_hashes.size() * 8);
  ByteWriter w(&out);
  w.PutU64(ino);
  w.PutU64(move_id);
  w.PutU64(first_page);
  w.PutU8(repair ? 1 : 0);
  w.PutU32(static_cast<uint32_t>(kinds.size()));
  size_t d = 0, h = 0;
  for (PageKind k : kinds) {
    w.PutU8(static_cast<uint8_t>(k));
    if (k == PageKind::kData) w.PutBytes(data[d++]);
    if (k == PageKind::kYourTwin) w.PutU64(twin_hashes[h++]);
  }
  return out;
}
Result<MigratePages> MigratePages::Decode(std::string_view in) {
  MigratePages m;
  ByteReader r(in);
  uint32_t n = 0;
  uint8_t repair = 0;
  r.GetU64(&m.ino);
  r.GetU64(&m.move_id);
  r.GetU64(&m.first_page);
  r.GetU8(&repair);
  r.GetU32(&n);
  if (!r.ok() || n > kMaxItems || repair > 1 || m.first_page > kMaxWireOffset / store::kPageSize)
    return Malformed("migration pages");
  m.repair = repair == 1;
  for (uint32_t i = 0; i < n && r.ok(); i++) {
    uint8_t k = 0;
    r.GetU8(&k);
    if (k > 3) return Malformed("migration page kind");
    const auto kind = static_cast<PageKind>(k);
    // A repair chunk carries data or skips a page; a first chunk never skips.
    const bool allowed = m.repair ? kind == PageKind::kData || kind == PageKind::kSkip : kind != PageKind::kSkip;
    if (!allowed) return Malformed("migration page kind");
    m.kinds.push_back(kind);
    if (kind == PageKind::kData) {
      std::string_view page;
      r.GetView(&page);
      if (page.size() != store::kPageSize) return Malformed("migration page size");
      m.data.push_back(page);
    } else if (kind == PageKind::kYourTwin) {
      uint64_t hash = 0;
      r.GetU64(&hash);
      m.twin_hashes.push_back(hash);
    }
  }
  if (!r.AtEnd()) return Malformed("migration pages");
  return m;
}

std::string MigratePagesReply::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU32(static_cast<uint32_t>(need.size()));
  for (uint64_t p : need) w.PutU64(p);
  return out;
}
Result<MigratePagesReply> MigratePagesReply::Decode(std::string_view in) {
  MigratePagesReply m;
  ByteReader r(in);
  uint32_t n = 0;
  r.GetU32(&n);
  if (!r.ok() || n > kMaxItems) return Malformed("migration pages reply");
  for (uint32_t i = 0; i < n && r.ok(); i++) {
    uint64_t p = 0;
    r.GetU64(&p);
    m.need.push_back(p);
  }
  if (!r.AtEnd()) return Malformed("migration pages reply");
  return m;
}

std::string MigrateInstall::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU64(ino);
  w.PutU64(move_id);
  w.PutU64(snapshot.size);
  w.PutU8(snapshot.pinned ? 1 : 0);
  w.PutU32(static_cast<uint32_t>(snapshot.copyset.size()));
  for (uint64_t c : snapshot.copyset) w.PutU64(c);
  w.PutU32(static_cast<uint32_t>(locks.size()));
  for (const Lock& l : locks) PutLock(w, l);
  return out;
}
Result<MigrateInstall> MigrateInstall::Decode(std::string_view in) {
  MigrateInstall m;
  ByteReader r(in);
  uint8_t pinned = 0;
  uint32_t n = 0;
  r.GetU64(&m.ino);
  r.GetU64(&m.move_id);
  r.GetU64(&m.snapshot.size);
  r.GetU8(&pinned);
  r.GetU32(&n);
  if (!r.ok() || n > (1u << 26)) return Malformed("migration state");
  for (uint32_t i = 0; i < n && r.ok(); i++) {
    uint64_t c = 0;
    r.GetU64(&c);
    m.snapshot.copyset.push_back(c);
  }
  r.GetU32(&n);
  if (!r.ok() || n > kMaxItems) return Malformed("migration locks");
  for (uint32_t i = 0; i < n && r.ok(); i++) {
    Lock l;
    if (!GetLock(r, &l)) return Malformed("migration lock");
    m.locks.push_back(l);
  }
  if (!r.AtEnd()) return Malformed("migration state");
  m.snapshot.pinned = pinned != 0;
  return m;
}

std::string ControlRequest::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU64(ino);
  w.PutU8(static_cast<uint8_t>(op));
  w.PutU32(arg);
  return out;
}
Result<ControlRequest> ControlRequest::Decode(std::string_view in) {
  ControlRequest c;
  ByteReader r(in);
  uint8_t op = 0;
  r.GetU64(&c.ino);
  r.GetU8(&op);
  r.GetU32(&c.arg);
  if (!r.AtEnd() || op < 1 || op > 3) return Malformed("control request");
  c.op = static_cast<ControlOp>(op);
  return c;
}

std::string EncodeU64(uint64_t v) {
  std::string out;
  ByteWriter(&out).PutU64(v);
  return out;
}
Result<uint64_t> DecodeU64(std::string_view in) {
  ByteReader r(in);
  uint64_t v = 0;
  r.GetU64(&v);
  if (!r.AtEnd()) return Malformed("number");
  return v;
}

}  // namespace cshm::ownership
