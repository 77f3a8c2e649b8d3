#include "tests/support/test_cluster.h"

#include <sys/stat.h>

#include <fstream>

#include "tests/support/ports.h"

namespace cshm::testing {

TestCluster::TestCluster(int nodes, int request_timeout_ms, const std::string& extra_config,
                         const std::string& cluster_keys)
    : config_(dir_ / "cluster.toml") {
  chmod(dir_.path().c_str(), 0755);
  std::ofstream(dir_ / "secret") << "test-secret-" << getpid() << "-0123456789abcdef\n";
  std::ofstream cfg(config_);
  cfg << "[cluster]\nsecret_file = \"secret\"\nrequest_timeout_ms = " << request_timeout_ms << "\n" << cluster_keys;
  for (int i = 0; i < nodes; i++) {
    cfg << "[[node]]\nid = " << i << "\nhost = \"127.0.0.1\"\nport = " << FreePort() << "\n";
    mounts_.push_back(std::make_unique<TestMount>());
  }
  cfg << extra_config;
}

std::string TestCluster::StartNode(int i, const std::vector<std::string>& env) {
  std::string err = mounts_[i]->Start({"--config", config_, "--node", std::to_string(i)}, env);
  return err.empty() ? "" : "node " + std::to_string(i) + ": " + err;
}

std::string TestCluster::Start() {
  for (int i = 0; i < size(); i++)
    if (std::string err = StartNode(i); !err.empty()) return err;
  return "";
}

}  // namespace cshm::testing
