#include "ownership/messages.h"

#include <fcntl.h>
#include <gtest/gtest.h>

namespace cshm::ownership {
namespace {

TEST(NodeStatusTest, RoundTripsAndRefusesWhatIsNotOne) {
  NodeStatus st;
  st.node = 3;
  st.incarnation = 0xfeedface12345678ull;
  st.uptime_ms = 1234;
  st.segments_owned = 7;
  st.page_bytes = 4096;
  st.capacity_bytes = 1 << 30;
  st.twin_bytes = 8192;
  st.kept_writebacks = 2;
  st.queued_unlocks = 1;
  st.semaphore_sets = 4;
  st.semaphore_ops = 99;
  st.version = "0.1.0";
  auto back = NodeStatus::Decode(st.Encode());
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->node, 3u);
  EXPECT_EQ(back->incarnation, st.incarnation);
  EXPECT_EQ(back->uptime_ms, 1234u);
  EXPECT_EQ(back->segments_owned, 7u);
  EXPECT_EQ(back->page_bytes, 4096u);
  EXPECT_EQ(back->capacity_bytes, 1u << 30);
  EXPECT_EQ(back->twin_bytes, 8192u);
  EXPECT_EQ(back->kept_writebacks, 2u);
  EXPECT_EQ(back->queued_unlocks, 1u);
  EXPECT_EQ(back->semaphore_sets, 4u);
  EXPECT_EQ(back->semaphore_ops, 99u);
  EXPECT_EQ(back->version, "0.1.0");
  const std::string bytes = st.Encode();
  EXPECT_FALSE(NodeStatus::Decode(bytes.substr(0, bytes.size() - 1)).ok());
  EXPECT_FALSE(NodeStatus::Decode(bytes + "x").ok());
  st.version = std::string(65, 'v');
  EXPECT_FALSE(NodeStatus::Decode(st.Encode()).ok());
}

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

// A zero-length fetch once made the owner size a copyset for ~4.5e15 pages.
TEST(FetchRequestTest, AnEmptyFetchOrAnOffsetPastAnyFileIsMalformed) {
  EXPECT_FALSE(FetchRequest::Decode(FetchRequest{1, 0, 0}.Encode()).ok());
  EXPECT_FALSE(FetchRequest::Decode(FetchRequest{1, ~0ull - 5, 4096}.Encode()).ok());
  EXPECT_TRUE(FetchRequest::Decode(FetchRequest{1, kMaxWireOffset, 4096}.Encode()).ok());
  InvalidateRequest iv{1, {Range{~0ull, 4096}}};
  EXPECT_FALSE(InvalidateRequest::Decode(iv.Encode()).ok());
  iv.ranges = {Range{0, 0}};  // to the end: fine
  EXPECT_TRUE(InvalidateRequest::Decode(iv.Encode()).ok());
}

TEST(MigratePagesTest, TwinHashesAndRepairChunksRoundTrip) {
  MigratePages m{.ino = 7, .first_page = 2048};
  m.kinds = {PageKind::kZero, PageKind::kYourTwin, PageKind::kData, PageKind::kYourTwin};
  const std::string page(4096, 'd');
  m.data = {page};
  m.twin_hashes = {PageHash(std::string(4096, 'a')), PageHash(std::string(4096, 'b'))};
  EXPECT_NE(m.twin_hashes[0], m.twin_hashes[1]);
  const std::string wire = m.Encode();
  auto back = MigratePages::Decode(wire);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->twin_hashes, m.twin_hashes);
  ASSERT_EQ(back->data.size(), 1u);
  EXPECT_EQ(back->data[0], page);
  EXPECT_GE(back->data[0].data(), wire.data()) << "a view into the message, not a copy";
  EXPECT_LT(back->data[0].data(), wire.data() + wire.size());
  EXPECT_EQ(back->kinds, m.kinds);
  EXPECT_FALSE(back->repair);
  // A first chunk never skips a page; a repair chunk only sends or skips.
  MigratePages skip = m;
  skip.kinds[0] = PageKind::kSkip;
  EXPECT_FALSE(MigratePages::Decode(skip.Encode()).ok());
  MigratePages repair{.ino = 7, .first_page = 2048, .repair = true};
  repair.kinds = {PageKind::kSkip, PageKind::kData};
  const std::string other(4096, 'x');
  repair.data = {other};
  ASSERT_TRUE(MigratePages::Decode(repair.Encode()).ok());
  EXPECT_TRUE(MigratePages::Decode(repair.Encode())->repair);
  repair.kinds[0] = PageKind::kZero;
  EXPECT_FALSE(MigratePages::Decode(repair.Encode()).ok());
  auto need = MigratePagesReply::Decode(MigratePagesReply{{3, 9}}.Encode());
  ASSERT_TRUE(need.ok());
  EXPECT_EQ(need->need, (std::vector<uint64_t>{3, 9}));
}

}  // namespace
}  // namespace cshm::ownership

namespace cshm::ownership {
namespace {

TEST(WriteBackRequestTest, ALateWriteBackCarriesItsExpectationsAndANormalOneNone) {
  WriteBackRequest late{9, {WriteRun{4096, "abc"}}, true, {PageExpect{1, 0x1234}, PageExpect{2, 0xfeed}}};
  auto back = WriteBackRequest::Decode(late.Encode());
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_TRUE(back->late);
  EXPECT_EQ(back->expect, late.expect);
  EXPECT_EQ(back->runs.size(), 1u);
  WriteBackRequest normal = late;
  normal.late = false;
  back = WriteBackRequest::Decode(normal.Encode());
  ASSERT_TRUE(back.ok());
  EXPECT_FALSE(back->late);
  EXPECT_TRUE(back->expect.empty());
  // Expectations without the late flag are malformed.
  std::string bad = normal.Encode();
  bad.replace(bad.size() - 4, 4, std::string("\x01\0\0\0", 4));
  EXPECT_FALSE(WriteBackRequest::Decode(bad + std::string(16, '\0')).ok());
  // Whether the writer keeps its copy travels too; an unknown flag is malformed.
  normal.keeps_copy = true;
  back = WriteBackRequest::Decode(normal.Encode());
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->keeps_copy);
  EXPECT_FALSE(back->late);
  bad = normal.Encode();
  bad[bad.size() - 5] = 4;
  EXPECT_FALSE(WriteBackRequest::Decode(bad).ok());
  WriteBackReply r{100, true, 3};
  auto rb = WriteBackReply::Decode(r.Encode());
  ASSERT_TRUE(rb.ok());
  EXPECT_EQ(rb->dropped, 3u);
}

TEST(LockMessageTest, TheRequestNumberAndWhatAnUnlockCancelsRoundTrip) {
  LockMessage m{LockOp::kUnlock, 42, Lock{F_UNLCK, 0, 7, 0, LockOwner{1, 99}, false}, 17, 16};
  auto back = LockMessage::Decode(m.Encode());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->op, LockOp::kUnlock);
  EXPECT_EQ(back->ino, 42u);
  EXPECT_EQ(back->lock.end, 7u);
  EXPECT_EQ(back->lock.who.owner, 99u);
  EXPECT_EQ(back->seq, 17u);
  EXPECT_EQ(back->cancels, 16u);
  const std::string wire = m.Encode();
  EXPECT_FALSE(LockMessage::Decode(wire.substr(0, wire.size() - 1)).ok());
  EXPECT_FALSE(LockMessage::Decode(wire + "x").ok());
}

}  // namespace
}  // namespace cshm::ownership
