#include "store/state_dir.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "tests/support/temp_dir.h"

namespace cshm::store {
namespace {

using cshm::testing::TempDir;

TEST(StateDir, CreatesNestedDirsAndWritesPid) {
  TempDir dir;
  auto sd = StateDir::Open(dir / "a/b/c");
  ASSERT_TRUE(sd.ok()) << sd.status().ToString();
  std::ifstream pid((*sd)->pid_file());
  long p = 0;
  pid >> p;
  EXPECT_EQ(p, getpid());
}

TEST(StateDir, SecondHolderIsToldWhoHasIt) {
  TempDir dir;
  auto a = StateDir::Open(dir / "s");
  ASSERT_TRUE(a.ok());
  auto b = StateDir::Open(dir / "s");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), Status::Code::kBusy);
  EXPECT_NE(b.status().message().find("pid " + std::to_string(getpid())), std::string::npos)
      << b.status().message();
}

TEST(StateDir, PathThroughAFileFailsWithAdvice) {
  TempDir dir;
  std::ofstream(dir / "file") << "x";
  auto sd = StateDir::Open(dir / "file/sub");
  ASSERT_FALSE(sd.ok());
  EXPECT_EQ(sd.status().ToErrno(), ENOTDIR);
  EXPECT_NE(sd.status().message().find("--state-dir"), std::string::npos) << sd.status().message();
}

TEST(StateDir, DefaultIsPerMountpoint) {
  std::string a = DefaultStateDir("/mnt/cshm");
  std::string b = DefaultStateDir("/mnt/cshm-2");
  EXPECT_NE(a, b);
  EXPECT_EQ(a.substr(a.rfind('/') + 1), "mnt-cshm");
  EXPECT_EQ(b.substr(b.rfind('/') + 1), "mnt-cshm\\x2d2");
}

}  // namespace
}  // namespace cshm::store
