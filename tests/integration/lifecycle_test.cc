// Mount, unmount, restart and bad input: what a user sees from the command.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "fs/mountinfo.h"
#include "tests/support/test_mount.h"

namespace cshm::testing {
namespace {

using namespace std::chrono_literals;

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(Lifecycle, background_daemon_mounts_and_fusermount_unmounts_it) {
  TestMount m;
  ASSERT_EQ(m.StartBackground(), "");
  EXPECT_TRUE(m.mounted());
  pid_t pid = m.pid();
  EXPECT_NE(pid, getpid());
  std::ofstream(m / "hello") << "world";
  EXPECT_EQ(Slurp(m / "hello"), "world");
  CommandResult r = RunCommand({"fusermount3", "-u", m.mountpoint()}, 10s);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(WaitFor([&] { return ProcessGone(pid); }, 10s)) << "daemon did not exit after unmount";
  EXPECT_FALSE(m.mounted());
  EXPECT_NE(Slurp(m.state_dir() + "/cshmfs.log").find("mounted at"), std::string::npos);
}

TEST(Lifecycle, everything_written_back_survives_kill_9) {
  TestMount m;
  ASSERT_EQ(m.Start(), "");
  ASSERT_EQ(mkdir((m / "dir").c_str(), 0750), 0);
  std::ofstream(m / "dir/file") << "written with write(2)";
  ASSERT_EQ(symlink("dir/file", (m / "link").c_str()), 0);
  ASSERT_EQ(link((m / "dir/file").c_str(), (m / "hard").c_str()), 0);
  ASSERT_EQ(setxattr((m / "dir/file").c_str(), "user.k", "v", 1, 0), 0);
  ASSERT_EQ(chmod((m / "dir/file").c_str(), 0604), 0);
  // A mapping written and msynced.
  const size_t size = 1 << 20;
  int fd = open((m / "mapped").c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, size), 0);
  char* p = static_cast<char*>(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ASSERT_NE(p, MAP_FAILED);
  for (size_t i = 0; i < size; i += 512) p[i] = static_cast<char>(i / 512);
  ASSERT_EQ(msync(p, size, MS_SYNC), 0);
  munmap(p, size);
  close(fd);

  m.Kill9();
  EXPECT_FALSE(m.mounted());
  ASSERT_EQ(m.Start(), "");

  EXPECT_EQ(Slurp(m / "dir/file"), "written with write(2)");
  EXPECT_EQ(Slurp(m / "link"), "written with write(2)");
  struct stat st;
  ASSERT_EQ(stat((m / "hard").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 2u);
  EXPECT_EQ(st.st_mode & 07777, 0604u);
  ASSERT_EQ(stat((m / "dir").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  char v[8];
  ASSERT_EQ(getxattr((m / "dir/file").c_str(), "user.k", v, sizeof(v)), 1);
  std::string mapped = Slurp(m / "mapped");
  ASSERT_EQ(mapped.size(), size);
  for (size_t i = 0; i < size; i += 512) ASSERT_EQ(mapped[i], static_cast<char>(i / 512)) << i;
}

// Past FUSE's default 1% per-device dirty limit, stores to resident pages get
// ~500x slower; the daemon lifts it and raises readahead after INIT.
TEST(Lifecycle, mount_lifts_the_dirty_limit_and_raises_readahead) {
  TestMount m;
  ASSERT_EQ(m.Start(), "");
  auto mount = fs::FindMount(m.mountpoint());
  ASSERT_TRUE(mount);
  const std::string bdi = "/sys/class/bdi/" + mount->devnum + "/";
  if (!std::filesystem::exists(bdi + "strict_limit")) GTEST_SKIP() << "kernel without bdi strict_limit";
  // With -f the mount shows up before the daemon has served INIT and tuned
  // the device: wait (with a deadline) for it to finish.
  WaitFor([&] { return Slurp(bdi + "read_ahead_kb") == "4096\n"; }, 10s);
  EXPECT_EQ(Slurp(bdi + "strict_limit"), "0\n");
  EXPECT_EQ(Slurp(bdi + "max_ratio"), "100\n");
  EXPECT_EQ(Slurp(bdi + "read_ahead_kb"), "4096\n");
}

TEST(Lifecycle, root_directory_options) {
  TestMount m;
  ASSERT_EQ(m.Start({"-o", "mode=0750,uid=123,gid=456"}), "");
  struct stat st;
  ASSERT_EQ(stat(m.mountpoint().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  EXPECT_EQ(st.st_uid, 123u);
  EXPECT_EQ(st.st_gid, 456u);
}

TEST(Lifecycle, default_root_is_like_dev_shm) {
  TestMount m;
  ASSERT_EQ(m.Start(), "");
  struct stat st;
  ASSERT_EQ(stat(m.mountpoint().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 01777u);
}

// Bad input: one clear line, non-zero exit, nothing mounted.
struct BadStart {
  std::vector<std::string> args;  // after the binary
  int exit_code;
  std::string says;
};

void ExpectRefused(const TestMount& m, const BadStart& c) {
  std::vector<std::string> argv = {CshmfsBinary()};
  argv.insert(argv.end(), c.args.begin(), c.args.end());
  CommandResult r = RunCommand(argv, 20s);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, c.exit_code) << r.err;
  EXPECT_NE(r.err.find(c.says), std::string::npos) << "stderr: " << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
  EXPECT_FALSE(m.mounted());
}

TEST(Lifecycle, bad_command_lines_are_refused_clearly) {
  TestMount m;
  const std::string mp = m.mountpoint();
  const std::string sd = m.state_dir();
  ExpectRefused(m, {{mp, "--bogus"}, 2, "--bogus"});
  ExpectRefused(m, {{mp, "-o", "size=lots"}, 2, "bad size 'lots'"});
  ExpectRefused(m, {{mp, "-o", "weird"}, 2, "unknown mount option 'weird'"});
  ExpectRefused(m, {{m.dir() / "nowhere", "--state-dir", sd}, 1, "does not exist"});
  std::ofstream(m.dir() / "plainfile") << "x";
  ExpectRefused(m, {{m.dir() / "plainfile", "--state-dir", sd}, 1, "not a directory"});
  ExpectRefused(m, {{mp, "--state-dir", m.dir() / "plainfile/state"}, 1, "cannot create state dir"});
}

TEST(Lifecycle, cluster_config_mistakes_are_refused_clearly) {
  TestMount m;
  const std::string cfg = m.dir() / "c.toml";
  std::ofstream(m.dir() / "secret") << "0123456789abcdef0123\n";
  auto write_cfg = [&](const std::string& nodes) {
    std::ofstream(cfg) << "[cluster]\nsecret_file = \"secret\"\n" << nodes;
  };
  const std::string mp = m.mountpoint(), sd = m.state_dir();
  write_cfg("[[node]]\nid = 0\nhost = \"127.0.0.1\"\nport = 1\n[[node]]\nid = 0\nhost = \"127.0.0.1\"\nport = 2\n");
  ExpectRefused(m, {{mp, "--state-dir", sd, "--config", cfg, "--node", "0"}, 1, "duplicate node id 0"});
  write_cfg("[[node]]\nid = 0\nhost = \"127.0.0.1\"\nport = 1\n");
  ExpectRefused(m, {{mp, "--state-dir", sd, "--config", cfg, "--node", "5"}, 1, "node 5 is not in"});
  ExpectRefused(m, {{mp, "--state-dir", sd, "--config", cfg}, 2, "--config needs --node"});
  ExpectRefused(m, {{mp, "--state-dir", sd, "--config", m.dir() / "none.toml", "--node", "0"}, 1,
                    "cannot read config"});
  std::ofstream(cfg) << "[cluster]\nsecret_file = \"missing-secret\"\n[[node]]\nid = 0\nhost = \"127.0.0.1\"\nport = 1\n";
  ExpectRefused(m, {{mp, "--state-dir", sd, "--config", cfg, "--node", "0"}, 1, "cannot read secret_file"});
  // A port another process holds.
  int busy = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  ASSERT_EQ(bind(busy, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(listen(busy, 1), 0);
  ASSERT_EQ(getsockname(busy, reinterpret_cast<sockaddr*>(&a), &len), 0);
  write_cfg("[[node]]\nid = 0\nhost = \"127.0.0.1\"\nport = " + std::to_string(ntohs(a.sin_port)) + "\n");
  ExpectRefused(m, {{mp, "--state-dir", sd, "--config", cfg, "--node", "0"}, 1, "is in use"});
  close(busy);
}

TEST(Lifecycle, corrupt_state_dir_is_refused_with_advice) {
  TestMount m;
  std::filesystem::create_directories(m.state_dir() + "/meta");
  std::ofstream(m.state_dir() + "/meta/CURRENT") << "garbage\n";
  ExpectRefused(m, {{m.mountpoint(), "-f", "--state-dir", m.state_dir()}, 1, "move the state dir aside"});
  // Also through the background path.
  ExpectRefused(m, {{m.mountpoint(), "--state-dir", m.state_dir()}, 1, "move the state dir aside"});
}

TEST(Lifecycle, busy_mountpoint_and_busy_state_dir_are_refused) {
  TestMount m;
  ASSERT_EQ(m.Start(), "");
  CommandResult again = RunCommand({CshmfsBinary(), m.mountpoint(), "--state-dir", m.dir() / "other"}, 20s);
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("is busy"), std::string::npos) << again.err;

  TestMount second;
  CommandResult shared = RunCommand({CshmfsBinary(), second.mountpoint(), "--state-dir", m.state_dir()}, 20s);
  EXPECT_EQ(shared.exit_code, 1);
  EXPECT_NE(shared.err.find("in use by another cshmfs (pid " + std::to_string(m.pid()) + ")"),
            std::string::npos)
      << shared.err;
  EXPECT_FALSE(second.mounted());
  EXPECT_TRUE(m.mounted());  // the first mount is untouched
}

TEST(Lifecycle, dead_mount_is_explained) {
  TestMount m;
  ASSERT_EQ(m.Start(), "");
  const std::string mp = m.mountpoint();
  // Kill without clearing the mount: the next start must say what to do.
  kill(m.pid(), SIGKILL);
  ASSERT_TRUE(WaitForExit(m.pid(), 10s));
  CommandResult r = RunCommand({CshmfsBinary(), mp, "--state-dir", m.state_dir()}, 20s);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("fusermount3 -u"), std::string::npos) << r.err;
  m.Kill9();  // clears the dead mount
}

}  // namespace
}  // namespace cshm::testing
