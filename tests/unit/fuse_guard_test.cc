// GuardRequest (fs/fuse_guard.h): an exception never crosses into libfuse,
// and a request is never answered twice.
#include "fs/fuse_guard.h"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <functional>
#include <stdexcept>
#include <vector>

namespace cshm::fs {
namespace {

class FuseGuard : public ::testing::Test {
 protected:
  void SetUp() override { spdlog::set_level(spdlog::level::off); }
  void TearDown() override { spdlog::set_level(spdlog::level::info); }
  std::vector<int> replies;  // the errnos the guard answered with
  bool replied = false;
  void Run(const std::function<void()>& body) {
    GuardRequest("test", body, [this](int err) { replies.push_back(err); }, &replied);
  }
};

TEST_F(FuseGuard, AnExceptionBeforeTheReplyIsAnsweredWithEio) {
  Run([] { throw std::runtime_error("boom"); });
  EXPECT_EQ(replies, std::vector<int>{EIO});
}

TEST_F(FuseGuard, AnyThrownValueIsAnsweredWithEio) {
  Run([] { throw 7; });
  EXPECT_EQ(replies, std::vector<int>{EIO});
}

// A READ answered spliced from its file, after which something throws: the
// request is freed by then, and a second answer would use it (item 12).
TEST_F(FuseGuard, AnExceptionAfterTheBodyAnsweredIsNotAnsweredAgain) {
  Run([this] {
    replied = true;  // what ReadScratch::from_file does as it answers
    throw std::runtime_error("after the reply");
  });
  EXPECT_TRUE(replies.empty());
}

TEST_F(FuseGuard, ABodyThatReturnsIsNotAnsweredByTheGuard) {
  Run([] {});
  EXPECT_TRUE(replies.empty());
}

}  // namespace
}  // namespace cshm::fs
