#include "ownership/messages.h"

#include "common/bytes.h"

namespace cshm::ownership {
namespace {
constexpr uint32_t kMaxItems = 1 << 20;  // runs or ranges in one message
Status Malformed(const char* what) { return Invalid(std::string("malformed ") + what); }
}  // namespace

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
  if (!r.AtEnd()) return Malformed("fetch");
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

std::string WriteBackRequest::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU64(ino);
  w.PutU8(wait ? 1 : 0);
  w.PutU32(static_cast<uint32_t>(runs.size()));
  for (const WriteRun& run : runs) {
    w.PutU64(run.off);
    w.PutBytes(run.bytes);
  }
  return out;
}
Result<WriteBackRequest> WriteBackRequest::Decode(std::string_view in) {
  WriteBackRequest wb;
  ByteReader r(in);
  uint8_t wait = 0;
  uint32_t n = 0;
  r.GetU64(&wb.ino);
  r.GetU8(&wait);
  r.GetU32(&n);
  if (!r.ok() || n > kMaxItems) return Malformed("write-back");
  wb.wait = wait != 0;
  for (uint32_t i = 0; i < n && r.ok(); i++) {
    WriteRun run;
    r.GetU64(&run.off);
    r.GetBytes(&run.bytes);
    if (run.off > (1ull << 62)) return Malformed("write-back offset");
    wb.runs.push_back(std::move(run));
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
    iv.ranges.push_back(rg);
  }
  if (!r.AtEnd()) return Malformed("invalidate");
  return iv;
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
