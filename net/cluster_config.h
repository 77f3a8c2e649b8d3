// The cluster config file (TOML), the same on every node:
//
//   [cluster]
//   secret_file = "/etc/cshm/secret"   # shared secret; peers that cannot prove it are refused
//   metadata_node = 0                  # optional; default: the lowest id
//   request_timeout_ms = 5000          # optional: the deadline of every request
//   heartbeat_ms = 1000                # optional: every connection says "alive" this often
//   lease_ms = 5000                    # optional: a peer silent this long is cut off:
//                                      #   its calls fail, its locks are released
//   name_cache_ms = 1000               # optional (default 1000, or half request_timeout_ms if less):
//                                      #   kernels cache names and directories' attributes
//                                      #   this long (0: not at all); a change waits at most this
//                                      #   (plus 0.2 s) for a node that cannot be reached;
//                                      #   at least 500 below request_timeout_ms
//   [migrate]                          # optional: automatic migration
//   enabled = true
//   half_life_ms = 5000                # decay of the access rates
//   ratio = 2.0                        # a node must out-access all others together by this
//   min_rate = 50                      # pages per second, at least
//   cooldown_ms = 10000                # between two moves of one segment
//   check_ms = 500
//   [[node]]
//   id = 0
//   host = "127.0.0.1"
//   port = 7400
//   metrics = "127.0.0.1:9464"         # optional: serve Prometheus metrics there
//
// Load() checks everything a user can get wrong and says what and where in
// one line.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace cshm::net {

constexpr uint32_t kMaxNodes = 64;  // copysets are 64-bit masks

struct NodeConfig {
  uint32_t id = 0;
  std::string host;
  uint16_t port = 0;
  std::string metrics;  // HOST:PORT of its Prometheus endpoint; empty: none
};

struct ClusterConfig {
  std::vector<NodeConfig> nodes;  // sorted by id
  std::string secret;
  uint32_t metadata_node = 0;
  uint32_t request_timeout_ms = 5000;
  uint32_t heartbeat_ms = 1000;
  uint32_t lease_ms = 5000;
  uint32_t name_cache_ms = 1000;
  struct Migrate {
    bool enabled = true;
    double half_life_s = 5.0;
    double ratio = 2.0;
    double min_rate = 50.0;
    double cooldown_s = 10.0;
    double check_s = 0.5;
  } migrate;

  const NodeConfig* Find(uint32_t id) const;
};

// Parses TOML text. `origin` names the file in messages; relative secret_file
// paths are resolved against `base_dir`.
Result<ClusterConfig> ParseClusterConfig(std::string_view text, const std::string& origin,
                                         const std::string& base_dir);
// Splits HOST:PORT ("[::1]:9464" for IPv6); kInvalid with what is wrong.
Result<std::pair<std::string, uint16_t>> SplitHostPort(const std::string& address);

Result<ClusterConfig> LoadClusterConfig(const std::string& path);

}  // namespace cshm::net
