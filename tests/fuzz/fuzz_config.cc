// The cluster config: any text gives a config or a message, never a crash.
#include <cstdint>
#include <sys/stat.h>

#include <fstream>
#include <string>

#include "net/cluster_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    std::string d = "/tmp/cshm-fuzz-config";
    mkdir(d.c_str(), 0700);
    std::ofstream(d + "/secret") << "fuzzing-secret-0123456789";
    return d;
  }();
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = cshm::net::ParseClusterConfig(text, "fuzz.toml", dir);
  if (c.ok()) {
    if (c->nodes.empty() || !c->Find(c->metadata_node) || c->secret.size() < 16) __builtin_trap();
  } else if (c.status().message().empty()) {
    __builtin_trap();
  }
  return 0;
}
