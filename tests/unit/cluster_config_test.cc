#include "net/cluster_config.h"

#include <gtest/gtest.h>

#include <fstream>

#include "tests/support/temp_dir.h"

namespace cshm::net {
namespace {

using cshm::testing::TempDir;

class ClusterConfigTest : public ::testing::Test {
 protected:
  void SetUp() override { std::ofstream(dir_ / "secret") << "0123456789abcdef0123\n"; }
  Result<ClusterConfig> Parse(const std::string& body) {
    return ParseClusterConfig("[cluster]\nsecret_file = \"secret\"\n" + body, "c.toml", dir_.path());
  }
  std::string Error(const std::string& body) { return Parse(body).status().message(); }
  TempDir dir_;
};

TEST_F(ClusterConfigTest, ParsesNodesAndDefaults) {
  auto c = Parse("[[node]]\nid = 2\nhost = \"10.0.0.2\"\nport = 7402\n[[node]]\nid = 1\nhost = \"10.0.0.1\"\nport = 7401\n");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->nodes.size(), 2u);
  EXPECT_EQ(c->nodes[0].id, 1u);  // sorted
  EXPECT_EQ(c->metadata_node, 1u);  // lowest id
  EXPECT_EQ(c->secret, "0123456789abcdef0123");
  EXPECT_EQ(c->Find(2)->port, 7402);
  EXPECT_EQ(c->Find(3), nullptr);
  EXPECT_EQ(c->name_cache_ms, 1000u);
}

TEST_F(ClusterConfigTest, ANodeMayServeMetricsAtAnAddressThatIsChecked) {
  auto c = Parse("[[node]]\nid = 0\nhost = \"10.0.0.1\"\nport = 7400\nmetrics = \"10.0.0.1:9464\"\n"
                 "[[node]]\nid = 1\nhost = \"10.0.0.2\"\nport = 7400\n");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->Find(0)->metrics, "10.0.0.1:9464");
  EXPECT_EQ(c->Find(1)->metrics, "");  // off by default
  EXPECT_NE(Error("[[node]]\nid = 0\nhost = \"h\"\nport = 1\nmetrics = \"9464\"\n").find("node 0: bad metrics address '9464'"),
            std::string::npos);
  EXPECT_NE(Error("[[node]]\nid = 0\nhost = \"h\"\nport = 1\nmetrics = 9464\n").find("metrics must be a string"),
            std::string::npos);
}

TEST_F(ClusterConfigTest, EveryMistakeIsNamed) {
  const std::string n0 = "[[node]]\nid = 0\nhost = \"127.0.0.1\"\nport = 7400\n";
  EXPECT_NE(Error(n0 + n0).find("duplicate node id 0"), std::string::npos);
  EXPECT_NE(Error("").find("no [[node]]"), std::string::npos);
  EXPECT_NE(Error("[[node]]\nid = 1\nport = 1\n").find("node 1 needs host"), std::string::npos);
  EXPECT_NE(Error("[[node]]\nid = 1\nhost = \"h\"\nport = 70000\n").find("port"), std::string::npos);
  EXPECT_NE(Error(n0 + "[[node]]\nid = 1\nhost = \"127.0.0.1\"\nport = 7400\n").find("like another node"),
            std::string::npos);
  EXPECT_NE(Error("[[node]]\nid = 99\nhost = \"h\"\nport = 1\n").find("id = 0..63"), std::string::npos);
  EXPECT_NE(Error("nonsense = = 3").find("c.toml:"), std::string::npos);
  // Found by the fuzzer: a float where an integer belongs was undefined behaviour.
  auto huge = ParseClusterConfig("[cluster]\nsecret_file = \"secret\"\nrequest_timeout_ms = 1e51\n" + n0, "c.toml",
                                 dir_.path());
  EXPECT_NE(huge.status().message().find("must be an integer"), std::string::npos) << huge.status().message();
  for (const char* bad : {"-1", "60001", "1.5", "\"x\""}) {
    auto nc = ParseClusterConfig("[cluster]\nsecret_file = \"secret\"\nname_cache_ms = " + std::string(bad) + "\n" + n0,
                                 "c.toml", dir_.path());
    EXPECT_NE(nc.status().message().find("name_cache_ms must be an integer between 0 and 60000"), std::string::npos)
        << bad;
  }
  auto slow = ParseClusterConfig(
      "[cluster]\nsecret_file = \"secret\"\nrequest_timeout_ms = 1000\nname_cache_ms = 600\n" + n0, "c.toml",
      dir_.path());
  EXPECT_NE(slow.status().message().find("at least 500 below request_timeout_ms"), std::string::npos);
  auto nc = ParseClusterConfig("[cluster]\nsecret_file = \"secret\"\nname_cache_ms = 0\n" + n0, "c.toml", dir_.path());
  ASSERT_TRUE(nc.ok());
  EXPECT_EQ(nc->name_cache_ms, 0u);
  auto m = ParseClusterConfig("[cluster]\nsecret_file = \"secret\"\nmetadata_node = 5\n" + n0, "c.toml", dir_.path());
  EXPECT_NE(m.status().message().find("metadata_node 5"), std::string::npos);
}

TEST_F(ClusterConfigTest, SecretProblemsAreNamed) {
  auto missing = ParseClusterConfig("[cluster]\nsecret_file = \"nope\"\n", "c.toml", dir_.path());
  EXPECT_NE(missing.status().message().find("cannot read secret_file"), std::string::npos);
  std::ofstream(dir_ / "short") << "abc";
  auto short_secret = ParseClusterConfig("[cluster]\nsecret_file = \"short\"\n[[node]]\nid=0\nhost=\"h\"\nport=1\n",
                                         "c.toml", dir_.path());
  EXPECT_NE(short_secret.status().message().find("fewer than 16"), std::string::npos);
  EXPECT_NE(ParseClusterConfig("[[node]]\nid=0\n", "c.toml", "").status().message().find("[cluster]"),
            std::string::npos);
  // Found by the fuzzer: a directory as the secret aborted the daemon.
  auto dir = ParseClusterConfig("[cluster]\nsecret_file = \"/\"\n", "c.toml", dir_.path());
  EXPECT_NE(dir.status().message().find("not a regular file"), std::string::npos) << dir.status().message();
  EXPECT_NE(LoadClusterConfig("/").status().message().find("not a regular file"), std::string::npos);
}

}  // namespace
}  // namespace cshm::net
