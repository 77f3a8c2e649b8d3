// Black-box tests of one mounted cshmfs against what a program expects of
// /dev/shm: every test mounts its own filesystem and unmounts it in teardown.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <string>

#include "tests/support/test_mount.h"

namespace cshm::testing {
namespace {

using namespace std::chrono_literals;
constexpr uid_t kNobody = 65534;

class PosixTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(m_.Start(StartArgs()), ""); }
  virtual std::vector<std::string> StartArgs() { return {}; }

  std::string P(const std::string& name) { return m_ / name; }
  std::string Slurp(const std::string& path) {
    int fd = open(path.c_str(), O_RDONLY);
    if (fd < 0) return "<open failed: " + std::string(strerror(errno)) + ">";
    std::string s;
    char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) s.append(buf, static_cast<size_t>(n));
    close(fd);
    return s;
  }
  void Put(const std::string& path, const std::string& data, int flags = O_WRONLY | O_CREAT | O_TRUNC) {
    int fd = open(path.c_str(), flags, 0644);
    ASSERT_GE(fd, 0) << path << ": " << strerror(errno);
    ASSERT_EQ(write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    ASSERT_EQ(close(fd), 0);
  }
  // Runs fn as uid/gid nobody in a child; returns its exit code (the errno it saw).
  int AsNobody(const std::function<int()>& fn) {
    CommandResult r = RunInChild(
        [&] {
          if (setgid(kNobody) != 0 || setuid(kNobody) != 0) return 200;
          return fn();
        },
        10s);
    return r.exit_code;
  }

  TestMount m_;
};

TEST_F(PosixTest, create_excl_trunc_append) {
  int fd = open(P("f").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  ASSERT_GE(fd, 0);
  close(fd);
  EXPECT_EQ(open(P("f").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600), -1);
  EXPECT_EQ(errno, EEXIST);
  Put(P("f"), "hello world");
  Put(P("f"), "bye", O_WRONLY | O_TRUNC);
  EXPECT_EQ(Slurp(P("f")), "bye");
  Put(P("f"), "+more", O_WRONLY | O_APPEND);
  EXPECT_EQ(Slurp(P("f")), "bye+more");
  EXPECT_EQ(open(P("missing").c_str(), O_RDONLY), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST_F(PosixTest, pread_pwrite_sparse) {
  int fd = open(P("s").c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, "end", 3, 10 << 20), 3);
  ASSERT_EQ(pwrite(fd, "mid", 3, 5000), 3);
  struct stat st;
  ASSERT_EQ(fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, (10 << 20) + 3);
  char buf[8] = {};
  ASSERT_EQ(pread(fd, buf, 8, 4998), 8);
  EXPECT_EQ(std::string(buf, 8), std::string("\0\0mid\0\0\0", 8));
  ASSERT_EQ(pread(fd, buf, 8, (10 << 20)), 3);
  EXPECT_EQ(std::string(buf, 3), "end");
  close(fd);
  // Sparse: the 10 MiB hole costs no space.
  struct statvfs v;
  ASSERT_EQ(statvfs(m_.mountpoint().c_str(), &v), 0);
  EXPECT_LE((v.f_blocks - v.f_bfree) * v.f_frsize, 64u << 10);
}

TEST_F(PosixTest, ftruncate_up_and_down) {
  Put(P("t"), std::string(10000, 'x'));
  int fd = open(P("t").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 10), 0);
  ASSERT_EQ(ftruncate(fd, 20000), 0);
  close(fd);
  std::string s = Slurp(P("t"));
  ASSERT_EQ(s.size(), 20000u);
  EXPECT_EQ(s.substr(0, 10), std::string(10, 'x'));
  EXPECT_EQ(s.find('x', 10), std::string::npos);  // grown part reads zeros
}

TEST_F(PosixTest, mkdir_rmdir_readdir) {
  ASSERT_EQ(mkdir(P("d").c_str(), 0755), 0);
  EXPECT_EQ(mkdir(P("d").c_str(), 0755), -1);
  EXPECT_EQ(errno, EEXIST);
  std::set<std::string> want;
  for (int i = 0; i < 300; i++) {  // more than one readdir buffer
    std::string n = "entry-" + std::to_string(i);
    Put(P("d/" + n), "");
    want.insert(n);
  }
  DIR* d = opendir(P("d").c_str());
  ASSERT_NE(d, nullptr);
  std::set<std::string> got;
  while (dirent* e = readdir(d))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) got.insert(e->d_name);
  closedir(d);
  EXPECT_EQ(got, want);
  EXPECT_EQ(rmdir(P("d").c_str()), -1);
  EXPECT_EQ(errno, ENOTEMPTY);
  for (const auto& n : want) ASSERT_EQ(unlink(P("d/" + n).c_str()), 0);
  EXPECT_EQ(rmdir(P("d").c_str()), 0);
  struct stat st;
  EXPECT_EQ(stat(P("d").c_str(), &st), -1);
}

TEST_F(PosixTest, unlink_while_open_keeps_the_file_until_close) {
  Put(P("u"), std::string(1 << 20, 'u'));
  int fd = open(P("u").c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(unlink(P("u").c_str()), 0);
  struct stat st;
  EXPECT_EQ(stat(P("u").c_str(), &st), -1);
  ASSERT_EQ(fstat(fd, &st), 0);
  EXPECT_EQ(st.st_nlink, 0u);
  ASSERT_EQ(pwrite(fd, "still", 5, 0), 5);
  char buf[5];
  ASSERT_EQ(pread(fd, buf, 5, 0), 5);
  EXPECT_EQ(std::string(buf, 5), "still");
  struct statvfs before;
  ASSERT_EQ(statvfs(m_.mountpoint().c_str(), &before), 0);
  EXPECT_GE((before.f_blocks - before.f_bfree) * before.f_frsize, 1u << 20);
  close(fd);
  // The kernel forgets the inode soon after the last close; then its space is back.
  EXPECT_TRUE(WaitFor(
      [&] {
        struct statvfs v;
        return statvfs(m_.mountpoint().c_str(), &v) == 0 && v.f_blocks == v.f_bfree;
      },
      10s));
}

TEST_F(PosixTest, rename_replace_and_noreplace) {
  Put(P("a"), "A");
  Put(P("b"), "B");
  EXPECT_EQ(syscall(SYS_renameat2, AT_FDCWD, P("a").c_str(), AT_FDCWD, P("b").c_str(), RENAME_NOREPLACE), -1);
  EXPECT_EQ(errno, EEXIST);
  ASSERT_EQ(syscall(SYS_renameat2, AT_FDCWD, P("a").c_str(), AT_FDCWD, P("c").c_str(), RENAME_NOREPLACE), 0);
  ASSERT_EQ(rename(P("c").c_str(), P("b").c_str()), 0);
  EXPECT_EQ(Slurp(P("b")), "A");
  ASSERT_EQ(mkdir(P("d").c_str(), 0755), 0);
  ASSERT_EQ(rename(P("b").c_str(), P("d/b").c_str()), 0);
  EXPECT_EQ(Slurp(P("d/b")), "A");
  EXPECT_EQ(rename(P("d").c_str(), P("d/b/x").c_str()), -1);
  ASSERT_EQ(syscall(SYS_renameat2, AT_FDCWD, P("d").c_str(), AT_FDCWD, P("e").c_str(), RENAME_EXCHANGE), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST_F(PosixTest, hard_links_and_symlinks) {
  Put(P("orig"), "data");
  ASSERT_EQ(link(P("orig").c_str(), P("hard").c_str()), 0);
  struct stat a, b;
  ASSERT_EQ(stat(P("orig").c_str(), &a), 0);
  ASSERT_EQ(stat(P("hard").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(b.st_nlink, 2u);
  ASSERT_EQ(symlink("orig", P("sym").c_str()), 0);
  char target[64] = {};
  ASSERT_EQ(readlink(P("sym").c_str(), target, sizeof(target)), 4);
  EXPECT_STREQ(target, "orig");
  EXPECT_EQ(Slurp(P("sym")), "data");
  ASSERT_EQ(lstat(P("sym").c_str(), &a), 0);
  EXPECT_TRUE(S_ISLNK(a.st_mode));
}

TEST_F(PosixTest, chmod_chown_utimens_and_permission_checks) {
  Put(P("mine"), "secret");
  ASSERT_EQ(chmod(P("mine").c_str(), 0600), 0);
  struct stat st;
  ASSERT_EQ(stat(P("mine").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  timespec times[2] = {{1000000000, 5}, {1200000000, 7}};
  ASSERT_EQ(utimensat(AT_FDCWD, P("mine").c_str(), times, 0), 0);
  ASSERT_EQ(stat(P("mine").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 1200000000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 7);
  EXPECT_EQ(st.st_atim.tv_sec, 1000000000);
  const std::string path = P("mine");
  // Another user: cannot read a 0600 file, nor change its mode, owner or times.
  EXPECT_EQ(AsNobody([&] { return open(path.c_str(), O_RDONLY) < 0 ? errno : 0; }), EACCES);
  EXPECT_EQ(AsNobody([&] { return chmod(path.c_str(), 0666) < 0 ? errno : 0; }), EPERM);
  EXPECT_EQ(AsNobody([&] { return chown(path.c_str(), kNobody, kNobody) < 0 ? errno : 0; }), EPERM);
  EXPECT_EQ(AsNobody([&] { return utimensat(AT_FDCWD, path.c_str(), times, 0) < 0 ? errno : 0; }), EPERM);
  // Root gives it away; then the new owner may chmod it.
  ASSERT_EQ(chown(path.c_str(), kNobody, kNobody), 0);
  EXPECT_EQ(AsNobody([&] { return chmod(path.c_str(), 0640) < 0 ? errno : 0; }), 0);
  EXPECT_EQ(AsNobody([&] { return open(path.c_str(), O_RDONLY) < 0 ? errno : 0; }), 0);
  // The sticky root directory (1777, as /dev/shm): others cannot remove root's files.
  Put(P("roots"), "r");
  const std::string roots = P("roots");
  EXPECT_EQ(AsNobody([&] { return unlink(roots.c_str()) < 0 ? errno : 0; }), EPERM);
  // ...but may create their own.
  const std::string theirs = P("theirs");
  EXPECT_EQ(AsNobody([&] { return creat(theirs.c_str(), 0644) < 0 ? errno : 0; }), 0);
  ASSERT_EQ(stat(theirs.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kNobody);
}

TEST_F(PosixTest, statfs_reports_the_size_cap) {
  struct statvfs v;
  ASSERT_EQ(statvfs(m_.mountpoint().c_str(), &v), 0);
  EXPECT_GT(v.f_blocks, 0u);
  EXPECT_EQ(v.f_namemax, 255u);
}

TEST_F(PosixTest, user_xattrs) {
  Put(P("x"), "");
  const std::string x = P("x");
  ASSERT_EQ(setxattr(x.c_str(), "user.colour", "blue", 4, 0), 0);
  char buf[64];
  ASSERT_EQ(getxattr(x.c_str(), "user.colour", buf, sizeof(buf)), 4);
  EXPECT_EQ(std::string(buf, 4), "blue");
  EXPECT_EQ(getxattr(x.c_str(), "user.colour", buf, 2), -1);
  EXPECT_EQ(errno, ERANGE);
  EXPECT_EQ(setxattr(x.c_str(), "user.colour", "red", 3, XATTR_CREATE), -1);
  EXPECT_EQ(errno, EEXIST);
  ASSERT_EQ(listxattr(x.c_str(), buf, sizeof(buf)), 12);
  EXPECT_STREQ(buf, "user.colour");
  ASSERT_EQ(removexattr(x.c_str(), "user.colour"), 0);
  EXPECT_EQ(getxattr(x.c_str(), "user.colour", buf, sizeof(buf)), -1);
  EXPECT_EQ(errno, ENODATA);
}

TEST_F(PosixTest, fsync_and_fallocate) {
  int fd = open(P("fa").c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(fallocate(fd, 0, 0, 1 << 20), 0);
  struct stat st;
  ASSERT_EQ(fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, 1 << 20);
  ASSERT_EQ(fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 2 << 20), 0);
  ASSERT_EQ(fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, 1 << 20);
  ASSERT_EQ(write(fd, "abc", 3), 3);
  EXPECT_EQ(fsync(fd), 0);
  EXPECT_EQ(fdatasync(fd), 0);
  close(fd);
}

class SizeCapTest : public PosixTest {
  std::vector<std::string> StartArgs() override { return {"-o", "size=1m"}; }
};

TEST_F(SizeCapTest, write_past_the_cap_is_enospc_and_loses_nothing) {
  struct statvfs v;
  ASSERT_EQ(statvfs(m_.mountpoint().c_str(), &v), 0);
  EXPECT_EQ(v.f_blocks * v.f_frsize, 1u << 20);
  int fd = open(P("big").c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  std::string chunk(64 << 10, 'c');
  size_t written = 0;
  ssize_t n;
  while ((n = write(fd, chunk.data(), chunk.size())) > 0) written += static_cast<size_t>(n);
  EXPECT_EQ(n, -1);
  EXPECT_EQ(errno, ENOSPC);
  EXPECT_EQ(written, 1u << 20);
  close(fd);
  EXPECT_EQ(Slurp(P("big")), std::string(1 << 20, 'c'));
  // Freeing space makes room again.
  ASSERT_EQ(truncate(P("big").c_str(), 0), 0);
  Put(P("small"), "fits");
  EXPECT_EQ(Slurp(P("small")), "fits");
}

}  // namespace
}  // namespace cshm::testing
