#include "net/frame_codec.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace cshm::net {
namespace {

TEST(FrameCodec, RoundTrips) {
  std::string buf;
  EncodeFrame(FrameHeader{Kind::kResponse, 300, 0x123456789abcull, 7, 0}, "payload", &buf);
  ASSERT_EQ(buf.size(), kHeaderSize + 7);
  FrameHeader h;
  std::string why;
  ASSERT_EQ(DecodeHeader(buf, &h, &why), DecodeResult::kGood) << why;
  EXPECT_EQ(h.kind, Kind::kResponse);
  EXPECT_EQ(h.type, 300);
  EXPECT_EQ(h.request_id, 0x123456789abcull);
  EXPECT_EQ(h.status, 7);
  EXPECT_EQ(h.length, 7u);
  EXPECT_EQ(buf.substr(kHeaderSize), "payload");
}

TEST(FrameCodec, ShortInputNeedsMore) {
  std::string buf;
  EncodeFrame(FrameHeader{}, "", &buf);
  FrameHeader h;
  std::string why;
  for (size_t n = 0; n < kHeaderSize; n++)
    EXPECT_EQ(DecodeHeader(std::string_view(buf).substr(0, n), &h, &why), DecodeResult::kNeedMore);
}

TEST(FrameCodec, RejectsGarbageVersionKindAndHugeLengths) {
  FrameHeader h;
  std::string why;
  EXPECT_EQ(DecodeHeader(std::string(kHeaderSize, 'x'), &h, &why), DecodeResult::kBad);
  EXPECT_NE(why.find("magic"), std::string::npos);
  std::string buf;
  EncodeFrame(FrameHeader{}, "", &buf);
  std::string v = buf;
  v[4] = 9;
  EXPECT_EQ(DecodeHeader(v, &h, &why), DecodeResult::kBad);
  std::string k = buf;
  k[5] = 3;
  EXPECT_EQ(DecodeHeader(k, &h, &why), DecodeResult::kBad);
  std::string big = buf;
  big[20] = big[21] = big[22] = big[23] = static_cast<char>(0xff);
  EXPECT_EQ(DecodeHeader(big, &h, &why), DecodeResult::kBad);
  EXPECT_NE(why.find("exceeds"), std::string::npos);
}

// Statuses on the wire. Seen before: the value was cast to Status::Code
// unchecked (256 became OK inside an error path) and a system error lost its
// errno.
TEST(WireStatus, EveryCodeRoundTripsAndASystemErrorKeepsItsErrno) {
  for (int c = 1; c <= static_cast<int>(Status::Code::kTimedOut); c++) {
    const Status s = Status::Error(static_cast<Status::Code>(c), "why");
    const uint16_t wire = StatusToWire(s);
    ASSERT_NE(wire, 0) << c;
    const Status back = StatusFromWire(wire, "why");
    EXPECT_EQ(back.code(), s.code()) << c;
    EXPECT_EQ(back.ToErrno(), s.ToErrno()) << c;
  }
  const Status sys = Status::FromErrno(EROFS, "writing");
  const Status back = StatusFromWire(StatusToWire(sys), sys.message());
  EXPECT_EQ(back.code(), Status::Code::kSystem);
  EXPECT_EQ(back.ToErrno(), EROFS);
  EXPECT_EQ(back.message(), sys.message());
}

// The node a kMoved names is a field on the wire, not parsed back out of
// the message (which the receiver prefixes with the peer's name).
TEST(WireStatus, AMovedSegmentKeepsTheNodeItNames) {
  for (uint32_t node : {0u, 1u, 12u, 63u}) {
    const Status s = Status::MovedTo(node, "moved to node " + std::to_string(node));
    const Status back = StatusFromWire(StatusToWire(s), "node 3: " + s.message());
    EXPECT_EQ(back.code(), Status::Code::kMoved);
    EXPECT_EQ(back.moved_to(), std::optional<uint32_t>(node));
    EXPECT_EQ(back.Annotate("fetching").moved_to(), std::optional<uint32_t>(node));
  }
  const Status nameless = StatusFromWire(StatusToWire(Status::Error(Status::Code::kMoved, "moved to node 4")), "x");
  EXPECT_EQ(nameless.code(), Status::Code::kMoved);
  EXPECT_EQ(nameless.moved_to(), std::nullopt) << "the message names no node the code can trust";
}

TEST(WireStatus, AnUnknownValueIsAnErrorNeverOk) {
  for (uint16_t wire : {uint16_t{0}, uint16_t{25}, uint16_t{256}, kWireSystem, uint16_t{kWireMoved + kWireSystem},
                        uint16_t{0xffff}}) {
    const Status s = StatusFromWire(wire, "m");
    EXPECT_FALSE(s.ok()) << wire;
    EXPECT_EQ(s.ToErrno(), EIO) << wire;
    EXPECT_NE(s.message().find("unknown status"), std::string::npos) << wire;
  }
}

}  // namespace
}  // namespace cshm::net
