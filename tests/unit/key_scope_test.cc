#include "ipc_compat/key_scope.h"

#include <gtest/gtest.h>
#include <sys/ipc.h>

namespace cshm::ipc {
namespace {

TEST(KeyScope, RangesSingleKeysAndPrivate) {
  auto s = KeyScope::Parse("0x1000-0x1fff,42,private");
  ASSERT_TRUE(s);
  EXPECT_TRUE(s->Contains(0x1000));
  EXPECT_TRUE(s->Contains(0x1fff));
  EXPECT_FALSE(s->Contains(0x2000));
  EXPECT_TRUE(s->Contains(42));
  EXPECT_FALSE(s->Contains(43));
  EXPECT_TRUE(s->Contains(IPC_PRIVATE));
  auto no_private = KeyScope::Parse("5");
  ASSERT_TRUE(no_private);
  EXPECT_FALSE(no_private->Contains(IPC_PRIVATE));
  EXPECT_TRUE(KeyScope::All().Contains(-1));
  EXPECT_TRUE(KeyScope::Parse("all")->Contains(123456));
}

TEST(KeyScope, MalformedSpecsAreRejected) {
  for (const char* bad : {"", "x", "5-", "-5", "9-3", "0x", "1,,2", "99999999999"})
    EXPECT_FALSE(KeyScope::Parse(bad)) << bad;
}

}  // namespace
}  // namespace cshm::ipc
