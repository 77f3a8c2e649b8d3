#include "net/frame_codec.h"

#include "common/bytes.h"

namespace cshm::net {

void EncodeFrame(const FrameHeader& h, std::string_view payload, std::string* out) {
  EncodeHeader(h, static_cast<uint32_t>(payload.size()), out);
  out->append(payload);
}

void EncodeHeader(const FrameHeader& h, uint32_t length, std::string* out) {
  ByteWriter w(out);
  w.PutU32(kMagic);
  w.PutU8(kVersion);
  w.PutU8(static_cast<uint8_t>(h.kind));
  w.PutU16(h.type);
  w.PutU64(h.request_id);
  w.PutU16(h.status);
  w.PutU16(0);
  w.PutU32(length);
}

DecodeResult DecodeHeader(std::string_view in, FrameHeader* h, std::string* why) {
  if (in.size() < kHeaderSize) return DecodeResult::kNeedMore;
  ByteReader r(in.substr(0, kHeaderSize));
  uint32_t magic = 0, length = 0;
  uint8_t version = 0, kind = 0;
  uint16_t type = 0, status = 0, reserved = 0;
  r.GetU32(&magic);
  r.GetU8(&version);
  r.GetU8(&kind);
  r.GetU16(&type);
  r.GetU64(&h->request_id);
  r.GetU16(&status);
  r.GetU16(&reserved);
  r.GetU32(&length);
  if (magic != kMagic) {
    *why = "bad magic (not a cshm peer)";
    return DecodeResult::kBad;
  }
  if (version != kVersion) {
    *why = "protocol version " + std::to_string(version) + ", we speak " + std::to_string(kVersion);
    return DecodeResult::kBad;
  }
  if (kind > static_cast<uint8_t>(Kind::kOneWay)) {
    *why = "bad frame kind " + std::to_string(kind);
    return DecodeResult::kBad;
  }
  if (length > kMaxPayload) {
    *why = "frame of " + std::to_string(length) + " bytes exceeds the limit of " + std::to_string(kMaxPayload);
    return DecodeResult::kBad;
  }
  h->kind = static_cast<Kind>(kind);
  h->type = type;
  h->status = status;
  h->length = length;
  return DecodeResult::kGood;
}

}  // namespace cshm::net
