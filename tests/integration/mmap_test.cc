// Shared mappings on one node: processes share pages, msync writes back, a
// shrink makes pages past EOF raise SIGBUS, and a Python reader sees a C
// writer's bytes.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "tests/support/test_mount.h"

namespace cshm::testing {
namespace {

using namespace std::chrono_literals;
constexpr size_t kPage = 4096;

class MmapTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(m_.Start(), ""); }

  // Creates `name` of `size` bytes and maps it shared, read-write.
  char* MapNew(const std::string& name, size_t size, int* fd_out = nullptr) {
    int fd = open((m_ / name).c_str(), O_RDWR | O_CREAT, 0644);
    EXPECT_GE(fd, 0) << strerror(errno);
    EXPECT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    EXPECT_NE(p, MAP_FAILED) << strerror(errno);
    if (fd_out) *fd_out = fd;
    else close(fd);
    return static_cast<char*>(p);
  }

  TestMount m_;
};

TEST_F(MmapTest, two_processes_share_stores) {
  const size_t size = 64 * kPage;
  char* mine = MapNew("shared", size);
  const std::string path = m_ / "shared";
  int to_child[2], to_parent[2];
  ASSERT_EQ(pipe(to_child), 0);
  ASSERT_EQ(pipe(to_parent), 0);
  pid_t child = fork();
  if (child == 0) {
    int fd = open(path.c_str(), O_RDWR);
    if (fd < 0) _exit(10);
    char* p = static_cast<char*>(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    if (p == MAP_FAILED) _exit(11);
    char c;
    if (write(to_parent[1], "r", 1) != 1 || read(to_child[0], &c, 1) != 1) _exit(12);
    for (size_t i = 0; i < size; i += kPage)
      if (p[i] != static_cast<char>('A' + (i / kPage) % 26)) _exit(13);
    for (size_t i = 0; i < size; i += kPage) p[i + 1] = 'z';
    if (write(to_parent[1], "d", 1) != 1) _exit(14);
    _exit(0);
  }
  char c;
  ASSERT_EQ(read(to_parent[0], &c, 1), 1);  // child mapped
  for (size_t i = 0; i < size; i += kPage) mine[i] = static_cast<char>('A' + (i / kPage) % 26);
  ASSERT_EQ(write(to_child[1], "g", 1), 1);
  int status = 0;
  ASSERT_TRUE(WaitForExit(child, 20s, &status)) << "child hung";
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0) << "child saw wrong bytes (13) or failed";
  for (size_t i = 0; i < size; i += kPage) EXPECT_EQ(mine[i + 1], 'z') << i;  // its stores, no msync
  munmap(mine, size);
}

TEST_F(MmapTest, msync_writes_back_to_the_store) {
  const size_t size = 256 * kPage;
  int fd;
  char* p = MapNew("wb", size, &fd);
  for (size_t i = 0; i < size; i++) p[i] = static_cast<char>(i * 7);
  ASSERT_EQ(msync(p, size, MS_SYNC), 0);
  munmap(p, size);
  close(fd);
  // Restart: only what reached the daemon's store can come back.
  m_.Stop();
  ASSERT_EQ(m_.Start(), "");
  fd = open((m_ / "wb").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::string back(size, '\0');
  ASSERT_EQ(pread(fd, back.data(), size, 0), static_cast<ssize_t>(size));
  close(fd);
  for (size_t i = 0; i < size; i++) ASSERT_EQ(back[i], static_cast<char>(i * 7)) << i;
}

TEST_F(MmapTest, access_past_eof_after_shrink_raises_sigbus) {
  const std::string path = m_ / "shrink";
  CommandResult r = RunInChild(
      [&] {
        int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
        if (fd < 0 || ftruncate(fd, 4 * kPage) != 0) return 10;
        volatile char* p =
            static_cast<char*>(mmap(nullptr, 4 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
        if (p == MAP_FAILED) return 11;
        p[3 * kPage] = 1;  // fine while inside the file
        if (ftruncate(fd, kPage) != 0) return 12;
        p[0] = 2;           // still inside
        return static_cast<int>(p[3 * kPage]);  // past EOF: SIGBUS, never returns
      },
      20s);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.signal, SIGBUS) << "exit " << r.exit_code << " " << r.err;
}

TEST_F(MmapTest, python_mmap_reader_sees_c_writer_data) {
  const size_t size = 16 * kPage;
  char* p = MapNew("pydata", size);
  for (size_t i = 0; i < size; i++) p[i] = static_cast<char>('a' + i % 23);
  // No msync: same node, same page cache, as with /dev/shm.
  CommandResult r = RunCommand({"python3", TESTS_DIR "/integration/mmap_reader.py", m_ / "pydata",
                                std::to_string(size)},
                               30s);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string want;
  for (size_t i = 0; i < size; i++) want.push_back(static_cast<char>('a' + i % 23));
  EXPECT_EQ(r.out.substr(0, 32), want.substr(0, 32));
  // The reader prints the first 32 bytes and then a checksum of all of them.
  unsigned long sum = 0;
  for (unsigned char c : want) sum = (sum * 31 + c) % 1000000007ul;
  EXPECT_NE(r.out.find("sum=" + std::to_string(sum)), std::string::npos) << r.out;
  munmap(p, size);
}

}  // namespace
}  // namespace cshm::testing
