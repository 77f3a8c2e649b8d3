// FileSystem: one node's filesystem core, below the FUSE adapter and free of
// <fuse_lowlevel.h>. It owns the state dir, the metadata store, the namespace and
// the page store, and orders data changes with metadata changes.
//
// Today every segment is owned by this node (the one-node cluster). The data
// methods (Read, Write, SetAttr with a size, Fallocate, Fsync) are where the
// cluster data path routes to a segment's owner.
//
// Thread-safety: all methods are thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "meta/namespace.h"
#include "store/meta_store.h"
#include "store/page_store.h"
#include "store/state_dir.h"

namespace cshm::fs {

struct FileSystemOptions {
  std::string state_dir;
  uint32_t node_id = 0;
  uint64_t capacity_bytes = 0;
  meta::RootOptions root;
};

struct FsStats {
  uint64_t block_size = store::kPageSize;
  uint64_t blocks = 0;
  uint64_t blocks_free = 0;
  uint64_t files = 0;
  uint64_t files_free = 0;
  uint64_t name_max = 255;
};

class FileSystem {
 public:
  static Result<std::unique_ptr<FileSystem>> Open(const FileSystemOptions& options);
  ~FileSystem();

  meta::Namespace& ns() { return *ns_; }
  store::StateDir& state_dir() { return *state_dir_; }

  // Reads up to `len` bytes at `off`, stopping at EOF. Returns the count.
  Result<size_t> Read(uint64_t ino, uint64_t off, size_t len, char* buf);
  // Writes and grows the size if the write ends past it.
  Result<meta::InodeRecord> Write(uint64_t ino, uint64_t off, const char* data, size_t len);
  // SetAttr, with the data side of a size change: shrinking drops the pages
  // past the new end, so that growing later exposes zeros.
  Result<meta::InodeRecord> SetAttr(uint64_t ino, const meta::SetAttrRequest& req);
  // fallocate(2): mode 0 and FALLOC_FL_KEEP_SIZE reserve space (ENOSPC past the
  // cap), FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE frees it.
  Status Fallocate(uint64_t ino, int mode, uint64_t off, uint64_t len);
  // Durability of written-back data: metadata WAL to disk. Page data is in the
  // backing files' page cache already, as safe from a daemon crash as tmpfs.
  Status Fsync(uint64_t ino);
  FsStats Stats();

 private:
  FileSystem() = default;
  Result<std::shared_ptr<store::Segment>> RegularSegment(uint64_t ino);

  std::unique_ptr<store::StateDir> state_dir_;
  std::unique_ptr<store::MetaStore> meta_store_;
  std::unique_ptr<store::PageStore> pages_;
  std::unique_ptr<meta::Namespace> ns_;
};

}  // namespace cshm::fs
