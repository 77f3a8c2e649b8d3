// The kernels' caches of the namespace across nodes (meta/name_cache.h,
// fs/name_coherence.h): every node's kernel keeps entries and directories'
// attributes for name_cache_ms, and a change on any node is seen on every
// other at once, because it returns only after their kernels dropped what it
// changed, or after a node that cannot confirm can no longer hold it. The
// windows here are long, so that a change that forgot to tell a node is seen.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <string>
#include <thread>

#include "tests/support/test_cluster.h"

namespace cshm::testing {
namespace {

using namespace std::chrono_literals;
const std::string kNoAutoMigrate = "[migrate]\nenabled = false\n";

// errno of stat(path), 0 if it succeeded; `st` gets what it said.
int StatErr(const std::string& path, struct stat* st = nullptr) {
  struct stat s{};
  if (stat(path.c_str(), &s) != 0) return errno;
  if (st) *st = s;
  return 0;
}

bool Touch(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
  if (fd < 0) return false;
  close(fd);
  return true;
}

// Continues a SIGSTOPped daemon when the test leaves, also on failure.
struct ScopedResume {
  pid_t pid;
  ~ScopedResume() { kill(pid, SIGCONT); }
};

// stat(path) in a child, while the test stops and continues daemons; its
// errno (0: it found the name), or -1 if it never finished.
struct ChildStat {
  pid_t pid = -1;
  explicit ChildStat(const std::string& path) {
    pid = fork();
    if (pid == 0) _exit(StatErr(path));
  }
  int Result(std::chrono::milliseconds timeout) {
    int status = 0;
    if (!WaitForExit(pid, timeout, &status)) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      return -1;
    }
    pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  ~ChildStat() {
    if (pid > 0 && kill(pid, SIGKILL) == 0) waitpid(pid, nullptr, 0);
  }
};

class NamesTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(c_.Start(), ""); }
  TestCluster c_{3, 15000, kNoAutoMigrate, "name_cache_ms = 10000\n"};
};

TEST_F(NamesTest, a_name_removed_or_renamed_on_one_node_is_gone_at_once_where_it_was_cached) {
  ASSERT_EQ(mkdir(c_.path(0, "d").c_str(), 0755), 0);
  ASSERT_TRUE(Touch(c_.path(0, "d/f")));
  ASSERT_TRUE(Touch(c_.path(0, "d/g")));
  ASSERT_EQ(mkdir(c_.path(0, "e").c_str(), 0755), 0);
  for (int n = 0; n < 3; n++)
    for (const char* name : {"d/f", "d/g", "e"}) ASSERT_EQ(StatErr(c_.path(n, name)), 0) << name << " on node " << n;

  ASSERT_EQ(unlink(c_.path(1, "d/f").c_str()), 0);
  for (int n = 0; n < 3; n++) EXPECT_EQ(StatErr(c_.path(n, "d/f")), ENOENT) << "node " << n;

  ASSERT_EQ(rename(c_.path(2, "d/g").c_str(), c_.path(2, "d/h").c_str()), 0);
  for (int n = 0; n < 3; n++) {
    EXPECT_EQ(StatErr(c_.path(n, "d/g")), ENOENT) << "node " << n;
    EXPECT_EQ(StatErr(c_.path(n, "d/h")), 0) << "node " << n;
  }

  // The renaming node's kernel keeps the entry it moved, under its new name.
  ASSERT_EQ(unlink(c_.path(0, "d/h").c_str()), 0);
  for (int n = 0; n < 3; n++) EXPECT_EQ(StatErr(c_.path(n, "d/h")), ENOENT) << "node " << n;

  ASSERT_EQ(rmdir(c_.path(2, "e").c_str()), 0);
  for (int n = 0; n < 3; n++) EXPECT_EQ(StatErr(c_.path(n, "e")), ENOENT) << "node " << n;
  // A name made again is found (no node kept its absence).
  ASSERT_EQ(mkdir(c_.path(1, "e").c_str(), 0700), 0);
  for (int n = 0; n < 3; n++) EXPECT_EQ(StatErr(c_.path(n, "e")), 0) << "node " << n;
}

TEST_F(NamesTest, a_directory_changed_on_one_node_has_its_new_attributes_at_once_where_it_was_cached) {
  ASSERT_EQ(mkdir(c_.path(0, "d").c_str(), 0755), 0);
  struct stat before[3];
  for (int n = 0; n < 3; n++) ASSERT_EQ(StatErr(c_.path(n, "d"), &before[n]), 0);

  ASSERT_EQ(chmod(c_.path(1, "d").c_str(), 0700), 0);
  for (int n = 0; n < 3; n++) {
    struct stat st{};
    ASSERT_EQ(StatErr(c_.path(n, "d"), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u) << "node " << n;
  }

  ASSERT_EQ(mkdir(c_.path(2, "d/sub").c_str(), 0755), 0);  // a link more, and new times
  for (int n = 0; n < 3; n++) {
    struct stat st{};
    ASSERT_EQ(StatErr(c_.path(n, "d"), &st), 0);
    EXPECT_EQ(st.st_nlink, before[n].st_nlink + 1) << "node " << n;
    EXPECT_TRUE(st.st_mtim.tv_sec != before[n].st_mtim.tv_sec || st.st_mtim.tv_nsec != before[n].st_mtim.tv_nsec)
        << "node " << n << " kept the directory's old mtime";
  }
}

TEST_F(NamesTest, cached_directories_are_found_while_the_metadata_node_stalls) {
  // Node 1 asks first, so that the mkdir waits until node 1 dropped the
  // root's attributes (a node that asked nothing lately is told without
  // waiting, and that late word could drop what it looks up next).
  ASSERT_EQ(StatErr(c_.path(1, "")), 0);
  ASSERT_EQ(mkdir(c_.path(0, "d").c_str(), 0755), 0);
  ASSERT_EQ(StatErr(c_.path(1, "d")), 0);
  const pid_t meta = c_.node(0).pid();
  ASSERT_EQ(kill(meta, SIGSTOP), 0);
  ScopedResume resume{meta};
  // Without a cache the lookup goes to the stopped node and fails at the
  // request deadline (EIO).
  ChildStat child(c_.path(1, "d"));
  EXPECT_EQ(child.Result(20s), 0) << "node 1 did not keep the directory it had looked up";
}

// Two nodes removing names in one directory at once: dropping a name takes
// the kernel's lock of its directory, which each node holds while its own
// removal waits for the metadata node. A name a node's kernel never had is
// not dropped there, and in a directory whose names another node changes a
// node keeps none, so neither waits for the other's cache to run out (which
// the metadata node would log). Then the same with each node looking up the
// other's names before it removes its own.
TEST_F(NamesTest, two_nodes_removing_names_in_one_directory_do_not_wait_for_each_other) {
  constexpr int kNames = 40;
  ASSERT_EQ(mkdir(c_.path(0, "d").c_str(), 0755), 0);
  for (int round = 0; round < 2; round++) {
    const std::string tag = std::to_string(round);
    for (int i = 0; i < kNames; i++)
      for (const char* who : {"a", "b"}) ASSERT_TRUE(Touch(c_.path(0, "d/" + tag + who + std::to_string(i))));
    auto remove = [&](int node, const char* mine, const char* theirs, int* failed) {
      for (int i = 0; i < kNames; i++) {
        if (round == 1) (void)StatErr(c_.path(node, "d/" + tag + theirs + std::to_string(i)));
        const std::string path = c_.path(node, "d/" + tag + mine + std::to_string(i));
        if (StatErr(path) != 0 || unlink(path.c_str()) != 0) ++*failed;
      }
    };
    int failed1 = 0, failed2 = 0;
    std::thread t1(remove, 1, "a", "b", &failed1);
    std::thread t2(remove, 2, "b", "a", &failed2);
    t1.join();
    t2.join();
    EXPECT_EQ(failed1 + failed2, 0) << "round " << round;
    for (int n = 0; n < 3; n++)
      for (int i = 0; i < kNames; i++)
        for (const char* who : {"a", "b"})
          EXPECT_EQ(StatErr(c_.path(n, "d/" + tag + who + std::to_string(i))), ENOENT) << "node " << n;
  }
  std::ifstream log(c_.node(0).state_dir() + "/cshmfs.log");
  const std::string text((std::istreambuf_iterator<char>(log)), {});
  EXPECT_EQ(text.find("did not confirm"), std::string::npos) << "a removal waited out another node's cache";
}

}  // namespace

// A node whose daemon stalls cannot drop what its kernel caches: a change
// must wait until that node's window is over, and the node, once it runs
// again, never sees the old name.
TEST(Names, a_change_waits_out_the_cache_of_a_node_that_cannot_confirm) {
  TestCluster c(2, 3000, kNoAutoMigrate, "name_cache_ms = 2000\n");
  ASSERT_EQ(c.Start(), "");
  ASSERT_EQ(mkdir(c.path(0, "d").c_str(), 0755), 0);
  ASSERT_EQ(StatErr(c.path(1, "d")), 0);  // node 1's kernel has it for 2 s
  const pid_t stalled = c.node(1).pid();
  ASSERT_EQ(kill(stalled, SIGSTOP), 0);
  ScopedResume resume{stalled};
  ASSERT_EQ(rmdir(c.path(0, "d").c_str()), 0);
  // Asked of node 1's kernel now: no longer in its cache, so the lookup waits
  // for its daemon, which answers once continued.
  ChildStat child(c.path(1, "d"));
  kill(stalled, SIGCONT);
  EXPECT_EQ(child.Result(20s), ENOENT) << "node 1's kernel still had the directory after its removal returned";
}

}  // namespace cshm::testing
