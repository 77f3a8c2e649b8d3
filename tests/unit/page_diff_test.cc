#include "fs/page_diff.h"

#include <gtest/gtest.h>

namespace cshm::fs {
namespace {

using ownership::WriteRun;

std::vector<std::pair<uint64_t, std::string>> Diff(const std::string& twin, const std::string& now, uint64_t base = 0) {
  std::vector<WriteRun> runs;
  DiffInto(base, twin, now, &runs);
  std::vector<std::pair<uint64_t, std::string>> out;
  for (auto& r : runs) out.emplace_back(r.off, r.bytes);
  return out;
}

TEST(PageDiff, OnlyChangedBytesTravel) {
  using V = std::vector<std::pair<uint64_t, std::string>>;
  EXPECT_EQ(Diff("aaaaaaaaaaaaaaaaaaaa", "aaaaaaaaaaaaaaaaaaaa"), V{});
  EXPECT_EQ(Diff("aaaaaaaaaaaaaaaaaaaa", "aaXaaaaaaaaaaaaaaaYY", 4096),
            (V{{4098, "X"}, {4114, "YY"}}));
  // Equal bytes between changes are never sent (they may be someone else's).
  EXPECT_EQ(Diff("abcabc", "XbXaXX"), (V{{0, "X"}, {2, "X"}, {4, "XX"}}));
  EXPECT_EQ(Diff("", ""), V{});
}

TEST(PageDiff, WholePageChangeIsOneRun) {
  std::string twin(4096, 'a'), now(4096, 'b');
  auto d = Diff(twin, now);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].second.size(), 4096u);
}

}  // namespace
}  // namespace cshm::fs
