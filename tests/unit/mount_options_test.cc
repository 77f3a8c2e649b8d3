#include "fs/mount_options.h"

#include <gtest/gtest.h>

namespace cshm::fs {
namespace {

Result<MountOptions> Parse(std::vector<const char*> args) {
  args.insert(args.begin(), "cshmfs");
  return ParseCommandLine(static_cast<int>(args.size()), args.data());
}

TEST(ParseSize, AcceptsTmpfsForms) {
  const uint64_t ram = 1000ull << 20;
  EXPECT_EQ(*ParseSize("4096", ram), 4096u);
  EXPECT_EQ(*ParseSize("64k", ram), 64u << 10);
  EXPECT_EQ(*ParseSize("3M", ram), 3u << 20);
  EXPECT_EQ(*ParseSize("2g", ram), 2ull << 30);
  EXPECT_EQ(*ParseSize("1t", ram), 1ull << 40);
  EXPECT_EQ(*ParseSize("50%", ram), 500ull << 20);
}

TEST(ParseSize, RejectsNonsense) {
  for (const char* bad : {"", "x", "10q", "-1", "0%", "101%", "100", "99999999999999999999", "1kk"})
    EXPECT_EQ(ParseSize(bad, 1 << 30).status().code(), Status::Code::kInvalid) << bad;
}

TEST(CommandLine, MountpointAndOptions) {
  auto o = Parse({"/mnt/x", "-f", "-o", "size=1m,mode=0755,uid=5", "-o", "gid=6,nosuid", "--state-dir", "/s"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->mountpoint, "/mnt/x");
  EXPECT_TRUE(o->foreground);
  EXPECT_EQ(*o->size_bytes, 1u << 20);
  EXPECT_EQ(*o->mode, 0755u);
  EXPECT_EQ(*o->uid, 5u);
  EXPECT_EQ(*o->gid, 6u);
  EXPECT_EQ(o->fuse_options, std::vector<std::string>{"nosuid"});
  EXPECT_EQ(o->state_dir, "/s");
}

TEST(CommandLine, TheMetricsAddressComesFromTheCommandLineOrAMountOption) {
  auto flag = Parse({"/mnt/x", "--metrics", "127.0.0.1:9464"});
  ASSERT_TRUE(flag.ok()) << flag.status().ToString();
  EXPECT_EQ(flag->metrics, "127.0.0.1:9464");
  auto o = Parse({"cshm", "/mnt/x", "-o", "metrics=[::1]:9464"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->metrics, "[::1]:9464");
  EXPECT_FALSE(Parse({"/mnt/x", "-o", "metrics="}).ok());
}

TEST(CommandLine, MountHelperFormTakesSourceFirst) {
  auto o = Parse({"cshm", "/mnt/x", "-o", "rw,defaults"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->mountpoint, "/mnt/x");
  EXPECT_EQ(o->fuse_options, std::vector<std::string>{"rw"});
}

TEST(CommandLine, ClusterOptionsAlsoAsMountOptionsForFstab) {
  auto o = Parse({"cshm", "/mnt/x", "-o", "rw,config=/etc/cshm/c.toml,node=2,state_dir=/var/lib/cshm/n2,_netdev"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->config, "/etc/cshm/c.toml");
  EXPECT_EQ(*o->node, 2u);
  EXPECT_EQ(o->state_dir, "/var/lib/cshm/n2");
  EXPECT_FALSE(Parse({"/mnt/x", "-o", "node=1"}).ok());
  EXPECT_FALSE(Parse({"/mnt/x", "-o", "config=/c.toml"}).ok());
}

TEST(CommandLine, UsageErrorsSayWhat) {
  auto unknown_flag = Parse({"/mnt/x", "--frobnicate"});
  EXPECT_EQ(unknown_flag.status().code(), Status::Code::kInvalid);
  EXPECT_NE(unknown_flag.status().message().find("frobnicate"), std::string::npos);
  auto unknown_o = Parse({"/mnt/x", "-o", "colour=red"});
  EXPECT_NE(unknown_o.status().message().find("unknown mount option 'colour=red'"), std::string::npos);
  EXPECT_FALSE(Parse({"/mnt/x", "-o", "mode=999"}).ok());
  EXPECT_FALSE(Parse({"/mnt/x", "-o", "uid=abc"}).ok());
  EXPECT_FALSE(Parse({"/mnt/x", "--log-level", "loud"}).ok());
  EXPECT_FALSE(Parse({}).ok());
  EXPECT_FALSE(Parse({"a", "b", "c"}).ok());
}

TEST(CommandLine, HelpAndVersion) {
  auto h = Parse({"--help"});
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->show_help);
  EXPECT_NE(h->help_text.find("--state-dir"), std::string::npos);
  auto v = Parse({"--version"});
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->show_version);
}

}  // namespace
}  // namespace cshm::fs
