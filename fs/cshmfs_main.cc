// cshmfs: mounts a cshm filesystem.
//
// Start-up order matters: everything that can fail with a user's mistake
// (options, mount point, state dir, store) is checked before the mount, and a
// daemon that goes to the background reports its start-up result to the parent
// through a pipe, so the command's exit status and message are the real ones.
// We fork before opening RocksDB (its threads do not survive fork), which is why
// we do not use fuse_daemonize().
#include <fcntl.h>
#include <malloc.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "common/log.h"
#include "common/metrics.h"
#include "fs/cluster.h"
#include "fs/connection_watch.h"
#include "fs/fuse_ops.h"
#include "fs/mount_options.h"
#include "fs/mountinfo.h"
#include "net/metrics_server.h"

namespace cshm::fs {
namespace {
// The test seams (fs/delay_seam.h), the only environment the daemon reads
// for its behaviour: the fault and migration tests start daemons with them.
TestSeams SeamsFromEnvironment() {
  auto ms = [](const char* var) {
    const char* v = getenv(var);
    return v != nullptr ? atoi(v) : 0;
  };
  TestSeams s;
  s.slow_fetch = {"CSHM_TEST_SLOW_FETCH_MS", ms("CSHM_TEST_SLOW_FETCH_MS")};
  s.slow_twin_patch = {"CSHM_TEST_SLOW_TWIN_PATCH_MS", ms("CSHM_TEST_SLOW_TWIN_PATCH_MS")};
  s.slow_invalidate = {"CSHM_TEST_SLOW_INVALIDATE_MS", ms("CSHM_TEST_SLOW_INVALIDATE_MS")};
  s.slow_migrate_chunk = {"CSHM_TEST_SLOW_MIGRATE_CHUNK_MS", ms("CSHM_TEST_SLOW_MIGRATE_CHUNK_MS")};
  s.die_in_migration = getenv("CSHM_TEST_DIE_IN_MIGRATION") != nullptr;
  s.net = net::FaultSeam::FromEnvironment();
  return s;
}


constexpr char kVersion[] = CSHM_VERSION;

// Checks that `path` is an existing directory nobody has mounted on.
Result<std::string> CheckMountpoint(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    if (errno == ENOTCONN)
      return Busy("mount point " + path + " is a dead FUSE mount (its daemon died); run 'fusermount3 -u " +
                  path + "' and mount again");
    if (errno == ENOENT) return NotFound("mount point " + path + " does not exist; create it with mkdir -p " + path);
    return Status::FromErrno(errno, "mount point " + path);
  }
  if (!S_ISDIR(st.st_mode)) return NotDir("mount point " + path + " is not a directory");
  char real[PATH_MAX];
  if (realpath(path.c_str(), real) == nullptr) return Status::FromErrno(errno, "mount point " + path);
  auto existing = FindMount(real);
  if (existing)
    return Busy("mount point " + std::string(real) + " is busy: " + existing->fstype +
                " is mounted there; unmount it first");
  return std::string(real);
}

// Past the per-device dirty limit, stores to resident pages get ~500x slower
// (DESIGN.md "What the kernel does"): lift FUSE's strict 1% limit for this mount
// and read ahead 4 MiB (four 1 MiB READs in flight: a remote owner streams
// faster). Best effort: a kernel without these knobs still works.
void TuneBdi(const std::string& mountpoint) {
  auto m = FindMount(mountpoint);
  if (!m) return;
  const std::string dir = "/sys/class/bdi/" + m->devnum + "/";
  for (auto [file, value] : {std::pair{"strict_limit", "0"}, {"max_ratio", "100"}, {"read_ahead_kb", "4096"}}) {
    std::ofstream f(dir + file);
    f << value;
    f.flush();
    if (!f) spdlog::info("could not set {}{} to {} (continuing with the kernel's default)", dir, file, value);
  }
}

// Every READ and fetch reply is a buffer of up to 1 MiB. glibc would hand
// those out as fresh mappings (or trim them back to the kernel) and every
// byte would page-fault and be zeroed again: measured, that was a third of
// the owner's time on a sequential read. Keep such buffers in the heap and
// the heap unreturned below 64 MiB.
void KeepBuffersMapped() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

void RaiseFdLimit() {
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// The part of start-up that runs in the daemon process. Reports to `report_fd`
// (-1 in the foreground) once mounted, then serves until unmounted.
int Serve(const MountOptions& opts, const std::string& mountpoint, int report_fd) {
  auto report = [&](const std::string& msg) {
    if (report_fd >= 0) {
      std::string line = msg + "\n";
      if (write(report_fd, line.data(), line.size()) < 0) { /* parent gone: nothing to tell */ }
      close(report_fd);
      report_fd = -1;
    } else if (msg != "OK") {
      fprintf(stderr, "cshmfs: %s\n", msg.c_str());
    }
  };

  FileSystemOptions fo;
  fo.state_dir = opts.state_dir.empty() ? store::DefaultStateDir(mountpoint) : opts.state_dir;
  fo.capacity_bytes = opts.size_bytes.value_or(TotalRamBytes() / 2);
  fo.root.mode = opts.mode;
  fo.root.uid = opts.uid;
  fo.root.gid = opts.gid;
  if (!opts.config.empty()) {
    auto cfg = net::LoadClusterConfig(opts.config);
    if (!cfg.ok()) {
      report(cfg.status().message());
      return 1;
    }
    if (!cfg->Find(*opts.node)) {
      report("node " + std::to_string(*opts.node) + " is not in " + opts.config + " (its [[node]] ids: " +
             [&] {
               std::string ids;
               for (auto& n : cfg->nodes) ids += (ids.empty() ? "" : ", ") + std::to_string(n.id);
               return ids;
             }() +
             ")");
      return 1;
    }
    fo.node_id = *opts.node;
    fo.cluster = std::move(*cfg);
  }
  fo.seams = SeamsFromEnvironment();
  auto fs = FileSystem::Open(fo);
  if (!fs.ok()) {
    report(fs.status().message());
    return 1;
  }
  if (Status s = InitLogging(opts.log_level, (*fs)->state_dir().log_file(), report_fd < 0, opts.log_max_mb << 20,
                             opts.log_files); !s.ok()) {
    report(s.message());
    return 1;
  }

  // The Prometheus endpoint: the command line's address, else the config's
  // for this node. A bad or taken address fails the start, before the mount.
  std::string metrics_at = opts.metrics;
  if (metrics_at.empty() && fo.cluster) metrics_at = fo.cluster->Find(fo.node_id)->metrics;
  std::unique_ptr<net::MetricsServer> metrics;
  if (!metrics_at.empty()) {
    auto m = net::MetricsServer::Start(metrics_at, [] { return metrics::Registry::Default().Render(); });
    if (!m.ok()) {
      report(m.status().message() + " (the metrics address, from " +
             (opts.metrics.empty() ? "the config's [[node]] metrics" : std::string("-o metrics / --metrics")) + ")");
      return 1;
    }
    metrics = std::move(*m);
  }

  std::vector<std::string> args = {"cshmfs"};
  std::string o = "fsname=cshm,subtype=cshmfs,default_permissions,max_read=" + std::to_string(kMaxRead);
  if (geteuid() == 0) o += ",allow_other";
  for (const std::string& f : opts.fuse_options) o += "," + f;
  args.push_back("-o");
  args.push_back(o);
  if (opts.fuse_debug) args.push_back("-d");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  fuse_args fargs = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());

  fuse_session* se = fuse_session_new(&fargs, &FuseOps(), sizeof(fuse_lowlevel_ops), fs->get());
  if (se == nullptr) {
    report("cannot create the FUSE session (bad mount options?); see the log " + (*fs)->state_dir().log_file());
    return 1;
  }
  (*fs)->SetNotifier([se](uint64_t ino, uint64_t off, uint64_t len) {
    // -ENOENT: the kernel holds nothing of the inode; nothing to drop.
    // A negative offset: the attributes only.
    const off_t from = off == fs::kAttributesOnly ? -1 : static_cast<off_t>(off);
    int rc = fuse_lowlevel_notify_inval_inode(se, ino, from, static_cast<off_t>(len));
    if (rc != 0 && rc != -ENOENT) spdlog::warn("invalidating inode {} in the kernel: {}", ino, strerror(-rc));
  });
  (*fs)->SetEntryNotifier([se](uint64_t parent, const std::string& name) {
    int rc = fuse_lowlevel_notify_inval_entry(se, parent, name.data(), name.size());
    if (rc != 0 && rc != -ENOENT) spdlog::debug("dropping dentry {} of {}: {}", name, parent, strerror(-rc));
  });
  if (fuse_set_signal_handlers(se) != 0) {
    fuse_session_destroy(se);
    report("cannot install signal handlers");
    return 1;
  }
  if (fuse_session_mount(se, mountpoint.c_str()) != 0) {
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    report("cannot mount on " + mountpoint + " (is /dev/fuse present and fuse3 installed?)");
    return 1;
  }
  // Serve the INIT request here, before the loop: the kernel applies its
  // readahead limit when it reads our INIT reply, and only after that can
  // TuneBdi raise it.
  fuse_buf init_buf{};
  if (fuse_session_receive_buf(se, &init_buf) > 0) fuse_session_process_buf(se, &init_buf);
  free(init_buf.mem);
  TuneBdi(mountpoint);
  pid_t watcher = -1;
  if (auto m = FindMount(mountpoint)) {
    auto w = StartConnectionWatch(m->devnum.substr(m->devnum.find(':') + 1), (*fs)->state_dir().log_file());
    if (w.ok()) {
      watcher = *w;
    } else {
      spdlog::info("no watcher of the FUSE connection ({}): a kill -9 inside an invalidation can leave the mount "
                   "hanging until it is aborted by hand", w.status().message());
    }
  }
  const FsStats stats = (*fs)->Stats();
  spdlog::info("cshmfs {} mounted at {}: node {}{}, state dir {}, size cap {} bytes, {} of it free, pid {}",
               kVersion, mountpoint, fo.node_id, fo.cluster ? " of " + opts.config : " (one-node cluster)",
               fo.state_dir, fo.capacity_bytes, stats.blocks_free * stats.block_size, getpid());
  if (report_fd >= 0) {
    // Detach from the terminal only now, so start-up errors were still visible.
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      dup2(devnull, 0);
      dup2(devnull, 1);
      dup2(devnull, 2);
      if (devnull > 2) close(devnull);
    }
  }
  report("OK");

  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_clone_fd(cfg, 0);
  // Requests may wait on the network (and invalidation rounds make the kernel
  // send write-backs while others wait): allow many workers.
  fuse_loop_cfg_set_max_threads(cfg, 64);
  int rc = fuse_session_loop_mt(se, cfg);
  fuse_loop_cfg_destroy(cfg);
  metrics.reset();  // no scrape reads what Stop takes down
  (*fs)->Stop();
  fuse_session_unmount(se);
  StopConnectionWatch(watcher);
  fuse_remove_signal_handlers(se);
  fuse_session_destroy(se);
  spdlog::info("cshmfs unmounted from {} (loop result {})", mountpoint, rc);
  return rc == 0 ? 0 : 1;
}

int Main(int argc, char** argv) {
  auto parsed = ParseCommandLine(argc, argv);
  if (!parsed.ok()) {
    fprintf(stderr, "cshmfs: %s\n", parsed.status().message().c_str());
    return 2;
  }
  MountOptions& opts = *parsed;
  if (opts.show_help) {
    printf("%s", opts.help_text.c_str());
    return 0;
  }
  KeepBuffersMapped();
  if (opts.show_version) {
    printf("cshmfs %s\n", kVersion);
    return 0;
  }
  auto mp = CheckMountpoint(opts.mountpoint);
  if (!mp.ok()) {
    fprintf(stderr, "cshmfs: %s\n", mp.status().message().c_str());
    return 1;
  }
  // The daemon works from "/": make the paths it was given absolute.
  char cwd[PATH_MAX];
  if (getcwd(cwd, sizeof(cwd)) != nullptr) {
    for (std::string* p : {&opts.config, &opts.state_dir})
      if (!p->empty() && (*p)[0] != '/') *p = std::string(cwd) + "/" + *p;
  }
  RaiseFdLimit();
  if (opts.foreground) return Serve(opts, *mp, -1);

  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    perror("cshmfs: pipe");
    return 1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    perror("cshmfs: fork");
    return 1;
  }
  if (pid == 0) {
    close(fds[0]);
    setsid();
    if (chdir("/") != 0) { /* stay where we are */ }
    _exit(Serve(opts, *mp, fds[1]));
  }
  close(fds[1]);
  std::string msg;
  char buf[512];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR))
    if (n > 0) msg.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  if (msg == "OK") return 0;
  if (msg.empty()) {
    int status = 0;
    waitpid(pid, &status, 0);
    msg = "the daemon died during start-up; run with -f to see why";
  }
  fprintf(stderr, "cshmfs: %s\n", msg.c_str());
  return 1;
}

}  // namespace
}  // namespace cshm::fs

int main(int argc, char** argv) {
  if (argc > 1 && strcmp(argv[1], cshm::fs::kWatchConnectionFlag) == 0) return cshm::fs::RunConnectionWatch(argc, argv);
  return cshm::fs::Main(argc, argv);
}
