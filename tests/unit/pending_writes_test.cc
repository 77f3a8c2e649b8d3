#include "fs/pending_writes.h"

#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"

namespace cshm::fs {
namespace {

using cshm::testing::TempDir;

TEST(PendingWrites, KeepsOrderSurvivesReopenAndStopsAtTheFirstFailure) {
  TempDir dir;
  {
    auto p = PendingWrites::Open(dir / "pending");
    ASSERT_TRUE(p.ok());
    ASSERT_TRUE((*p)->Add(7, "a").ok());
    ASSERT_TRUE((*p)->Add(9, "x").ok());
    ASSERT_TRUE((*p)->Add(7, "b").ok());
    ASSERT_TRUE((*p)->Add(7, "c").ok());
  }
  auto p = PendingWrites::Open(dir / "pending");  // as after a restart
  ASSERT_TRUE(p.ok());
  EXPECT_EQ((*p)->size(), 4u);
  EXPECT_TRUE((*p)->Has(7));
  std::string sent;
  // The owner takes one, then is unreachable again: the rest stays, in order.
  Status st = (*p)->Drain(7, [&](const std::string& payload) {
    if (sent.size() == 1) return Unavailable("down");
    sent += payload;
    return Status::Ok();
  });
  EXPECT_EQ(st.code(), Status::Code::kUnavailable);
  EXPECT_EQ(sent, "a");
  ASSERT_TRUE((*p)->Drain(7, [&](const std::string& payload) {
                sent += payload;
                return Status::Ok();
              })
                  .ok());
  EXPECT_EQ(sent, "abc");
  EXPECT_FALSE((*p)->Has(7));
  // A segment that no longer exists: its write-backs are dropped, not retried forever.
  ASSERT_TRUE((*p)->Drain(9, [](const std::string&) { return NotFound("gone"); }).ok());
  EXPECT_EQ((*p)->size(), 0u);
}

}  // namespace
}  // namespace cshm::fs
