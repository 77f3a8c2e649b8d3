#include "net/frame_codec.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace cshm::net
