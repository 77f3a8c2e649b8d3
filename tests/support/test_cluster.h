// TestCluster: N cshmfs nodes on this machine (loopback, distinct ports,
// mount points and state dirs), one config and secret shared by all. Every
// node is a TestMount, so teardown unmounts and stops each daemon, also on
// failure.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tests/support/test_mount.h"

namespace cshm::testing {

class TestCluster {
 public:
  // `extra_config` is appended to the config file (e.g. a [migrate] table),
  // `cluster_keys` to its [cluster] table (e.g. "name_cache_ms = 0\n").
  explicit TestCluster(int nodes, int request_timeout_ms = 3000, const std::string& extra_config = "",
                       const std::string& cluster_keys = "");

  // Starts every node (node 0, the metadata node, first). "" or what failed.
  std::string Start();
  std::string StartNode(int i, const std::vector<std::string>& env = {});
  TestMount& node(int i) { return *mounts_[i]; }
  std::string path(int i, const std::string& name) { return *mounts_[i] / name; }
  const std::string& config_path() const { return config_; }
  int size() const { return static_cast<int>(mounts_.size()); }
  const TempDir& dir() const { return dir_; }

 private:
  TempDir dir_;
  std::string config_;
  std::vector<std::unique_ptr<TestMount>> mounts_;
};

}  // namespace cshm::testing
