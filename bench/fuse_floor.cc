// fuse_floor MOUNTPOINT SIZE_MIB: the FUSE floor of the benchmark. A minimal
// filesystem held in memory, as small as a FUSE filesystem that keeps files
// can be: /data, SIZE_MIB MiB filled before the loop starts, and whatever
// files and directories clients make (fio and stress-ng make their own).
// READ is answered straight from a file's buffer and WRITE copies into it, so
// a fault or a write-back on it costs what the kernel and libfuse cost and
// little else. It is mounted the way cshmfs is (same multi-threaded loop,
// keep_cache, no writeback cache, INIT served before the loop and then 4 MiB
// readahead on the device), so that cshm's figures divided by these are
// cshm's own cost. Serves in the foreground until unmounted (fusermount3 -u
// MOUNTPOINT) or signalled.
//
// One lock for the whole tree (shared for reads, exclusive for changes): a
// minimal filesystem, not a fast one; the benchmark's clients are one or two
// processes.
#define FUSE_USE_VERSION 35
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "fs/mountinfo.h"

namespace {

struct Node {
  mode_t mode = 0;
  uint32_t nlink = 1;
  std::vector<char> data;                  // a regular file's bytes
  std::map<std::string, fuse_ino_t> kids;  // a directory's entries
  timespec mtime{}, ctime{};
  uint64_t lookups = 0;  // the kernel's references (entries replied, minus FORGETs)
};

std::shared_mutex g_mu;
std::map<fuse_ino_t, std::unique_ptr<Node>> g_nodes;  // GUARDED_BY(g_mu)
fuse_ino_t g_next = FUSE_ROOT_ID + 1;                 // GUARDED_BY(g_mu)
size_t g_cap = 0;                                     // bytes all files may hold
size_t g_used = 0;                                    // GUARDED_BY(g_mu)

timespec Now() {
  timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return t;
}

Node* Find(fuse_ino_t ino) {
  auto it = g_nodes.find(ino);
  return it == g_nodes.end() ? nullptr : it->second.get();
}

struct stat StatOf(fuse_ino_t ino, const Node& n) {
  struct stat st {};
  st.st_ino = ino;
  st.st_mode = n.mode;
  st.st_nlink = n.nlink;
  st.st_size = static_cast<off_t>(S_ISDIR(n.mode) ? 4096 : n.data.size());
  st.st_blocks = (st.st_size + 511) / 512;
  st.st_blksize = 4096;
  st.st_mtim = n.mtime;
  st.st_ctim = n.ctime;
  st.st_atim = n.mtime;
  return st;
}

// (g_mu held exclusively) Sets a file's size within the cap.
int Resize(Node* n, size_t size) {
  if (size > n->data.size() && g_used + (size - n->data.size()) > g_cap) return ENOSPC;
  g_used = g_used - n->data.size() + size;
  n->data.resize(size);
  n->mtime = n->ctime = Now();
  return 0;
}

// (g_mu held exclusively: the reference count changes)
void ReplyEntry(fuse_req_t req, fuse_ino_t ino, Node& n) {
  n.lookups++;
  fuse_entry_param e{};
  e.ino = ino;
  e.attr = StatOf(ino, n);
  e.attr_timeout = e.entry_timeout = 3600;
  fuse_reply_entry(req, &e);
}

void OpInit(void*, fuse_conn_info* conn) {
  conn->want &= ~(FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_WRITEBACK_CACHE);
  conn->max_readahead = 1u << 20;
}

// Valid replies: fuse_reply_entry, fuse_reply_err.
void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  std::unique_lock<std::shared_mutex> lock(g_mu);
  Node* dir = Find(parent);
  if (dir == nullptr || !S_ISDIR(dir->mode)) return (void)fuse_reply_err(req, ENOTDIR);
  auto it = dir->kids.find(name);
  if (it == dir->kids.end()) return (void)fuse_reply_err(req, ENOENT);
  ReplyEntry(req, it->second, *Find(it->second));
}

// Valid replies: fuse_reply_attr, fuse_reply_err.
void OpGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  std::shared_lock<std::shared_mutex> lock(g_mu);
  Node* n = Find(ino);
  if (n == nullptr) return (void)fuse_reply_err(req, ENOENT);
  struct stat st = StatOf(ino, *n);
  fuse_reply_attr(req, &st, 3600);
}

// Valid replies: fuse_reply_attr, fuse_reply_err.
void OpSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
  std::unique_lock<std::shared_mutex> lock(g_mu);
  Node* n = Find(ino);
  if (n == nullptr) return (void)fuse_reply_err(req, ENOENT);
  if (to_set & FUSE_SET_ATTR_SIZE) {
    if (S_ISDIR(n->mode)) return (void)fuse_reply_err(req, EISDIR);
    if (int e = Resize(n, static_cast<size_t>(attr->st_size))) return (void)fuse_reply_err(req, e);
  }
  if (to_set & FUSE_SET_ATTR_MODE) n->mode = (n->mode & S_IFMT) | (attr->st_mode & 07777);
  if (to_set & FUSE_SET_ATTR_MTIME) n->mtime = attr->st_mtim;
  if (to_set & FUSE_SET_ATTR_MTIME_NOW) n->mtime = Now();
  n->ctime = Now();
  struct stat st = StatOf(ino, *n);
  fuse_reply_attr(req, &st, 3600);
}

// (g_mu held exclusively) A new node named `name` in `parent`, or an errno.
int Make(fuse_ino_t parent, const char* name, mode_t mode, fuse_ino_t* out) {
  Node* dir = Find(parent);
  if (dir == nullptr || !S_ISDIR(dir->mode)) return ENOTDIR;
  if (dir->kids.contains(name)) return EEXIST;
  if (strlen(name) > 255) return ENAMETOOLONG;
  auto n = std::make_unique<Node>();
  n->mode = mode;
  n->nlink = S_ISDIR(mode) ? 2 : 1;
  n->mtime = n->ctime = Now();
  *out = g_next++;
  dir->kids[name] = *out;
  dir->mtime = dir->ctime = Now();
  if (S_ISDIR(mode)) dir->nlink++;
  g_nodes[*out] = std::move(n);
  return 0;
}

// Valid replies: fuse_reply_create, fuse_reply_err.
void OpCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  std::unique_lock<std::shared_mutex> lock(g_mu);
  fuse_ino_t ino = 0;
  if (int e = Make(parent, name, S_IFREG | (mode & 07777), &ino)) return (void)fuse_reply_err(req, e);
  fuse_entry_param e{};
  e.ino = ino;
  Node* n = Find(ino);
  n->lookups++;
  e.attr = StatOf(ino, *n);
  e.attr_timeout = e.entry_timeout = 3600;
  fi->keep_cache = 1;
  fuse_reply_create(req, &e, fi);
}

// Valid replies: fuse_reply_entry, fuse_reply_err.
void OpMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t) {
  if (!S_ISREG(mode)) return (void)fuse_reply_err(req, EPERM);
  std::unique_lock<std::shared_mutex> lock(g_mu);
  fuse_ino_t ino = 0;
  if (int e = Make(parent, name, mode, &ino)) return (void)fuse_reply_err(req, e);
  ReplyEntry(req, ino, *Find(ino));
}

// Valid replies: fuse_reply_entry, fuse_reply_err.
void OpMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  std::unique_lock<std::shared_mutex> lock(g_mu);
  fuse_ino_t ino = 0;
  if (int e = Make(parent, name, S_IFDIR | (mode & 07777), &ino)) return (void)fuse_reply_err(req, e);
  ReplyEntry(req, ino, *Find(ino));
}

// (g_mu held exclusively) Removes `name` from `parent`; `dir`: rmdir.
int Remove(fuse_ino_t parent, const char* name, bool dir) {
  Node* p = Find(parent);
  if (p == nullptr || !S_ISDIR(p->mode)) return ENOTDIR;
  auto it = p->kids.find(name);
  if (it == p->kids.end()) return ENOENT;
  Node* n = Find(it->second);
  if (dir != S_ISDIR(n->mode)) return dir ? ENOTDIR : EISDIR;
  if (dir && !n->kids.empty()) return ENOTEMPTY;
  // The node itself stays until the kernel forgets it (an open file may
  // still be read); its bytes count until then too (OpForget).
  if (dir) p->nlink--;
  n->nlink = 0;
  p->kids.erase(it);
  p->mtime = p->ctime = Now();
  return 0;
}

// (g_mu held exclusively) The kernel dropped `n` references to `ino`.
void Forget(fuse_ino_t ino, uint64_t n) {
  Node* node = Find(ino);
  if (node == nullptr || ino == FUSE_ROOT_ID) return;
  node->lookups -= std::min(node->lookups, n);
  if (node->lookups > 0 || node->nlink > 0) return;
  g_used -= node->data.size();
  g_nodes.erase(ino);
}

// Valid replies: fuse_reply_none.
void OpForget(fuse_req_t req, fuse_ino_t ino, uint64_t n) {
  {
    std::unique_lock<std::shared_mutex> lock(g_mu);
    Forget(ino, n);
  }
  fuse_reply_none(req);
}

// Valid replies: fuse_reply_none.
void OpForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  {
    std::unique_lock<std::shared_mutex> lock(g_mu);
    for (size_t i = 0; i < count; i++) Forget(forgets[i].ino, forgets[i].nlookup);
  }
  fuse_reply_none(req);
}

// Valid replies: fuse_reply_err.
void OpUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  std::unique_lock<std::shared_mutex> lock(g_mu);
  fuse_reply_err(req, Remove(parent, name, false));
}

// Valid replies: fuse_reply_err.
void OpRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  std::unique_lock<std::shared_mutex> lock(g_mu);
  fuse_reply_err(req, Remove(parent, name, true));
}

// Valid replies: fuse_reply_open, fuse_reply_err.
void OpOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  {
    std::unique_lock<std::shared_mutex> lock(g_mu);
    Node* n = Find(ino);
    if (n == nullptr) return (void)fuse_reply_err(req, ENOENT);
    if (S_ISDIR(n->mode)) return (void)fuse_reply_err(req, EISDIR);
    if ((fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY) (void)Resize(n, 0);
  }
  fi->keep_cache = 1;
  fuse_reply_open(req, fi);
}

// Valid replies: fuse_reply_buf, fuse_reply_err.
void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  std::shared_lock<std::shared_mutex> lock(g_mu);
  Node* n = Find(ino);
  if (n == nullptr) return (void)fuse_reply_err(req, ENOENT);
  const size_t end = n->data.size();
  const size_t from = static_cast<size_t>(off) < end ? static_cast<size_t>(off) : end;
  const size_t len = size < end - from ? size : end - from;
  fuse_reply_buf(req, n->data.data() + from, len);
}

// Valid replies: fuse_reply_write, fuse_reply_err.
void OpWrite(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off, fuse_file_info*) {
  std::unique_lock<std::shared_mutex> lock(g_mu);
  Node* n = Find(ino);
  if (n == nullptr) return (void)fuse_reply_err(req, ENOENT);
  const size_t end = static_cast<size_t>(off) + size;
  if (end > n->data.size())
    if (int e = Resize(n, end)) return (void)fuse_reply_err(req, e);
  memcpy(n->data.data() + off, buf, size);
  n->mtime = Now();
  fuse_reply_write(req, size);
}

// Valid replies: fuse_reply_err.
void OpFallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, fuse_file_info*) {
  std::unique_lock<std::shared_mutex> lock(g_mu);
  Node* n = Find(ino);
  if (n == nullptr) return (void)fuse_reply_err(req, ENOENT);
  if (mode & ~FALLOC_FL_KEEP_SIZE) return (void)fuse_reply_err(req, EOPNOTSUPP);
  const size_t end = static_cast<size_t>(off + len);
  if (!(mode & FALLOC_FL_KEEP_SIZE) && end > n->data.size())
    if (int e = Resize(n, end)) return (void)fuse_reply_err(req, e);
  fuse_reply_err(req, 0);
}

// Valid replies: fuse_reply_err.
void OpNothing(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }
void OpFsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) { fuse_reply_err(req, 0); }

// Valid replies: fuse_reply_open, fuse_reply_err.
void OpOpendir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) { fuse_reply_open(req, fi); }

// Valid replies: fuse_reply_buf, fuse_reply_err.
void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  std::shared_lock<std::shared_mutex> lock(g_mu);
  Node* dir = Find(ino);
  if (dir == nullptr || !S_ISDIR(dir->mode)) return (void)fuse_reply_err(req, ENOTDIR);
  std::vector<char> buf(size);
  size_t used = 0;
  off_t i = 0;
  for (auto it = dir->kids.begin(); it != dir->kids.end(); ++it, ++i) {
    if (i < off) continue;
    struct stat st {};
    st.st_ino = it->second;
    st.st_mode = Find(it->second)->mode;
    const size_t need = fuse_add_direntry(req, buf.data() + used, size - used, it->first.c_str(), &st, i + 1);
    if (need > size - used) break;
    used += need;
  }
  fuse_reply_buf(req, buf.data(), used);
}

// Valid replies: fuse_reply_statfs.
void OpStatfs(fuse_req_t req, fuse_ino_t) {
  struct statvfs st {};
  std::shared_lock<std::shared_mutex> lock(g_mu);
  st.f_bsize = st.f_frsize = 4096;
  st.f_blocks = g_cap / 4096;
  st.f_bfree = st.f_bavail = (g_cap - g_used) / 4096;
  st.f_files = st.f_ffree = 1 << 20;
  st.f_namemax = 255;
  fuse_reply_statfs(req, &st);
}

const fuse_lowlevel_ops kOps = [] {
  fuse_lowlevel_ops ops{};
  ops.init = OpInit;
  ops.lookup = OpLookup;
  ops.forget = OpForget;
  ops.forget_multi = OpForgetMulti;
  ops.getattr = OpGetattr;
  ops.setattr = OpSetattr;
  ops.create = OpCreate;
  ops.mknod = OpMknod;
  ops.mkdir = OpMkdir;
  ops.unlink = OpUnlink;
  ops.rmdir = OpRmdir;
  ops.open = OpOpen;
  ops.read = OpRead;
  ops.write = OpWrite;
  ops.fallocate = OpFallocate;
  ops.flush = OpNothing;
  ops.release = OpNothing;
  ops.fsync = OpFsync;
  ops.opendir = OpOpendir;
  ops.readdir = OpReaddir;
  ops.releasedir = OpNothing;
  ops.statfs = OpStatfs;
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
  // /data, and room for the clients' files: 4 GiB, or 4 times /data.
  auto root = std::make_unique<Node>();
  root->mode = S_IFDIR | 01777;
  root->nlink = 2;
  root->mtime = root->ctime = Now();
  g_nodes[FUSE_ROOT_ID] = std::move(root);
  g_cap = std::max<size_t>(size_t{4} << 30, static_cast<size_t>(mib) << 22);
  fuse_ino_t data = 0;
  (void)Make(FUSE_ROOT_ID, "data", S_IFREG | 0644, &data);
  Node* d = Find(data);
  (void)Resize(d, static_cast<size_t>(mib) << 20);
  for (size_t i = 0; i < d->data.size(); i++) d->data[i] = static_cast<char>('a' + i % 23);

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
