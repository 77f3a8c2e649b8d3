#include "fs/mount_options.h"

#include <sys/sysinfo.h>

#include <CLI/CLI.hpp>
#include <charconv>

namespace cshm::fs {
namespace {

// Flags mount(8) passes or users write that mean something to the kernel or to
// libfuse; we pass them on.
constexpr std::string_view kPassThrough[] = {
    "ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "atime", "noatime",
    "relatime", "norelatime", "strictatime", "sync", "async", "dirsync", "allow_other",
    "default_permissions", "auto_unmount"};
// Accepted and ignored: meaningful to mount(8) or fstab only.
constexpr std::string_view kIgnored[] = {"defaults", "auto", "noauto", "user", "nouser", "users",
                                         "_netdev", "nofail"};

Result<uint32_t> ParseU32(std::string_view key, std::string_view v, int base) {
  uint32_t out = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out, base);
  if (ec != std::errc() || p != v.data() + v.size() || v.empty())
    return Invalid("bad value '" + std::string(v) + "' for -o " + std::string(key));
  return out;
}

}  // namespace

uint64_t TotalRamBytes() {
  struct sysinfo si {};
  if (sysinfo(&si) != 0) return 0;
  return static_cast<uint64_t>(si.totalram) * si.mem_unit;
}

Result<uint64_t> ParseSize(std::string_view text, uint64_t total_ram) {
  const Status bad = Invalid("bad size '" + std::string(text) +
                             "': give bytes with an optional k, m, g or t suffix, or a percentage of RAM");
  if (text.empty()) return bad;
  uint64_t n = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || p == text.data()) return bad;
  std::string_view suffix(p, text.data() + text.size() - p);
  if (suffix == "%") {
    if (n == 0 || n > 100) return bad;
    return total_ram / 100 * n;
  }
  int shift = 0;
  if (suffix.empty()) shift = 0;
  else if (suffix == "k" || suffix == "K") shift = 10;
  else if (suffix == "m" || suffix == "M") shift = 20;
  else if (suffix == "g" || suffix == "G") shift = 30;
  else if (suffix == "t" || suffix == "T") shift = 40;
  else return bad;
  if (n > (UINT64_MAX >> shift)) return bad;
  n <<= shift;
  if (n < 4096) return Invalid("size '" + std::string(text) + "' is smaller than one 4 KiB page");
  return n;
}

Status ApplyMountOption(std::string_view item, MountOptions* out) {
  if (item.empty()) return Status::Ok();
  const size_t eq = item.find('=');
  const std::string_view key = item.substr(0, eq);
  const std::string_view value = eq == std::string_view::npos ? std::string_view() : item.substr(eq + 1);
  if (key == "size") {
    CSHM_ASSIGN_OR_RETURN(uint64_t s, ParseSize(value, TotalRamBytes()));
    out->size_bytes = s;
  } else if (key == "mode") {
    CSHM_ASSIGN_OR_RETURN(uint32_t m, ParseU32(key, value, 8));
    if (m > 07777) return Invalid("bad value '" + std::string(value) + "' for -o mode: octal up to 7777");
    out->mode = m;
  } else if (key == "config") {  // mount(8) and fstab can only pass -o options
    if (value.empty()) return Invalid("-o config needs a file");
    out->config = std::string(value);
  } else if (key == "node") {
    CSHM_ASSIGN_OR_RETURN(uint32_t n, ParseU32(key, value, 10));
    out->node = n;
  } else if (key == "state_dir") {
    if (value.empty()) return Invalid("-o state_dir needs a directory");
    out->state_dir = std::string(value);
  } else if (key == "metrics") {
    if (value.empty()) return Invalid("-o metrics needs HOST:PORT");
    out->metrics = std::string(value);
  } else if (key == "uid") {
    CSHM_ASSIGN_OR_RETURN(out->uid, ParseU32(key, value, 10));
  } else if (key == "gid") {
    CSHM_ASSIGN_OR_RETURN(out->gid, ParseU32(key, value, 10));
  } else if (std::find(std::begin(kPassThrough), std::end(kPassThrough), item) != std::end(kPassThrough)) {
    out->fuse_options.emplace_back(item);
  } else if (std::find(std::begin(kIgnored), std::end(kIgnored), item) != std::end(kIgnored)) {
    // mount(8)-only
  } else {
    return Invalid("unknown mount option '" + std::string(item) +
                   "' (known: size=, mode=, uid=, gid=, config=, node=, state_dir=, metrics= and generic mount flags "
                   "such as ro, nosuid, noexec)");
  }
  return Status::Ok();
}

Result<MountOptions> ParseCommandLine(int argc, const char* const* argv) {
  MountOptions opts;
  CLI::App app{"cshmfs: a cluster shared-memory filesystem (one node: like tmpfs)", "cshmfs"};
  std::vector<std::string> positional;
  std::vector<std::string> o;
  app.add_option("positional", positional, "[SOURCE] MOUNTPOINT")->required()->expected(1, 2);
  app.add_flag("-f,--foreground", opts.foreground, "stay in the foreground");
  app.add_flag("-d,--debug-fuse", opts.fuse_debug, "log every FUSE request (implies -f)");
  app.add_option("-o", o, "mount options: size=BYTES[k|m|g|%], mode=OCTAL, uid=N, gid=N, ro, nosuid, ...");
  app.add_option("--state-dir", opts.state_dir, "where this node keeps its data (default: per mount point)");
  app.add_option("--metrics", opts.metrics, "serve Prometheus metrics at HOST:PORT (default: the config's, or none)");
  app.add_option("--config", opts.config, "cluster config file (TOML); without it, a one-node cluster");
  app.add_option("--node", opts.node, "this node's id in the cluster config");
  app.add_option("--log-level", opts.log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.add_option("--log-max-mb", opts.log_max_mb, "rotate the log file at this many MiB (default 64)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 20));
  app.add_option("--log-files", opts.log_files, "rotated log files kept (default 4)")->check(CLI::Range(0, 1000));
  app.add_flag("-V,--version", opts.show_version, "print the version");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    opts.show_help = true;
    opts.help_text = app.help();
    return opts;
  } catch (const CLI::ParseError& e) {
    if (opts.show_version) return opts;
    return Invalid(std::string(e.what()) + "; see cshmfs --help");
  }
  if (opts.show_version) return opts;
  opts.mountpoint = positional.back();
  if (opts.fuse_debug) opts.foreground = true;
  for (const std::string& group : o) {
    size_t start = 0;
    while (start <= group.size()) {
      size_t comma = group.find(',', start);
      if (comma == std::string::npos) comma = group.size();
      CSHM_RETURN_IF_ERROR(ApplyMountOption(std::string_view(group).substr(start, comma - start), &opts));
      start = comma + 1;
    }
  }
  if (!opts.config.empty() && !opts.node) return Invalid("--config needs --node ID (this node's id in the config)");
  if (opts.config.empty() && opts.node) return Invalid("--node needs --config FILE");
  return opts;
}

}  // namespace cshm::fs
