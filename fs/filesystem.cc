#include "fs/filesystem.h"

#include <fcntl.h>
#include <linux/falloc.h>

#include <algorithm>

#include "common/metrics.h"
#include "fs/cluster.h"
#include "fs/semaphores.h"
#include "fs/twin_cache.h"
#include "ownership/messages.h"

namespace cshm::fs {

// Largest file we accept: what fits in off_t.
constexpr uint64_t kMaxFileSize = static_cast<uint64_t>(INT64_MAX);

FileSystem::~FileSystem() { Stop(); }

void FileSystem::Stop() {
  metrics::Registry::Default().RemoveGauges(this);
  if (semaphores_) semaphores_->Stop();
  if (cluster_) cluster_->Stop();
}

void FileSystem::AddGauges() {
  auto& r = metrics::Registry::Default();
  store::PageStore* pages = pages_.get();
  r.AddGauge(this, "cshm_page_store_bytes", "bytes the pages of the segments this node owns take on its disk",
             [pages] { return std::vector<metrics::Sample>{{{}, static_cast<double>(pages->used())}}; });
  r.AddGauge(this, "cshm_page_store_capacity_bytes", "the size cap of this node's pages (-o size)",
             [pages] { return std::vector<metrics::Sample>{{{}, static_cast<double>(pages->capacity())}}; });
  if (!ns_) return;  // the namespace's store is used on the metadata node only
  store::MetaStore* db = meta_store_.get();
  r.AddGauge(this, "cshm_rocksdb", "RocksDB's own figures of the namespace store, by property", [db] {
    std::vector<metrics::Sample> out;
    for (auto& [name, v] : db->Properties()) out.push_back({{{"property", name}}, static_cast<double>(v)});
    return out;
  });
}

double FileSystem::EntryTimeout(uint64_t parent, std::string_view name,
                                std::chrono::steady_clock::time_point asked) const {
  if (!cluster_) return 1.0;
  if (!cluster_->KernelMayHold(parent, name)) return 0.0;
  return DirTimeout(asked);
}

double FileSystem::DirTimeout(std::chrono::steady_clock::time_point asked) const {
  if (!cluster_) return 1.0;
  const auto window = std::chrono::milliseconds(cluster_->name_cache_ms());
  const std::chrono::duration<double> left = asked + window - std::chrono::steady_clock::now();
  return std::max(0.0, left.count());
}

void FileSystem::AskingName(uint64_t parent, std::string_view name) {
  if (cluster_) cluster_->AskingName(parent, name);
}

void FileSystem::RenamingTo(uint64_t parent, std::string_view name) {
  if (cluster_) cluster_->RenamingTo(parent, name);
}

double FileSystem::AttrTimeout(const meta::InodeRecord& r, std::chrono::steady_clock::time_point asked) const {
  if (!cluster_) return 1.0;
  return r.IsDir() ? DirTimeout(asked) : 0.0;
}

void FileSystem::SetNotifier(std::function<void(uint64_t, uint64_t, uint64_t)> n) {
  if (cluster_) cluster_->SetNotifier(std::move(n));
}

void FileSystem::SetEntryNotifier(std::function<void(uint64_t, const std::string&)> n) {
  if (cluster_) cluster_->SetEntryNotifier(std::move(n));
}

Result<std::unique_ptr<FileSystem>> FileSystem::Open(const FileSystemOptions& options) {
  std::unique_ptr<FileSystem> fs(new FileSystem());
  fs->node_id_ = options.node_id;
  CSHM_ASSIGN_OR_RETURN(fs->state_dir_, store::StateDir::Open(options.state_dir));
  CSHM_ASSIGN_OR_RETURN(fs->meta_store_, store::MetaStore::Open(fs->state_dir_->meta_dir()));
  CSHM_ASSIGN_OR_RETURN(fs->pages_, store::PageStore::Open(fs->state_dir_->pages_dir(), options.capacity_bytes));
  store::PageStore* pages = fs->pages_.get();
  Semaphores::Options so;
  so.self = options.node_id;
  so.dir = fs->state_dir_->path() + "/semaphores";
  if (!options.cluster) {
    const uint32_t self = options.node_id;
    so.owner_of = [self](uint64_t) -> Result<uint32_t> { return self; };
    CSHM_ASSIGN_OR_RETURN(fs->semaphores_, Semaphores::Open(std::move(so)));
    Semaphores* sems = fs->semaphores_.get();
    CSHM_ASSIGN_OR_RETURN(fs->ns_, meta::Namespace::Open(fs->meta_store_.get(), options.node_id, options.root,
                                                         [pages, sems](uint64_t ino, uint32_t) {
                                                           sems->Forget(ino);
                                                           return pages->Remove(ino);
                                                         }));
    fs->ns_->ExpectNodes({});  // one node: its own kernel's references are all there are
    fs->meta_ = fs->ns_.get();
    fs->AddGauges();
    return fs;
  }
  CSHM_ASSIGN_OR_RETURN(auto twins, TwinCache::Open(fs->state_dir_->path() + "/twins"));
  CSHM_ASSIGN_OR_RETURN(auto pending, PendingWrites::Open(fs->state_dir_->path() + "/pending"));
  fs->cluster_ = std::make_unique<Cluster>(*options.cluster, options.node_id, pages, std::move(twins),
                                           std::move(pending),
                                           options.messenger ? options.messenger
                                                             : net::TransportWithFaults(options.seams.net),
                                           options.seams);
  Cluster* cluster = fs->cluster_.get();
  so.owner_of = [cluster](uint64_t ino) { return cluster->SemaphoreOwner(ino); };
  so.call = [cluster](uint32_t node, uint16_t type, std::string payload) {
    return cluster->CallPeer(node, type, std::move(payload));
  };
  so.call_async = [cluster](uint32_t node, uint16_t type, std::string payload, std::function<void(bool)> done) {
    cluster->CallPeerAsync(node, type, std::move(payload), std::move(done));
  };
  CSHM_ASSIGN_OR_RETURN(fs->semaphores_, Semaphores::Open(std::move(so)));
  cluster->SetSemaphores(fs->semaphores_.get());
  if (cluster->is_metadata_node()) {
    CSHM_ASSIGN_OR_RETURN(fs->ns_, meta::Namespace::Open(fs->meta_store_.get(), options.node_id, options.root,
                                                         [cluster](uint64_t ino, uint32_t owner) {
                                                           return cluster->Purge(ino, owner);
                                                         }));
  }
  CSHM_RETURN_IF_ERROR(cluster->Start(fs->ns_.get()));
  fs->meta_ = &cluster->meta();
  fs->AddGauges();
  return fs;
}

namespace {

// The kernel checks the file's permissions on open, but not when a CREATE's
// answer is an existing file: check them here for that case. Only the
// caller's primary group is known here (supplementary groups are not).
bool MayOpen(const meta::InodeRecord& r, const meta::Caller& c, int flags) {
  if (c.uid == 0) return true;
  const int acc = flags & O_ACCMODE;
  int need = 0;
  if (acc == O_RDONLY || acc == O_RDWR) need |= 4;
  if (acc == O_WRONLY || acc == O_RDWR || (flags & O_TRUNC)) need |= 2;
  int bits = static_cast<int>(r.mode);
  if (c.uid == r.uid) bits >>= 6;
  else if (c.gid == r.gid) bits >>= 3;
  return (need & ~bits & 7) == 0;
}

}  // namespace

Result<meta::InodeRecord> FileSystem::CreateOrOpen(uint64_t parent, std::string_view name, uint32_t mode, int flags,
                                                   const meta::Caller& caller) {
  // Created, or found: another node may unlink the name between the two,
  // and then it is ours to create again (open(O_CREAT) never fails with
  // ENOENT for an existing parent). Each round is one of the other node's
  // unlinks; a few are enough for any real race.
  Result<meta::InodeRecord> found = NotFound("");
  AskingName(parent, name);
  for (int attempt = 0; attempt < 16; attempt++) {
    auto created = meta_->Mknod(parent, name, S_IFREG | (mode & 07777), 0, caller);
    if (created.ok() || created.status().code() != Status::Code::kExists || (flags & O_EXCL)) return created;
    found = meta_->Lookup(parent, name, caller);  // +1 ref, as a create
    if (found.ok() || found.status().code() != Status::Code::kNotFound) break;
  }
  CSHM_ASSIGN_OR_RETURN(meta::InodeRecord r, std::move(found));
  Status refused;
  if (r.IsDir()) refused = IsDir("'" + std::string(name) + "' is a directory");
  else if (!r.IsReg()) refused = Exists("'" + std::string(name) + "' exists and is not a regular file");
  else if (!MayOpen(r, caller, flags)) refused = AccessDenied("no permission to open '" + std::string(name) + "'");
  if (!refused.ok()) {
    meta_->Forget(r.ino, 1, caller);
    return refused;
  }
  if ((flags & O_TRUNC) && r.size != 0) {
    auto t = SetAttr(r.ino, meta::SetAttrRequest{.size = 0});
    if (!t.ok()) {
      meta_->Forget(r.ino, 1, caller);
      return t.status();
    }
    return *t;
  }
  return r;
}

Result<std::shared_ptr<store::Segment>> FileSystem::RegularSegment(uint64_t ino) {
  CSHM_ASSIGN_OR_RETURN(meta::InodeRecord r, meta_->GetAttr(ino));
  if (r.IsDir()) return IsDir("is a directory");
  if (!r.IsReg()) return Invalid("not a regular file");
  return pages_->Get(ino);
}

Status FileSystem::OpenFile(uint64_t ino, int flags) {
  CSHM_ASSIGN_OR_RETURN(meta::InodeRecord r, GetAttr(ino));
  if (r.IsDir()) return IsDir("inode " + std::to_string(ino) + " is a directory");
  if ((flags & O_TRUNC) && r.size != 0) CSHM_RETURN_IF_ERROR(SetAttr(ino, meta::SetAttrRequest{.size = 0}).status());
  if (Writable(flags)) CSHM_RETURN_IF_ERROR(OpenedForWrite(ino));
  return Status::Ok();
}

Result<size_t> FileSystem::Read(uint64_t ino, uint64_t off, size_t len, char* buf) {
  CSHM_ASSIGN_OR_RETURN(std::string_view got, Read(ino, off, len, buf, nullptr));
  return got.size();
}

Status FileSystem::OpenedForWrite(uint64_t ino) { return cluster_ ? cluster_->OpenedForWrite(ino) : Status::Ok(); }

void FileSystem::ClosedForWrite(uint64_t ino) {
  if (cluster_) cluster_->ClosedForWrite(ino);
}

Result<std::string_view> FileSystem::Read(uint64_t ino, uint64_t off, size_t len, char* buf,
                                          ReadScratch* scratch) {
  if (cluster_) return cluster_->Read(ino, off, len, buf, scratch);
  CSHM_ASSIGN_OR_RETURN(auto seg, RegularSegment(ino));
  CSHM_ASSIGN_OR_RETURN(meta::InodeRecord r, ns_->GetAttr(ino));
  if (off >= r.size) return std::string_view();
  const size_t n = static_cast<size_t>(std::min<uint64_t>(len, r.size - off));
  if (scratch != nullptr && scratch->from_file) {
    CSHM_ASSIGN_OR_RETURN(bool sent, seg->SendTo(off, n, scratch->from_file));
    if (sent) return std::string_view();
  }
  CSHM_RETURN_IF_ERROR(seg->Read(off, n, buf));
  return std::string_view(buf, n);
}

Status FileSystem::Write(uint64_t ino, uint64_t off, const char* data, size_t len, bool writeback) {
  if (off > kMaxFileSize || len > kMaxFileSize - off) return TooBig("write past the largest file size");
  if (cluster_) return cluster_->Write(ino, off, data, len, writeback);
  CSHM_ASSIGN_OR_RETURN(auto seg, RegularSegment(ino));
  MutexLock lock(&seg->mu());
  CSHM_RETURN_IF_ERROR(seg->Write(off, data, len));
  return ns_->NoteWrite(ino, off + len, /*touch_mtime=*/true).status();
}

Result<meta::InodeRecord> FileSystem::SetAttr(uint64_t ino, const meta::SetAttrRequest& req) {
  if (!req.size) return meta_->SetAttr(ino, req);
  if (*req.size > kMaxFileSize) return TooBig("size past the largest file size");
  if (cluster_) {
    // The owner drops the pages past the end everywhere, then the namespace
    // records the size.
    CSHM_RETURN_IF_ERROR(cluster_->Truncate(ino, *req.size));
    return meta_->SetAttr(ino, req);
  }
  CSHM_ASSIGN_OR_RETURN(auto seg, RegularSegment(ino));
  MutexLock lock(&seg->mu());
  CSHM_ASSIGN_OR_RETURN(meta::InodeRecord before, ns_->GetAttr(ino));
  if (*req.size < before.size) CSHM_RETURN_IF_ERROR(seg->Truncate(*req.size));
  return ns_->SetAttr(ino, req);
}

Status FileSystem::Fallocate(uint64_t ino, int mode, uint64_t off, uint64_t len) {
  if (len == 0) return Invalid("fallocate of zero length");
  if (off > kMaxFileSize || len > kMaxFileSize - off) return TooBig("fallocate past the largest file size");
  if (cluster_) return cluster_->Fallocate(ino, mode, off, len);
  CSHM_ASSIGN_OR_RETURN(auto seg, RegularSegment(ino));
  MutexLock lock(&seg->mu());
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

void FileSystem::Forget(uint64_t ino, uint64_t n, const meta::Caller& caller) {
  meta_->Forget(ino, n, caller);
  if (cluster_) cluster_->KernelForgot(ino);
}

void FileSystem::Semaphore(uint64_t ino, std::string io, pid_t caller_tid, bool writable,
                           std::function<bool()> interrupted, std::function<void(const std::string& io)> reply) {
  semaphores_->Run(ino, std::move(io), caller_tid, writable, std::move(interrupted), std::move(reply));
}

void FileSystem::SetLockLater(uint64_t ino, const ownership::Lock& want, std::function<bool()> interrupted,
                              std::function<void(const Status&)> done) {
  if (!cluster_) return done(NotSupported("locks are the kernel's on a one-node mount"));
  cluster_->SetLockLater(ino, want, std::move(interrupted), std::move(done));
}

Status FileSystem::Fsync(uint64_t ino) {
  // A release: the other nodes' copies of what this node wrote are gone.
  if (cluster_) return cluster_->Sync(ino);
  CSHM_RETURN_IF_ERROR(ns_->GetAttr(ino).status());
  CSHM_RETURN_IF_ERROR(ns_->CommitWrites(ino));  // the writes' times, kept in memory until now
  return meta_store_->Sync();
}

FsStats FileSystem::Stats() {
  FsStats s;
  s.blocks = pages_->capacity() / s.block_size;
  const uint64_t used = std::min(pages_->used(), pages_->capacity());
  s.blocks_free = (pages_->capacity() - used) / s.block_size;
  // Inodes cost metadata only; report a large fixed budget like tmpfs's default.
  s.files = 1ull << 32;
  s.files_free = s.files - std::min<uint64_t>(s.files, ns_ ? ns_->inode_count() : 0);
  return s;
}

}  // namespace cshm::fs

namespace cshm::fs {

Result<ownership::Lock> FileSystem::GetLock(uint64_t ino, const ownership::Lock& want) {
  if (!cluster_) return NotSupported("locks are the kernel's on a one-node mount");
  return cluster_->GetLock(ino, want);
}

Status FileSystem::SetLock(uint64_t ino, const ownership::Lock& want) {
  if (!cluster_) return NotSupported("locks are the kernel's on a one-node mount");
  return cluster_->SetLock(ino, want);
}

Status FileSystem::ReleaseLocks(uint64_t ino, uint64_t owner, bool flock) {
  if (!cluster_) return Status::Ok();
  return cluster_->ReleaseLocks(ino, owner, flock);
}

Status FileSystem::Flush(uint64_t ino, uint64_t lock_owner) {
  if (!cluster_) return ns_->CommitWrites(ino);  // close stores the times its writes changed
  // close() is a release (the kernel wrote the dirty pages back before FLUSH).
  Status synced = cluster_->Sync(ino);
  Status unlocked = cluster_->ReleaseLocks(ino, lock_owner, /*flock=*/false);
  return synced.ok() ? unlocked : synced;
}

}  // namespace cshm::fs

namespace cshm::fs {
namespace {
constexpr std::string_view kControlPrefix = "user.cshm.";
// The control attributes; other user.cshm.* names are ordinary xattrs (the
// SysV shim keeps its bookkeeping there).
bool IsControl(std::string_view name) {
  if (name.substr(0, kControlPrefix.size()) != kControlPrefix) return false;
  const std::string_view key = name.substr(kControlPrefix.size());
  return key == "owner" || key == "pin" || key == "stats" || key == "remote_fetches" || key == "cluster";
}
}  // namespace

Result<std::string> FileSystem::GetXattr(uint64_t ino, std::string_view name) {
  // Only user.* xattrs exist here, so others are answered without the
  // metadata node: the kernel asks for security.capability before every
  // write(2), and that write must not wait for (or fail with) a metadata
  // node that has nothing to do with the file's owner.
  if (name.substr(0, 5) != "user.") return NoData("only user.* extended attributes exist on cshm");
  if (!IsControl(name)) return meta_->GetXattr(ino, name);
  const std::string_view key = name.substr(kControlPrefix.size());
  if (key == "cluster") {
    // The whole cluster's health, on any file or directory (cshmctl status).
    if (cluster_) return cluster_->StatusJson();
    return "{\"self\": " + std::to_string(node_id_) + ", \"metadata_node\": " + std::to_string(node_id_) +
           ", \"nodes\": [\n  {\"id\": " + std::to_string(node_id_) + ", \"self\": true, \"reachable\": true, " +
           "\"segments\": -1, \"page_bytes\": " + std::to_string(pages_->used()) + ", \"capacity_bytes\": " +
           std::to_string(pages_->capacity()) + ", \"version\": \"" CSHM_VERSION "\"}\n]}\n";
  }
  CSHM_ASSIGN_OR_RETURN(auto rec, meta_->GetAttr(ino));
  if (!rec.IsReg()) return NoData("only segments (regular files) have " + std::string(name));
  if (!cluster_) {
    if (key == "owner") return std::to_string(node_id_);
    if (key == "remote_fetches") return std::string("0");
    if (key == "stats") return "owner=node" + std::to_string(node_id_) + " (one-node cluster)";
    return meta_->GetXattr(ino, name);
  }
  if (key == "owner") {
    CSHM_ASSIGN_OR_RETURN(uint32_t owner, cluster_->CurrentOwner(ino));
    return std::to_string(owner);
  }
  if (key == "stats") return cluster_->Control(ino, ownership::ControlOp::kDescribe, 0);
  if (key == "remote_fetches") return std::to_string(cluster_->remote_fetches(ino));
  // pin
  auto v = meta_->GetXattr(ino, name);
  if (!v.ok() && v.status().code() == Status::Code::kNoData) return std::string("0");
  return v;
}

Status FileSystem::SetXattr(uint64_t ino, std::string_view name, std::string_view value, int flags) {
  if (!IsControl(name)) return meta_->SetXattr(ino, name, value, flags);
  const std::string_view key = name.substr(kControlPrefix.size());
  if (key == "cluster") return NotSupported(std::string(name) + " is read-only");
  CSHM_ASSIGN_OR_RETURN(auto rec, meta_->GetAttr(ino));
  if (!rec.IsReg()) return Invalid("only segments (regular files) can be controlled");
  std::string v(value);
  while (!v.empty() && (v.back() == '\n' || v.back() == '\0')) v.pop_back();
  if (key == "owner") {
    char* end = nullptr;
    const unsigned long node = std::strtoul(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0') return Invalid("user.cshm.owner takes a node id");
    if (!cluster_) return node == node_id_ ? Status::Ok() : Invalid("a one-node cluster has only node 0");
    return cluster_->Migrate(ino, static_cast<uint32_t>(node));
  }
  if (key == "pin") {
    if (v != "0" && v != "1") return Invalid("user.cshm.pin takes 1 or 0");
    if (!cluster_) return meta_->SetXattr(ino, name, v, 0);
    return cluster_->Control(ino, ownership::ControlOp::kPin, v == "1").status();
  }
  return NotSupported(std::string(name) + " is read-only");
}

Result<std::vector<std::string>> FileSystem::ListXattrs(uint64_t ino) {
  CSHM_ASSIGN_OR_RETURN(auto names, meta_->ListXattrs(ino));
  std::erase_if(names, [](const std::string& n) { return IsControl(n); });  // the stored pin
  return names;
}

Status FileSystem::RemoveXattr(uint64_t ino, std::string_view name) {
  if (!IsControl(name)) return meta_->RemoveXattr(ino, name);
  // Through the control path, as a write of 0 is: the owner's pin in memory
  // and the stored one go together.
  if (name.substr(kControlPrefix.size()) == "pin") return SetXattr(ino, name, "0", 0);
  return NotPermitted(std::string(name) + " cannot be removed");
}

}  // namespace cshm::fs
