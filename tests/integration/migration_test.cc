// The migrator on a real 3-node cluster: automatic moves toward the busy
// node, manual moves (xattrs and cshmctl), pinning, no lost record while a
// segment moves back and forth under writers, and a target that dies mid-move.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "tests/support/records.h"
#include "tests/support/test_cluster.h"

namespace cshm::testing {
namespace {

using namespace std::chrono_literals;
constexpr size_t kPage = 4096;

// Fast decisions, so that tests are short.
const std::string kFastMigrate =
    "[migrate]\nhalf_life_ms = 500\nratio = 2.0\nmin_rate = 20\ncooldown_ms = 1000\ncheck_ms = 100\n";
const std::string kNoAutoMigrate = "[migrate]\nenabled = false\n";

std::string GetX(const std::string& path, const char* name) {
  char buf[512];
  ssize_t n = getxattr(path.c_str(), name, buf, sizeof(buf));
  return n < 0 ? "<" + std::string(strerror(errno)) + ">" : std::string(buf, static_cast<size_t>(n));
}

// True if every byte of `s` is `c` (keeps failure messages short).
bool AllOf(const std::string& s, char c) {
  return std::all_of(s.begin(), s.end(), [c](char x) { return x == c; });
}

int SetX(const std::string& path, const char* name, const std::string& v) {
  return setxattr(path.c_str(), name, v.data(), v.size(), 0) == 0 ? 0 : errno;
}

void Fill(const std::string& path, size_t size, char c) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  std::string data(size, c);
  ASSERT_EQ(pwrite(fd, data.data(), size, 0), static_cast<ssize_t>(size));
  close(fd);
}

TEST(Migration, a_segment_moves_to_the_node_that_uses_it_and_its_faults_become_local) {
  TestCluster c(3, 3000, kFastMigrate);
  ASSERT_EQ(c.Start(), "");
  const size_t size = 64 * kPage;
  Fill(c.path(0, "hot"), size, 'h');
  EXPECT_EQ(GetX(c.path(2, "hot"), "user.cshm.owner"), "0");
  // Node 2 reads and writes it heavily (dropping its cache so that every
  // round is served by the owner) until the owner is node 2.
  int fd = open(c.path(2, "hot").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  std::string buf(size, '\0');
  bool moved = WaitFor(
      [&] {
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        if (pread(fd, buf.data(), size, 0) != static_cast<ssize_t>(size)) return false;
        return GetX(c.path(2, "hot"), "user.cshm.owner") == "2";
      },
      30s);
  ASSERT_TRUE(moved) << "still on node " << GetX(c.path(2, "hot"), "user.cshm.owner");
  EXPECT_TRUE(AllOf(buf, 'h') && buf.size() == size);
  // Its faults on node 2 are local now: the remote fetch count stops.
  const std::string before = GetX(c.path(2, "hot"), "user.cshm.remote_fetches");
  for (int i = 0; i < 20; i++) {
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ASSERT_EQ(pread(fd, buf.data(), size, 0), static_cast<ssize_t>(size));
  }
  EXPECT_EQ(GetX(c.path(2, "hot"), "user.cshm.remote_fetches"), before);
  EXPECT_TRUE(AllOf(buf, 'h') && buf.size() == size);
  // Node 0 still reads it, from the new owner.
  std::ifstream in(c.path(0, "hot"), std::ios::binary);
  std::string via0((std::istreambuf_iterator<char>(in)), {});
  EXPECT_TRUE(AllOf(via0, 'h') && via0.size() == size);
  close(fd);
  const std::string log = [&] {
    std::ifstream l(c.node(0).state_dir() + "/cshmfs.log");
    return std::string((std::istreambuf_iterator<char>(l)), {});
  }();
  EXPECT_NE(log.find("to node 2 (node 2 dominates its accesses)"), std::string::npos) << log;
}

TEST(Migration, pinned_segments_stay_but_move_when_told) {
  TestCluster c(3, 3000, kFastMigrate);
  ASSERT_EQ(c.Start(), "");
  const size_t size = 16 * kPage;
  Fill(c.path(0, "pinned"), size, 'p');
  ASSERT_EQ(SetX(c.path(1, "pinned"), "user.cshm.pin", "1"), 0);
  EXPECT_EQ(GetX(c.path(2, "pinned"), "user.cshm.pin"), "1");
  int fd = open(c.path(2, "pinned").c_str(), O_RDONLY);
  std::string buf(size, '\0');
  // Heavy use from node 2 for well past the cooldown and several decisions.
  auto until = std::chrono::steady_clock::now() + 3s;
  while (std::chrono::steady_clock::now() < until) {
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ASSERT_EQ(pread(fd, buf.data(), size, 0), static_cast<ssize_t>(size));
  }
  EXPECT_EQ(GetX(c.path(2, "pinned"), "user.cshm.owner"), "0");
  EXPECT_NE(GetX(c.path(2, "pinned"), "user.cshm.stats").find("node2="), std::string::npos);
  // Manual migration still works, from any node, also through cshmctl.
  ASSERT_EQ(SetX(c.path(2, "pinned"), "user.cshm.owner", "1"), 0);
  EXPECT_EQ(GetX(c.path(0, "pinned"), "user.cshm.owner"), "1");
  CommandResult r = RunCommand({CshmctlBinary(), "migrate", c.path(0, "pinned"), "2"}, 30s);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  CommandResult w = RunCommand({CshmctlBinary(), "where", c.path(1, "pinned")}, 30s);
  EXPECT_EQ(w.out, "2\n");
  EXPECT_EQ(GetX(c.path(0, "pinned"), "user.cshm.pin"), "1");  // the pin moved with it
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ASSERT_EQ(pread(fd, buf.data(), size, 0), static_cast<ssize_t>(size));
  EXPECT_TRUE(AllOf(buf, 'p') && buf.size() == size);
  close(fd);
  // Bad requests: an unknown node, garbage.
  EXPECT_EQ(SetX(c.path(0, "pinned"), "user.cshm.owner", "9"), EINVAL);
  EXPECT_EQ(SetX(c.path(0, "pinned"), "user.cshm.owner", "x"), EINVAL);
  EXPECT_EQ(SetX(c.path(0, "pinned"), "user.cshm.pin", "maybe"), EINVAL);
}

// A long move says how far it is: the old owner publishes the pages it has
// gone through (user.cshm.cluster), and `cshmctl migrate --progress` prints
// them while the move runs (by default only to a terminal).
TEST(Migration, a_long_move_shows_how_far_it_is) {
  TestCluster c(2, 3000, kNoAutoMigrate);
  ASSERT_EQ(c.StartNode(0, {"CSHM_TEST_SLOW_MIGRATE_CHUNK_MS=500"}), "");
  ASSERT_EQ(c.StartNode(1), "");
  const size_t size = 24 << 20;  // three chunks of 8 MiB
  Fill(c.path(0, "big"), size, 'b');
  CommandResult r = RunCommand({CshmctlBinary(), "migrate", "--progress", c.path(1, "big"), "1"}, 60s);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("moving " + c.path(1, "big") + " from node 0 to node 1: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(" of 24.0 MiB ("), std::string::npos) << r.err;
  EXPECT_EQ(r.out, c.path(1, "big") + " now lives on node 1\n");
  EXPECT_EQ(GetX(c.path(0, "big"), "user.cshm.owner"), "1");
  char status[65536];
  ssize_t n = getxattr(c.path(0, "").c_str(), "user.cshm.cluster", status, sizeof status);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(status, static_cast<size_t>(n)).find("\"moving\""), std::string::npos)
      << "a move still shown after it ended";
}

// The control attributes are virtual. Seen before: removexattr of
// user.cshm.pin deleted the stored pin while the owner's pin in memory stayed
// set, and listxattr showed it.
TEST(Migration, removing_the_pin_attribute_unpins_at_the_owner) {
  TestCluster c(3, 3000, kNoAutoMigrate);
  ASSERT_EQ(c.Start(), "");
  Fill(c.path(0, "f"), kPage, 'f');
  ASSERT_EQ(SetX(c.path(1, "f"), "user.cshm.pin", "1"), 0);
  ASSERT_EQ(SetX(c.path(1, "f"), "user.note", "kept"), 0);
  EXPECT_NE(GetX(c.path(2, "f"), "user.cshm.stats").find("pinned=1"), std::string::npos);
  char names[256];
  ssize_t n = listxattr(c.path(2, "f").c_str(), names, sizeof(names));
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(names, static_cast<size_t>(n)), std::string("user.note\0", 10));
  ASSERT_EQ(removexattr(c.path(2, "f").c_str(), "user.cshm.pin"), 0) << strerror(errno);
  EXPECT_EQ(GetX(c.path(1, "f"), "user.cshm.pin"), "0");
  EXPECT_NE(GetX(c.path(1, "f"), "user.cshm.stats").find("pinned=0"), std::string::npos)
      << GetX(c.path(1, "f"), "user.cshm.stats");
  EXPECT_EQ(removexattr(c.path(2, "f").c_str(), "user.cshm.owner"), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(GetX(c.path(0, "f"), "user.cshm.owner"), "0");
  ASSERT_EQ(removexattr(c.path(0, "f").c_str(), "user.note"), 0);
  EXPECT_EQ(listxattr(c.path(0, "f").c_str(), names, sizeof(names)), 0);
}

TEST(Migration, the_old_owner_keeps_the_twins_of_its_dirty_pages) {
  // On its owner a page is its own twin. The old owner still holds a dirty
  // page after the segment moved; another node then releases other bytes of
  // that page. The old owner's write-back (forced by the invalidation) must
  // carry only its own byte: it diffs against the twin it stored when the
  // pages left, not send the whole page back as it was.
  TestCluster c(3, 3000, kNoAutoMigrate);
  ASSERT_EQ(c.Start(), "");
  const size_t size = 2 * kPage;
  Fill(c.path(0, "moving"), size, '.');
  int fd = open(c.path(0, "moving").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  auto* old_owner = static_cast<char*>(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ASSERT_NE(old_owner, MAP_FAILED);
  old_owner[10] = 'O';  // dirty on node 0, not released
  ASSERT_EQ(SetX(c.path(1, "moving"), "user.cshm.owner", "2"), 0);
  int fd1 = open(c.path(1, "moving").c_str(), O_RDWR);
  ASSERT_GE(fd1, 0);
  ASSERT_EQ(pwrite(fd1, "R", 1, 20), 1);  // a release on node 1, at the new owner
  close(fd1);
  ASSERT_EQ(msync(old_owner, size, MS_SYNC), 0);
  for (int n = 0; n < 3; n++) {
    int rfd = open(c.path(n, "moving").c_str(), O_RDONLY);
    ASSERT_GE(rfd, 0);
    char b[32];
    ASSERT_EQ(pread(rfd, b, sizeof(b), 0), static_cast<ssize_t>(sizeof(b)));
    close(rfd);
    EXPECT_EQ(b[10], 'O') << "node " << n;
    EXPECT_EQ(b[20], 'R') << "node " << n;
  }
  munmap(old_owner, size);
  close(fd);
}

TEST(Migration, no_acknowledged_record_is_lost_while_the_segment_moves_back_and_forth) {
  TestCluster c(3, 3000, kNoAutoMigrate);
  ASSERT_EQ(c.Start(), "");
  const int per_writer = 300;
  const size_t size = 3 * per_writer * sizeof(Record);
  {
    int fd = open(c.path(0, "records").c_str(), O_RDWR | O_CREAT, 0644);
    ASSERT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
    close(fd);
  }
  std::vector<pid_t> writers;
  for (int w = 0; w < 3; w++) {
    const std::string path = c.path(w, "records");
    pid_t pid = fork();
    if (pid == 0) {
      int fd = open(path.c_str(), O_RDWR);
      auto* recs = static_cast<Record*>(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
      if (recs == MAP_FAILED) _exit(10);
      for (int i = 0; i < per_writer; i++) {
        Record& r = recs[w * per_writer + i];
        MakeRecord(r, static_cast<uint32_t>(w), static_cast<uint32_t>(i));
        // The release must succeed: a migration only delays it.
        if (msync(recs, size, MS_SYNC) != 0) _exit(11);
      }
      _exit(0);
    }
    writers.push_back(pid);
  }
  // Meanwhile: move it around the three nodes for as long as they write,
  // at least 20 times.
  int moves = 0, failed_moves = 0, done = 0;
  std::vector<int> status(writers.size(), -1);
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  for (int i = 0; (done < 3 || moves < 20) && std::chrono::steady_clock::now() < deadline; i++) {
    const int to = (i + 1) % 3;
    if (SetX(c.path(i % 3, "records"), "user.cshm.owner", std::to_string(to)) == 0) moves++;
    else failed_moves++;
    for (size_t k = 0; k < writers.size(); k++)
      if (status[k] == -1 && waitpid(writers[k], &status[k], WNOHANG) == writers[k]) done++;
  }
  for (size_t k = 0; k < writers.size(); k++) {
    if (status[k] == -1) {
      ASSERT_TRUE(WaitForExit(writers[k], 60s, &status[k])) << "a writer hung";
    }
    EXPECT_TRUE(WIFEXITED(status[k]) && WEXITSTATUS(status[k]) == 0) << "writer status " << status[k];
  }
  EXPECT_GE(moves, 20);
  EXPECT_EQ(failed_moves, 0);
  RecordProperty("moves", moves);
  // Every record, read through every node, is intact.
  for (int n = 0; n < 3; n++) {
    std::ifstream in(c.path(n, "records"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    ASSERT_EQ(bytes.size(), size);
    const auto* recs = reinterpret_cast<const Record*>(bytes.data());
    int bad = 0;
    std::string which;  // the first few, to tell a stale page from a torn write
    for (int w = 0; w < 3; w++)
      for (int i = 0; i < per_writer; i++) {
        const Record& r = recs[w * per_writer + i];
        if (Intact(r, static_cast<uint32_t>(w), static_cast<uint32_t>(i))) continue;
        if (bad++ < 4)
          which += " [record " + std::to_string(w * per_writer + i) + " of writer " + std::to_string(w) + ", page " +
                   std::to_string((w * per_writer + i) * sizeof(Record) / kPage) + ": holds writer " +
                   std::to_string(r.writer) + " seq " + std::to_string(r.seq) +
                   (r.sum == Sum(r) ? ", checksum good]" : ", checksum bad]");
      }
    EXPECT_EQ(bad, 0) << "damaged or lost records seen through node " << n << ":" << which;
  }
}

// The target's twin of a page can lag the owner's copy: its own write-back
// was applied, but the answer has not yet updated the twin when the move
// asks for it. The old owner must not take that twin as the page.
TEST(Migration, a_twin_that_lags_the_targets_own_write_back_is_not_installed_as_the_page) {
  TestCluster c(3, 3000, kNoAutoMigrate);
  ASSERT_EQ(c.StartNode(0), "");
  ASSERT_EQ(c.StartNode(1, {"CSHM_TEST_SLOW_TWIN_PATCH_MS=1500"}), "");
  ASSERT_EQ(c.StartNode(2), "");
  const size_t size = 4 * kPage;
  Fill(c.path(0, "lag"), size, 'a');
  const std::string path = c.path(1, "lag");
  pid_t writer = fork();
  if (writer == 0) {
    int fd = open(path.c_str(), O_RDWR);
    auto* p = static_cast<char*>(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    if (p == MAP_FAILED) _exit(10);
    if (p[100] != 'a') _exit(12);  // the fault stores node 1's twin of page 0
    memcpy(p + 100, "fresh", 5);
    _exit(msync(p, size, MS_SYNC) == 0 ? 0 : 11);
  }
  // The write-back is applied at node 0; node 1's twin is updated 1.5 s later.
  const std::string log1 = c.node(1).state_dir() + "/cshmfs.log";
  const bool lagging = WaitFor(
      [&] {
        std::ifstream l(log1);
        return std::string((std::istreambuf_iterator<char>(l)), {}).find("CSHM_TEST_SLOW_TWIN_PATCH_MS") !=
               std::string::npos;
      },
      10s);
  EXPECT_TRUE(lagging) << "node 1 never reached its twin update";
  EXPECT_EQ(SetX(c.path(2, "lag"), "user.cshm.owner", "1"), 0);
  int status = -1;
  ASSERT_TRUE(WaitForExit(writer, 30s, &status)) << "the writer hung";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "writer status " << status;
  EXPECT_EQ(GetX(c.path(2, "lag"), "user.cshm.owner"), "1");
  std::ifstream in(c.path(2, "lag"), std::ios::binary);
  std::string via2((std::istreambuf_iterator<char>(in)), {});
  ASSERT_EQ(via2.size(), size);
  EXPECT_EQ(via2.substr(98, 9), "aafreshaa") << "the acknowledged write is lost at the new owner";
}

// A move waits for the owner's invalidation rounds. An invalidation can wait
// in a node's kernel for a folio that a read holds locked until its fetch is
// answered: were the segment frozen first, the fetch would wait for the move
// and the move for the round, until the invalidation timed out (the folio
// cycle of DESIGN.md, through the freeze).
TEST(Migration, a_move_does_not_freeze_the_segment_before_its_invalidations_are_answered) {
  TestCluster c(3, 3000, kNoAutoMigrate);
  ASSERT_EQ(c.StartNode(0), "");
  // Node 1 holds a folio locked a while before it asks for the page, and is
  // slower still to start on an invalidation.
  ASSERT_EQ(c.StartNode(1, {"CSHM_TEST_SLOW_FETCH_MS=300", "CSHM_TEST_SLOW_INVALIDATE_MS=1000"}), "");
  ASSERT_EQ(c.StartNode(2), "");
  const size_t size = 4 * kPage;
  Fill(c.path(0, "busy"), size, 'a');
  // Node 1 reads page 1 (it joins the copyset) and its kernel forgets it.
  int fd1 = open(c.path(1, "busy").c_str(), O_RDONLY);
  ASSERT_GE(fd1, 0);
  std::string buf(kPage, '\0');
  ASSERT_EQ(pread(fd1, buf.data(), kPage, kPage), static_cast<ssize_t>(kPage));
  ASSERT_EQ(posix_fadvise(fd1, 0, 0, POSIX_FADV_DONTNEED), 0);
  // Node 2 rewrites page 1: node 0 starts a round that must drop node 1's
  // copy (the file stays open: a close would wait for that round).
  int fd2 = open(c.path(2, "busy").c_str(), O_RDWR);
  ASSERT_GE(fd2, 0);
  const std::string page(kPage, 'c');
  ASSERT_EQ(pwrite(fd2, page.data(), kPage, kPage), static_cast<ssize_t>(kPage));
  // Node 1 faults page 1 in again while the segment moves.
  pid_t reader = fork();
  if (reader == 0) {
    std::string got(kPage, '\0');
    if (pread(fd1, got.data(), kPage, kPage) != static_cast<ssize_t>(kPage)) _exit(11);
    _exit(AllOf(got, 'c') ? 0 : 12);
  }
  EXPECT_EQ(SetX(c.path(2, "busy"), "user.cshm.owner", "2"), 0);
  int status = -1;
  ASSERT_TRUE(WaitForExit(reader, 30s, &status)) << "the reader hung";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "reader status " << status;
  close(fd2);
  close(fd1);
  EXPECT_EQ(GetX(c.path(0, "busy"), "user.cshm.owner"), "2");
  std::ifstream in(c.path(1, "busy"), std::ios::binary);
  std::string via1((std::istreambuf_iterator<char>(in)), {});
  ASSERT_EQ(via1.size(), size);
  EXPECT_TRUE(AllOf(via1.substr(kPage, kPage), 'c'));
  // Every invalidation was answered in time.
  std::ifstream l(c.node(0).state_dir() + "/cshmfs.log");
  const std::string log((std::istreambuf_iterator<char>(l)), {});
  EXPECT_EQ(log.find("failed: node 1 did not answer"), std::string::npos) << log;
}

TEST(Migration, a_target_that_dies_during_the_move_leaves_the_segment_where_it_was) {
  TestCluster c(3, 2000, kNoAutoMigrate);
  ASSERT_EQ(c.StartNode(0), "");
  ASSERT_EQ(c.StartNode(1), "");
  ASSERT_EQ(c.StartNode(2, {"CSHM_TEST_DIE_IN_MIGRATION=1"}), "");
  const size_t size = 32 * kPage;
  Fill(c.path(0, "precious"), size, 'q');
  EXPECT_NE(SetX(c.path(1, "precious"), "user.cshm.owner", "2"), 0);
  EXPECT_EQ(GetX(c.path(1, "precious"), "user.cshm.owner"), "0");
  std::ifstream in(c.path(1, "precious"), std::ios::binary);
  std::string data((std::istreambuf_iterator<char>(in)), {});
  EXPECT_TRUE(AllOf(data, 'q') && data.size() == size);
  // Still writable, and movable to a healthy node.
  int fd = open(c.path(1, "precious").c_str(), O_RDWR);
  ASSERT_EQ(pwrite(fd, "after", 5, 0), 5);
  close(fd);
  EXPECT_EQ(SetX(c.path(0, "precious"), "user.cshm.owner", "1"), 0);
  std::ifstream in2(c.path(0, "precious"), std::ios::binary);
  std::string data2((std::istreambuf_iterator<char>(in2)), {});
  EXPECT_EQ(data2.substr(0, 6), "afterq");
  c.node(2).Kill9();  // it exited already; clear its dead mount
}

}  // namespace
}  // namespace cshm::testing

namespace cshm::testing {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// Node 1 owns o1; node 2 writes it heavily while node 0, the directory, is
// down, so node 1's migrator moves o1 toward node 2 and cannot record the
// move. The target must serve nothing before the directory names it: every
// msync that returned 0 on node 2 is on every node once the directory is
// back (the move aborted). (Seen before: node 2 served the segment it had
// been sent, acknowledged its own writes, and lost them at the abort.)
TEST(Migration, a_move_the_directory_cannot_record_loses_no_acknowledged_write) {
  TestCluster c(3, 1000, kFastMigrate);
  ASSERT_EQ(c.Start(), "");
  const size_t size = 16 * kPage;
  Fill(c.path(1, "o1"), size, '.');
  const std::string path2 = c.path(2, "o1");
  // Opened and mapped before: both need the directory.
  int fd = open(path2.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char b;
  ASSERT_EQ(pread(fd, &b, 1, 0), 1);  // node 2 knows the owner, without the directory
  char* p = static_cast<char*>(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ASSERT_NE(p, MAP_FAILED);
  c.node(0).Kill9();
  int acks[2];
  ASSERT_EQ(pipe(acks), 0);
  pid_t child = fork();
  if (child == 0) {  // the writer: SIGBUS (an owner it cannot reach) ends it
    close(acks[0]);
    const auto end = std::chrono::steady_clock::now() + 4s;
    for (uint32_t i = 0; std::chrono::steady_clock::now() < end && i < size / 8; i++) {
      std::memcpy(p + static_cast<size_t>(i % 16) * kPage + (i / 16) * 8, "MARKER!", 8);
      if (msync(p, size, MS_SYNC) == 0 && write(acks[1], &i, sizeof(i)) != sizeof(i)) _exit(11);
    }
    _exit(0);
  }
  close(acks[1]);
  std::vector<uint32_t> acked;
  uint32_t i;
  while (read(acks[0], &i, sizeof(i)) == sizeof(i)) acked.push_back(i);
  close(acks[0]);
  ASSERT_TRUE(WaitForExit(child, 30s));
  munmap(p, size);
  close(fd);
  EXPECT_NE(ReadAll(c.node(1).state_dir() + "/cshmfs.log").find("the directory update failed"), std::string::npos)
      << "node 1 never tried to move o1 while the directory was down: the test did not test anything";
  ASSERT_EQ(c.StartNode(0), "");
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::is_empty(c.node(2).state_dir() + "/pending"); }, 30s));
  for (int n = 0; n < 3; n++) {
    std::string data;
    ASSERT_TRUE(WaitFor([&] { data = ReadAll(c.path(n, "o1")); return data.size() == size; }, 20s)) << "node " << n;
    int lost = 0;
    for (uint32_t a : acked)
      if (data.compare(static_cast<size_t>(a % 16) * kPage + (a / 16) * 8, 8, std::string("MARKER!\0", 8)) != 0) lost++;
    EXPECT_EQ(lost, 0) << "of " << acked.size() << " acknowledged markers, seen through node " << n;
  }
}

}  // namespace
}  // namespace cshm::testing

namespace cshm::testing {
namespace {

// A 4 GiB sparse segment holding one page of data moves in time that depends
// on its data, not its size: the transfer skips holes (seen before: 512
// chunks, 12 s frozen, readers failing).
TEST(Migration, a_sparse_segment_moves_only_the_pages_that_hold_data) {
  TestCluster c(2, 3000, kNoAutoMigrate);
  ASSERT_EQ(c.Start(), "");
  const off_t size = 4ll << 30, at = 2ll << 30;
  {
    int fd = open(c.path(0, "sparse").c_str(), O_RDWR | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, size), 0);
    ASSERT_EQ(pwrite(fd, "the one page", 12, at), 12);
    close(fd);
  }
  ASSERT_EQ(SetX(c.path(1, "sparse"), "user.cshm.owner", "1"), 0);
  EXPECT_EQ(GetX(c.path(0, "sparse"), "user.cshm.owner"), "1");
  const std::string log = ReadAll(c.node(0).state_dir() + "/cshmfs.log");
  EXPECT_NE(log.find("1 of 1048576 pages sent (0 of them for twins that differed) in 2 chunks"), std::string::npos)
      << log.substr(log.size() > 2000 ? log.size() - 2000 : 0);
  for (int n = 0; n < 2; n++) {
    int fd = open(c.path(n, "sparse").c_str(), O_RDONLY);
    char buf[12];
    EXPECT_EQ(pread(fd, buf, 12, at), 12);
    EXPECT_EQ(std::string(buf, 12), "the one page") << "node " << n;
    EXPECT_EQ(pread(fd, buf, 4, at - 4096), 4);
    EXPECT_EQ(std::string(buf, 4), std::string(4, '\0'));
    close(fd);
  }
}

// What page p of the many-chunk file below holds: its number, then a byte
// of it; the pages of [kZeroFrom, kZeroTo) were written as zeros.
constexpr size_t kChunkPages = 2048, kPages = 5 * kChunkPages + 100, kZeroFrom = 100, kZeroTo = 110;
bool WrittenPage(size_t p) { return p < kChunkPages || p >= 3 * kChunkPages; }  // chunks 1 and 2: a hole
std::string PageOf(size_t p) {
  std::string page(kPage, '\0');
  if (!WrittenPage(p) || (p >= kZeroFrom && p < kZeroTo)) return page;
  std::memset(page.data(), static_cast<char>('a' + p % 26), kPage);
  std::memcpy(page.data(), &p, sizeof p);
  return page;
}

// A move sends its chunks one after the other while it reads the next
// (SegmentTransfer::SendPages): every page lands where it was, through
// holes, zero pages, and pages the target holds twins of.
TEST(Migration, a_move_of_many_chunks_keeps_every_page) {
  TestCluster c(3, 3000, kNoAutoMigrate);
  ASSERT_EQ(c.Start(), "");
  {
    int fd = open(c.path(0, "chunks").c_str(), O_RDWR | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, static_cast<off_t>(kPages * kPage)), 0);
    std::string run;
    for (size_t p = 0; p < kPages; p++) {
      if (!WrittenPage(p)) continue;
      run = PageOf(p);
      ASSERT_EQ(pwrite(fd, run.data(), kPage, static_cast<off_t>(p * kPage)), static_cast<ssize_t>(kPage));
    }
    close(fd);
  }
  // Node 1 holds twins of its first 64 pages (read through a writable handle).
  int twins = open(c.path(1, "chunks").c_str(), O_RDWR);
  ASSERT_GE(twins, 0);
  std::string first(64 * kPage, '\0');
  ASSERT_EQ(pread(twins, first.data(), first.size(), 0), static_cast<ssize_t>(first.size()));
  auto check = [&](const std::string& when) {
    for (int n = 0; n < 3; n++) {
      int fd = open(c.path(n, "chunks").c_str(), O_RDONLY);
      ASSERT_GE(fd, 0);
      posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);  // read from the owner, not this node's cache
      std::string got(kPage, '\0');
      size_t wrong = 0, first_wrong = 0;
      for (size_t p = 0; p < kPages; p++) {
        ASSERT_EQ(pread(fd, got.data(), kPage, static_cast<off_t>(p * kPage)), static_cast<ssize_t>(kPage));
        if (got != PageOf(p) && wrong++ == 0) first_wrong = p;
      }
      close(fd);
      EXPECT_EQ(wrong, 0u) << when << ": pages read wrong through node " << n << ", the first " << first_wrong;
    }
  };
  ASSERT_EQ(SetX(c.path(1, "chunks"), "user.cshm.owner", "1"), 0);
  check("moved to node 1");
  const std::string log = ReadAll(c.node(0).state_dir() + "/cshmfs.log");
  // Chunks 0, 3, 4 and 5 (the hole skipped); the zeros and node 1's twins
  // (64 pages at least: what it read, and what readahead brought) not sent.
  const std::string tail = " of " + std::to_string(kPages) + " pages sent (0 of them for twins that differed) in 4 chunks";
  const size_t at = log.find(tail);
  ASSERT_NE(at, std::string::npos) << log.substr(log.size() > 2000 ? log.size() - 2000 : 0);
  const size_t sent = std::stoul(log.substr(log.rfind(' ', at - 1) + 1));
  EXPECT_LE(sent, kPages - 2 * kChunkPages - (kZeroTo - kZeroFrom) - 64);
  EXPECT_GE(sent, kPages - 3 * kChunkPages);
  close(twins);
  ASSERT_EQ(SetX(c.path(2, "chunks"), "user.cshm.owner", "2"), 0);
  check("then to node 2");
}

}  // namespace
}  // namespace cshm::testing
