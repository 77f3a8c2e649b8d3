#include "meta/namespace.h"

#include <sys/stat.h>
#include <sys/xattr.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <climits>

namespace cshm::meta {
namespace {

constexpr uint64_t kFirstCounter = 2;  // 1 is the root
constexpr size_t kXattrValueMax = 65536;

bool IsUserXattr(std::string_view name) { return name.rfind("user.", 0) == 0; }

}  // namespace

Status CheckName(std::string_view name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos)
    return Invalid("invalid file name '" + std::string(name) + "'");
  if (name.size() > NAME_MAX) return NameTooLong("file name longer than 255 bytes");
  return Status::Ok();
}

Namespace::Namespace(store::MetaStore* store, uint32_t node_id, PurgeFn purge)
    : store_(store), node_id_(node_id), purge_(std::move(purge)), refs_(node_id) {}

Result<std::unique_ptr<Namespace>> Namespace::Open(store::MetaStore* store, uint32_t node_id,
                                                   const RootOptions& root, PurgeFn purge) {
  std::unique_ptr<Namespace> ns(new Namespace(store, node_id, std::move(purge)));
  MutexLock lock(&ns->mu_);  // nobody else has it yet: for the analysis
  CSHM_ASSIGN_OR_RETURN(ns->next_counter_, store->GetCounter(kInoCounterKey, kFirstCounter));

  CSHM_ASSIGN_OR_RETURN(auto stored_root, store->GetInode(store::kRootIno));
  InodeRecord r;
  if (stored_root) {
    r = *stored_root;
    if (!r.IsDir()) return Corruption("the root inode is not a directory");
  } else {
    r.ino = store::kRootIno;
    r.mode = S_IFDIR | 01777;
    r.nlink = 2;
    r.parent = store::kRootIno;
    r.owner_node = node_id;
    r.atime = r.mtime = r.ctime = Timestamp::Now();
  }
  if (root.mode) r.mode = S_IFDIR | (*root.mode & 07777);
  if (root.uid) r.uid = *root.uid;
  if (root.gid) r.gid = *root.gid;
  if (!stored_root || !(r == *stored_root)) {
    store::MetaStore::Batch b;
    b.PutInode(r);
    CSHM_RETURN_IF_ERROR(store->Commit(b));
  }
  ns->cache_[r.ino] = r;

  // Orphans of a previous run: other nodes may still hold them (ExpectNodes).
  std::vector<uint64_t> orphans;
  CSHM_RETURN_IF_ERROR(store->ListOrphans(&orphans));
  const auto now = std::chrono::steady_clock::now();
  for (uint64_t ino : orphans) {
    CSHM_ASSIGN_OR_RETURN(auto rec, store->GetInode(ino));
    ns->orphans_[ino] = Orphan{rec ? rec->owner_node : node_id, now};
  }
  return ns;
}

Status Namespace::Purge(const PurgeList& inos) {
  Status first;
  for (auto [ino, owner] : inos) {
    Status s = purge_ ? purge_(ino, owner) : Status::Ok();
    if (!s.ok() && first.ok()) first = s;
  }
  return first;
}

Result<InodeRecord> Namespace::LoadLocked(uint64_t ino) {
  auto it = cache_.find(ino);
  if (it != cache_.end()) return it->second;
  CSHM_ASSIGN_OR_RETURN(auto rec, store_->GetInode(ino));
  if (!rec) return NotFound("no inode " + std::to_string(ino));
  cache_[ino] = *rec;
  return *rec;
}

Result<InodeRecord> Namespace::LoadDirLocked(uint64_t ino) {
  CSHM_ASSIGN_OR_RETURN(InodeRecord r, LoadLocked(ino));
  if (!r.IsDir()) return NotDir("inode " + std::to_string(ino) + " is not a directory");
  if (r.nlink == 0) return NotFound("directory was removed");
  return r;
}

Result<std::optional<store::DirEntry>> Namespace::EntryLocked(uint64_t parent, std::string_view name) {
  return store_->GetEntry(parent, name);
}

Status Namespace::CommitLocked(store::MetaStore::Batch& b, std::vector<InodeRecord> updated,
                               std::vector<uint64_t> deleted) {
  for (const InodeRecord& r : updated) b.PutInode(r);
  CSHM_RETURN_IF_ERROR(store_->Commit(b));
  for (InodeRecord& r : updated) {
    if (r.IsDir()) changed_dirs_.push_back(r.ino);
    kept_.erase(r.ino);  // committed with whatever times the cache held
    cache_[r.ino] = std::move(r);
  }
  for (uint64_t ino : deleted) {
    kept_.erase(ino);
    cache_.erase(ino);
  }
  if (kept_.empty()) kept_since_ = {};
  return Status::Ok();
}

Result<InodeRecord> Namespace::Lookup(uint64_t parent, std::string_view name, const Caller& caller) {
  CSHM_RETURN_IF_ERROR(CheckName(name));
  MutexLock lock(&mu_);
  CSHM_RETURN_IF_ERROR(LoadDirLocked(parent).status());
  CSHM_ASSIGN_OR_RETURN(auto e, EntryLocked(parent, name));
  if (!e) return NotFound("no entry '" + std::string(name) + "'");
  CSHM_ASSIGN_OR_RETURN(InodeRecord r, LoadLocked(e->ino));
  refs_.Take(r.ino, caller.node, caller.seq);
  return r;
}

void Namespace::Forget(uint64_t ino, uint64_t n, const Caller& caller) {
  PurgeList purge;
  {
    MutexLock lock(&mu_);
    refs_.Drop(ino, caller.node, n, caller.seq);
    if (refs_.Held(ino)) return;
    if (orphans_.count(ino)) {
      purge = PurgeOrphansLocked();
    } else {
      auto c = cache_.find(ino);
      // Kept: dirs (cheap, hot), and a record whose times are not stored yet.
      if (c != cache_.end() && !c->second.IsDir() && !kept_.contains(ino)) cache_.erase(c);
    }
  }
  (void)Purge(purge);
}

Namespace::PurgeList Namespace::PurgeOrphansLocked() {
  PurgeList purge;
  if (!refs_.Settled()) return purge;
  store::MetaStore::Batch b;
  std::vector<uint64_t> deleted;
  for (auto& [ino, o] : orphans_) {
    if (refs_.Held(ino)) continue;
    b.DeleteInode(ino);
    b.DeleteOrphan(ino);
    deleted.push_back(ino);
    purge.emplace_back(ino, o.owner);
  }
  if (deleted.empty()) return purge;
  // A failed commit keeps the orphans (and their records) for a later try.
  if (!CommitLocked(b, {}, deleted).ok()) return {};
  for (uint64_t ino : deleted) orphans_.erase(ino);
  return purge;
}

template <typename F>
void Namespace::ChangeReferences(F change) {
  PurgeList purge;
  {
    MutexLock lock(&mu_);
    change();
    purge = PurgeOrphansLocked();
  }
  (void)Purge(purge);
}

void Namespace::ExpectNodes(const std::vector<uint32_t>& peers) {
  ChangeReferences([&]() REQUIRES(mu_) { refs_.Expect(peers); });
}

Namespace::NodeState Namespace::node_state(uint32_t node) {
  MutexLock lock(&mu_);
  return refs_.state(node);
}

void Namespace::Asking(uint32_t node) {
  MutexLock lock(&mu_);
  refs_.Asking(node);
}

void Namespace::Abandon(uint32_t node) {
  MutexLock lock(&mu_);
  refs_.Abandon(node);
}

void Namespace::Register(uint32_t node, const ReferenceSnapshot& snap) {
  ChangeReferences([&]() REQUIRES(mu_) { refs_.Register(node, snap); });
}

void Namespace::NodeGone(uint32_t node) {
  ChangeReferences([&]() REQUIRES(mu_) { refs_.Gone(node); });
}

void Namespace::NodeUnknown(uint32_t node) {
  MutexLock lock(&mu_);
  refs_.Unknown(node);
}

std::vector<uint32_t> Namespace::Pinning(std::chrono::milliseconds age) {
  MutexLock lock(&mu_);
  const auto cutoff = std::chrono::steady_clock::now() - age;
  std::vector<uint32_t> out;
  for (auto& [ino, o] : orphans_) {
    if (o.since > cutoff) continue;
    for (uint32_t n : refs_.Holders(ino))
      if (n != node_id_ && std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
  }
  return out;
}

std::vector<uint64_t> Namespace::OrphansHeldBy(uint32_t node) {
  MutexLock lock(&mu_);
  std::vector<uint64_t> out;
  for (auto& [ino, o] : orphans_)
    if (refs_.HeldBy(ino, node)) out.push_back(ino);
  return out;
}

bool Namespace::HeldBy(uint64_t ino, uint32_t node) {
  MutexLock lock(&mu_);
  return refs_.HeldBy(ino, node);
}

size_t Namespace::orphan_count() {
  MutexLock lock(&mu_);
  return orphans_.size();
}

void Namespace::SetChangeHook(ChangeFn fn) { changed_ = std::move(fn); }

NameChange Namespace::TakeChangeLocked(uint32_t by) {
  NameChange c;
  c.by = by;
  std::sort(changed_dirs_.begin(), changed_dirs_.end());
  changed_dirs_.erase(std::unique(changed_dirs_.begin(), changed_dirs_.end()), changed_dirs_.end());
  c.dirs.swap(changed_dirs_);
  return c;
}

void Namespace::Announce(const NameChange& change) {
  if (changed_ && !change.empty()) changed_(change);
}

uint64_t Namespace::references(uint64_t ino) {
  MutexLock lock(&mu_);
  return refs_.Count(ino);
}

uint64_t Namespace::inode_count() {
  std::vector<uint64_t> inos;
  if (!store_->ListInodes(&inos).ok()) return 0;
  return inos.size();
}

Result<InodeRecord> Namespace::GetAttr(uint64_t ino) {
  MutexLock lock(&mu_);
  return LoadLocked(ino);
}

Result<InodeRecord> Namespace::SetAttr(uint64_t ino, const SetAttrRequest& req) {
  MutexLock lock(&mu_);
  CSHM_ASSIGN_OR_RETURN(InodeRecord r, LoadLocked(ino));
  const Timestamp now = Timestamp::Now();
  if (req.mode) r.mode = (r.mode & S_IFMT) | (*req.mode & 07777);
  if (req.uid) r.uid = *req.uid;
  if (req.gid) r.gid = *req.gid;
  if (req.size) {
    if (!r.IsReg()) return r.IsDir() ? IsDir("cannot truncate a directory") : Invalid("not a regular file");
    if (*req.size != r.size && !req.mtime) r.mtime = now;
    r.size = *req.size;
  }
  if (req.atime) r.atime = *req.atime;
  if (req.mtime) r.mtime = *req.mtime;
  r.ctime = now;
  store::MetaStore::Batch b;
  CSHM_RETURN_IF_ERROR(CommitLocked(b, {r}, {}));
  // A directory's new mode or owner: other kernels check permissions with it.
  const NameChange change = TakeChangeLocked(kNoNode);
  lock.Unlock();
  Announce(change);
  return r;
}

Result<InodeRecord> Namespace::NoteWrite(uint64_t ino, uint64_t end, bool touch_mtime) {
  MutexLock lock(&mu_);
  CSHM_ASSIGN_OR_RETURN(InodeRecord r, LoadLocked(ino));
  bool changed = false;
  if (end > r.size) {
    r.size = end;
    changed = true;
  }
  if (touch_mtime || changed) {
    r.mtime = r.ctime = Timestamp::Now();
  }
  if (!changed && touch_mtime) return KeepLocked(r);  // the times alone
  if (!changed) return r;
  store::MetaStore::Batch b;
  CSHM_RETURN_IF_ERROR(CommitLocked(b, {r}, {}));
  return r;
}

Result<InodeRecord> Namespace::KeepLocked(const InodeRecord& r) {
  const auto now = std::chrono::steady_clock::now();
  if (kept_.empty()) kept_since_ = now;
  cache_[r.ino] = r;
  kept_.insert(r.ino);
  if (now - kept_since_ >= std::chrono::seconds(1)) CSHM_RETURN_IF_ERROR(CommitWritesLocked(0));
  return r;
}

Status Namespace::CommitWrites(uint64_t ino) {
  MutexLock lock(&mu_);
  return CommitWritesLocked(ino);
}

Status Namespace::CommitWritesLocked(uint64_t ino) {
  std::vector<InodeRecord> records;
  for (uint64_t i : kept_) {
    if (ino != 0 && i != ino) continue;
    auto it = cache_.find(i);
    if (it != cache_.end()) records.push_back(it->second);
  }
  if (records.empty()) return Status::Ok();
  store::MetaStore::Batch b;
  return CommitLocked(b, std::move(records), {});  // clears their entries in kept_
}

Namespace::~Namespace() {
  Status st = CommitWrites();
  if (!st.ok()) spdlog::warn("the sizes and times of the last writes were not stored: {}", st.message());
}


Status Namespace::SetXattr(uint64_t ino, std::string_view name, std::string_view value, int flags) {
  if (!IsUserXattr(name)) return NotSupported("only user.* extended attributes are supported");
  if (name.size() > XATTR_NAME_MAX) return RangeError("xattr name longer than 255 bytes");
  if (value.size() > kXattrValueMax) return ArgTooBig("xattr value larger than 64 KiB");
  MutexLock lock(&mu_);
  CSHM_ASSIGN_OR_RETURN(InodeRecord r, LoadLocked(ino));
  if (!r.IsReg() && !r.IsDir()) return NotPermitted("user.* xattrs are only for files and directories");
  CSHM_ASSIGN_OR_RETURN(auto existing, store_->GetXattr(ino, name));
  if ((flags & XATTR_CREATE) && existing) return Exists("xattr exists");
  if ((flags & XATTR_REPLACE) && !existing) return NoData("no such xattr");
  r.ctime = Timestamp::Now();
  store::MetaStore::Batch b;
  b.PutXattr(ino, name, value);
  CSHM_RETURN_IF_ERROR(CommitLocked(b, {r}, {}));
  const NameChange change = TakeChangeLocked(kNoNode);  // a directory's ctime
  lock.Unlock();
  Announce(change);
  return Status::Ok();
}

Result<std::string> Namespace::GetXattr(uint64_t ino, std::string_view name) {
  MutexLock lock(&mu_);
  CSHM_RETURN_IF_ERROR(LoadLocked(ino).status());
  if (!IsUserXattr(name)) return NoData("no such xattr");
  CSHM_ASSIGN_OR_RETURN(auto v, store_->GetXattr(ino, name));
  if (!v) return NoData("no such xattr");
  return *v;
}

Result<std::vector<std::string>> Namespace::ListXattrs(uint64_t ino) {
  MutexLock lock(&mu_);
  CSHM_RETURN_IF_ERROR(LoadLocked(ino).status());
  std::vector<std::string> names;
  CSHM_RETURN_IF_ERROR(store_->ListXattrs(ino, &names));
  return names;
}

Status Namespace::RemoveXattr(uint64_t ino, std::string_view name) {
  if (!IsUserXattr(name)) return NotSupported("only user.* extended attributes are supported");
  MutexLock lock(&mu_);
  CSHM_ASSIGN_OR_RETURN(InodeRecord r, LoadLocked(ino));
  CSHM_ASSIGN_OR_RETURN(auto existing, store_->GetXattr(ino, name));
  if (!existing) return NoData("no such xattr");
  r.ctime = Timestamp::Now();
  store::MetaStore::Batch b;
  b.DeleteXattr(ino, name);
  CSHM_RETURN_IF_ERROR(CommitLocked(b, {r}, {}));
  const NameChange change = TakeChangeLocked(kNoNode);  // a directory's ctime
  lock.Unlock();
  Announce(change);
  return Status::Ok();
}

Status Namespace::SetOwner(uint64_t ino, uint32_t node) {
  MutexLock lock(&mu_);
  CSHM_ASSIGN_OR_RETURN(InodeRecord r, LoadLocked(ino));
  if (!r.IsReg()) return Invalid("only regular files have owners");
  r.owner_node = node;
  store::MetaStore::Batch b;
  return CommitLocked(b, {r}, {});
}

}  // namespace cshm::meta
