// Faults on a real cluster: a full owner, other users across nodes, and
// kill -9 of a daemon under a write-heavy workload with checksummed records.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "store/meta_store.h"
#include "tests/support/records.h"
#include "tests/support/test_cluster.h"

namespace cshm::testing {
namespace {

using namespace std::chrono_literals;
constexpr size_t kPage = 4096;
const std::string kNoAutoMigrate = "[migrate]\nenabled = false\n";

// A 4-byte counter file.
void MakeCounter(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, "0000", 4, 0), 4);
  close(fd);
}

// An fcntl lock of the whole file.
struct flock WholeFile(short type) {
  struct flock l{};
  l.l_type = type;
  l.l_whence = SEEK_SET;
  return l;
}

// Kills a forked child when the test leaves, also on failure.
struct ScopedKill {
  pid_t pid;
  ~ScopedKill() {
    if (kill(pid, SIGKILL) == 0) waitpid(pid, nullptr, 0);
  }
};

// Continues a SIGSTOPped daemon when the test leaves, also on failure.
struct ScopedResume {
  pid_t pid;
  ~ScopedResume() { kill(pid, SIGCONT); }
};

TEST(Faults, a_full_owner_gives_the_writer_enospc_and_corrupts_nothing) {
  TestCluster c(2, 3000, kNoAutoMigrate);
  ASSERT_EQ(c.node(0).Start({"--config", c.config_path(), "--node", "0", "-o", "size=1m"}), "");
  ASSERT_EQ(c.StartNode(1), "");
  // A segment owned by node 0 (full cap 1 MiB), written from node 1.
  {
    int fd = open(c.path(0, "big").c_str(), O_RDWR | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    close(fd);
  }
  std::ofstream(c.path(0, "other")) << "untouched";
  int fd = open(c.path(1, "big").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  std::string chunk(64 << 10, 'b');
  size_t written = 0;
  ssize_t n;
  while ((n = pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(written))) > 0) written += n;
  EXPECT_EQ(n, -1);
  EXPECT_EQ(errno, ENOSPC);
  close(fd);
  EXPECT_LE(written, 1u << 20);
  EXPECT_GT(written, 0u);
  std::ifstream in(c.path(1, "big"), std::ios::binary);
  std::string back((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(back.size(), written);
  EXPECT_EQ(back.find_first_not_of('b'), std::string::npos);
  std::ifstream other(c.path(1, "other"));
  std::string o((std::istreambuf_iterator<char>(other)), {});
  EXPECT_EQ(o, "untouched");
}

// The same through a mapping: the write-back of node 1's dirty pages fails
// at the full owner, and msync tells the writer ENOSPC (the owner's errno
// carried on the wire), not EIO and never 0.
TEST(Faults, a_full_owner_gives_msync_enospc) {
  TestCluster c(2, 3000, kNoAutoMigrate);
  ASSERT_EQ(c.node(0).Start({"--config", c.config_path(), "--node", "0", "-o", "size=1m"}), "");
  ASSERT_EQ(c.StartNode(1), "");
  constexpr size_t kSize = 4 << 20;
  {
    int fd = open(c.path(0, "big").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);  // owned by node 0
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, kSize), 0);  // holes: no space yet
    close(fd);
  }
  int fd = open(c.path(1, "big").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  char* p = static_cast<char*>(mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ASSERT_NE(p, MAP_FAILED);
  for (size_t off = 0; off < kSize; off += kPage) p[off] = 'w';
  const int rc = msync(p, kSize, MS_SYNC);
  const int err = errno;
  munmap(p, kSize);
  close(fd);
  EXPECT_EQ(rc, -1) << "msync acknowledged 4 MiB to an owner with room for 1";
  EXPECT_EQ(err, ENOSPC) << strerror(err);
}

TEST(Faults, another_user_cannot_read_a_private_segment_from_another_node) {
  TestCluster c(2, 3000, kNoAutoMigrate);
  chmod(c.dir().path().c_str(), 0755);
  ASSERT_EQ(c.Start(), "");
  std::ofstream(c.path(0, "private")) << "secret";
  ASSERT_EQ(chmod(c.path(0, "private").c_str(), 0600), 0);
  const std::string other_node = c.path(1, "private");
  CommandResult r = RunInChild(
      [&] {
        if (setgid(65534) != 0 || setuid(65534) != 0) return 90;
        if (open(other_node.c_str(), O_RDONLY) >= 0) return 1;
        if (errno != EACCES) return 2;
        if (chmod(other_node.c_str(), 0644) == 0 || errno != EPERM) return 3;
        return 0;
      },
      20s);
  EXPECT_EQ(r.exit_code, 0);
}

TEST(Faults, bytes_an_unreachable_owner_could_not_take_are_kept_and_delivered_later) {
  TestCluster c(2, 1000, kNoAutoMigrate);
  ASSERT_EQ(c.Start(), "");
  const size_t size = 4 * kPage;
  {
    int fd = open(c.path(0, "seg").c_str(), O_RDWR | O_CREAT, 0644);  // owned by node 0
    ASSERT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
    close(fd);
  }
  int fd = open(c.path(1, "seg").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char* p = static_cast<char*>(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ASSERT_NE(p, MAP_FAILED);
  std::memcpy(p, "before", 6);
  ASSERT_EQ(msync(p, size, MS_SYNC), 0);
  std::memcpy(p + kPage, "mapped-and-kept", 15);  // dirty, not yet released
  c.node(0).Kill9();
  // The owner is gone: the release fails honestly, and so does a write(2).
  EXPECT_EQ(msync(p, size, MS_SYNC), -1);
  EXPECT_EQ(errno, EIO);
  EXPECT_EQ(pwrite(fd, "written-and-kept", 16, 2 * kPage), -1);
  EXPECT_EQ(errno, EIO);
  munmap(p, size);
  close(fd);
  // ... but node 1 kept the bytes in its state dir,
  size_t kept = 0;
  for (auto& e : std::filesystem::directory_iterator(c.node(1).state_dir() + "/pending")) kept += e.is_regular_file();
  EXPECT_GE(kept, 2u);
  // ... and delivers them once the owner is back.
  ASSERT_EQ(c.StartNode(0), "");
  auto read_at = [&](int node, off_t off, size_t n) {
    std::string s(n, '\0');
    int f = open(c.path(node, "seg").c_str(), O_RDONLY);
    posix_fadvise(f, 0, 0, POSIX_FADV_DONTNEED);
    ssize_t got = pread(f, s.data(), n, off);
    close(f);
    return got == static_cast<ssize_t>(n) ? s : "";
  };
  EXPECT_TRUE(WaitFor(
      [&] { return read_at(0, kPage, 15) == "mapped-and-kept" && read_at(0, 2 * kPage, 16) == "written-and-kept"; },
      20s))
      << "the kept bytes never reached the owner";
  EXPECT_EQ(read_at(0, 0, 6), "before");
  EXPECT_TRUE(WaitFor([&] { return std::filesystem::is_empty(c.node(1).state_dir() + "/pending"); }, 10s));
}

// A write-back kept after it failed (its writer got EIO) is delivered when the
// owner answers again, which may be after other nodes wrote the same page and
// were told their writes succeeded. It must never land on those newer bytes,
// and afterwards every node, the late writer too, reads the owner's bytes.
// (The reproduction had a lock move on during a partition; here the
// late writer's daemon is paused, as a stalled host is, while the owner comes
// back and another node writes.)
TEST(Faults, a_kept_write_back_never_lands_on_newer_acknowledged_bytes) {
  TestCluster c(3, 1000, kNoAutoMigrate);
  ASSERT_EQ(c.Start(), "");
  {
    int fd = open(c.path(0, "seg").c_str(), O_RDWR | O_CREAT, 0644);  // owned by node 0
    ASSERT_EQ(pwrite(fd, std::string(2 * kPage, '.').data(), 2 * kPage, 0), static_cast<ssize_t>(2 * kPage));
    close(fd);
  }
  int fd1 = open(c.path(1, "seg").c_str(), O_RDWR);
  ASSERT_GE(fd1, 0);
  char buf[16];
  ASSERT_EQ(pread(fd1, buf, 5, 0), 5);  // node 1 holds page 0 as it was
  c.node(0).Kill9();
  EXPECT_EQ(pwrite(fd1, "STALE", 5, 0), -1);
  EXPECT_EQ(errno, EIO);
  // Node 1 stalls with its write kept; the owner comes back; node 2 writes.
  const pid_t stalled = c.node(1).pid();
  ASSERT_EQ(kill(stalled, SIGSTOP), 0);
  ScopedResume resume{stalled};
  ASSERT_EQ(c.StartNode(0), "");
  {
    int fd2 = open(c.path(2, "seg").c_str(), O_RDWR);
    ASSERT_GE(fd2, 0);
    ASSERT_EQ(pwrite(fd2, "FRESH", 5, 0), 5);
    ASSERT_EQ(fsync(fd2), 0);
    ASSERT_EQ(close(fd2), 0);
  }
  ASSERT_EQ(kill(stalled, SIGCONT), 0);
  // Node 1 delivers (or drops) what it kept...
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::is_empty(c.node(1).state_dir() + "/pending"); }, 20s))
      << "node 1 never delivered its kept write-back";
  // ... and every node reads the acknowledged bytes, node 1 through the
  // descriptor it wrote with as well as through a new one.
  auto read_at = [&](int node) {
    std::string s(5, '\0');
    int f = open(c.path(node, "seg").c_str(), O_RDONLY);
    ssize_t got = pread(f, s.data(), 5, 0);
    close(f);
    return got == 5 ? s : "(error)";
  };
  for (int n = 0; n < 3; n++) EXPECT_TRUE(WaitFor([&] { return read_at(n) == "FRESH"; }, 10s)) << "node " << n << " reads " << read_at(n);
  EXPECT_TRUE(WaitFor([&] { return pread(fd1, buf, 5, 0) == 5 && std::string(buf, 5) == "FRESH"; }, 10s));
  close(fd1);
}

// Node 1 holds an fcntl lock granted by node 0 when node 0 is killed and
// restarts with an empty lock table. The new incarnation must not grant that
// lock to node 2 while node 1 may still believe it holds it (NFS's grace
// period), and node 1, on seeing the restart, gives its lock up: its writes
// under it and its unlock fail with EIO instead of landing on node 2's bytes.
TEST(Faults, a_restarted_owner_grants_no_lock_that_a_holder_may_still_hold) {
  TestCluster c(3, 1000, kNoAutoMigrate);
  ASSERT_EQ(c.Start(), "");
  ASSERT_NO_FATAL_FAILURE(MakeCounter(c.path(0, "counter")));  // owned by node 0
  int fd1 = open(c.path(1, "counter").c_str(), O_RDWR);
  ASSERT_GE(fd1, 0);
  struct flock lk = WholeFile(F_WRLCK);
  ASSERT_EQ(fcntl(fd1, F_SETLKW, &lk), 0);
  char buf[8];
  ASSERT_EQ(pread(fd1, buf, 4, 0), 4);
  c.node(0).Kill9();
  ASSERT_EQ(c.StartNode(0), "");
  // Node 2 takes the lock (once the grace period allows) and writes.
  const std::string path2 = c.path(2, "counter");
  pid_t child = fork();
  if (child == 0) {
    int fd = open(path2.c_str(), O_RDWR);
    struct flock w = WholeFile(F_WRLCK);
    if (fd < 0 || fcntl(fd, F_SETLKW, &w) != 0) _exit(10);
    if (pwrite(fd, "NODE2", 5, 0) != 5 || fsync(fd) != 0) _exit(11);
    w.l_type = F_UNLCK;
    if (fcntl(fd, F_SETLK, &w) != 0) _exit(12);
    _exit(close(fd) == 0 ? 0 : 13);
  }
  int status = 0;
  ASSERT_TRUE(WaitForExit(child, 30s, &status)) << "node 2 never got the lock";
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "node 2's locked write failed: " << status;
  // Node 1 still has its descriptor and thinks it holds the lock.
  EXPECT_EQ(pwrite(fd1, "NODE1", 5, 0), -1) << "node 1 wrote under a lock the restarted owner no longer knows";
  EXPECT_EQ(errno, EIO);
  lk.l_type = F_UNLCK;
  EXPECT_EQ(fcntl(fd1, F_SETLK, &lk), -1) << "the unlock of a lost lock succeeded";
  EXPECT_EQ(errno, EIO);
  for (int n = 0; n < 3; n++) {
    int f = open(c.path(n, "counter").c_str(), O_RDONLY);
    std::string got(5, '\0');
    EXPECT_EQ(pread(f, got.data(), 5, 0), 5);
    close(f);
    EXPECT_EQ(got, "NODE2") << "node " << n;
  }
  close(fd1);
}

// A close releases its locks at their owner; when that request is lost (a
// frame lost; the owner hears node 1 all along, so it never forgets it), the
// unlock must still reach the owner later: dropped, the lock stays granted
// to a node that forgot it, and every other node waits for it for ever.
TEST(Faults, an_unlock_its_owner_did_not_answer_is_delivered_later) {
  TestCluster c(3, 3000, kNoAutoMigrate);
  ASSERT_EQ(c.StartNode(0), "");
  // Node 1's first lock request goes through, its second (the unlock) is lost.
  ASSERT_EQ(c.StartNode(1, {"CSHM_NET_DROP=26:1:1"}), "");
  ASSERT_EQ(c.StartNode(2), "");
  ASSERT_NO_FATAL_FAILURE(MakeCounter(c.path(0, "counter")));  // owned by node 0
  // Node 0 grants locks once its start's grace is over: node 2 waits for
  // that, so that node 1's first lock request (the one let through) is granted.
  {
    int fd = open(c.path(2, "counter").c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    struct flock w = WholeFile(F_WRLCK);
    ASSERT_TRUE(WaitFor([&] { return fcntl(fd, F_SETLK, &w) == 0; }, 15s)) << strerror(errno);
    close(fd);
  }
  int fd1 = open(c.path(1, "counter").c_str(), O_RDWR);
  ASSERT_GE(fd1, 0);
  struct flock lk = WholeFile(F_WRLCK);
  ASSERT_EQ(fcntl(fd1, F_SETLKW, &lk), 0) << strerror(errno);
  close(fd1);  // its unlock waits a request deadline for node 0's answer, then fails
  const std::string path2 = c.path(2, "counter");
  pid_t child = fork();
  if (child == 0) {
    int fd = open(path2.c_str(), O_RDWR);
    struct flock w = WholeFile(F_WRLCK);
    const auto deadline = std::chrono::steady_clock::now() + 15s;
    while (fd >= 0 && std::chrono::steady_clock::now() < deadline) {
      if (fcntl(fd, F_SETLK, &w) == 0) _exit(0);
      usleep(20000);
    }
    _exit(10);
  }
  int status = 0;
  ASSERT_TRUE(WaitForExit(child, 30s, &status)) << "node 2's lock attempts hung";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "node 2 never got the lock: node 1's undelivered unlock was dropped (" << status << ")";
  std::ifstream l(c.node(1).state_dir() + "/cshmfs.log");
  const std::string log((std::istreambuf_iterator<char>(l)), {});
  EXPECT_NE(log.find("not delivered"), std::string::npos) << "the unlock never failed: the scenario did not happen";
}

// Node 1's state dir is full (a real ENOSPC from the file system, not the
// size cap), so it cannot store twins. A page it caches without a twin could
// only be written back whole, over bytes other nodes wrote meanwhile: it must
// not cache one. (Seen before: node 2's acknowledged byte was overwritten by
// node 1's whole-page write-back when node 2's release invalidated it.)
// A node's twins dir on a small tmpfs of its own, filled to the last byte
// (a real ENOSPC); unmounted when the test leaves, also on failure.
class FullTwinsDir {
 public:
  explicit FullTwinsDir(TestMount& node) : dir_(node.state_dir() + "/twins") {
    if (system(("mount -t tmpfs -o size=64k cshm-test-full " + dir_).c_str()) != 0) return;
    mounted_ = true;
    int f = open((dir_ + "/filler").c_str(), O_WRONLY | O_CREAT, 0600);
    std::string block(kPage, 'f');
    while (write(f, block.data(), block.size()) > 0) {
    }
    close(f);
  }
  ~FullTwinsDir() {
    if (mounted_) (void)!system(("umount -l " + dir_).c_str());
  }
  bool filled() const { return mounted_; }
  bool Free() { return unlink((dir_ + "/filler").c_str()) == 0; }

 private:
  const std::string dir_;
  bool mounted_ = false;
};

TEST(Faults, a_node_that_cannot_store_twins_never_overwrites_other_nodes_bytes) {
  TestCluster c(3, 1000, kNoAutoMigrate);
  ASSERT_EQ(c.Start(), "");
  {
    int fd = open(c.path(0, "seg").c_str(), O_RDWR | O_CREAT, 0644);  // owned by node 0
    ASSERT_EQ(pwrite(fd, std::string(kPage, '.').data(), kPage, 0), static_cast<ssize_t>(kPage));
    close(fd);
  }
  // Node 1's twins live on a small file system, filled up.
  FullTwinsDir full(c.node(1));
  ASSERT_TRUE(full.filled());
  // Node 1 stores into the page (faulting it in) and leaves it dirty.
  int stored[2], go[2];
  ASSERT_EQ(pipe(stored), 0);
  ASSERT_EQ(pipe(go), 0);
  const std::string path1 = c.path(1, "seg");
  pid_t child = fork();
  if (child == 0) {
    int fd = open(path1.c_str(), O_RDWR);
    char* p = static_cast<char*>(mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    if (p == MAP_FAILED) _exit(10);
    p[0] = 'A';  // SIGBUS if the page cannot be cached
    char x = 1;
    if (write(stored[1], &x, 1) != 1 || read(go[0], &x, 1) != 1) _exit(11);
    msync(p, kPage, MS_SYNC);
    _exit(0);
  }
  close(stored[1]);
  close(go[0]);
  char x;
  const bool cached = read(stored[0], &x, 1) == 1;  // false: the child died of SIGBUS
  // Node 2 writes another byte of the page; its release invalidates node 1's copy.
  {
    int fd = open(c.path(2, "seg").c_str(), O_RDWR);
    ASSERT_EQ(pwrite(fd, "B", 1, 100), 1);
    ASSERT_EQ(fsync(fd), 0);
    close(fd);
  }
  x = 1;
  if (cached) {
    EXPECT_EQ(write(go[1], &x, 1), 1);
  }
  close(go[1]);
  close(stored[0]);
  int status = 0;
  ASSERT_TRUE(WaitForExit(child, 30s, &status));
  for (int n = 0; n < 3; n++) {
    int f = open(c.path(n, "seg").c_str(), O_RDONLY);
    char b = 0;
    EXPECT_EQ(pread(f, &b, 1, 100), 1);
    close(f);
    EXPECT_EQ(b, 'B') << "node 2's acknowledged byte was overwritten, seen through node " << n;
  }
  // With room again, node 1 caches and writes as usual.
  ASSERT_TRUE(full.Free());
  int fd = open(path1.c_str(), O_RDWR);
  ASSERT_EQ(pwrite(fd, "C", 1, 200), 1);
  ASSERT_EQ(fsync(fd), 0);
  char b = 0;
  EXPECT_EQ(pread(fd, &b, 1, 100), 1);
  EXPECT_EQ(b, 'B');
  close(fd);
}

// The owner's own kernel holds a page that another node's write-back is about
// to change: the owner saves the page as its kernel read it (its twin), so that
// its own later write-back sends only what its writers changed. Seen before:
// with the owner's disk full the twin was not kept, the failure only logged, and
// the owner's write-back (forced by the round of the other node's write) sent
// the page's old bytes back over the other node's acknowledged byte. A write
// that needs a twin the owner cannot keep gets ENOSPC; nothing acknowledged is
// lost, and with room again it goes through.
TEST(Faults, an_owner_that_cannot_keep_its_own_twin_refuses_the_write_and_loses_nothing) {
  TestCluster c(2, 3000, kNoAutoMigrate);
  ASSERT_EQ(c.Start(), "");
  {
    int fd = open(c.path(0, "seg").c_str(), O_RDWR | O_CREAT, 0644);  // owned by node 0
    ASSERT_EQ(pwrite(fd, std::string(kPage, '.').data(), kPage, 0), static_cast<ssize_t>(kPage));
    close(fd);
  }
  FullTwinsDir full(c.node(0));
  ASSERT_TRUE(full.filled());
  // A process on the owner stores into the page and leaves it dirty.
  int stored[2], go[2], synced[2];
  ASSERT_EQ(pipe(stored), 0);
  ASSERT_EQ(pipe(go), 0);
  ASSERT_EQ(pipe(synced), 0);
  const std::string path0 = c.path(0, "seg");
  pid_t child = fork();
  if (child == 0) {
    close(stored[0]);
    close(go[1]);
    close(synced[0]);
    int fd = open(path0.c_str(), O_RDWR);
    char* p = static_cast<char*>(mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    if (p == MAP_FAILED) _exit(10);
    p[0] = 'A';
    char x = 1;
    if (write(stored[1], &x, 1) != 1 || read(go[0], &x, 1) != 1) _exit(11);
    x = msync(p, kPage, MS_SYNC) == 0 ? 1 : 0;
    _exit(write(synced[1], &x, 1) == 1 ? 0 : 12);
  }
  ScopedKill kill_child{child};
  close(stored[1]);
  close(go[0]);
  close(synced[1]);
  char x = 0;
  ASSERT_EQ(read(stored[0], &x, 1), 1);
  // Node 1 writes another byte of the page: acknowledged when pwrite and
  // fsync returned 0; refused, it must be ENOSPC.
  int fd1 = open(c.path(1, "seg").c_str(), O_RDWR);
  ASSERT_GE(fd1, 0);
  const bool acked = pwrite(fd1, "B", 1, 100) == 1 && fsync(fd1) == 0;
  const int err = errno;
  close(fd1);
  if (!acked) {
    EXPECT_EQ(err, ENOSPC) << strerror(err);
  }
  EXPECT_EQ(write(go[1], &x, 1), 1);
  close(go[1]);
  char child_synced = 0;
  const bool answered = read(synced[0], &child_synced, 1) == 1;
  close(stored[0]);
  close(synced[0]);
  int status = 0;
  ASSERT_TRUE(WaitForExit(child, 30s, &status));
  EXPECT_TRUE(answered);
  for (int n = 0; n < 2; n++) {
    int f = open(c.path(n, "seg").c_str(), O_RDONLY);
    char b[101] = {};
    EXPECT_EQ(pread(f, b, sizeof b, 0), static_cast<ssize_t>(sizeof b));
    close(f);
    if (acked) {
      EXPECT_EQ(b[100], 'B') << "node 1's acknowledged byte was overwritten, seen through node " << n;
    }
    if (child_synced) {
      EXPECT_EQ(b[0], 'A') << "the owner's acknowledged store was lost, seen through node " << n;
    }
  }
  // With room again, node 1's write goes through.
  ASSERT_TRUE(full.Free());
  fd1 = open(c.path(1, "seg").c_str(), O_RDWR);
  ASSERT_EQ(pwrite(fd1, "C", 1, 200), 1);
  ASSERT_EQ(fsync(fd1), 0);
  close(fd1);
  int f = open(path0.c_str(), O_RDONLY);
  char b = 0;
  EXPECT_EQ(pread(f, &b, 1, 200), 1);
  close(f);
  EXPECT_EQ(b, 'C');
}

// The metadata node's state dir fills up (a real ENOSPC from its file system).
// Seen before: Debian's RocksDB aborted the daemon with an assertion on the
// write after the one that failed, and every namespace operation of every node
// failed from then on. The operation that needed space gets ENOSPC, the daemon
// stays up and serves what needs no space, and once space is freed it works
// again with everything acknowledged still there, also after a restart.
TEST(Faults, a_full_metadata_disk_gives_enospc_keeps_the_node_up_and_resumes) {
  TestCluster c(2, 3000, kNoAutoMigrate);
  const std::string meta = c.node(0).state_dir() + "/meta";
  ASSERT_EQ(system(("mkdir -p " + meta + " && mount -t tmpfs -o size=48m cshm-test-meta " + meta).c_str()), 0);
  struct Unmount {
    std::string dir;
    ~Unmount() { (void)!system(("umount -l " + dir).c_str()); }
  } unmount{meta};
  ASSERT_EQ(c.Start(), "");
  const pid_t meta_pid = c.node(0).pid();
  // Another program leaves 4 MiB above the headroom the store keeps.
  const std::string filler = meta + "/filler";
  {
    struct statvfs v;
    ASSERT_EQ(statvfs(meta.c_str(), &v), 0);
    const uint64_t keep = store::MetaStore::Headroom() + (4 << 20);
    const uint64_t free_bytes = static_cast<uint64_t>(v.f_bavail) * v.f_frsize;
    ASSERT_GT(free_bytes, keep);
    int f = open(filler.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    std::string block(1 << 16, 'f');
    for (uint64_t left = free_bytes - keep; left > 0;) {
      const size_t n = std::min<uint64_t>(left, block.size());
      ASSERT_EQ(write(f, block.data(), n), static_cast<ssize_t>(n));
      left -= n;
    }
    close(f);
  }
  // Node 1 creates files with large xattrs until the metadata node refuses.
  const std::string pad(60000, 'x');
  std::vector<std::string> acked;
  int err = 0;
  for (int i = 0; i < 2000 && err == 0; i++) {
    const std::string name = "f" + std::to_string(i);
    int fd = open(c.path(1, name).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      err = errno;
      break;
    }
    close(fd);
    if (setxattr(c.path(1, name).c_str(), "user.pad", pad.data(), pad.size(), 0) != 0) {
      err = errno;
      break;
    }
    acked.push_back(name);
  }
  ASSERT_EQ(err, ENOSPC) << strerror(err) << " after " << acked.size() << " files";
  ASSERT_FALSE(acked.empty());
  // The other program takes the rest (RocksDB may free its old log files
  // meanwhile, which would let small writes in again).
  {
    int f = open(filler.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    std::string block(1 << 16, 'f');
    while (write(f, block.data(), block.size()) > 0) {
    }
    close(f);
  }
  // Full, but up: it still answers what needs no space, on both nodes.
  ASSERT_FALSE(ProcessGone(meta_pid)) << "the metadata node died: " << c.node(0).StderrText();
  struct stat st;
  EXPECT_EQ(stat(c.path(1, acked.front()).c_str(), &st), 0) << strerror(errno);
  EXPECT_EQ(stat(c.path(0, acked.back()).c_str(), &st), 0) << strerror(errno);
  EXPECT_EQ(mkdir(c.path(1, "d").c_str(), 0755), -1);
  EXPECT_EQ(errno, ENOSPC);
  // Space again: namespace operations work again, within a deadline.
  ASSERT_EQ(unlink(filler.c_str()), 0);
  EXPECT_TRUE(WaitFor([&] { return mkdir(c.path(1, "d").c_str(), 0755) == 0; }, 30s))
      << "the metadata store did not resume: " << strerror(errno) << "\n" << c.node(0).StderrText();
  ASSERT_FALSE(ProcessGone(meta_pid)) << "the metadata node died: " << c.node(0).StderrText();
  auto all_there = [&](int n) {
    std::string got(pad.size(), '\0');
    for (const std::string& name : acked) {
      ssize_t len = getxattr(c.path(n, name).c_str(), "user.pad", got.data(), got.size());
      if (len != static_cast<ssize_t>(pad.size()) || got != pad) return name;
    }
    return std::string();
  };
  EXPECT_EQ(all_there(1), "") << "an acknowledged file or xattr is gone";
  c.node(0).Stop();
  ASSERT_EQ(c.StartNode(0), "");
  EXPECT_TRUE(WaitFor([&] { return stat(c.path(1, "d").c_str(), &st) == 0; }, 30s));
  EXPECT_EQ(all_there(0), "") << "an acknowledged file or xattr is gone after a restart";
  EXPECT_EQ(all_there(1), "");
}

// A node owns many more segments than it may hold descriptors. Seen before:
// two descriptors per segment for ever (its page file and a twin file made
// even on the owner), so the node failed with EMFILE at RLIMIT_NOFILE/2
// segments and then could not accept connections. Node 1 runs with a hard
// limit of 256 descriptors and owns 1,000 segments, each written there and
// read through node 0.
TEST(Faults, a_node_owns_more_segments_than_it_may_hold_descriptors) {
  TestCluster c(2, 3000, kNoAutoMigrate);
  ASSERT_EQ(c.StartNode(0), "");
  c.node(1).set_nofile_limit(256);
  ASSERT_EQ(c.StartNode(1), "");
  constexpr int kSegments = 1000;
  auto body = [](int i) { return "segment " + std::to_string(i) + " of node 1\n"; };
  for (int i = 0; i < kSegments; i++) {
    const std::string data = body(i);
    int fd = open(c.path(1, "s" + std::to_string(i)).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0) << "segment " << i << ": " << strerror(errno);
    ASSERT_EQ(pwrite(fd, data.data(), data.size(), 0), static_cast<ssize_t>(data.size()))
        << "segment " << i << ": " << strerror(errno);
    ASSERT_EQ(close(fd), 0);
  }
  for (int n : {0, 1}) {
    for (int i = 0; i < kSegments; i++) {
      const std::string want = body(i);
      int fd = open(c.path(n, "s" + std::to_string(i)).c_str(), O_RDONLY | O_CLOEXEC);
      ASSERT_GE(fd, 0) << "node " << n << " segment " << i << ": " << strerror(errno);
      std::string got(want.size() + 1, '\0');
      ASSERT_EQ(pread(fd, got.data(), got.size(), 0), static_cast<ssize_t>(want.size()))
          << "node " << n << " segment " << i << ": " << strerror(errno);
      close(fd);
      got.resize(want.size());
      ASSERT_EQ(got, want) << "node " << n;
    }
  }
  // Node 1 still takes connections and serves: a write through node 0.
  int fd = open(c.path(0, "s7").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(pwrite(fd, "S", 1, 0), 1);
  EXPECT_EQ(fsync(fd), 0);
  close(fd);
  size_t open_fds = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(c.node(1).pid()) + "/fd"))
    open_fds++;
  EXPECT_LE(open_fds, 256u);
}

// Per-inode state does not grow with every segment ever touched. Seen
// before: a twin file (and entries in the cluster's maps) stayed for every
// segment a node had ever read, after its kernel had long forgotten it.
// Node 1 reads 50 segments of node 0; the kernel drops its inodes; their
// twin files go; the segments still read and write correctly afterwards.
TEST(Faults, what_a_node_keeps_for_a_segment_goes_when_its_kernel_forgets_it) {
  TestCluster c(2, 3000, kNoAutoMigrate);
  ASSERT_EQ(c.Start(), "");
  constexpr int kSegments = 50;
  for (int i = 0; i < kSegments; i++) {
    std::ofstream(c.path(0, "s" + std::to_string(i))) << "segment " << i;  // owned by node 0
  }
  const std::string twins = c.node(1).state_dir() + "/twins";
  auto twin_files = [&] {
    size_t n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(twins)) n++;
    return n;
  };
  for (int i = 0; i < kSegments; i++) {  // opened writable: what the kernel caches then has a twin
    int fd = open(c.path(1, "s" + std::to_string(i)).c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    char b[32];
    ASSERT_GT(pread(fd, b, sizeof(b), 0), 0);
    close(fd);
  }
  ASSERT_GE(twin_files(), static_cast<size_t>(kSegments));
  EXPECT_TRUE(WaitFor(
      [&] {
        std::ofstream("/proc/sys/vm/drop_caches") << "2";  // unused dentries and inodes: FUSE FORGETs
        return twin_files() == 0;
      },
      30s))
      << twin_files() << " twin files left after the kernel forgot every inode";
  // Read and written again, correctly, from both nodes.
  int fd = open(c.path(1, "s3").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, "S", 1, 0), 1);
  ASSERT_EQ(fsync(fd), 0);
  close(fd);
  for (int n : {0, 1}) {
    std::ifstream in(c.path(n, "s3"));
    std::string got((std::istreambuf_iterator<char>(in)), {});
    EXPECT_EQ(got, "Segment 3") << "node " << n;
  }
}

// The kernel asks for security.capability before every write(2). Only user.*
// xattrs exist, so that is answered without the metadata node: a write to a
// file its own node owns must not wait for an unresponsive metadata node
// (here stopped, so that its requests would hang until the deadline of 20 s).
TEST(Faults, a_write_to_a_file_owned_here_does_not_wait_for_the_metadata_node) {
  TestCluster c(2, 20000, kNoAutoMigrate);
  ASSERT_EQ(c.Start(), "");
  int fd = open(c.path(1, "local").c_str(), O_RDWR | O_CREAT, 0644);  // owned by node 1
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, "first", 5, 0), 5);
  // Settled first: for a lease after its start, node 1's releases also drop
  // the pages on every node that has not yet said it holds nothing of an
  // older node 1 (kIncarnationSeen), and may wait for one that stopped before
  // saying so. Its lock grace ends with the same word, so a lock granted
  // means node 0 has said it.
  struct flock whole {};
  whole.l_type = F_WRLCK;
  whole.l_whence = SEEK_SET;
  ASSERT_TRUE(WaitFor([&] { return fcntl(fd, F_SETLK, &whole) == 0; }, 30s)) << "node 1's grace never ended";
  whole.l_type = F_UNLCK;
  ASSERT_EQ(fcntl(fd, F_SETLK, &whole), 0);
  const pid_t meta = c.node(0).pid();
  ASSERT_EQ(kill(meta, SIGSTOP), 0);
  ScopedResume resume{meta};
  pid_t child = fork();
  if (child == 0) _exit(pwrite(fd, "again", 5, 0) == 5 ? 0 : 1);
  int status = 0;
  EXPECT_TRUE(WaitForExit(child, 5s, &status)) << "a write to a file owned here waited for the stopped metadata node";
  kill(meta, SIGCONT);
  if (!WaitForExit(child, 30s, &status)) kill(child, SIGKILL);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  char got[5];
  EXPECT_EQ(pread(fd, got, 5, 0), 5);
  EXPECT_EQ(std::string(got, 5), "again");
  close(fd);
}

// Writers on nodes 1 and 2 append checksummed records to a segment owned by
// node 0, each msync'ed; `victim`'s daemon is killed with SIGKILL in the
// middle and restarted. Every record whose msync returned must be intact,
// read through every node. Returns the number of records checked.
// True when a thread of `pid` is inside an invalidation notify in the kernel.
bool InsideNotify(pid_t pid) {
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  for (const auto& t : std::filesystem::directory_iterator(tasks, ec)) {
    std::ifstream in(t.path() / "stack");
    const std::string stack((std::istreambuf_iterator<char>(in)), {});
    if (stack.find("fuse_reverse_inval_inode") != std::string::npos) return true;
  }
  return false;
}

TEST(Faults, a_daemon_killed_inside_an_invalidation_still_dies_and_frees_its_mount) {
  if (!std::ifstream("/proc/self/stack")) GTEST_SKIP() << "no /proc/PID/stack to see the notify";
  TestCluster c(3, 3000, kNoAutoMigrate);
  ASSERT_EQ(c.StartNode(0), "");
  // Node 1 holds a page's folio locked for 6 s before it asks for the page.
  ASSERT_EQ(c.StartNode(1, {"CSHM_TEST_SLOW_FETCH_MS=6000"}), "");
  ASSERT_EQ(c.StartNode(2), "");
  const pid_t daemon = c.node(1).pid();
  {
    std::ofstream f(c.path(0, "wedge"), std::ios::binary);
    f << std::string(4 * kPage, 'a');
  }
  // Node 1 caches page 1 (it joins the copyset) and its kernel forgets it.
  int fd1 = open(c.path(1, "wedge").c_str(), O_RDONLY);
  ASSERT_GE(fd1, 0);
  std::string buf(kPage, '\0');
  ASSERT_EQ(pread(fd1, buf.data(), kPage, kPage), static_cast<ssize_t>(kPage));
  ASSERT_EQ(posix_fadvise(fd1, 0, 0, POSIX_FADV_DONTNEED), 0);
  // A read on node 1 locks page 1's folio; its fetch waits in the seam.
  pid_t reader = fork();
  if (reader == 0) {
    std::string got(kPage, '\0');
    _exit(pread(fd1, got.data(), kPage, kPage) == static_cast<ssize_t>(kPage) ? 0 : 1);
  }
  close(fd1);
  // Node 2 writes page 1 and releases it: the owner's round asks node 1 to
  // drop its copy, and node 1's notify waits for the folio the read holds.
  pid_t writer = fork();
  if (writer == 0) {
    int fd = open(c.path(2, "wedge").c_str(), O_RDWR);
    const std::string page(kPage, 'w');
    _exit(fd >= 0 && pwrite(fd, page.data(), kPage, kPage) == static_cast<ssize_t>(kPage) && fsync(fd) == 0 ? 0 : 1);
  }
  const bool wedged = WaitFor([&] { return InsideNotify(daemon); }, 5s);
  // kill -9 now: no thread is left to answer the read, so the notify never
  // returns unless the connection is aborted.
  kill(daemon, SIGKILL);
  const bool died = WaitFor([&] { return ProcessGone(daemon); }, 10s);
  int rstatus = -1, wstatus = -1;
  if (!died) {  // recover the machine before failing: abort it ourselves
    c.node(1).Stop();
  }
  EXPECT_TRUE(wedged) << "node 1 never waited inside the notify: the scenario did not happen";
  EXPECT_TRUE(died) << "node 1's daemon did not die within 10 s of kill -9";
  EXPECT_TRUE(WaitForExit(reader, 10s, &rstatus)) << "the read on node 1 hung";
  EXPECT_TRUE(WaitForExit(writer, 30s, &wstatus)) << "node 2's release hung";
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) << "node 2's write and fsync failed: " << wstatus;
  c.node(1).Kill9();  // reaps it and clears the dead mount
  std::ifstream l(c.node(1).state_dir() + "/cshmfs.log");
  const std::string log((std::istreambuf_iterator<char>(l)), {});
  EXPECT_NE(log.find("aborted its FUSE connection"), std::string::npos) << log;
  // Node 1 comes back and reads what node 2 released.
  ASSERT_EQ(c.StartNode(1), "");
  std::ifstream in(c.path(1, "wedge"), std::ios::binary);
  std::string back((std::istreambuf_iterator<char>(in)), {});
  ASSERT_EQ(back.size(), 4 * kPage);
  EXPECT_EQ(back.substr(kPage, kPage), std::string(kPage, 'w'));
}

int KillUnderWriters(int victim) {
  TestCluster c(3, 1500, kNoAutoMigrate);
  EXPECT_EQ(c.Start(), "");
  if (::testing::Test::HasFailure()) return 0;
  const int per_writer = 400;
  const size_t size = 3 * per_writer * sizeof(Record);
  {
    int fd = open(c.path(0, "log").c_str(), O_RDWR | O_CREAT, 0644);  // owned by node 0
    EXPECT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
    close(fd);
  }
  // Each acknowledged record (msync returned 0) is reported through a pipe.
  int acks[2];
  EXPECT_EQ(pipe(acks), 0);
  std::vector<pid_t> writers;
  for (int w = 1; w <= 2; w++) {
    const std::string path = c.path(w, "log");
    pid_t pid = fork();
    if (pid == 0) {
      close(acks[0]);
      int fd = open(path.c_str(), O_RDWR);
      auto* recs = static_cast<Record*>(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
      if (recs == MAP_FAILED) _exit(10);
      // Touching a page whose owner (or daemon) is down raises SIGBUS: that ends the writer.
      for (int i = 0; i < per_writer; i++) {
        Record& r = recs[w * per_writer + i];
        MakeRecord(r, static_cast<uint32_t>(w), static_cast<uint32_t>(i));
        if (msync(recs, size, MS_SYNC) != 0) _exit(0);  // the owner or this node's daemon is gone: stop
        uint32_t ack = static_cast<uint32_t>(w * per_writer + i);
        if (write(acks[1], &ack, sizeof(ack)) != sizeof(ack)) _exit(12);
      }
      _exit(0);
    }
    writers.push_back(pid);
  }
  close(acks[1]);
  // Let them get going, then kill the victim.
  std::vector<uint32_t> acked;
  uint32_t a;
  while (acked.size() < 100 && read(acks[0], &a, sizeof(a)) == sizeof(a)) acked.push_back(a);
  c.node(victim).Kill9();
  // Collect until both writers are done (each ends or dies within deadlines).
  pollfd p{acks[0], POLLIN, 0};
  auto deadline = std::chrono::steady_clock::now() + 120s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (poll(&p, 1, 200) > 0) {
      if (read(acks[0], &a, sizeof(a)) != sizeof(a)) break;  // both writers gone
      acked.push_back(a);
    }
  }
  close(acks[0]);
  for (pid_t pid : writers) EXPECT_TRUE(WaitForExit(pid, 30s)) << "a writer hung";
  EXPECT_EQ(c.StartNode(victim), "");
  if (::testing::Test::HasFailure()) return 0;
  // Every acknowledged record is intact, read through every node.
  for (int n = 0; n < 3; n++) {
    std::ifstream in(c.path(n, "log"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    EXPECT_EQ(bytes.size(), size) << "node " << n;
    if (bytes.size() != size) continue;
    const auto* recs = reinterpret_cast<const Record*>(bytes.data());
    int bad = 0;
    for (uint32_t i : acked) {
      const Record& r = recs[i];
      if (!Intact(r, i / per_writer, i % per_writer)) bad++;
    }
    EXPECT_EQ(bad, 0) << "acknowledged records lost or damaged, seen through node " << n << " (of "
                      << acked.size() << ")";
  }
  return static_cast<int>(acked.size());
}

TEST(Faults, kill_9_of_the_owner_under_writers_loses_no_acknowledged_record) {
  const int checked = KillUnderWriters(0);
  EXPECT_GE(checked, 100);
  ::testing::Test::RecordProperty("acknowledged_records", checked);
}

TEST(Faults, kill_9_of_a_writers_daemon_loses_no_acknowledged_record) {
  const int checked = KillUnderWriters(1);
  EXPECT_GE(checked, 100);
  ::testing::Test::RecordProperty("acknowledged_records", checked);
}

}  // namespace
}  // namespace cshm::testing
