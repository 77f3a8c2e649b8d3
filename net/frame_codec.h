// Frames on the wire between cshm nodes: a fixed 24-byte header and a payload.
//
//   u32 magic "CSHM"  u8 version  u8 kind  u16 type  u64 request_id
//   u16 status  u16 reserved  u32 payload length
//
// All little-endian. Decoding is a pure function over bytes that says good,
// bad or need-more (asio's request_parser shape); a bad frame closes the
// connection. The length is checked against kMaxPayload before anything is
// allocated for it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace cshm::net {

// A status on the wire: explicit values that do not follow Status::Code's
// order, a system error with its errno (kWireSystem + errno), and kMoved
// with the node it names (kWireMoved + node). 0 is OK.
constexpr uint16_t kWireSystem = 0x1000;
constexpr uint16_t kWireMoved = 0x2000;
uint16_t StatusToWire(const Status& s);
// The status of a response that failed (wire != 0). A value this node does
// not know is an I/O error that says so, never OK.
Status StatusFromWire(uint16_t wire, std::string message);

constexpr uint32_t kMagic = 0x4d485343;  // "CSHM"
constexpr uint8_t kVersion = 1;
constexpr size_t kHeaderSize = 24;
constexpr uint32_t kMaxPayload = 64u << 20;

enum class Kind : uint8_t { kRequest = 0, kResponse = 1, kOneWay = 2 };

struct FrameHeader {
  Kind kind = Kind::kRequest;
  uint16_t type = 0;
  uint64_t request_id = 0;
  uint16_t status = 0;  // responses: StatusToWire(); the payload is then the message
  uint32_t length = 0;
};

struct Frame {
  FrameHeader header;
  std::string payload;
};

enum class DecodeResult { kGood, kBad, kNeedMore };

// Appends the encoded frame to `out`.
void EncodeFrame(const FrameHeader& h, std::string_view payload, std::string* out);
// Appends only the header of a frame whose payload is `length` bytes (the
// transport sends header and payload as one gathered write, without copying
// the payload into a frame).
void EncodeHeader(const FrameHeader& h, uint32_t length, std::string* out);

// Decodes a header from the first kHeaderSize bytes of `in`. kNeedMore if `in`
// is shorter; kBad (with `why`) for a wrong magic, version, kind or a length
// over kMaxPayload.
DecodeResult DecodeHeader(std::string_view in, FrameHeader* h, std::string* why);

}  // namespace cshm::net
