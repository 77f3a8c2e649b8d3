// MetaStore: the namespace, inode records, xattrs and counters in RocksDB.
//
// Keys (big-endian numbers so that RocksDB orders them numerically):
//   'S' name                  super records (format version, counters)
//   'I' ino                   InodeRecord::Encode()
//   'D' parent name           DirEntry: child ino + file type
//   'X' ino name              xattr value
//   'O' ino                   orphan: unlinked while still referenced; purged at start
//
// Writes go through a Batch so that one namespace operation is one atomic
// RocksDB write. Writes are not fsynced: the WAL lives in the kernel's page cache
// and survives a crash or kill -9 of the daemon (the contract we give, like
// tmpfs's: nothing is lost by a daemon restart). Sync() forces it to disk.
//
// A full disk: a write is kNoSpace, not applied, once less than Headroom() is
// free, so that RocksDB itself rarely meets ENOSPC; if it does (the disk
// filled between the check and the write), the write fails and the next one
// that finds room opens the store again. Reads go on throughout, and writes
// resume by themselves once space is freed. RocksDB's messages go to our
// log, not to files in `dir`.
//
// Thread-safety: all methods may be called concurrently (RocksDB is); callers
// order conflicting read-modify-write sequences themselves (meta::Namespace does).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "store/inode_record.h"

namespace rocksdb {
class DB;
class WriteBatch;
}  // namespace rocksdb

namespace cshm::store {

struct DirEntry {
  std::string name;
  uint64_t ino = 0;
  uint32_t type = 0;  // S_IFMT bits of the child's mode
};

class MetaStore {
 public:
  class Batch {
   public:
    Batch();
    ~Batch();
    void PutInode(const InodeRecord& r);
    // Deletes the inode record and all its xattrs.
    void DeleteInode(uint64_t ino);
    void PutEntry(uint64_t parent, const DirEntry& e);
    void DeleteEntry(uint64_t parent, std::string_view name);
    void PutXattr(uint64_t ino, std::string_view name, std::string_view value);
    void DeleteXattr(uint64_t ino, std::string_view name);
    void PutOrphan(uint64_t ino);
    void DeleteOrphan(uint64_t ino);
    void PutCounter(std::string_view name, uint64_t value);

   private:
    friend class MetaStore;
    std::unique_ptr<rocksdb::WriteBatch> wb_;
  };

  // Opens (creating if missing) the store in `dir`. A store that RocksDB cannot
  // open, or whose format record is missing or unknown, is kCorruption with a
  // message that says what to do.
  // `headroom`: bytes that must stay free on the file system of `dir`; a
  // write finding less is kNoSpace before RocksDB is asked (0: only tests).
  static Result<std::unique_ptr<MetaStore>> Open(const std::string& dir, uint64_t headroom = Headroom());
  ~MetaStore();

  Status Commit(Batch& batch);
  Status Sync();
  // The default headroom: room for RocksDB to flush a full write buffer.
  static uint64_t Headroom();

  Result<std::optional<InodeRecord>> GetInode(uint64_t ino);
  Result<std::optional<DirEntry>> GetEntry(uint64_t parent, std::string_view name);
  // Entries of `dir` in name order, starting after `after` (empty: from the
  // start), at most `limit` of them.
  Status ListEntries(uint64_t dir, std::string_view after, size_t limit, std::vector<DirEntry>* out);
  Result<bool> HasEntries(uint64_t dir);
  Result<std::optional<std::string>> GetXattr(uint64_t ino, std::string_view name);
  Status ListXattrs(uint64_t ino, std::vector<std::string>* names);
  Status ListOrphans(std::vector<uint64_t>* out);
  Result<uint64_t> GetCounter(std::string_view name, uint64_t default_value);
  // Every inode number in the store (for start-up checks and tools).
  Status ListInodes(std::vector<uint64_t>* out);
  // RocksDB's own figures (for metrics): estimated keys, live SST bytes,
  // memtable bytes, pending compaction bytes, running compactions and
  // flushes, background errors; "rocksdb.<property>" names without the prefix.
  std::vector<std::pair<std::string, uint64_t>> Properties();

 private:
  MetaStore(rocksdb::DB* db, std::string dir, uint64_t headroom);
  Result<std::optional<std::string>> Get(const std::string& key);
  Status Write(rocksdb::WriteBatch* wb, bool sync);
  Status Reopen();
  Status Full(const std::string& how) const;  // kNoSpace saying what to do

  // Held shared by every read and write, exclusively to open the store again.
  SharedMutex db_mu_;
  std::unique_ptr<rocksdb::DB> db_ GUARDED_BY(db_mu_);  // null only after a failed Reopen()
  const std::string dir_;
  const uint64_t headroom_;
  // A write failed: RocksDB refuses writes until it is opened again.
  std::atomic<bool> failed_{false};
};

}  // namespace cshm::store
