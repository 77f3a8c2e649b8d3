#include "store/inode_record.h"

#include <time.h>

#include "common/bytes.h"

namespace cshm::store {
namespace {
constexpr uint8_t kFormat = 1;
constexpr uint32_t kBlockSize = 4096;
}  // namespace

Timestamp Timestamp::Now() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return Timestamp{ts.tv_sec, ts.tv_nsec};
}

struct stat InodeRecord::ToStat() const {
  struct stat st {};
  st.st_ino = ino;
  st.st_mode = mode;
  st.st_nlink = nlink;
  st.st_uid = uid;
  st.st_gid = gid;
  st.st_rdev = rdev;
  st.st_size = static_cast<off_t>(IsSymlink() ? symlink_target.size() : size);
  st.st_blksize = kBlockSize;
  st.st_blocks = static_cast<blkcnt_t>((st.st_size + 511) / 512);
  st.st_atim = {atime.sec, atime.nsec};
  st.st_mtim = {mtime.sec, mtime.nsec};
  st.st_ctim = {ctime.sec, ctime.nsec};
  return st;
}

std::string InodeRecord::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU8(kFormat);
  w.PutU32(mode);
  w.PutU32(uid);
  w.PutU32(gid);
  w.PutU32(nlink);
  w.PutU64(size);
  w.PutU64(rdev);
  for (const Timestamp* t : {&atime, &mtime, &ctime}) {
    w.PutI64(t->sec);
    w.PutI64(t->nsec);
  }
  w.PutU64(parent);
  w.PutU32(owner_node);
  w.PutBytes(symlink_target);
  return out;
}

Result<InodeRecord> InodeRecord::Decode(uint64_t ino, std::string_view bytes) {
  InodeRecord r;
  r.ino = ino;
  ByteReader in(bytes);
  uint8_t format = 0;
  in.GetU8(&format);
  if (in.ok() && format != kFormat)
    return Corruption("inode " + std::to_string(ino) + " has unknown record format " +
                      std::to_string(format));
  in.GetU32(&r.mode);
  in.GetU32(&r.uid);
  in.GetU32(&r.gid);
  in.GetU32(&r.nlink);
  in.GetU64(&r.size);
  in.GetU64(&r.rdev);
  for (Timestamp* t : {&r.atime, &r.mtime, &r.ctime}) {
    in.GetI64(&t->sec);
    in.GetI64(&t->nsec);
  }
  in.GetU64(&r.parent);
  in.GetU32(&r.owner_node);
  in.GetBytes(&r.symlink_target);
  if (!in.AtEnd()) return Corruption("inode " + std::to_string(ino) + " record is truncated or has trailing bytes");
  return r;
}

}  // namespace cshm::store
