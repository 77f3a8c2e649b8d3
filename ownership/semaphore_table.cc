#include "ownership/semaphore_table.h"

#include <sys/sem.h>

#include <algorithm>
#include <cerrno>

#include "common/bytes.h"

namespace cshm::ownership {
namespace {

constexpr uint32_t kMagicV1 = 0x314d4553;  // "SEM1": adjustments without the process's start time
constexpr uint32_t kMagic = 0x324d4553;    // "SEM2"
constexpr uint32_t kMaxSems = 1u << 16;   // what a persisted set may claim

Status Errno(int err, const char* what) { return Status::System(err, what); }

}  // namespace

Result<SemaphoreTable::Set*> SemaphoreTable::Find(uint64_t ino) {
  auto it = sets_.find(ino);
  if (it == sets_.end()) return Errno(EINVAL, "no such semaphore set (removed?)");
  return &it->second;
}

Result<const SemaphoreTable::Set*> SemaphoreTable::Find(uint64_t ino) const {
  auto it = sets_.find(ino);
  if (it == sets_.end()) return Errno(EINVAL, "no such semaphore set (removed?)");
  return &it->second;
}

Status SemaphoreTable::Create(uint64_t ino, uint32_t nsems, int64_t now) {
  if (nsems == 0 || nsems > kMaxSems) return Errno(EINVAL, "a semaphore set has 1 to 65536 semaphores");
  if (sets_.contains(ino)) return Errno(EEXIST, "the semaphore set exists");
  Set& s = sets_[ino];
  s.values.assign(nsems, 0);
  s.pids.assign(nsems, 0);
  s.ctime = now;
  return Status::Ok();
}

int SemaphoreTable::TryApply(Set& s, const SemProcess& who, const std::vector<SemOpBuf>& ops, int64_t now,
                             size_t* blocked) {
  std::vector<int> values = s.values;
  auto undo_it = s.undo.find(who);
  std::vector<int> adj = undo_it != s.undo.end() ? undo_it->second : std::vector<int>();
  bool undone = false;
  for (size_t i = 0; i < ops.size(); i++) {
    const SemOpBuf& o = ops[i];
    const int cur = values[o.num];
    const int result = cur + o.op;
    if ((o.op == 0 && cur != 0) || result < 0) {
      *blocked = i;
      return EAGAIN;
    }
    if (result > kSemVmx) return ERANGE;
    if (o.flg & SEM_UNDO) {
      if (adj.empty()) adj.assign(values.size(), 0);
      const int u = adj[o.num] - o.op;
      if (u < -kSemVmx - 1 || u > kSemVmx) return ERANGE;
      adj[o.num] = u;
      undone = true;
    }
    values[o.num] = result;
  }
  s.values = std::move(values);
  for (const SemOpBuf& o : ops) s.pids[o.num] = who.pid;
  s.otime = now;
  if (undone) {
    bool any = false;
    for (int a : adj) any |= a != 0;
    if (any) s.undo[who] = std::move(adj);
    else s.undo.erase(who);
  }
  return 0;
}

void SemaphoreTable::Wake(Set& s, int64_t now, std::vector<SemCompleted>* done) {
  bool changed = true;
  while (changed) {
    changed = false;
    for (auto it = s.waiters.begin(); it != s.waiters.end();) {
      size_t blocked = 0;
      const int r = TryApply(s, it->who, it->ops, now, &blocked);
      if (r == EAGAIN) {
        ++it;
        continue;
      }
      // Applied, or refused now (ERANGE: another value was set meanwhile):
      // either way this waiter is answered.
      done->push_back(SemCompleted{it->node, it->token, r});
      it = s.waiters.erase(it);
      changed |= r == 0;
    }
  }
}

Status SemaphoreTable::Op(uint64_t ino, const SemProcess& who, const std::vector<SemOpBuf>& ops, uint64_t token,
                          int64_t now, std::vector<SemCompleted>* done) {
  CSHM_ASSIGN_OR_RETURN(Set * s, Find(ino));
  if (ops.empty()) return Errno(EINVAL, "semop needs at least one operation");
  for (const SemOpBuf& o : ops)
    if (o.num >= s->values.size()) return Errno(EFBIG, "a semaphore number is past the set's end");
  size_t blocked = 0;
  const int r = TryApply(*s, who, ops, now, &blocked);
  if (r == ERANGE) return Errno(ERANGE, "a semaphore value or adjustment would pass SEMVMX (32767)");
  if (r == EAGAIN) {
    if (ops[blocked].flg & IPC_NOWAIT) return Errno(EAGAIN, "the operation would wait (IPC_NOWAIT)");
    if (token != 0) s->waiters.push_back(Waiter{who.node, token, who, ops});
    return WouldBlock("queued");
  }
  Wake(*s, now, done);
  return Status::Ok();
}

bool SemaphoreTable::Cancel(uint64_t ino, uint32_t node, uint64_t token) {
  auto it = sets_.find(ino);
  if (it == sets_.end()) return false;
  auto& q = it->second.waiters;
  for (auto w = q.begin(); w != q.end(); ++w) {
    if (w->node == node && w->token == token) {
      q.erase(w);
      return true;
    }
  }
  return false;
}

bool SemaphoreTable::Queued(uint64_t ino, uint32_t node, uint64_t token) const {
  auto it = sets_.find(ino);
  if (it == sets_.end()) return false;
  for (const Waiter& w : it->second.waiters)
    if (w.node == node && w.token == token) return true;
  return false;
}

Result<int> SemaphoreTable::GetVal(uint64_t ino, uint32_t num) const {
  CSHM_ASSIGN_OR_RETURN(const Set* s, Find(ino));
  if (num >= s->values.size()) return Errno(EINVAL, "semnum is past the set's end");
  return s->values[num];
}

Result<int> SemaphoreTable::GetPid(uint64_t ino, uint32_t num) const {
  CSHM_ASSIGN_OR_RETURN(const Set* s, Find(ino));
  if (num >= s->values.size()) return Errno(EINVAL, "semnum is past the set's end");
  return s->pids[num];
}

Result<int> SemaphoreTable::GetNcnt(uint64_t ino, uint32_t num) const {
  CSHM_ASSIGN_OR_RETURN(const Set* s, Find(ino));
  if (num >= s->values.size()) return Errno(EINVAL, "semnum is past the set's end");
  // As the kernel's count_semcnt: a waiter counts for the operation it
  // waits on (the first that cannot proceed on today's values).
  int n = 0;
  for (const Waiter& w : s->waiters) {
    int cur_block = -1;
    std::vector<int> v = s->values;
    for (size_t i = 0; i < w.ops.size(); i++) {
      const int r = v[w.ops[i].num] + w.ops[i].op;
      if ((w.ops[i].op == 0 && v[w.ops[i].num] != 0) || r < 0) {
        cur_block = static_cast<int>(i);
        break;
      }
      v[w.ops[i].num] = r;
    }
    if (cur_block >= 0 && w.ops[cur_block].num == num && w.ops[cur_block].op < 0) n++;
  }
  return n;
}

Result<int> SemaphoreTable::GetZcnt(uint64_t ino, uint32_t num) const {
  CSHM_ASSIGN_OR_RETURN(const Set* s, Find(ino));
  if (num >= s->values.size()) return Errno(EINVAL, "semnum is past the set's end");
  int n = 0;
  for (const Waiter& w : s->waiters) {
    std::vector<int> v = s->values;
    for (const SemOpBuf& o : w.ops) {
      if ((o.op == 0 && v[o.num] != 0) || v[o.num] + o.op < 0) {
        n += o.num == num && o.op == 0;
        break;
      }
      v[o.num] += o.op;
    }
  }
  return n;
}

Result<std::vector<uint16_t>> SemaphoreTable::GetAll(uint64_t ino) const {
  CSHM_ASSIGN_OR_RETURN(const Set* s, Find(ino));
  return std::vector<uint16_t>(s->values.begin(), s->values.end());
}

Result<SemStat> SemaphoreTable::Stat(uint64_t ino) const {
  CSHM_ASSIGN_OR_RETURN(const Set* s, Find(ino));
  return SemStat{static_cast<uint32_t>(s->values.size()), s->otime, s->ctime};
}

Status SemaphoreTable::SetVal(uint64_t ino, const SemProcess& who, uint32_t num, int value, int64_t now,
                              std::vector<SemCompleted>* done) {
  CSHM_ASSIGN_OR_RETURN(Set * s, Find(ino));
  if (num >= s->values.size()) return Errno(EINVAL, "semnum is past the set's end");
  if (value < 0 || value > kSemVmx) return Errno(ERANGE, "a semaphore value is 0 to SEMVMX (32767)");
  s->values[num] = value;
  s->pids[num] = who.pid;
  s->ctime = now;
  for (auto it = s->undo.begin(); it != s->undo.end();) {  // the kernel clears this semaphore's adjustments
    it->second[num] = 0;
    bool any = false;
    for (int a : it->second) any |= a != 0;
    it = any ? std::next(it) : s->undo.erase(it);
  }
  Wake(*s, now, done);
  return Status::Ok();
}

Status SemaphoreTable::SetAll(uint64_t ino, const SemProcess& who, const std::vector<uint16_t>& values,
                              int64_t now, std::vector<SemCompleted>* done) {
  CSHM_ASSIGN_OR_RETURN(Set * s, Find(ino));
  if (values.size() != s->values.size()) return Errno(EINVAL, "SETALL needs one value per semaphore");
  for (uint16_t v : values)
    if (v > kSemVmx) return Errno(ERANGE, "a semaphore value is 0 to SEMVMX (32767)");
  s->values.assign(values.begin(), values.end());
  s->pids.assign(values.size(), who.pid);
  s->ctime = now;
  s->undo.clear();
  Wake(*s, now, done);
  return Status::Ok();
}

Status SemaphoreTable::Touch(uint64_t ino, int64_t now) {
  CSHM_ASSIGN_OR_RETURN(Set * s, Find(ino));
  s->ctime = now;
  return Status::Ok();
}

Status SemaphoreTable::Remove(uint64_t ino, std::vector<SemCompleted>* done) {
  CSHM_ASSIGN_OR_RETURN(Set * s, Find(ino));
  for (const Waiter& w : s->waiters) done->push_back(SemCompleted{w.node, w.token, EIDRM});
  sets_.erase(ino);
  return Status::Ok();
}

void SemaphoreTable::ApplyUndo(Set& s, const SemProcess& who, const std::vector<int>& adj) {
  for (size_t i = 0; i < adj.size() && i < s.values.size(); i++) {
    if (adj[i] == 0) continue;
    s.values[i] = std::clamp(s.values[i] + adj[i], 0, kSemVmx);
    s.pids[i] = who.pid;
  }
}

void SemaphoreTable::Exited(const SemProcess& who, int64_t now, std::vector<SemCompleted>* done) {
  for (auto& [ino, s] : sets_) {
    std::erase_if(s.waiters, [&](const Waiter& w) { return w.who == who; });
    auto it = s.undo.find(who);
    if (it == s.undo.end()) continue;
    ApplyUndo(s, who, it->second);
    s.undo.erase(it);
    Wake(s, now, done);
  }
}

void SemaphoreTable::DropNode(uint32_t node, int64_t now, std::vector<SemCompleted>* done) {
  for (auto& [ino, s] : sets_) {
    std::erase_if(s.waiters, [&](const Waiter& w) { return w.node == node; });
    bool changed = false;
    for (auto it = s.undo.begin(); it != s.undo.end();) {
      if (it->first.node != node) {
        ++it;
        continue;
      }
      ApplyUndo(s, it->first, it->second);
      it = s.undo.erase(it);
      changed = true;
    }
    if (changed) Wake(s, now, done);
  }
}

std::vector<uint64_t> SemaphoreTable::SetsWithUndo(const SemProcess& who) const {
  std::vector<uint64_t> out;
  for (const auto& [ino, s] : sets_)
    if (s.undo.contains(who)) out.push_back(ino);
  return out;
}

std::string SemaphoreTable::Encode(uint64_t ino) const {
  std::string out;
  auto it = sets_.find(ino);
  if (it == sets_.end()) return out;
  const Set& s = it->second;
  ByteWriter w(&out);
  w.PutU32(kMagic);
  w.PutU32(static_cast<uint32_t>(s.values.size()));
  w.PutI64(s.otime);
  w.PutI64(s.ctime);
  for (size_t i = 0; i < s.values.size(); i++) {
    w.PutU16(static_cast<uint16_t>(s.values[i]));
    w.PutU32(static_cast<uint32_t>(s.pids[i]));
  }
  w.PutU32(static_cast<uint32_t>(s.undo.size()));
  for (const auto& [who, adj] : s.undo) {
    w.PutU32(who.node);
    w.PutU32(static_cast<uint32_t>(who.pid));
    w.PutU64(who.start);
    for (int a : adj) w.PutU16(static_cast<uint16_t>(static_cast<int16_t>(a)));
  }
  return out;
}

Status SemaphoreTable::Load(uint64_t ino, std::string_view encoded) {
  ByteReader r(encoded);
  uint32_t magic = 0, nsems = 0, nundo = 0;
  Set s;
  if (!r.GetU32(&magic) || (magic != kMagic && magic != kMagicV1) || !r.GetU32(&nsems) || nsems == 0 || nsems > kMaxSems ||
      !r.GetI64(&s.otime) || !r.GetI64(&s.ctime))
    return Corruption("a semaphore set's saved state does not decode");
  s.values.resize(nsems);
  s.pids.resize(nsems);
  for (uint32_t i = 0; i < nsems; i++) {
    uint16_t v = 0;
    uint32_t pid = 0;
    r.GetU16(&v);
    r.GetU32(&pid);
    if (v > kSemVmx) return Corruption("a saved semaphore value is past SEMVMX");
    s.values[i] = v;
    s.pids[i] = static_cast<int>(pid);
  }
  if (!r.GetU32(&nundo) || nundo > encoded.size()) return Corruption("a semaphore set's saved state does not decode");
  for (uint32_t u = 0; u < nundo; u++) {
    uint32_t node = 0, pid = 0;
    uint64_t start = 0;  // SEM1: 0, which no process has; matched by its node's loss only
    r.GetU32(&node);
    r.GetU32(&pid);
    if (magic == kMagic) r.GetU64(&start);
    std::vector<int> adj(nsems);
    for (uint32_t i = 0; i < nsems; i++) {
      uint16_t a = 0;
      r.GetU16(&a);
      adj[i] = static_cast<int16_t>(a);
    }
    s.undo[SemProcess{node, static_cast<int32_t>(pid), start}] = std::move(adj);
  }
  if (!r.AtEnd()) return Corruption("a semaphore set's saved state does not decode");
  sets_[ino] = std::move(s);
  return Status::Ok();
}

}  // namespace cshm::ownership
