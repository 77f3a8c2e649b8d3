#include "net/cluster_config.h"

#include <algorithm>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <toml++/toml.h>

namespace cshm::net {
namespace {

// A small regular file's contents; a directory, a device or a huge file is
// an error with the reason (the fuzzer found that a directory aborted).
Result<std::string> ReadSmallFile(const std::string& path, size_t limit) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, path);
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return Invalid(path + " is not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) > limit) {
    close(fd);
    return Invalid(path + " is larger than " + std::to_string(limit) + " bytes");
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    ssize_t n = read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  close(fd);
  out.resize(got);
  return out;
}

}  // namespace

const NodeConfig* ClusterConfig::Find(uint32_t id) const {
  for (const NodeConfig& n : nodes)
    if (n.id == id) return &n;
  return nullptr;
}

Result<ClusterConfig> ParseClusterConfig(std::string_view text, const std::string& origin,
                                         const std::string& base_dir) {
  toml::table tbl;
  try {
    tbl = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << origin << ":" << e.source().begin.line << ": " << e.description();
    return Invalid(msg.str());
  }
  ClusterConfig c;
  auto bad = [&](const std::string& what) { return Invalid(origin + ": " + what); };

  const toml::table* cluster = tbl["cluster"].as_table();
  if (!cluster) return bad("missing [cluster] table (with secret_file)");
  auto secret_file = (*cluster)["secret_file"].value<std::string>();
  if (!secret_file || secret_file->empty()) return bad("[cluster] needs secret_file = \"PATH\"");
  std::string path = *secret_file;
  if (path[0] != '/' && !base_dir.empty()) path = base_dir + "/" + path;
  auto read = ReadSmallFile(path, 64 << 10);
  if (!read.ok()) return bad("cannot read secret_file " + read.status().message());
  std::string secret = std::move(*read);
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
  if (secret.size() < 16) return bad("secret_file " + path + " holds fewer than 16 bytes; make a longer secret");
  c.secret = secret;
  for (auto [key, field] : {std::pair{"request_timeout_ms", &c.request_timeout_ms},
                             {"heartbeat_ms", &c.heartbeat_ms}, {"lease_ms", &c.lease_ms}}) {
    auto node = (*cluster)[key];
    if (!node) continue;
    // value_exact: toml++'s value<int64_t>() casts a float without a range
    // check (the config fuzzer found 1e51 to be undefined behaviour).
    auto t = node.value_exact<int64_t>();
    if (!t || *t < 10 || *t > 600000) return bad(std::string(key) + " must be an integer between 10 and 600000");
    *field = static_cast<uint32_t>(*t);
  }
  if (c.lease_ms < 2 * c.heartbeat_ms) return bad("lease_ms must be at least twice heartbeat_ms");
  // A change waits up to name_cache_ms (+0.2 s) for a node it cannot reach;
  // the node that asked for it must still be waiting for the answer. Unset:
  // 1 s, or half the request deadline if that is shorter.
  c.name_cache_ms = std::min<uint32_t>(1000, c.request_timeout_ms / 2);
  if (auto node = (*cluster)["name_cache_ms"]) {
    auto t = node.value_exact<int64_t>();
    if (!t || *t < 0 || *t > 60000) return bad("name_cache_ms must be an integer between 0 and 60000");
    c.name_cache_ms = static_cast<uint32_t>(*t);
  }
  if (c.name_cache_ms > 0 && c.name_cache_ms + 500 > c.request_timeout_ms)
    return bad("name_cache_ms must be at least 500 below request_timeout_ms (a change waits that long for a node "
               "it cannot reach, and the node that made it waits request_timeout_ms)");

  if (const toml::table* m = tbl["migrate"].as_table()) {
    auto& mg = c.migrate;
    if (auto v = (*m)["enabled"].value<bool>()) mg.enabled = *v;
    auto ms = [&](const char* key, double* out, double lo, double hi) -> Status {
      if (auto v = (*m)[key].value<double>()) {
        if (*v < lo || *v > hi)
          return bad(std::string("[migrate] ") + key + " must be between " + std::to_string(lo) + " and " +
                     std::to_string(hi));
        *out = *v;
      }
      return Status::Ok();
    };
    double half = mg.half_life_s * 1000, cool = mg.cooldown_s * 1000, check = mg.check_s * 1000;
    CSHM_RETURN_IF_ERROR(ms("half_life_ms", &half, 10, 3600000));
    CSHM_RETURN_IF_ERROR(ms("cooldown_ms", &cool, 0, 3600000));
    CSHM_RETURN_IF_ERROR(ms("check_ms", &check, 10, 600000));
    CSHM_RETURN_IF_ERROR(ms("ratio", &mg.ratio, 1.0, 1000.0));
    CSHM_RETURN_IF_ERROR(ms("min_rate", &mg.min_rate, 0.0, 1e9));
    mg.half_life_s = half / 1000;
    mg.cooldown_s = cool / 1000;
    mg.check_s = check / 1000;
  }

  const toml::array* nodes = tbl["node"].as_array();
  if (!nodes || nodes->empty()) return bad("no [[node]] entries");
  std::set<uint32_t> ids;
  std::set<std::pair<std::string, uint16_t>> addrs;
  for (const toml::node& n : *nodes) {
    const toml::table* t = n.as_table();
    if (!t) return bad("[[node]] entries must be tables");
    auto id = (*t)["id"].value_exact<int64_t>();
    auto host = (*t)["host"].value<std::string>();
    auto port = (*t)["port"].value_exact<int64_t>();
    if (!id || *id < 0 || *id >= kMaxNodes) return bad("a [[node]] needs id = 0.." + std::to_string(kMaxNodes - 1));
    const std::string which = "node " + std::to_string(*id);
    if (!host || host->empty()) return bad(which + " needs host = \"ADDRESS\"");
    if (!port || *port <= 0 || *port > 65535) return bad(which + " needs port = 1..65535");
    if (!ids.insert(static_cast<uint32_t>(*id)).second) return bad("duplicate node id " + std::to_string(*id));
    if (!addrs.insert({*host, static_cast<uint16_t>(*port)}).second)
      return bad(which + " uses " + *host + ":" + std::to_string(*port) + " like another node");
    std::string metrics;
    if (auto node = (*t)["metrics"]) {
      auto m = node.value<std::string>();
      if (!m) return bad(which + ": metrics must be a string \"HOST:PORT\"");
      auto split = SplitHostPort(*m);
      if (!split.ok()) return bad(which + ": " + split.status().message());
      metrics = *m;
    }
    c.nodes.push_back(NodeConfig{static_cast<uint32_t>(*id), *host, static_cast<uint16_t>(*port), metrics});
  }
  std::sort(c.nodes.begin(), c.nodes.end(), [](auto& a, auto& b) { return a.id < b.id; });
  c.metadata_node = c.nodes.front().id;
  if (auto m = (*cluster)["metadata_node"].value_exact<int64_t>()) {
    if (*m < 0 || !c.Find(static_cast<uint32_t>(*m)))
      return bad("metadata_node " + std::to_string(*m) + " is not one of the [[node]] ids");
    c.metadata_node = static_cast<uint32_t>(*m);
  }
  return c;
}

Result<std::pair<std::string, uint16_t>> SplitHostPort(const std::string& address) {
  const Status bad = Invalid("bad metrics address '" + address + "': give HOST:PORT, e.g. 127.0.0.1:9464");
  std::string host, port;
  if (!address.empty() && address[0] == '[') {
    const size_t close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':') return bad;
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == std::string::npos || address.find(':') != colon) return bad;
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
  }
  uint32_t p = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (host.empty() || port.empty() || ec != std::errc() || end != port.data() + port.size() || p > 65535) return bad;
  return std::pair{host, static_cast<uint16_t>(p)};
}

Result<ClusterConfig> LoadClusterConfig(const std::string& path) {
  auto read = ReadSmallFile(path, 1 << 20);
  if (!read.ok()) return Invalid("cannot read config " + read.status().message());
  const std::string text = std::move(*read);
  std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
  return ParseClusterConfig(text, path, dir);
}

}  // namespace cshm::net
