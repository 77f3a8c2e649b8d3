#include "store/meta_store.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include "common/bytes.h"

namespace cshm::store {
namespace {

constexpr uint64_t kStoreFormat = 1;
constexpr char kFormatCounter[] = "format";

std::string InodeKey(uint64_t ino) {
  std::string k = "I";
  PutKeyU64(&k, ino);
  return k;
}
std::string EntryPrefix(uint64_t parent) {
  std::string k = "D";
  PutKeyU64(&k, parent);
  return k;
}
std::string EntryKey(uint64_t parent, std::string_view name) {
  std::string k = EntryPrefix(parent);
  k.append(name);
  return k;
}
std::string XattrPrefix(uint64_t ino) {
  std::string k = "X";
  PutKeyU64(&k, ino);
  return k;
}
std::string XattrKey(uint64_t ino, std::string_view name) {
  std::string k = XattrPrefix(ino);
  k.append(name);
  return k;
}
std::string OrphanKey(uint64_t ino) {
  std::string k = "O";
  PutKeyU64(&k, ino);
  return k;
}
std::string CounterKey(std::string_view name) { return "S" + std::string(name); }

std::string EncodeEntry(const DirEntry& e) {
  std::string v;
  ByteWriter w(&v);
  w.PutU64(e.ino);
  w.PutU32(e.type);
  return v;
}

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  if (s.IsCorruption()) return Corruption(std::string(what) + ": " + s.ToString());
  if (s.IsNoSpace()) return NoSpace(std::string(what) + ": " + s.ToString());
  return IoError(std::string(what) + ": " + s.ToString());
}

std::string EncodeU64(uint64_t v) {
  std::string s;
  ByteWriter(&s).PutU64(v);
  return s;
}

}  // namespace

MetaStore::Batch::Batch() : wb_(std::make_unique<rocksdb::WriteBatch>()) {}
MetaStore::Batch::~Batch() = default;

void MetaStore::Batch::PutInode(const InodeRecord& r) { wb_->Put(InodeKey(r.ino), r.Encode()); }
void MetaStore::Batch::DeleteInode(uint64_t ino) {
  wb_->Delete(InodeKey(ino));
  wb_->DeleteRange(XattrPrefix(ino), XattrPrefix(ino + 1));
}
void MetaStore::Batch::PutEntry(uint64_t parent, const DirEntry& e) {
  wb_->Put(EntryKey(parent, e.name), EncodeEntry(e));
}
void MetaStore::Batch::DeleteEntry(uint64_t parent, std::string_view name) {
  wb_->Delete(EntryKey(parent, name));
}
void MetaStore::Batch::PutXattr(uint64_t ino, std::string_view name, std::string_view value) {
  wb_->Put(XattrKey(ino, name), rocksdb::Slice(value.data(), value.size()));
}
void MetaStore::Batch::DeleteXattr(uint64_t ino, std::string_view name) {
  wb_->Delete(XattrKey(ino, name));
}
void MetaStore::Batch::PutOrphan(uint64_t ino) { wb_->Put(OrphanKey(ino), ""); }
void MetaStore::Batch::DeleteOrphan(uint64_t ino) { wb_->Delete(OrphanKey(ino)); }
void MetaStore::Batch::PutCounter(std::string_view name, uint64_t value) {
  wb_->Put(CounterKey(name), EncodeU64(value));
}

MetaStore::MetaStore(rocksdb::DB* db) : db_(db) {}
MetaStore::~MetaStore() = default;

Result<std::unique_ptr<MetaStore>> MetaStore::Open(const std::string& dir) {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.paranoid_checks = true;
  options.keep_log_file_num = 2;
  options.max_log_file_size = 1 << 20;
  options.write_buffer_size = 8 << 20;
  options.IncreaseParallelism(2);
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(options, dir, &raw);
  if (!s.ok()) {
    if (s.IsIOError() && s.ToString().find("lock") != std::string::npos)
      return Busy("metadata store " + dir + " is in use by another process: " + s.ToString());
    if (s.IsNoSpace()) return FromRocks(s, "opening metadata store " + dir);
    // The state dir itself was checked for access before, so what is left is a
    // store that is damaged or was never ours.
    return Corruption("metadata store " + dir + " cannot be opened (" + s.ToString() +
                      "); it is damaged or not a cshm state dir: move the state dir aside "
                      "and start with an empty one");
  }
  std::unique_ptr<MetaStore> store(new MetaStore(raw));
  // A fresh store gets the format record; an existing one must carry ours.
  auto format = store->Get(CounterKey(kFormatCounter));
  if (!format.ok()) return format.status();
  if (!format->has_value()) {
    std::unique_ptr<rocksdb::Iterator> it(raw->NewIterator(rocksdb::ReadOptions()));
    it->SeekToFirst();
    if (it->Valid())
      return Corruption("metadata store " + dir +
                        " holds data but no cshm format record; it is not a cshm state dir "
                        "or is damaged: move it aside and start with an empty one");
    Batch b;
    b.PutCounter(kFormatCounter, kStoreFormat);
    CSHM_RETURN_IF_ERROR(store->Commit(b));
  } else {
    uint64_t v = 0;
    ByteReader r(**format);
    if (!r.GetU64(&v) || v != kStoreFormat)
      return Corruption("metadata store " + dir + " has format " + std::to_string(v) +
                        ", this cshmfs reads format " + std::to_string(kStoreFormat));
  }
  return store;
}

Status MetaStore::Commit(Batch& batch) {
  rocksdb::WriteOptions wo;
  return FromRocks(db_->Write(wo, batch.wb_.get()), "metadata write");
}

Status MetaStore::Sync() { return FromRocks(db_->FlushWAL(/*sync=*/true), "metadata sync"); }

Result<std::optional<std::string>> MetaStore::Get(const std::string& key) {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), key, &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return FromRocks(s, "metadata read");
  return std::optional<std::string>(std::move(value));
}

Result<std::optional<InodeRecord>> MetaStore::GetInode(uint64_t ino) {
  CSHM_ASSIGN_OR_RETURN(auto v, Get(InodeKey(ino)));
  if (!v) return std::optional<InodeRecord>();
  CSHM_ASSIGN_OR_RETURN(auto rec, InodeRecord::Decode(ino, *v));
  return std::optional<InodeRecord>(std::move(rec));
}

Result<std::optional<DirEntry>> MetaStore::GetEntry(uint64_t parent, std::string_view name) {
  CSHM_ASSIGN_OR_RETURN(auto v, Get(EntryKey(parent, name)));
  if (!v) return std::optional<DirEntry>();
  DirEntry e;
  e.name = std::string(name);
  ByteReader r(*v);
  r.GetU64(&e.ino);
  r.GetU32(&e.type);
  if (!r.AtEnd()) return Corruption("directory entry '" + e.name + "' does not decode");
  return std::optional<DirEntry>(std::move(e));
}

Status MetaStore::ListEntries(uint64_t dir, std::string_view after, size_t limit,
                              std::vector<DirEntry>* out) {
  const std::string prefix = EntryPrefix(dir);
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  std::string start = prefix + std::string(after);
  for (it->Seek(start); it->Valid() && out->size() < limit; it->Next()) {
    rocksdb::Slice k = it->key();
    if (!k.starts_with(prefix)) break;
    std::string name(k.data() + prefix.size(), k.size() - prefix.size());
    if (!after.empty() && name == after) continue;
    DirEntry e;
    e.name = std::move(name);
    ByteReader r(std::string_view(it->value().data(), it->value().size()));
    r.GetU64(&e.ino);
    r.GetU32(&e.type);
    if (!r.AtEnd()) return Corruption("directory entry '" + e.name + "' does not decode");
    out->push_back(std::move(e));
  }
  return FromRocks(it->status(), "listing a directory");
}

Result<bool> MetaStore::HasEntries(uint64_t dir) {
  std::vector<DirEntry> one;
  CSHM_RETURN_IF_ERROR(ListEntries(dir, "", 1, &one));
  return !one.empty();
}

Result<std::optional<std::string>> MetaStore::GetXattr(uint64_t ino, std::string_view name) {
  return Get(XattrKey(ino, name));
}

Status MetaStore::ListXattrs(uint64_t ino, std::vector<std::string>* names) {
  const std::string prefix = XattrPrefix(ino);
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next())
    names->emplace_back(it->key().data() + prefix.size(), it->key().size() - prefix.size());
  return FromRocks(it->status(), "listing xattrs");
}

Status MetaStore::ListOrphans(std::vector<uint64_t>* out) {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("O"); it->Valid() && it->key().starts_with("O"); it->Next())
    out->push_back(GetKeyU64(std::string_view(it->key().data() + 1, it->key().size() - 1)));
  return FromRocks(it->status(), "listing orphans");
}

Status MetaStore::ListInodes(std::vector<uint64_t>* out) {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("I"); it->Valid() && it->key().starts_with("I"); it->Next())
    out->push_back(GetKeyU64(std::string_view(it->key().data() + 1, it->key().size() - 1)));
  return FromRocks(it->status(), "listing inodes");
}

Result<uint64_t> MetaStore::GetCounter(std::string_view name, uint64_t default_value) {
  CSHM_ASSIGN_OR_RETURN(auto v, Get(CounterKey(name)));
  if (!v) return default_value;
  uint64_t n = 0;
  ByteReader r(*v);
  if (!r.GetU64(&n) || !r.AtEnd()) return Corruption("counter '" + std::string(name) + "' does not decode");
  return n;
}

}  // namespace cshm::store
