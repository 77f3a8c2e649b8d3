#include "ownership/messages.h"

#include <gtest/gtest.h>

namespace cshm::ownership {
namespace {

TEST(FetchReplyTest, FrameFilledInPlaceIsTheEncodedReply) {
  FetchReply want{12345, "hello, world"};
  std::string frame = FetchReply::Frame(64);
  want.data.copy(frame.data() + FetchReply::kDataOffset, want.data.size());
  FetchReply::Finish(&frame, want.size, want.data.size());
  EXPECT_EQ(frame, want.Encode());
  uint64_t size = 0;
  auto view = FetchReply::View(frame, &size);
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(*view, want.data);
  EXPECT_EQ(size, want.size);
}

TEST(FetchReplyTest, ViewRefusesATruncatedOrPaddedReply) {
  const std::string good = FetchReply{5, "abc"}.Encode();
  uint64_t size = 0;
  EXPECT_FALSE(FetchReply::View(good.substr(0, good.size() - 1), &size).ok());
  EXPECT_FALSE(FetchReply::View(good + "x", &size).ok());
  EXPECT_FALSE(FetchReply::View("", &size).ok());
}

TEST(FetchRequestTest, ALengthPastTheLimitIsMalformed) {
  EXPECT_TRUE(FetchRequest::Decode(FetchRequest{1, 0, FetchRequest::kMaxLen}.Encode()).ok());
  auto r = FetchRequest::Decode(FetchRequest{1, 0, FetchRequest::kMaxLen + 1}.Encode());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kInvalid);
}

}  // namespace
}  // namespace cshm::ownership
