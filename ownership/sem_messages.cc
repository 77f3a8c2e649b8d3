// The semaphores' messages (ownership/messages.h, kSem and kSemWake):
// requests of a shim's call to a set's owner, its replies, and the wake-up of
// a queued operation.
#include "common/bytes.h"
#include "ownership/messages.h"

namespace cshm::ownership {

namespace {
constexpr uint32_t kMaxSemEntries = 1u << 16;

void PutValues(ByteWriter& w, const std::vector<uint16_t>& v) {
  w.PutU32(static_cast<uint32_t>(v.size()));
  for (uint16_t x : v) w.PutU16(x);
}
bool GetValues(ByteReader& r, std::vector<uint16_t>* v) {
  uint32_t n = 0;
  if (!r.GetU32(&n) || n > kMaxSemEntries) return false;
  v->resize(n);
  for (uint16_t& x : *v) r.GetU16(&x);
  return r.ok();
}
}  // namespace

std::string SemRequest::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU8(static_cast<uint8_t>(kind));
  w.PutU64(ino);
  w.PutU64(token);
  w.PutU32(static_cast<uint32_t>(pid));
  w.PutU32(static_cast<uint32_t>(cmd));
  w.PutU32(num);
  w.PutU32(static_cast<uint32_t>(value));
  w.PutU32(static_cast<uint32_t>(ops.size()));
  for (const SemOpBuf& o : ops) {
    w.PutU16(o.num);
    w.PutU16(static_cast<uint16_t>(o.op));
    w.PutU16(static_cast<uint16_t>(o.flg));
  }
  PutValues(w, values);
  w.PutU64(start);
  return out;
}
Result<SemRequest> SemRequest::Decode(std::string_view in) {
  SemRequest m;
  ByteReader r(in);
  uint8_t kind = 0;
  uint32_t pid = 0, cmd = 0, value = 0, nops = 0;
  r.GetU8(&kind);
  r.GetU64(&m.ino);
  r.GetU64(&m.token);
  r.GetU32(&pid);
  r.GetU32(&cmd);
  r.GetU32(&m.num);
  r.GetU32(&value);
  if (!r.GetU32(&nops) || nops > kMaxSemEntries || kind < 1 || kind > 5) return Malformed("semaphore request");
  m.kind = static_cast<SemKind>(kind);
  m.pid = static_cast<int32_t>(pid);
  m.cmd = static_cast<int32_t>(cmd);
  m.value = static_cast<int32_t>(value);
  m.ops.resize(nops);
  for (SemOpBuf& o : m.ops) {
    uint16_t op = 0, flg = 0;
    r.GetU16(&o.num);
    r.GetU16(&op);
    r.GetU16(&flg);
    o.op = static_cast<int16_t>(op);
    o.flg = static_cast<int16_t>(flg);
  }
  if (!GetValues(r, &m.values)) return Malformed("semaphore request");
  if (!r.AtEnd() && !r.GetU64(&m.start)) return Malformed("semaphore request");  // absent from older nodes: 0
  if (!r.AtEnd()) return Malformed("semaphore request");
  return m;
}

std::string SemReply::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU8(static_cast<uint8_t>(state));
  w.PutU32(static_cast<uint32_t>(err));
  w.PutU32(static_cast<uint32_t>(result));
  w.PutU32(nsems);
  w.PutI64(otime);
  w.PutI64(ctime);
  PutValues(w, values);
  return out;
}
Result<SemReply> SemReply::Decode(std::string_view in) {
  SemReply m;
  ByteReader r(in);
  uint8_t state = 0;
  uint32_t err = 0, result = 0;
  r.GetU8(&state);
  r.GetU32(&err);
  r.GetU32(&result);
  r.GetU32(&m.nsems);
  r.GetI64(&m.otime);
  r.GetI64(&m.ctime);
  if (!GetValues(r, &m.values) || !r.AtEnd() || state > 3) return Malformed("semaphore reply");
  m.state = static_cast<SemState>(state);
  m.err = static_cast<int32_t>(err);
  m.result = static_cast<int32_t>(result);
  return m;
}

std::string SemWake::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU64(ino);
  w.PutU64(token);
  w.PutU32(static_cast<uint32_t>(err));
  return out;
}
Result<SemWake> SemWake::Decode(std::string_view in) {
  SemWake m;
  ByteReader r(in);
  uint32_t err = 0;
  r.GetU64(&m.ino);
  r.GetU64(&m.token);
  r.GetU32(&err);
  if (!r.AtEnd()) return Malformed("semaphore wake-up");
  m.err = static_cast<int32_t>(err);
  return m;
}


}  // namespace cshm::ownership
