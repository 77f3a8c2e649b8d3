#include "net/frame_codec.h"

#include "common/bytes.h"

#include <utility>

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

namespace {

using Code = Status::Code;
// The wire's values, fixed for ever; a new code gets a new value.
constexpr std::pair<Code, uint16_t> kWireCodes[] = {
    {Code::kNotFound, 1},     {Code::kExists, 2},        {Code::kNotDir, 3},       {Code::kIsDir, 4},
    {Code::kNotEmpty, 5},     {Code::kNotPermitted, 6},  {Code::kAccessDenied, 7}, {Code::kNoSpace, 8},
    {Code::kInvalid, 9},      {Code::kNameTooLong, 10},  {Code::kNoData, 11},      {Code::kRange, 12},
    {Code::kNotSupported, 13}, {Code::kTooBig, 14},      {Code::kTooManyLinks, 15}, {Code::kArgTooBig, 16},
    {Code::kBusy, 17},        {Code::kWouldBlock, 18},   {Code::kInterrupted, 19}, {Code::kMoved, 20},
    {Code::kIo, 21},          {Code::kCorruption, 22},   {Code::kUnavailable, 23}, {Code::kTimedOut, 24},
};

}  // namespace

uint16_t StatusToWire(const Status& s) {
  if (s.ok()) return 0;
  if (s.code() == Code::kSystem) {
    const int e = s.system_errno();
    return e > 0 && e < kWireSystem ? static_cast<uint16_t>(kWireSystem + e) : 21;
  }
  if (auto node = s.moved_to(); node && *node < kWireSystem) return static_cast<uint16_t>(kWireMoved + *node);
  for (auto [code, wire] : kWireCodes)
    if (code == s.code()) return wire;
  return 21;  // kIo
}

Status StatusFromWire(uint16_t wire, std::string message) {
  if (wire > kWireSystem && wire < 2 * kWireSystem) return Status::System(wire - kWireSystem, std::move(message));
  if (wire >= kWireMoved && wire < kWireMoved + kWireSystem) return Status::MovedTo(wire - kWireMoved, std::move(message));
  for (auto [code, w] : kWireCodes)
    if (w == wire && wire != 0) return Status::Error(code, std::move(message));
  return IoError("unknown status " + std::to_string(wire) + " from a peer: " + message);
}

}  // namespace cshm::net
