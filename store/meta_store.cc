#include "store/meta_store.h"

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cstdarg>
#include <cstdio>

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

// RocksDB's own messages go to our log, never to a LOG file in the state dir:
// Debian's RocksDB keeps its assertions, and its file logger aborts the daemon
// on the line after a write to a full disk failed (issue 15, item 3). Its
// chatter is debug; its warnings and errors are ours.
class RocksLogger final : public rocksdb::Logger {
 public:
  RocksLogger() : rocksdb::Logger(rocksdb::InfoLogLevel::DEBUG_LEVEL) {}
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override { Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap); }
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    const spdlog::level::level_enum ours = level >= rocksdb::InfoLogLevel::ERROR_LEVEL ? spdlog::level::err
                                           : level == rocksdb::InfoLogLevel::WARN_LEVEL ? spdlog::level::warn
                                                                                       : spdlog::level::debug;
    if (!spdlog::should_log(ours)) return;
    char line[1024];
    const int n = std::vsnprintf(line, sizeof(line), format, ap);
    std::string_view text(line, n < 0 ? 0 : std::min<size_t>(static_cast<size_t>(n), sizeof(line) - 1));
    while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
    spdlog::log(ours, "rocksdb: {}", text);
  }
};

Status Unavailable() {
  return IoError("the metadata store is closed: a write failed and opening it again failed (see the log)");
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

MetaStore::MetaStore(rocksdb::DB* db, std::string dir, uint64_t headroom)
    : db_(db), dir_(std::move(dir)), headroom_(headroom) {}
MetaStore::~MetaStore() = default;

namespace {

constexpr size_t kWriteBuffer = 8 << 20;

Status OpenDb(const std::string& dir, rocksdb::DB** raw) {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.paranoid_checks = true;
  options.info_log = std::make_shared<RocksLogger>();
  options.write_buffer_size = kWriteBuffer;
  options.IncreaseParallelism(2);
  mkdir(dir.c_str(), 0700);  // else RocksDB logs an error while creating it
  rocksdb::Status s = rocksdb::DB::Open(options, dir, raw);
  if (s.ok()) return Status::Ok();
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos)
    return Busy("metadata store " + dir + " is in use by another process: " + s.ToString());
  if (s.IsNoSpace() || s.ToString().find("No space left") != std::string::npos)
    return NoSpace("opening metadata store " + dir + ": " + s.ToString() + "; free space on its disk and start again");
  // The state dir itself was checked for access before, so what is left is a
  // store that is damaged or was never ours.
  return Corruption("metadata store " + dir + " cannot be opened (" + s.ToString() +
                    "); it is damaged or not a cshm state dir: move the state dir aside "
                    "and start with an empty one");
}

// Free bytes for an unprivileged writer on the file system holding `dir`.
uint64_t FreeBytes(const std::string& dir) {
  struct statvfs v;
  if (statvfs(dir.c_str(), &v) != 0) return UINT64_MAX;  // cannot tell: let RocksDB try
  return static_cast<uint64_t>(v.f_bavail) * v.f_frsize;
}

}  // namespace

Result<std::unique_ptr<MetaStore>> MetaStore::Open(const std::string& dir, uint64_t headroom) {
  rocksdb::DB* raw = nullptr;
  CSHM_RETURN_IF_ERROR(OpenDb(dir, &raw));
  std::unique_ptr<MetaStore> store(new MetaStore(raw, dir, headroom));
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

// What a write needs free on the state dir's file system: room for RocksDB
// to flush a full write buffer and compact it. Refusing below it keeps
// RocksDB from meeting ENOSPC itself, which Debian's 7.8 does not survive
// well: after a failed WAL append its recovery keeps writing to the failed
// log file and asserts.
uint64_t MetaStore::Headroom() { return 2 * kWriteBuffer; }

Status MetaStore::Commit(Batch& batch) { return Write(batch.wb_.get(), /*sync=*/false); }

// An empty synced write, not FlushWAL(true): a write checks the store's
// error state inside RocksDB's write group, while FlushWAL goes straight to
// a WAL file whose last append may have failed, where RocksDB asserts.
Status MetaStore::Sync() {
  rocksdb::WriteBatch empty;
  return Write(&empty, /*sync=*/true);
}

Status MetaStore::Full(const std::string& how) const {
  return NoSpace("metadata write: the file system of " + dir_ + " " + how + "; free space there and it resumes");
}

Status MetaStore::Write(rocksdb::WriteBatch* wb, bool sync) {
  if (headroom_ > 0 && FreeBytes(dir_) < headroom_)
    return Full("has less than " + std::to_string(headroom_ >> 20) + " MiB free");
  if (failed_.load()) CSHM_RETURN_IF_ERROR(Reopen());
  ReaderLock l(&db_mu_);
  if (!db_) return Unavailable();
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  const rocksdb::Status s = db_->Write(wo, wb);
  if (s.ok()) return Status::Ok();
  // The batch was not applied. RocksDB now refuses writes; it is opened
  // again (a fresh log file) by the next write that finds room.
  if (!failed_.exchange(true)) spdlog::error("metadata store: a write failed: {}", s.ToString());
  if (s.IsNoSpace()) return Full("is full");
  return FromRocks(s, "metadata write");
}

// Opening again replays the log into a table file: it needs a write
// buffer's worth of room. Below that the store stays as it is, refusing
// writes and answering reads.
Status MetaStore::Reopen() {
  if (FreeBytes(dir_) < kWriteBuffer + (1 << 20)) return Full("is full");
  WriterLock l(&db_mu_);
  if (!failed_.load()) return Status::Ok();
  if (db_) {  // null after an earlier reopen failed
    (void)db_->Close();
    db_.reset();
  }
  rocksdb::DB* raw = nullptr;
  Status s = OpenDb(dir_, &raw);
  if (!s.ok()) {
    // No store until a later write opens it: reads fail meanwhile.
    spdlog::error("metadata store: opening it again after a failed write: {}", s.ToString());
    return s;
  }
  db_.reset(raw);
  failed_.store(false);
  spdlog::info("metadata store: writes again after a failed write");
  return Status::Ok();
}

Result<std::optional<std::string>> MetaStore::Get(const std::string& key) {
  std::string value;
  ReaderLock l(&db_mu_);
  if (!db_) return Unavailable();
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
  ReaderLock l(&db_mu_);
  if (!db_) return Unavailable();
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
  ReaderLock l(&db_mu_);
  if (!db_) return Unavailable();
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next())
    names->emplace_back(it->key().data() + prefix.size(), it->key().size() - prefix.size());
  return FromRocks(it->status(), "listing xattrs");
}

Status MetaStore::ListOrphans(std::vector<uint64_t>* out) {
  ReaderLock l(&db_mu_);
  if (!db_) return Unavailable();
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("O"); it->Valid() && it->key().starts_with("O"); it->Next())
    out->push_back(GetKeyU64(std::string_view(it->key().data() + 1, it->key().size() - 1)));
  return FromRocks(it->status(), "listing orphans");
}

Status MetaStore::ListInodes(std::vector<uint64_t>* out) {
  ReaderLock l(&db_mu_);
  if (!db_) return Unavailable();
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

std::vector<std::pair<std::string, uint64_t>> MetaStore::Properties() {
  static constexpr const char* kNames[] = {"estimate-num-keys",       "live-sst-files-size",
                                           "cur-size-all-mem-tables", "estimate-pending-compaction-bytes",
                                           "num-running-compactions", "num-running-flushes",
                                           "background-errors"};
  std::vector<std::pair<std::string, uint64_t>> out;
  ReaderLock lock(&db_mu_);
  if (!db_) return out;
  for (const char* name : kNames) {
    uint64_t v = 0;
    if (db_->GetIntProperty(std::string("rocksdb.") + name, &v)) out.emplace_back(name, v);
  }
  return out;
}

}  // namespace cshm::store
