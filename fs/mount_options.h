// The cshmfs command line: parsing and validation, free of FUSE so that it is
// unit-tested. Usage:
//   cshmfs [SOURCE] MOUNTPOINT [-f] [-o OPT[,OPT...]] [--state-dir DIR] [--log-level L] [--log-max-mb N] [--log-files N]
//          [--config FILE --node ID]
// SOURCE is accepted (and ignored) so that mount(8) can call us as a helper.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace cshm::fs {

struct MountOptions {
  std::string mountpoint;
  bool foreground = false;
  bool fuse_debug = false;
  std::string state_dir;  // empty: store::DefaultStateDir(mountpoint)
  std::string config;     // cluster config file; empty: a one-node cluster
  std::optional<uint32_t> node;  // this node's id in the config
  std::string log_level = "info";
  uint64_t log_max_mb = 64;  // the log file rotates at this size...
  size_t log_files = 4;      // ...keeping this many older ones
  std::optional<uint64_t> size_bytes;  // unset: half of RAM, as tmpfs
  std::optional<uint32_t> mode;
  std::optional<uint32_t> uid;
  std::optional<uint32_t> gid;
  std::string metrics;  // HOST:PORT for the Prometheus endpoint; empty: the config's, if any
  // Generic mount flags passed on to the kernel/libfuse (ro, nosuid, ...).
  std::vector<std::string> fuse_options;
  bool show_help = false;
  bool show_version = false;
  std::string help_text;
};

// Parses argv. Usage errors are kInvalid with a one-line message.
Result<MountOptions> ParseCommandLine(int argc, const char* const* argv);

// Applies one -o item ("size=1g", "mode=0755", "nosuid", ...).
Status ApplyMountOption(std::string_view item, MountOptions* out);

// tmpfs-style sizes: a byte count with an optional k/m/g/t suffix (powers of
// 1024), or a percentage of `total_ram`.
Result<uint64_t> ParseSize(std::string_view text, uint64_t total_ram);

uint64_t TotalRamBytes();

}  // namespace cshm::fs
