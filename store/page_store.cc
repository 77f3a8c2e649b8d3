#include "store/page_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <vector>

namespace cshm::store {
namespace {

Result<uint64_t> AllocatedBytes(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return Status::FromErrno(errno, "stat of a backing file");
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

// The bytes of the whole blocks that [off, off+len) touches: the most a
// write of it can allocate.
uint64_t BlocksSpanned(uint64_t off, uint64_t len) {
  const uint64_t first = off / kPageSize * kPageSize;
  return (off + len + kPageSize - 1) / kPageSize * kPageSize - first;
}

// The bytes of [start, end) that the file's extents cover (written,
// unwritten or delayed), from FS_IOC_FIEMAP; EOPNOTSUPP where the filesystem
// has none.
Result<uint64_t> MappedBytesIn(int fd, uint64_t start, uint64_t end) {
  constexpr unsigned kBatch = 32;
  alignas(fiemap) char buf[sizeof(fiemap) + kBatch * sizeof(fiemap_extent)];
  auto* map = reinterpret_cast<fiemap*>(buf);
  uint64_t mapped = 0;
  uint64_t pos = start;
  while (pos < end) {
    std::memset(buf, 0, sizeof(buf));
    map->fm_start = pos;
    map->fm_length = end - pos;
    map->fm_extent_count = kBatch;
    if (ioctl(fd, FS_IOC_FIEMAP, map) != 0) {
      if (errno == EOPNOTSUPP || errno == ENOTTY) return Status::FromErrno(EOPNOTSUPP, "no FIEMAP");
      return Status::FromErrno(errno, "mapping a backing file's extents");
    }
    if (map->fm_mapped_extents == 0) break;
    bool last = false;
    for (unsigned i = 0; i < map->fm_mapped_extents; i++) {
      const fiemap_extent& e = map->fm_extents[i];
      const uint64_t a = std::max<uint64_t>(e.fe_logical, pos);
      const uint64_t b = std::min<uint64_t>(e.fe_logical + e.fe_length, end);
      if (b > a) mapped += b - a;
      pos = std::max<uint64_t>(pos, e.fe_logical + e.fe_length);
      if (e.fe_flags & FIEMAP_EXTENT_LAST) last = true;
    }
    if (last) break;
  }
  return mapped;
}

}  // namespace

FileCache::File::~File() { close(fd); }

size_t FileCache::DefaultLimit() {
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 8192;
  return std::clamp<size_t>(static_cast<size_t>(rl.rlim_cur / 4), 16, 8192);
}

size_t FileCache::open_files() {
  MutexLock lock(&mu_);
  return lru_.size();
}

Result<std::shared_ptr<FileCache::File>> FileCache::Open(Segment* seg) {
  {
    MutexLock lock(&mu_);
    if (seg->file_) {
      lru_.splice(lru_.begin(), lru_, seg->lru_pos_);
      return seg->file_;
    }
    if (seg->removed_) return NotFound("segment " + seg->Path() + " was removed");
  }
  // open(2) outside the lock; another thread may open the same file meanwhile.
  const std::string path = seg->Path();
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno(errno, "opening backing file " + path);
  auto file = std::make_shared<File>(fd);
  std::vector<std::shared_ptr<File>> evicted;  // closed after the lock is let go
  MutexLock lock(&mu_);
  if (seg->file_) return seg->file_;  // ours closes as `file` goes
  if (seg->removed_) return NotFound("segment " + path + " was removed");
  seg->file_ = file;
  lru_.push_front(seg);
  seg->lru_pos_ = lru_.begin();
  while (lru_.size() > limit_) {
    evicted.push_back(std::move(lru_.back()->file_));
    lru_.pop_back();
  }
  return file;
}

void FileCache::Forget(Segment* seg) {
  std::shared_ptr<File> gone;  // closed after the lock is let go
  MutexLock lock(&mu_);
  if (seg->file_) lru_.erase(seg->lru_pos_);  // listed exactly while it has a file
  gone = std::move(seg->file_);
}

void FileCache::Removed(Segment* seg) {
  MutexLock lock(&mu_);
  seg->removed_ = true;
}

Segment::Segment(PageStore* store, uint64_t ino, std::shared_ptr<FileCache> files)
    : store_(store), ino_(ino), files_(std::move(files)) {}

Segment::~Segment() { files_->Forget(this); }

Result<Segment::FilePtr> Segment::File() const { return files_->Open(const_cast<Segment*>(this)); }

std::string Segment::Path() const { return store_->PathOf(ino_); }

Status Segment::Read(uint64_t off, size_t len, char* buf) const {
  CSHM_ASSIGN_OR_RETURN(FilePtr f, File());
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(f->fd, buf + done, len - done, static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "reading segment pages");
    }
    if (n == 0) {  // past the backing file's end: a hole
      std::memset(buf + done, 0, len - done);
      break;
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<bool> Segment::SendTo(uint64_t off, size_t len, const FileSink& sink) const {
  CSHM_ASSIGN_OR_RETURN(FilePtr f, File());  // held until the sink is done with it
  struct stat st;
  if (fstat(f->fd, &st) != 0) return Status::FromErrno(errno, "reading segment pages");
  if (off + len > static_cast<uint64_t>(st.st_size)) return false;
  CSHM_RETURN_IF_ERROR(sink(f->fd, off, len));
  return true;
}

Result<uint64_t> Segment::NextData(uint64_t off) const {
  CSHM_ASSIGN_OR_RETURN(FilePtr f, File());
  off_t data = lseek(f->fd, static_cast<off_t>(off), SEEK_DATA);
  if (data < 0) {
    if (errno == ENXIO) return UINT64_MAX;  // only holes (or EOF) from here
    return Status::FromErrno(errno, "scanning a backing file");
  }
  return static_cast<uint64_t>(data) / kPageSize * kPageSize;
}

Result<uint64_t> Segment::HoleBytesIn(int fd, uint64_t off, uint64_t len) const {
  // Round out to whole blocks: a write into part of a hole block allocates it.
  uint64_t pos = off / kPageSize * kPageSize;
  const uint64_t end = pos + BlocksSpanned(off, len);
  // FIEMAP first: it lists blocks reserved by fallocate (unwritten extents,
  // also past the file's end), which SEEK_DATA calls holes on ext4, so that a
  // write into space fallocate(2) promised never fails with ENOSPC.
  Result<uint64_t> mapped = MappedBytesIn(fd, pos, end);
  if (mapped.ok()) return (end - pos) - *mapped;
  if (mapped.status().ToErrno() != EOPNOTSUPP) return mapped.status();
  // No FIEMAP (tmpfs): SEEK_DATA, which sees written pages only, so there a
  // write into fallocated space at the cap is refused.
  uint64_t holes = 0;
  while (pos < end) {
    off_t data = lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) return holes + (end - pos);  // only holes (or EOF) from here
      return Status::FromErrno(errno, "scanning a backing file");
    }
    uint64_t d = std::min<uint64_t>(static_cast<uint64_t>(data), end);
    holes += d - pos;
    if (d >= end) break;
    off_t hole = lseek(fd, static_cast<off_t>(d), SEEK_HOLE);
    if (hole < 0) return Status::FromErrno(errno, "scanning a backing file");
    pos = static_cast<uint64_t>(hole);
  }
  return holes;
}

Status Segment::Reserve(uint64_t bytes) {
  if (bytes == 0) return Status::Ok();
  uint64_t used = store_->used_.load();
  do {
    if (used + bytes > store_->capacity_)
      return NoSpace("the mount's size cap of " + std::to_string(store_->capacity_) +
                     " bytes is reached (" + std::to_string(used) + " used)");
  } while (!store_->used_.compare_exchange_weak(used, used + bytes));
  return Status::Ok();
}

Status Segment::Recount(int fd) {
  CSHM_ASSIGN_OR_RETURN(uint64_t now, AllocatedBytes(fd));
  store_->used_ += now - allocated_;  // unsigned wrap-around makes a decrease work
  allocated_ = now;
  return Status::Ok();
}

Status Segment::Write(uint64_t off, const char* data, size_t len) {
  CSHM_ASSIGN_OR_RETURN(FilePtr f, File());
  const bool accounted = store_->capacity_ != PageStore::kUnlimited;
  uint64_t holes = 0;
  if (accounted) {
    // Reserve as if every block written were new, which needs no look at the
    // file: SEEK_DATA/SEEK_HOLE walks the page cache over preallocated
    // (unwritten) extents and cost ~900 us per 4 KiB write on ext4 under
    // fio's preallocation. Only a write that would not fit that way counts
    // the holes it really fills, so that a rewrite at the cap still succeeds.
    holes = BlocksSpanned(off, len);
    if (!Reserve(holes).ok()) {
      CSHM_ASSIGN_OR_RETURN(holes, HoleBytesIn(f->fd, off, len));
      CSHM_RETURN_IF_ERROR(Reserve(holes));
    }
  }
  size_t done = 0;
  Status st;
  while (done < len) {
    ssize_t n = pwrite(f->fd, data + done, len - done, static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      st = Status::FromErrno(errno, "writing segment pages");
      break;
    }
    done += static_cast<size_t>(n);
  }
  if (!accounted) return st;
  // Recount() charges what was really allocated; the reservation goes back.
  Status rc = Recount(f->fd);
  store_->used_ -= holes;
  return st.ok() ? rc : st;
}

Status Segment::Truncate(uint64_t size) {
  CSHM_ASSIGN_OR_RETURN(FilePtr f, File());
  if (ftruncate(f->fd, static_cast<off_t>(size)) != 0)
    return Status::FromErrno(errno, "truncating segment pages");
  return Recount(f->fd);
}

Status Segment::Allocate(int mode, uint64_t off, uint64_t len) {
  if (mode != 0 && mode != FALLOC_FL_KEEP_SIZE && mode != (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE))
    return NotSupported("fallocate mode " + std::to_string(mode) + " is not supported");
  CSHM_ASSIGN_OR_RETURN(FilePtr f, File());
  const int fd = f->fd;
  if (mode & FALLOC_FL_PUNCH_HOLE) {
    // Some filesystems (ext4) ignore a punch past the file's end, where blocks
    // reserved with KEEP_SIZE may sit: cover the range first. Growing the
    // backing file exposes zeros, which keeps the caller's invariant.
    struct stat st;
    if (fstat(fd, &st) != 0) return Status::FromErrno(errno, "stat of a backing file");
    if (static_cast<uint64_t>(st.st_size) < off + len && ftruncate(fd, static_cast<off_t>(off + len)) != 0)
      return Status::FromErrno(errno, "growing a backing file");
    if (fallocate(fd, mode, static_cast<off_t>(off), static_cast<off_t>(len)) != 0)
      return Status::FromErrno(errno, "punching a hole in segment pages");
    return Recount(fd);
  }
  CSHM_ASSIGN_OR_RETURN(uint64_t holes, HoleBytesIn(fd, off, len));
  CSHM_RETURN_IF_ERROR(Reserve(holes));
  // The backing file never grows past the segment's size through here: the
  // segment size is metadata, so KEEP_SIZE always (FIEMAP sees its blocks
  // past the file's end).
  Status st;
  if (fallocate(fd, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off), static_cast<off_t>(len)) != 0)
    st = Status::FromErrno(errno, "allocating segment pages");
  Status rc = Recount(fd);
  store_->used_ -= holes;
  return st.ok() ? rc : st;
}

PageStore::PageStore(std::string dir, uint64_t capacity, size_t max_open)
    : dir_(std::move(dir)),
      capacity_(capacity),
      files_(std::make_shared<FileCache>(max_open > 0 ? max_open : FileCache::DefaultLimit())) {}
PageStore::~PageStore() = default;

std::string PageStore::PathOf(uint64_t ino) const {
  char name[32];
  snprintf(name, sizeof(name), "%016" PRIx64, ino);
  return dir_ + "/" + name;
}

Result<std::unique_ptr<PageStore>> PageStore::Open(const std::string& dir, uint64_t capacity_bytes,
                                                   size_t max_open) {
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return Status::FromErrno(errno, "creating page directory " + dir);
  std::unique_ptr<PageStore> store(new PageStore(dir, capacity_bytes, max_open));
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return Status::FromErrno(errno, "opening page directory " + dir);
  uint64_t used = 0;
  while (dirent* e = readdir(d)) {
    struct stat st;
    if (e->d_name[0] == '.') continue;
    if (fstatat(dirfd(d), e->d_name, &st, 0) == 0 && S_ISREG(st.st_mode))
      used += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  closedir(d);
  store->used_ = used;
  return store;
}

Result<std::shared_ptr<Segment>> PageStore::Get(uint64_t ino) {
  MutexLock lock(&mu_);
  auto it = segments_.find(ino);
  if (it != segments_.end()) return it->second;
  std::shared_ptr<Segment> seg(new Segment(this, ino, files_));
  // Creates the file; space of an existing one is already in used_ (counted at Open).
  CSHM_ASSIGN_OR_RETURN(auto file, seg->File());
  CSHM_ASSIGN_OR_RETURN(uint64_t allocated, AllocatedBytes(file->fd));
  seg->CountFirst(allocated);
  segments_.emplace(ino, seg);
  return seg;
}

Status PageStore::Remove(uint64_t ino) {
  std::shared_ptr<Segment> seg;
  {
    MutexLock lock(&mu_);
    auto it = segments_.find(ino);
    if (it != segments_.end()) {
      seg = it->second;
      segments_.erase(it);
    }
  }
  uint64_t freed = 0;
  if (seg) {
    files_->Removed(seg.get());  // a holder's later use must not create the file again
    MutexLock lock(&seg->mu());
    freed = seg->allocated_;
    seg->allocated_ = 0;
  } else {
    struct stat st;
    if (stat(PathOf(ino).c_str(), &st) == 0) freed = static_cast<uint64_t>(st.st_blocks) * 512;
  }
  if (unlink(PathOf(ino).c_str()) != 0 && errno != ENOENT)
    return Status::FromErrno(errno, "removing backing file " + PathOf(ino));
  used_ -= freed;
  return Status::Ok();
}

}  // namespace cshm::store
