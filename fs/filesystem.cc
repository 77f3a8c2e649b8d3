#include "fs/filesystem.h"

#include <fcntl.h>
#include <linux/falloc.h>

#include <algorithm>

namespace cshm::fs {

// Largest file we accept: what fits in off_t.
constexpr uint64_t kMaxFileSize = static_cast<uint64_t>(INT64_MAX);

FileSystem::~FileSystem() = default;

Result<std::unique_ptr<FileSystem>> FileSystem::Open(const FileSystemOptions& options) {
  std::unique_ptr<FileSystem> fs(new FileSystem());
  CSHM_ASSIGN_OR_RETURN(fs->state_dir_, store::StateDir::Open(options.state_dir));
  CSHM_ASSIGN_OR_RETURN(fs->meta_store_, store::MetaStore::Open(fs->state_dir_->meta_dir()));
  CSHM_ASSIGN_OR_RETURN(fs->pages_, store::PageStore::Open(fs->state_dir_->pages_dir(), options.capacity_bytes));
  store::PageStore* pages = fs->pages_.get();
  CSHM_ASSIGN_OR_RETURN(fs->ns_, meta::Namespace::Open(fs->meta_store_.get(), options.node_id, options.root,
                                                       [pages](uint64_t ino, uint32_t) { return pages->Remove(ino); }));
  return fs;
}

Result<std::shared_ptr<store::Segment>> FileSystem::RegularSegment(uint64_t ino) {
  CSHM_ASSIGN_OR_RETURN(meta::InodeRecord r, ns_->GetAttr(ino));
  if (r.IsDir()) return IsDir("is a directory");
  if (!r.IsReg()) return Invalid("not a regular file");
  return pages_->Get(ino);
}

Result<size_t> FileSystem::Read(uint64_t ino, uint64_t off, size_t len, char* buf) {
  CSHM_ASSIGN_OR_RETURN(auto seg, RegularSegment(ino));
  CSHM_ASSIGN_OR_RETURN(meta::InodeRecord r, ns_->GetAttr(ino));
  if (off >= r.size) return size_t{0};
  const size_t n = static_cast<size_t>(std::min<uint64_t>(len, r.size - off));
  CSHM_RETURN_IF_ERROR(seg->Read(off, n, buf));
  return n;
}

Result<meta::InodeRecord> FileSystem::Write(uint64_t ino, uint64_t off, const char* data, size_t len) {
  if (off > kMaxFileSize || len > kMaxFileSize - off) return TooBig("write past the largest file size");
  CSHM_ASSIGN_OR_RETURN(auto seg, RegularSegment(ino));
  std::lock_guard<std::mutex> lock(seg->mu());
  CSHM_RETURN_IF_ERROR(seg->Write(off, data, len));
  return ns_->NoteWrite(ino, off + len, /*touch_mtime=*/true);
}

Result<meta::InodeRecord> FileSystem::SetAttr(uint64_t ino, const meta::SetAttrRequest& req) {
  if (!req.size) return ns_->SetAttr(ino, req);
  if (*req.size > kMaxFileSize) return TooBig("size past the largest file size");
  CSHM_ASSIGN_OR_RETURN(auto seg, RegularSegment(ino));
  std::lock_guard<std::mutex> lock(seg->mu());
  CSHM_ASSIGN_OR_RETURN(meta::InodeRecord before, ns_->GetAttr(ino));
  if (*req.size < before.size) CSHM_RETURN_IF_ERROR(seg->Truncate(*req.size));
  return ns_->SetAttr(ino, req);
}

Status FileSystem::Fallocate(uint64_t ino, int mode, uint64_t off, uint64_t len) {
  if (len == 0) return Invalid("fallocate of zero length");
  if (off > kMaxFileSize || len > kMaxFileSize - off) return TooBig("fallocate past the largest file size");
  CSHM_ASSIGN_OR_RETURN(auto seg, RegularSegment(ino));
  std::lock_guard<std::mutex> lock(seg->mu());
  CSHM_ASSIGN_OR_RETURN(meta::InodeRecord r, ns_->GetAttr(ino));
  if (mode & FALLOC_FL_PUNCH_HOLE) {
    // Nothing to free past EOF; the backing file holds nothing there.
    if (off >= r.size) return Status::Ok();
    CSHM_RETURN_IF_ERROR(seg->Allocate(mode, off, std::min<uint64_t>(len, r.size - off)));
    return ns_->NoteWrite(ino, 0, /*touch_mtime=*/true).status();
  }
  CSHM_RETURN_IF_ERROR(seg->Allocate(mode, off, len));
  if (mode & FALLOC_FL_KEEP_SIZE) return Status::Ok();
  return ns_->NoteWrite(ino, off + len, /*touch_mtime=*/false).status();
}

Status FileSystem::Fsync(uint64_t ino) {
  CSHM_RETURN_IF_ERROR(ns_->GetAttr(ino).status());
  return meta_store_->Sync();
}

FsStats FileSystem::Stats() {
  FsStats s;
  s.blocks = pages_->capacity() / s.block_size;
  const uint64_t used = std::min(pages_->used(), pages_->capacity());
  s.blocks_free = (pages_->capacity() - used) / s.block_size;
  // Inodes cost metadata only; report a large fixed budget like tmpfs's default.
  s.files = 1ull << 32;
  s.files_free = s.files - std::min<uint64_t>(s.files, ns_->inode_count());
  return s;
}

}  // namespace cshm::fs
