// fuse_floor MOUNTPOINT SIZE_MIB: the FUSE floor of the benchmark. A minimal
// filesystem with one read-only file, /data, of SIZE_MIB MiB held in memory:
// READ is answered straight from that buffer, so a fault on it costs what the
// kernel and libfuse cost and nothing else. It is mounted the way cshmfs is
// (same multi-threaded loop, keep_cache, no writeback cache, INIT served before
// the loop and then 4 MiB readahead on the device), so that cshm's figures
// divided by these are cshm's own cost. Serves in the foreground until
// unmounted (fusermount3 -u MOUNTPOINT) or signalled.
#define FUSE_USE_VERSION 35
#include <errno.h>
#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "fs/mountinfo.h"

namespace {

constexpr fuse_ino_t kDataIno = 2;
std::vector<char> g_data;  // written before the loop starts, then only read

struct stat StatOf(fuse_ino_t ino) {
  struct stat st {};
  st.st_ino = ino;
  st.st_nlink = 1;
  if (ino == FUSE_ROOT_ID) {
    st.st_mode = S_IFDIR | 0755;
  } else {
    st.st_mode = S_IFREG | 0644;
    st.st_size = static_cast<off_t>(g_data.size());
    st.st_blocks = st.st_size / 512;
  }
  return st;
}

void OpInit(void*, fuse_conn_info* conn) {
  conn->want &= ~(FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_WRITEBACK_CACHE);
  conn->max_readahead = 1u << 20;
}

// Valid replies: fuse_reply_entry, fuse_reply_err.
void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (parent != FUSE_ROOT_ID || strcmp(name, "data") != 0) return (void)fuse_reply_err(req, ENOENT);
  fuse_entry_param e{};
  e.ino = kDataIno;
  e.attr = StatOf(kDataIno);
  e.attr_timeout = e.entry_timeout = 3600;
  fuse_reply_entry(req, &e);
}

// Valid replies: fuse_reply_attr, fuse_reply_err.
void OpGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  if (ino != FUSE_ROOT_ID && ino != kDataIno) return (void)fuse_reply_err(req, ENOENT);
  struct stat st = StatOf(ino);
  fuse_reply_attr(req, &st, 3600);
}

// Valid replies: fuse_reply_open, fuse_reply_err.
void OpOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino != kDataIno) return (void)fuse_reply_err(req, EISDIR);
  if ((fi->flags & O_ACCMODE) != O_RDONLY) return (void)fuse_reply_err(req, EROFS);
  fi->keep_cache = 1;
  fuse_reply_open(req, fi);
}

// Valid replies: fuse_reply_buf, fuse_reply_err.
void OpRead(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info*) {
  const size_t end = g_data.size();
  const size_t from = static_cast<size_t>(off) < end ? static_cast<size_t>(off) : end;
  const size_t n = size < end - from ? size : end - from;
  fuse_reply_buf(req, g_data.data() + from, n);
}

const fuse_lowlevel_ops kOps = [] {
  fuse_lowlevel_ops ops{};
  ops.init = OpInit;
  ops.lookup = OpLookup;
  ops.getattr = OpGetattr;
  ops.open = OpOpen;
  ops.read = OpRead;
  return ops;
}();

// As cshmfs does: 4 MiB readahead, no strict dirty limit (best effort). The
// device number comes from mountinfo: a stat of the mountpoint would wait for a
// GETATTR that nobody serves yet.
void TuneBdi(const std::string& mountpoint) {
  auto m = cshm::fs::FindMount(mountpoint);
  if (!m) return;
  const std::string dir = "/sys/class/bdi/" + m->devnum;
  std::ofstream(dir + "/read_ahead_kb") << "4096";
  std::ofstream(dir + "/strict_limit") << "0";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s MOUNTPOINT SIZE_MIB\n", argv[0]);
    return 2;
  }
  char resolved[PATH_MAX];
  if (realpath(argv[1], resolved) == nullptr) {
    fprintf(stderr, "fuse_floor: %s: %s\n", argv[1], strerror(errno));
    return 2;
  }
  const std::string mountpoint = resolved;
  const long mib = strtol(argv[2], nullptr, 10);
  if (mib <= 0 || mib > 65536) {
    fprintf(stderr, "fuse_floor: SIZE_MIB must be 1..65536, got '%s'\n", argv[2]);
    return 2;
  }
  g_data.resize(static_cast<size_t>(mib) << 20);
  for (size_t i = 0; i < g_data.size(); i++) g_data[i] = static_cast<char>('a' + i % 23);

  char arg0[] = "fuse_floor";
  char opt[] = "-o";
  char opts[] = "fsname=fuse_floor,subtype=fuse_floor,default_permissions";
  char* fargv[] = {arg0, opt, opts};
  fuse_args args = FUSE_ARGS_INIT(3, fargv);
  fuse_session* se = fuse_session_new(&args, &kOps, sizeof(kOps), nullptr);
  if (se == nullptr) return 1;
  if (fuse_set_signal_handlers(se) != 0 || fuse_session_mount(se, mountpoint.c_str()) != 0) {
    fprintf(stderr, "fuse_floor: cannot mount on %s\n", mountpoint.c_str());
    fuse_session_destroy(se);
    return 1;
  }
  fuse_buf init_buf{};
  if (fuse_session_receive_buf(se, &init_buf) > 0) fuse_session_process_buf(se, &init_buf);
  free(init_buf.mem);
  TuneBdi(mountpoint);
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_clone_fd(cfg, 0);
  fuse_loop_cfg_set_max_threads(cfg, 64);
  int rc = fuse_session_loop_mt(se, cfg);
  fuse_loop_cfg_destroy(cfg);
  fuse_session_unmount(se);
  fuse_remove_signal_handlers(se);
  fuse_session_destroy(se);
  return rc == 0 ? 0 : 1;
}
