// Restarts of the metadata node while other nodes' kernels hold inodes: the
// references those nodes hold survive it (they register them again), and an
// orphan a previous run left is purged only when no node holds it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "tests/support/subprocess.h"
#include "tests/support/test_cluster.h"

namespace cshm::testing {
namespace {

using namespace std::chrono_literals;
constexpr size_t kPage = 4096;
const std::string kNoAutoMigrate = "[migrate]\nenabled = false\n";

// Retries while the metadata node is still coming back (EIO); 0 or errno.
int UnlinkWhenUp(const std::string& path) {
  int err = EIO;
  WaitFor(
      [&] {
        err = unlink(path.c_str()) == 0 ? 0 : errno;
        return err != EIO;
      },
      30s);
  return err;
}

bool AllFree(const std::string& mountpoint) {
  struct statvfs v;
  return statvfs(mountpoint.c_str(), &v) == 0 && v.f_bfree == v.f_blocks;
}

// Node 1 holds u2 open and mapped; the metadata node restarts (and lost every
// reference count it had); node 2 removes u2. Node 1 must keep reading and
// writing it as an unlinked open file, as on any POSIX filesystem.
TEST(Restarts, a_metadata_restart_destroys_no_file_another_node_holds_open) {
  TestCluster c(3, 1000, kNoAutoMigrate);
  ASSERT_EQ(c.Start(), "");
  const size_t mapped = 4 * kPage;
  const off_t far = 64 << 20;  // beyond any readahead of node 1's first reads
  {
    int fd = open(c.path(2, "u2").c_str(), O_RDWR | O_CREAT, 0644);  // owned by node 2
    ASSERT_GE(fd, 0);
    ASSERT_EQ(pwrite(fd, std::string(mapped, 'a').data(), mapped, 0), static_cast<ssize_t>(mapped));
    ASSERT_EQ(pwrite(fd, "z", 1, far), 1);
    ASSERT_EQ(fsync(fd), 0);
    close(fd);
  }
  // O_CLOEXEC: the restarted daemon is forked from this process and must not hold it.
  int fd1 = open(c.path(1, "u2").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd1, 0);
  char* p1 = static_cast<char*>(mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, fd1, 0));
  ASSERT_NE(p1, MAP_FAILED);
  ASSERT_EQ(p1[0], 'a');

  c.node(0).Kill9();
  ASSERT_EQ(c.StartNode(0), "");
  ASSERT_EQ(UnlinkWhenUp(c.path(2, "u2")), 0);

  char b = 0;
  EXPECT_EQ(pread(fd1, &b, 1, far), 1) << "pread of an uncached page: " << strerror(errno);
  EXPECT_EQ(b, 'z');
  p1[2 * kPage] = 'n';
  EXPECT_EQ(msync(p1, mapped, MS_SYNC), 0) << strerror(errno);
  b = 0;
  EXPECT_EQ(pread(fd1, &b, 1, 2 * kPage), 1);
  EXPECT_EQ(b, 'n');
  munmap(p1, mapped);
  close(fd1);
  // Node 1 let go: the restarted metadata node purges the orphan at its owner.
  EXPECT_TRUE(WaitFor([&] { return AllFree(c.node(2).mountpoint()); }, 30s))
      << "the unlinked segment's pages were never freed";
}

// An orphan (unlinked, still open on node 1) is in the metadata node's store
// when it is killed. It starts again every time, keeps the orphan while node 1
// holds it, and purges it (freeing node 1's pages) once node 1 lets go.
TEST(Restarts, the_metadata_node_restarts_over_an_orphan_that_another_node_holds) {
  TestCluster c(3, 1000, kNoAutoMigrate);
  ASSERT_EQ(c.Start(), "");
  int fd1 = open(c.path(1, "orphan").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);  // owned by node 1
  ASSERT_GE(fd1, 0);
  ASSERT_EQ(pwrite(fd1, std::string(2 * kPage, 'o').data(), 2 * kPage, 0), static_cast<ssize_t>(2 * kPage));
  ASSERT_EQ(fsync(fd1), 0);
  ASSERT_EQ(UnlinkWhenUp(c.path(2, "orphan")), 0);
  for (int round = 0; round < 2; round++) {
    c.node(0).Kill9();
    ASSERT_EQ(c.StartNode(0), "") << "round " << round;
  }
  char b = 0;
  EXPECT_EQ(pread(fd1, &b, 1, kPage), 1) << strerror(errno);
  EXPECT_EQ(b, 'o');
  EXPECT_FALSE(AllFree(c.node(1).mountpoint()));
  close(fd1);
  EXPECT_TRUE(WaitFor([&] { return AllFree(c.node(1).mountpoint()); }, 30s))
      << "the orphan's pages on node 1 were never freed";
}

}  // namespace
}  // namespace cshm::testing
