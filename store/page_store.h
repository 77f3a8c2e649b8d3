// PageStore: the pages of the segments this node owns, one sparse backing file
// per segment under <state-dir>/pages/, and the space they use against the
// mount's size cap (tmpfs's size=).
//
// Invariant kept by callers (fs::FileSystem): bytes of a backing file at or past
// the segment's size are zero or absent, so growing a file exposes zeros.
//
// Space is counted in allocated 4 KiB blocks of the backing files, as tmpfs
// counts pages; sparse holes cost nothing. A write or allocation that would
// allocate past the cap fails with kNoSpace before touching anything. A write
// first reserves every block it touches (no look at the file); only when that
// does not fit does it count the holes it would really fill, so a write into
// allocated blocks at the cap succeeds. Near the cap, another segment's write
// in flight may hold such an over-reservation for the length of its pwrite.
//
// Descriptors: a backing file is opened when a segment is used and stays open
// in a cache of bounded size (FileCache), closed least recently used first, so
// that a node can own many more segments than it may have descriptors.
//
// Thread-safety: all methods are thread-safe. Each Segment has a mutex that
// serialises changes to its backing file; callers that must order a data change
// with a metadata change hold Segment::mu() across both (lock order:
// Segment::mu() before meta::Namespace's mutex).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>

#include "common/mutex.h"
#include "common/status.h"

namespace cshm::store {

constexpr uint64_t kPageSize = 4096;

class PageStore;
class Segment;

// The open descriptors of a store's backing files, at most `limit` of them
// (one more while a caller holds an evicted one). A caller holds a File for
// one sequence of system calls; an evicted descriptor is closed when its
// last holder lets it go.
class FileCache {
 public:
  struct File {
    explicit File(int f) : fd(f) {}
    ~File();
    File(const File&) = delete;
    File& operator=(const File&) = delete;
    const int fd;
  };
  explicit FileCache(size_t limit) : limit_(limit) {}
  // The descriptors a store keeps open by default: a quarter of the soft
  // RLIMIT_NOFILE, at least 16 and at most 8192.
  static size_t DefaultLimit();
  size_t open_files();

 private:
  friend class Segment;
  friend class PageStore;
  // The segment's descriptor, opening its file (created if missing) when it
  // has none; kNotFound once the segment was removed and its descriptor gone.
  Result<std::shared_ptr<File>> Open(Segment* seg);
  void Forget(Segment* seg);   // the segment is being destroyed
  void Removed(Segment* seg);  // never open its file again

  const size_t limit_;
  Mutex mu_;
  std::list<Segment*> lru_ GUARDED_BY(mu_);  // segments with a descriptor, most recent first
};

// Takes bytes straight from a backing file (a FUSE reply spliced from it):
// the file, an offset and a length. Called at most once per read.
using FileSink = std::function<Status(int fd, uint64_t off, size_t len)>;

class Segment {
 public:
  ~Segment();
  Mutex& mu() RETURN_CAPABILITY(mu_) { return mu_; }

  // Reads [off, off+len) into buf; bytes past the backing file's end read as
  // zero. Does not need mu().
  Status Read(uint64_t off, size_t len, char* buf) const;
  // Hands [off, off+len) to `sink` as a range of the backing file, with no
  // copy here, if the file holds all of it (false, and `sink` not called,
  // if part of it is past the file's end: then Read). Does not need mu().
  Result<bool> SendTo(uint64_t off, size_t len, const FileSink& sink) const;
  // The first offset at or after `off` that may hold data (not a hole),
  // rounded down to a page; UINT64_MAX if there is none. Does not need mu().
  Result<uint64_t> NextData(uint64_t off) const;
  // The following need mu() held.
  Status Write(uint64_t off, const char* data, size_t len) REQUIRES(mu_);
  // Shrinks or grows the backing file (growth is a hole).
  Status Truncate(uint64_t size) REQUIRES(mu_);
  // fallocate(2) on the backing file: mode 0 / FALLOC_FL_KEEP_SIZE reserve space,
  // FALLOC_FL_PUNCH_HOLE frees it; other modes are kNotSupported.
  Status Allocate(int mode, uint64_t off, uint64_t len) REQUIRES(mu_);

 private:
  friend class PageStore;
  friend class FileCache;
  using FilePtr = std::shared_ptr<FileCache::File>;
  Segment(PageStore* store, uint64_t ino, std::shared_ptr<FileCache> files);
  Result<FilePtr> File() const;
  std::string Path() const;  // only when a file is opened: not on every read
  // Re-reads the backing file's allocation and charges the difference.
  Status Recount(int fd) REQUIRES(mu_);
  // The allocation of a segment nobody else can see yet (PageStore::Get).
  void CountFirst(uint64_t bytes) NO_THREAD_SAFETY_ANALYSIS { allocated_ = bytes; }
  Result<uint64_t> HoleBytesIn(int fd, uint64_t off, uint64_t len) const;
  Status Reserve(uint64_t bytes);

  PageStore* store_;
  uint64_t ino_;
  std::shared_ptr<FileCache> files_;
  Mutex mu_;
  uint64_t allocated_ GUARDED_BY(mu_) = 0;
  // GUARDED_BY(files_->mu_): in files_'s list (at lru_pos_) exactly while file_ is set.
  FilePtr file_;
  std::list<Segment*>::iterator lru_pos_;
  bool removed_ = false;
};

class PageStore {
 public:
  // `dir` is created if missing. capacity_bytes caps the sum of allocated
  // blocks of every backing file. kUnlimited: no cap and no accounting
  // (twins), so a write is a plain pwrite.
  static constexpr uint64_t kUnlimited = UINT64_MAX;
  // At most `max_open` backing files are open at once (0: FileCache's default).
  static Result<std::unique_ptr<PageStore>> Open(const std::string& dir, uint64_t capacity_bytes,
                                                 size_t max_open = 0);
  ~PageStore();

  // The segment's backing file, created empty on first use.
  Result<std::shared_ptr<Segment>> Get(uint64_t ino);
  // Deletes the backing file and returns its space.
  Status Remove(uint64_t ino);

  uint64_t capacity() const { return capacity_; }
  uint64_t used() const { return used_.load(); }
  size_t open_files() { return files_->open_files(); }

 private:
  friend class Segment;
  PageStore(std::string dir, uint64_t capacity, size_t max_open);
  std::string PathOf(uint64_t ino) const;

  const std::string dir_;
  const uint64_t capacity_;
  std::atomic<uint64_t> used_{0};
  const std::shared_ptr<FileCache> files_;
  Mutex mu_;
  std::unordered_map<uint64_t, std::shared_ptr<Segment>> segments_ GUARDED_BY(mu_);
};

}  // namespace cshm::store
