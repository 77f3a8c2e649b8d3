#include "common/metrics.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>

#include "net/cluster_config.h"
#include "net/metrics_server.h"

namespace cshm::metrics {
namespace {

// Counters and histograms live in the process's registry (as in the daemon):
// names unique to this test.
Counter kTestCounter("cshm_test_things_total", "things counted by the test");
Histogram kTestLatency("cshm_test_latency_seconds", "how long the test's things took");

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) n++;
  return n;
}

TEST(Metrics, CountersAndHistogramsRenderInTheTextFormat) {
  kTestCounter.Add(3);
  kTestLatency.Observe(std::chrono::microseconds(75));   // into le=0.0001
  kTestLatency.Observe(std::chrono::milliseconds(30));   // into le=0.05
  kTestLatency.Observe(std::chrono::seconds(60));        // past every bound: +Inf only
  const std::string text = Registry::Default().Render();
  EXPECT_NE(text.find("# HELP cshm_test_things_total things counted by the test\n"
                      "# TYPE cshm_test_things_total counter\ncshm_test_things_total 3\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# TYPE cshm_test_latency_seconds histogram\n"), std::string::npos);
  // Buckets are cumulative and end with +Inf equal to the count.
  EXPECT_NE(text.find("cshm_test_latency_seconds_bucket{le=\"5e-05\"} 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("cshm_test_latency_seconds_bucket{le=\"0.0001\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("cshm_test_latency_seconds_bucket{le=\"0.025\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("cshm_test_latency_seconds_bucket{le=\"0.05\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("cshm_test_latency_seconds_bucket{le=\"20\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("cshm_test_latency_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("cshm_test_latency_seconds_count 3\n"), std::string::npos);
  EXPECT_NE(text.find("cshm_test_latency_seconds_sum 60.030075\n"), std::string::npos) << text;
}

TEST(Metrics, GaugesAreReadAtEachScrapeWithEscapedLabelsAndGoWithTheirOwner) {
  int owner = 0;
  double level = 1.5;
  Registry::Default().AddGauge(&owner, "cshm_test_level", "a level", [&] {
    return std::vector<Sample>{{{{"node", "1"}}, level}, {{{"path", "a\"b\\c\nd"}}, 2}};
  });
  std::string text = Registry::Default().Render();
  EXPECT_NE(text.find("# TYPE cshm_test_level gauge\n"), std::string::npos);
  EXPECT_NE(text.find("cshm_test_level{node=\"1\"} 1.5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("cshm_test_level{path=\"a\\\"b\\\\c\\nd\"} 2\n"), std::string::npos) << text;
  level = 7;
  EXPECT_NE(Registry::Default().Render().find("cshm_test_level{node=\"1\"} 7\n"), std::string::npos);
  // A second owner's samples join the same family: one HELP line.
  int other = 0;
  Registry::Default().AddGauge(&other, "cshm_test_level", "a level", [] { return std::vector<Sample>{{{{"node", "2"}}, 4}}; });
  text = Registry::Default().Render();
  EXPECT_EQ(Count(text, "# HELP cshm_test_level "), 1u);
  EXPECT_NE(text.find("cshm_test_level{node=\"2\"} 4\n"), std::string::npos);
  Registry::Default().RemoveGauges(&owner);
  Registry::Default().RemoveGauges(&other);
  EXPECT_EQ(Registry::Default().Render().find("cshm_test_level"), std::string::npos);
}

TEST(Metrics, ValuesAreSpelledAsPrometheusReadsThem) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(12637986816.0), "12637986816");
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(FormatValue(-1), "-1");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
}

TEST(MetricsServer, AddressesAreHostColonPort) {
  auto v4 = net::SplitHostPort("127.0.0.1:9464");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->first, "127.0.0.1");
  EXPECT_EQ(v4->second, 9464);
  auto v6 = net::SplitHostPort("[::1]:80");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->first, "::1");
  for (const char* bad : {"", "9464", "host:", ":80", "host:70000", "host:8o", "::1:80", "[::1]80", "[::1]:"})
    EXPECT_FALSE(net::SplitHostPort(bad).ok()) << bad;
}

TEST(MetricsServer, ATakenPortIsBusyAndABadAddressInvalid) {
  auto first = net::MetricsServer::Start("127.0.0.1:0", [] { return std::string(); });
  ASSERT_TRUE(first.ok()) << first.status().message();
  auto second = net::MetricsServer::Start("127.0.0.1:" + std::to_string((*first)->port()), [] { return std::string(); });
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Status::Code::kBusy) << second.status().message();
  EXPECT_EQ(net::MetricsServer::Start("no-port", [] { return std::string(); }).status().code(), Status::Code::kInvalid);
}

}  // namespace
}  // namespace cshm::metrics
