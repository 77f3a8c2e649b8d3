#include "meta/meta_rpc.h"

#include <chrono>

#include "common/bytes.h"

namespace cshm::meta {
namespace {

void PutTs(ByteWriter& w, const Timestamp& t) {
  w.PutI64(t.sec);
  w.PutI64(t.nsec);
}
void GetTs(ByteReader& r, Timestamp* t) {
  r.GetI64(&t->sec);
  r.GetI64(&t->nsec);
}

std::string EncodeInode(const InodeRecord& rec) {
  std::string out;
  ByteWriter w(&out);
  w.PutU64(rec.ino);
  out += rec.Encode();
  return out;
}

Result<InodeRecord> DecodeInode(std::string_view in) {
  ByteReader r(in);
  uint64_t ino = 0;
  if (!r.GetU64(&ino)) return Invalid("malformed inode reply");
  return InodeRecord::Decode(ino, in.substr(8));
}

Result<std::string> InodeReply(const Result<InodeRecord>& r) {
  if (!r.ok()) return r.status();
  return EncodeInode(*r);
}

Result<std::string> EmptyReply(const Status& s) {
  if (!s.ok()) return s;
  return std::string();
}

}  // namespace

std::string MetaRequest::Encode() const {
  std::string out;
  ByteWriter w(&out);
  w.PutU8(static_cast<uint8_t>(op));
  w.PutU64(ino);
  w.PutU64(ino2);
  w.PutU32(mode);
  w.PutBytes(name);
  w.PutBytes(name2);
  w.PutU32(caller.uid);
  w.PutU32(caller.gid);
  w.PutU32(caller.node);
  w.PutU64(caller.seq);
  uint8_t has = (attr.mode ? 1 : 0) | (attr.uid ? 2 : 0) | (attr.gid ? 4 : 0) | (attr.size ? 8 : 0) |
                (attr.atime ? 16 : 0) | (attr.mtime ? 32 : 0);
  w.PutU8(has);
  w.PutU32(attr.mode.value_or(0));
  w.PutU32(attr.uid.value_or(0));
  w.PutU32(attr.gid.value_or(0));
  w.PutU64(attr.size.value_or(0));
  PutTs(w, attr.atime.value_or(Timestamp{}));
  PutTs(w, attr.mtime.value_or(Timestamp{}));
  w.PutU32(cache_ms);
  return out;
}

Result<MetaRequest> MetaRequest::Decode(std::string_view in) {
  MetaRequest m;
  ByteReader r(in);
  uint8_t op = 0, has = 0;
  uint32_t mode = 0, uid = 0, gid = 0;
  uint64_t size = 0;
  Timestamp at, mt;
  r.GetU8(&op);
  r.GetU64(&m.ino);
  r.GetU64(&m.ino2);
  r.GetU32(&m.mode);
  r.GetBytes(&m.name);
  r.GetBytes(&m.name2);
  r.GetU32(&m.caller.uid);
  r.GetU32(&m.caller.gid);
  r.GetU32(&m.caller.node);
  r.GetU64(&m.caller.seq);
  r.GetU8(&has);
  r.GetU32(&mode);
  r.GetU32(&uid);
  r.GetU32(&gid);
  r.GetU64(&size);
  GetTs(r, &at);
  GetTs(r, &mt);
  r.GetU32(&m.cache_ms);
  if (!r.AtEnd()) return Invalid("malformed metadata request");
  if (op < static_cast<uint8_t>(MetaOp::kLookup) || op > static_cast<uint8_t>(MetaOp::kSetOwner))
    return Invalid("unknown metadata operation " + std::to_string(op));
  m.op = static_cast<MetaOp>(op);
  if (has & 1) m.attr.mode = mode;
  if (has & 2) m.attr.uid = uid;
  if (has & 4) m.attr.gid = gid;
  if (has & 8) m.attr.size = size;
  if (has & 16) m.attr.atime = at;
  if (has & 32) m.attr.mtime = mt;
  return m;
}

bool MayWaitOnPeers(std::string_view payload) {
  if (payload.empty()) return false;
  switch (static_cast<MetaOp>(payload[0])) {
    case MetaOp::kSetAttr: case MetaOp::kMknod: case MetaOp::kMkdir: case MetaOp::kSymlink: case MetaOp::kLink:
    case MetaOp::kUnlink: case MetaOp::kRmdir: case MetaOp::kRename: case MetaOp::kSetXattr:
    case MetaOp::kRemoveXattr:
      return true;
    default:
      return false;
  }
}

Result<std::string> ServeMetaRequest(MetaService& svc, uint32_t from, std::string_view payload,
                                     NameGrants* grants) {
  CSHM_ASSIGN_OR_RETURN(MetaRequest m, MetaRequest::Decode(payload));
  m.caller.node = from;  // what it creates is its own, what it looks up it holds
  if (grants != nullptr) grants->Granted(from, m.cache_ms);  // before the namespace is read
  switch (m.op) {
    case MetaOp::kLookup: return InodeReply(svc.Lookup(m.ino, m.name, m.caller));
    case MetaOp::kForget: svc.Forget(m.ino, m.ino2, m.caller); return std::string();
    case MetaOp::kGetAttr: return InodeReply(svc.GetAttr(m.ino));
    case MetaOp::kSetAttr: return InodeReply(svc.SetAttr(m.ino, m.attr));
    case MetaOp::kNoteWrite: return InodeReply(svc.NoteWrite(m.ino, m.ino2, m.mode != 0));
    case MetaOp::kMknod: return InodeReply(svc.Mknod(m.ino, m.name, m.mode, m.ino2, m.caller));
    case MetaOp::kMkdir: return InodeReply(svc.Mkdir(m.ino, m.name, m.mode, m.caller));
    case MetaOp::kSymlink: return InodeReply(svc.Symlink(m.ino, m.name, m.name2, m.caller));
    case MetaOp::kLink: return InodeReply(svc.Link(m.ino, m.ino2, m.name, m.caller));
    case MetaOp::kUnlink: return EmptyReply(svc.Unlink(m.ino, m.name, m.caller));
    case MetaOp::kRmdir: return EmptyReply(svc.Rmdir(m.ino, m.name, m.caller));
    case MetaOp::kRename: return EmptyReply(svc.Rename(m.ino, m.name, m.ino2, m.name2, m.mode, m.caller));
    case MetaOp::kReadlink: return svc.Readlink(m.ino);
    case MetaOp::kListDir: {
      CSHM_ASSIGN_OR_RETURN(auto entries, svc.ListDir(m.ino));
      std::string out;
      ByteWriter w(&out);
      w.PutU32(static_cast<uint32_t>(entries.size()));
      for (const ListedEntry& e : entries) {
        w.PutBytes(e.name);
        w.PutU64(e.ino);
        w.PutU32(e.type);
      }
      return out;
    }
    case MetaOp::kSetXattr: return EmptyReply(svc.SetXattr(m.ino, m.name, m.name2, static_cast<int>(m.mode)));
    case MetaOp::kGetXattr: return svc.GetXattr(m.ino, m.name);
    case MetaOp::kListXattrs: {
      CSHM_ASSIGN_OR_RETURN(auto names, svc.ListXattrs(m.ino));
      std::string out;
      ByteWriter w(&out);
      w.PutU32(static_cast<uint32_t>(names.size()));
      for (const std::string& n : names) w.PutBytes(n);
      return out;
    }
    case MetaOp::kRemoveXattr: return EmptyReply(svc.RemoveXattr(m.ino, m.name));
    case MetaOp::kSetOwner: return EmptyReply(svc.SetOwner(m.ino, m.mode));
  }
  return Invalid("unknown metadata operation");
}

Result<std::string> RemoteMeta::Call(MetaRequest r) {
  r.cache_ms = cache_ms_;
  return call_(r.Encode());
}

Result<InodeRecord> RemoteMeta::CallInode(const MetaRequest& r) {
  CSHM_ASSIGN_OR_RETURN(std::string reply, Call(r));
  return DecodeInode(reply);
}

RemoteMeta::RemoteMeta(CallFn call, SendFn send, uint32_t cache_ms)
    : call_(std::move(call)),
      send_(std::move(send)),
      cache_ms_(cache_ms),
      // Above every number an earlier run of this node can have used.
      held_(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count())
            << 10) {}

Result<InodeRecord> RemoteMeta::CallTakingRef(MetaRequest r) {
  r.caller.seq = held_.Begin();
  auto got = CallInode(r);
  // A link's name is in new_parent (ino2); every other op's in ino.
  held_.End(got.ok() ? got->ino : 0, r.op == MetaOp::kLink ? r.ino2 : r.ino, r.name);
  return got;
}

Result<InodeRecord> RemoteMeta::Lookup(uint64_t parent, std::string_view name, const Caller& caller) {
  return CallTakingRef(MetaRequest{.op = MetaOp::kLookup, .ino = parent, .name = std::string(name), .caller = caller});
}
void RemoteMeta::Forget(uint64_t ino, uint64_t n, const Caller& caller) {
  Caller c = caller;
  c.seq = held_.Forget(ino, n);
  send_(MetaRequest{.op = MetaOp::kForget, .ino = ino, .ino2 = n, .caller = c}.Encode());
}
Result<InodeRecord> RemoteMeta::GetAttr(uint64_t ino) { return CallInode(MetaRequest{.op = MetaOp::kGetAttr, .ino = ino}); }
Result<InodeRecord> RemoteMeta::SetAttr(uint64_t ino, const SetAttrRequest& req) {
  return CallInode(MetaRequest{.op = MetaOp::kSetAttr, .ino = ino, .attr = req});
}
Result<InodeRecord> RemoteMeta::NoteWrite(uint64_t ino, uint64_t end, bool touch_mtime) {
  return CallInode(MetaRequest{.op = MetaOp::kNoteWrite, .ino = ino, .ino2 = end, .mode = touch_mtime ? 1u : 0u});
}
Result<InodeRecord> RemoteMeta::Mknod(uint64_t parent, std::string_view name, uint32_t mode, uint64_t rdev,
                                      const Caller& caller) {
  return CallTakingRef(MetaRequest{
      .op = MetaOp::kMknod, .ino = parent, .ino2 = rdev, .mode = mode, .name = std::string(name), .caller = caller});
}
Result<InodeRecord> RemoteMeta::Mkdir(uint64_t parent, std::string_view name, uint32_t mode, const Caller& caller) {
  return CallTakingRef(
      MetaRequest{.op = MetaOp::kMkdir, .ino = parent, .mode = mode, .name = std::string(name), .caller = caller});
}
Result<InodeRecord> RemoteMeta::Symlink(uint64_t parent, std::string_view name, std::string_view target,
                                        const Caller& caller) {
  return CallTakingRef(MetaRequest{.op = MetaOp::kSymlink,
                               .ino = parent,
                               .name = std::string(name),
                               .name2 = std::string(target),
                               .caller = caller});
}
Result<InodeRecord> RemoteMeta::Link(uint64_t ino, uint64_t new_parent, std::string_view new_name,
                                     const Caller& caller) {
  return CallTakingRef(MetaRequest{
      .op = MetaOp::kLink, .ino = ino, .ino2 = new_parent, .name = std::string(new_name), .caller = caller});
}
Status RemoteMeta::Unlink(uint64_t parent, std::string_view name, const Caller&) {
  return Call(MetaRequest{.op = MetaOp::kUnlink, .ino = parent, .name = std::string(name)}).status();
}
Status RemoteMeta::Rmdir(uint64_t parent, std::string_view name, const Caller&) {
  return Call(MetaRequest{.op = MetaOp::kRmdir, .ino = parent, .name = std::string(name)}).status();
}
Status RemoteMeta::Rename(uint64_t parent, std::string_view name, uint64_t new_parent, std::string_view new_name,
                          unsigned flags, const Caller&) {
  return Call(MetaRequest{.op = MetaOp::kRename,
                           .ino = parent,
                           .ino2 = new_parent,
                           .mode = flags,
                           .name = std::string(name),
                           .name2 = std::string(new_name)})
      .status();
}
Result<std::string> RemoteMeta::Readlink(uint64_t ino) {
  return Call(MetaRequest{.op = MetaOp::kReadlink, .ino = ino});
}
Result<std::vector<ListedEntry>> RemoteMeta::ListDir(uint64_t ino) {
  CSHM_ASSIGN_OR_RETURN(std::string reply, Call(MetaRequest{.op = MetaOp::kListDir, .ino = ino}));
  ByteReader r(reply);
  uint32_t n = 0;
  r.GetU32(&n);
  std::vector<ListedEntry> out;
  for (uint32_t i = 0; i < n && r.ok(); i++) {
    ListedEntry e;
    r.GetBytes(&e.name);
    r.GetU64(&e.ino);
    r.GetU32(&e.type);
    out.push_back(std::move(e));
  }
  if (!r.AtEnd()) return Invalid("malformed directory listing");
  return out;
}
Status RemoteMeta::SetXattr(uint64_t ino, std::string_view name, std::string_view value, int flags) {
  return Call(MetaRequest{.op = MetaOp::kSetXattr,
                           .ino = ino,
                           .mode = static_cast<uint32_t>(flags),
                           .name = std::string(name),
                           .name2 = std::string(value)})
      .status();
}
Result<std::string> RemoteMeta::GetXattr(uint64_t ino, std::string_view name) {
  return Call(MetaRequest{.op = MetaOp::kGetXattr, .ino = ino, .name = std::string(name)});
}
Result<std::vector<std::string>> RemoteMeta::ListXattrs(uint64_t ino) {
  CSHM_ASSIGN_OR_RETURN(std::string reply, Call(MetaRequest{.op = MetaOp::kListXattrs, .ino = ino}));
  ByteReader r(reply);
  uint32_t n = 0;
  r.GetU32(&n);
  std::vector<std::string> out;
  for (uint32_t i = 0; i < n && r.ok(); i++) {
    std::string s;
    r.GetBytes(&s);
    out.push_back(std::move(s));
  }
  if (!r.AtEnd()) return Invalid("malformed xattr list");
  return out;
}
Status RemoteMeta::RemoveXattr(uint64_t ino, std::string_view name) {
  return Call(MetaRequest{.op = MetaOp::kRemoveXattr, .ino = ino, .name = std::string(name)}).status();
}

Status RemoteMeta::SetOwner(uint64_t ino, uint32_t node) {
  return Call(MetaRequest{.op = MetaOp::kSetOwner, .ino = ino, .mode = node}).status();
}

}  // namespace cshm::meta
