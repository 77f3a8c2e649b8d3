// The namespace's entries (meta/namespace.h): creating, linking, unlinking
// and renaming names, reading directories and symlinks. Each is one atomic
// batch under the namespace's mutex; what an unlink frees is purged after the
// mutex is released. Attributes, xattrs, references and the writes' times are
// in meta/namespace.cc.
#include <linux/fs.h>
#include <sys/stat.h>

#include "meta/namespace.h"

namespace cshm::meta {
Result<InodeRecord> Namespace::CreateLocked(uint64_t parent, std::string_view name, uint32_t mode,
                                            uint64_t rdev, std::string_view symlink_target,
                                            const Caller& caller) {
  CSHM_RETURN_IF_ERROR(CheckName(name));
  CSHM_ASSIGN_OR_RETURN(InodeRecord dir, LoadDirLocked(parent));
  CSHM_ASSIGN_OR_RETURN(auto existing, EntryLocked(parent, name));
  if (existing) return Exists("'" + std::string(name) + "' exists");
  if (S_ISDIR(mode) && dir.nlink >= kMaxLinks) return TooManyLinks("too many subdirectories");

  const Timestamp now = Timestamp::Now();
  InodeRecord r;
  r.ino = (static_cast<uint64_t>(node_id_) << 48) | next_counter_;
  r.mode = mode;
  r.uid = caller.uid;
  r.gid = caller.gid;
  // A set-group-ID directory passes its group on, and its bit to subdirectories.
  if (dir.mode & S_ISGID) {
    r.gid = dir.gid;
    if (S_ISDIR(mode)) r.mode |= S_ISGID;
  }
  r.nlink = S_ISDIR(mode) ? 2 : 1;
  r.rdev = rdev;
  r.atime = r.mtime = r.ctime = now;
  r.parent = S_ISDIR(mode) ? parent : 0;
  r.owner_node = caller.node;
  r.symlink_target = std::string(symlink_target);

  dir.mtime = dir.ctime = now;
  if (S_ISDIR(mode)) dir.nlink++;

  store::MetaStore::Batch b;
  b.PutEntry(parent, store::DirEntry{std::string(name), r.ino, mode & S_IFMT});
  b.PutCounter(kInoCounterKey, next_counter_ + 1);
  CSHM_RETURN_IF_ERROR(CommitLocked(b, {r, dir}, {}));
  next_counter_++;
  refs_.Take(r.ino, caller.node, caller.seq);
  return r;
}

Result<InodeRecord> Namespace::Create(uint64_t parent, std::string_view name, uint32_t mode, uint64_t rdev,
                                     std::string_view symlink_target, const Caller& caller) {
  NameChange change;
  Result<InodeRecord> r = NotFound("");
  {
    MutexLock lock(&mu_);
    r = CreateLocked(parent, name, mode, rdev, symlink_target, caller);
    change = TakeChangeLocked(caller.node);  // the parent's times (and links)
  }
  Announce(change);
  return r;
}

Result<InodeRecord> Namespace::Mknod(uint64_t parent, std::string_view name, uint32_t mode, uint64_t rdev,
                                     const Caller& caller) {
  const uint32_t type = mode & S_IFMT;
  if (type != S_IFREG && type != S_IFIFO && type != S_IFSOCK && type != S_IFCHR && type != S_IFBLK)
    return Invalid("mknod of an unsupported file type");
  return Create(parent, name, mode, rdev, "", caller);
}

Result<InodeRecord> Namespace::Mkdir(uint64_t parent, std::string_view name, uint32_t mode,
                                     const Caller& caller) {
  return Create(parent, name, S_IFDIR | (mode & 07777), 0, "", caller);
}

Result<InodeRecord> Namespace::Symlink(uint64_t parent, std::string_view name, std::string_view target,
                                       const Caller& caller) {
  if (target.empty()) return NotFound("empty symlink target");
  if (target.size() >= PATH_MAX) return NameTooLong("symlink target longer than PATH_MAX");
  return Create(parent, name, S_IFLNK | 0777, 0, target, caller);
}

Result<InodeRecord> Namespace::Link(uint64_t ino, uint64_t new_parent, std::string_view new_name,
                                    const Caller& caller) {
  CSHM_RETURN_IF_ERROR(CheckName(new_name));
  MutexLock lock(&mu_);
  CSHM_ASSIGN_OR_RETURN(InodeRecord r, LoadLocked(ino));
  if (r.IsDir()) return NotPermitted("hard links to directories are not allowed");
  if (r.nlink == 0) return NotFound("the file was removed");
  if (r.nlink >= kMaxLinks) return TooManyLinks("too many links");
  CSHM_ASSIGN_OR_RETURN(InodeRecord dir, LoadDirLocked(new_parent));
  CSHM_ASSIGN_OR_RETURN(auto existing, EntryLocked(new_parent, new_name));
  if (existing) return Exists("'" + std::string(new_name) + "' exists");
  const Timestamp now = Timestamp::Now();
  r.nlink++;
  r.ctime = now;
  dir.mtime = dir.ctime = now;
  store::MetaStore::Batch b;
  b.PutEntry(new_parent, store::DirEntry{std::string(new_name), r.ino, r.mode & S_IFMT});
  CSHM_RETURN_IF_ERROR(CommitLocked(b, {r, dir}, {}));
  refs_.Take(r.ino, caller.node, caller.seq);
  const NameChange change = TakeChangeLocked(caller.node);
  lock.Unlock();
  Announce(change);
  return r;
}

bool Namespace::DropLinkLocked(InodeRecord& victim, store::MetaStore::Batch& b, const Timestamp& now) {
  victim.ctime = now;
  // A directory loses its "." link along with its name.
  victim.nlink = victim.IsDir() ? 0 : victim.nlink - 1;
  if (victim.nlink > 0) return false;
  // Held somewhere, or perhaps held by a node whose references are not known
  // yet: it lives on until the last reference goes (PurgeOrphansLocked).
  if (refs_.Held(victim.ino) || !refs_.Settled()) {
    b.PutOrphan(victim.ino);
    orphans_[victim.ino] = Orphan{victim.owner_node, std::chrono::steady_clock::now()};
    return false;
  }
  return true;
}

Status Namespace::Unlink(uint64_t parent, std::string_view name, const Caller& caller) {
  CSHM_RETURN_IF_ERROR(CheckName(name));
  PurgeList purge;
  NameChange change;
  {
    MutexLock lock(&mu_);
    CSHM_ASSIGN_OR_RETURN(InodeRecord dir, LoadDirLocked(parent));
    CSHM_ASSIGN_OR_RETURN(auto e, EntryLocked(parent, name));
    if (!e) return NotFound("no entry '" + std::string(name) + "'");
    CSHM_ASSIGN_OR_RETURN(InodeRecord victim, LoadLocked(e->ino));
    if (victim.IsDir()) return IsDir("'" + std::string(name) + "' is a directory");
    const Timestamp now = Timestamp::Now();
    store::MetaStore::Batch b;
    b.DeleteEntry(parent, name);
    dir.mtime = dir.ctime = now;
    if (DropLinkLocked(victim, b, now)) {
      b.DeleteInode(victim.ino);
      CSHM_RETURN_IF_ERROR(CommitLocked(b, {dir}, {victim.ino}));
      purge.emplace_back(victim.ino, victim.owner_node);
    } else {
      CSHM_RETURN_IF_ERROR(CommitLocked(b, {dir, victim}, {}));
    }
    change = TakeChangeLocked(caller.node);
  }
  change.names.emplace_back(parent, std::string(name));
  Announce(change);
  return Purge(purge);
}

Status Namespace::Rmdir(uint64_t parent, std::string_view name, const Caller& caller) {
  if (name == ".") return Invalid("cannot remove '.'");
  if (name == "..") return NotEmpty("cannot remove '..'");
  CSHM_RETURN_IF_ERROR(CheckName(name));
  MutexLock lock(&mu_);
  CSHM_ASSIGN_OR_RETURN(InodeRecord dir, LoadDirLocked(parent));
  CSHM_ASSIGN_OR_RETURN(auto e, EntryLocked(parent, name));
  if (!e) return NotFound("no entry '" + std::string(name) + "'");
  CSHM_ASSIGN_OR_RETURN(InodeRecord victim, LoadLocked(e->ino));
  if (!victim.IsDir()) return NotDir("'" + std::string(name) + "' is not a directory");
  CSHM_ASSIGN_OR_RETURN(bool has_entries, store_->HasEntries(victim.ino));
  if (has_entries) return NotEmpty("directory '" + std::string(name) + "' is not empty");
  const Timestamp now = Timestamp::Now();
  store::MetaStore::Batch b;
  b.DeleteEntry(parent, name);
  dir.mtime = dir.ctime = now;
  dir.nlink--;
  if (DropLinkLocked(victim, b, now)) {
    b.DeleteInode(victim.ino);
    CSHM_RETURN_IF_ERROR(CommitLocked(b, {dir}, {victim.ino}));
  } else {
    CSHM_RETURN_IF_ERROR(CommitLocked(b, {dir, victim}, {}));
  }
  NameChange change = TakeChangeLocked(caller.node);
  lock.Unlock();
  change.names.emplace_back(parent, std::string(name));
  Announce(change);
  return Status::Ok();
}

Status Namespace::Rename(uint64_t parent, std::string_view name, uint64_t new_parent,
                         std::string_view new_name, unsigned flags, const Caller& caller) {
  if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) return Invalid("unsupported rename flags");
  if ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE))
    return Invalid("RENAME_NOREPLACE and RENAME_EXCHANGE together");
  CSHM_RETURN_IF_ERROR(CheckName(name));
  CSHM_RETURN_IF_ERROR(CheckName(new_name));
  PurgeList purge;
  NameChange change;
  {
    MutexLock lock(&mu_);
    CSHM_ASSIGN_OR_RETURN(InodeRecord src_dir, LoadDirLocked(parent));
    CSHM_ASSIGN_OR_RETURN(InodeRecord dst_dir, LoadDirLocked(new_parent));
    CSHM_ASSIGN_OR_RETURN(auto src_e, EntryLocked(parent, name));
    if (!src_e) return NotFound("no entry '" + std::string(name) + "'");
    CSHM_ASSIGN_OR_RETURN(auto dst_e, EntryLocked(new_parent, new_name));
    CSHM_ASSIGN_OR_RETURN(InodeRecord src, LoadLocked(src_e->ino));

    if ((flags & RENAME_NOREPLACE) && dst_e) return Exists("'" + std::string(new_name) + "' exists");
    if ((flags & RENAME_EXCHANGE) && !dst_e) return NotFound("no entry '" + std::string(new_name) + "'");
    if (dst_e && dst_e->ino == src.ino) return Status::Ok();  // same inode: POSIX says do nothing

    // Neither moved directory may end up inside itself.
    auto inside = [&](uint64_t dir_ino, uint64_t target_parent) REQUIRES(mu_) -> Result<bool> {
      uint64_t cur = target_parent;
      for (int depth = 0; depth < 4096; depth++) {
        if (cur == dir_ino) return true;
        if (cur == store::kRootIno) return false;
        CSHM_ASSIGN_OR_RETURN(InodeRecord c, LoadLocked(cur));
        cur = c.parent;
      }
      return Corruption("directory parent chain too deep or cyclic");
    };
    if (src.IsDir() && parent != new_parent) {
      CSHM_ASSIGN_OR_RETURN(bool bad, inside(src.ino, new_parent));
      if (bad) return Invalid("cannot move a directory into itself");
    }

    const Timestamp now = Timestamp::Now();
    store::MetaStore::Batch b;
    std::vector<InodeRecord> updated;
    std::vector<uint64_t> deleted;
    src_dir.mtime = src_dir.ctime = now;
    dst_dir.mtime = dst_dir.ctime = now;
    src.ctime = now;

    if (flags & RENAME_EXCHANGE) {
      CSHM_ASSIGN_OR_RETURN(InodeRecord dst, LoadLocked(dst_e->ino));
      if (dst.IsDir() && parent != new_parent) {
        CSHM_ASSIGN_OR_RETURN(bool bad, inside(dst.ino, parent));
        if (bad) return Invalid("cannot move a directory into itself");
      }
      dst.ctime = now;
      b.PutEntry(new_parent, store::DirEntry{std::string(new_name), src.ino, src.mode & S_IFMT});
      b.PutEntry(parent, store::DirEntry{std::string(name), dst.ino, dst.mode & S_IFMT});
      if (parent != new_parent) {
        if (src.IsDir()) {
          src.parent = new_parent;
          src_dir.nlink--;
          dst_dir.nlink++;
        }
        if (dst.IsDir()) {
          dst.parent = parent;
          dst_dir.nlink--;
          src_dir.nlink++;
        }
      }
      updated = {src, dst};
    } else {
      if (dst_e) {
        CSHM_ASSIGN_OR_RETURN(InodeRecord dst, LoadLocked(dst_e->ino));
        if (src.IsDir() && !dst.IsDir()) return NotDir("'" + std::string(new_name) + "' is not a directory");
        if (!src.IsDir() && dst.IsDir()) return IsDir("'" + std::string(new_name) + "' is a directory");
        if (dst.IsDir()) {
          CSHM_ASSIGN_OR_RETURN(bool has_entries, store_->HasEntries(dst.ino));
          if (has_entries) return NotEmpty("directory '" + std::string(new_name) + "' is not empty");
          dst_dir.nlink--;
        }
        if (DropLinkLocked(dst, b, now)) {
          b.DeleteInode(dst.ino);
          deleted.push_back(dst.ino);
          if (!dst.IsDir()) purge.emplace_back(dst.ino, dst.owner_node);
        } else {
          updated.push_back(dst);
        }
      }
      b.DeleteEntry(parent, name);
      b.PutEntry(new_parent, store::DirEntry{std::string(new_name), src.ino, src.mode & S_IFMT});
      if (src.IsDir() && parent != new_parent) {
        src.parent = new_parent;
        src_dir.nlink--;
        dst_dir.nlink++;
      }
      updated.push_back(src);
    }
    // With one parent, only dst_dir carries every change (times, and the link
    // of a replaced directory); src_dir is a stale copy of the same inode.
    if (parent == new_parent) {
      updated.push_back(dst_dir);
    } else {
      updated.push_back(src_dir);
      updated.push_back(dst_dir);
    }
    CSHM_RETURN_IF_ERROR(CommitLocked(b, std::move(updated), std::move(deleted)));
    change = TakeChangeLocked(caller.node);
    change.names.emplace_back(parent, std::string(name));
    if (dst_e) change.names.emplace_back(new_parent, std::string(new_name));
  }
  Announce(change);
  return Purge(purge);
}

Result<std::string> Namespace::Readlink(uint64_t ino) {
  MutexLock lock(&mu_);
  CSHM_ASSIGN_OR_RETURN(InodeRecord r, LoadLocked(ino));
  if (!r.IsSymlink()) return Invalid("not a symbolic link");
  return r.symlink_target;
}

Result<std::vector<ListedEntry>> Namespace::ListDir(uint64_t ino) {
  MutexLock lock(&mu_);
  CSHM_ASSIGN_OR_RETURN(InodeRecord dir, LoadDirLocked(ino));
  std::vector<ListedEntry> out;
  out.push_back({".", dir.ino, S_IFDIR});
  out.push_back({"..", dir.parent, S_IFDIR});
  std::vector<store::DirEntry> entries;
  CSHM_RETURN_IF_ERROR(store_->ListEntries(ino, "", SIZE_MAX, &entries));
  for (auto& e : entries) out.push_back({std::move(e.name), e.ino, e.type});
  return out;
}

}  // namespace cshm::meta
