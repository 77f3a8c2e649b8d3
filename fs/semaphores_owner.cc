// The owner side of the semaphores (fs/semaphores.h): the sets served here,
// their state files (checksummed, reserved ahead so that a full disk fails
// the change, not the save), the answers to queued operations, and what a
// node's lost lease undoes. The accessor side is fs/semaphores.cc.
#include <fcntl.h>
#include <sys/sem.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <spdlog/spdlog.h>
#include <xxhash.h>

#include "common/bytes.h"
#include "common/metrics.h"
#include "fs/sem_ioctl.h"
#include "fs/semaphores.h"

namespace cshm::fs {

using ownership::SemCompleted;
using ownership::SemKind;
using ownership::SemOpBuf;
using ownership::SemProcess;
using ownership::SemReply;
using ownership::SemRequest;
using ownership::SemState;
using ownership::SemWake;

namespace {

constexpr size_t kHeader = 12;                 // u32 length, u64 XXH3 of the state
constexpr uint64_t kReserveStep = 64u << 10;  // state files grow by this much

metrics::Counter kSemOpsServed("cshm_semaphore_operations_total",
                               "semaphore calls (semop, semctl, exits) this node answered as a set's owner");

int64_t Now() { return static_cast<int64_t>(time(nullptr)); }

}  // namespace

Status Semaphores::Loaded(uint64_t ino) {
  if (table_.Has(ino)) return Status::Ok();
  const std::string path = o_.dir + "/" + std::to_string(ino);
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::System(EINVAL, "no semaphore set has this file");
    return Status::FromErrno(errno, "opening " + path);
  }
  struct stat st;
  std::string head(kHeader, '\0');
  if (fstat(fd, &st) != 0 || pread(fd, head.data(), kHeader, 0) != static_cast<ssize_t>(kHeader)) {
    close(fd);
    return Corruption("the saved state of semaphore set " + std::to_string(ino) + " is cut short");
  }
  ByteReader r(head);
  uint32_t len = 0;
  uint64_t hash = 0;
  r.GetU32(&len);
  r.GetU64(&hash);
  std::string blob(len, '\0');
  if (len > static_cast<uint64_t>(st.st_size) ||
      pread(fd, blob.data(), len, kHeader) != static_cast<ssize_t>(len) ||
      XXH3_64bits(blob.data(), blob.size()) != hash) {
    close(fd);
    return Corruption("the saved state of semaphore set " + std::to_string(ino) + " does not match its checksum");
  }
  Status loaded = table_.Load(ino, blob);
  if (!loaded.ok()) {
    close(fd);
    return loaded;
  }
  files_[ino] = File{-1, static_cast<uint64_t>(st.st_blocks) * 512, len, {}};
  Opened(ino, fd);
  return Status::Ok();
}

void Semaphores::Opened(uint64_t ino, int fd) {
  File& f = files_[ino];
  f.fd = fd;
  f.at = open_.insert(open_.end(), ino);
  while (open_.size() > kOpenStates) CloseState(files_[open_.front()]);
}

void Semaphores::CloseState(File& f) {
  if (f.fd < 0) return;
  close(f.fd);
  open_.erase(f.at);
  f.fd = -1;
}

Result<int> Semaphores::StateFd(uint64_t ino) {
  File& f = files_[ino];
  if (f.fd >= 0) {
    open_.splice(open_.end(), open_, f.at);
    return f.fd;
  }
  const std::string path = o_.dir + "/" + std::to_string(ino);
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "opening " + path);
  Opened(ino, fd);
  return fd;
}

Status Semaphores::Reserve(uint64_t ino, size_t extra) {
  File& f = files_[ino];
  const uint64_t need = kHeader + f.saved + extra;
  if (need <= f.allocated) return Status::Ok();
  const uint64_t want = (need + kReserveStep - 1) / kReserveStep * kReserveStep;
  CSHM_ASSIGN_OR_RETURN(const int fd, StateFd(ino));
  if (fallocate(fd, 0, 0, static_cast<off_t>(want)) != 0)
    return Status::FromErrno(errno, "reserving room for semaphore set " + std::to_string(ino),
                             "free space in the state dir");
  f.allocated = want;
  return Status::Ok();
}

Status Semaphores::Save(uint64_t ino) {
  auto it = files_.find(ino);
  if (it == files_.end()) return Status::Ok();
  const std::string blob = table_.Encode(ino);
  if (blob.empty()) {  // removed
    CloseState(it->second);
    files_.erase(it);
    unlink((o_.dir + "/" + std::to_string(ino)).c_str());
    return Status::Ok();
  }
  std::string out;
  ByteWriter w(&out);
  w.PutU32(static_cast<uint32_t>(blob.size()));
  w.PutU64(XXH3_64bits(blob.data(), blob.size()));
  out += blob;
  // Inside the room Reserve made: an overwrite needs no new blocks.
  CSHM_ASSIGN_OR_RETURN(const int fd, StateFd(ino));
  if (pwrite(fd, out.data(), out.size(), 0) != static_cast<ssize_t>(out.size()))
    return Status::FromErrno(errno, "saving semaphore set " + std::to_string(ino));
  it->second.saved = blob.size();
  return Status::Ok();
}

SemReply Semaphores::Serve(uint32_t from, const SemRequest& req) {
  kSemOpsServed.Add();
  SemReply rep;
  std::vector<SemCompleted> done;
  auto fail = [&](const Status& s) {
    rep.state = SemState::kDone;
    rep.err = ErrnoOf(s);
  };
  {
    MutexLock lock(&mu_);
    const SemProcess who{from, req.pid, req.start};
    const int64_t now = Now();
    switch (req.kind) {
      case SemKind::kCreate: {
        if (Loaded(req.ino).ok()) {
          fail(Status::System(EEXIST, "the semaphore set exists"));
          break;
        }
        if (req.num == 0 || req.num > kMaxSemsPerSet) {
          fail(Status::System(EINVAL, "too many semaphores in one set"));
          break;
        }
        const std::string path = o_.dir + "/" + std::to_string(req.ino);
        const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
          fail(Status::FromErrno(errno, "creating " + path));
          break;
        }
        files_[req.ino] = File{};
        Opened(req.ino, fd);
        Status st = table_.Create(req.ino, req.num, now);
        if (st.ok()) st = Reserve(req.ino, 64 + 6ull * req.num);
        if (st.ok()) st = Save(req.ino);
        if (!st.ok()) {
          std::vector<SemCompleted> none;
          (void)table_.Remove(req.ino, &none);
          CloseState(files_[req.ino]);
          files_.erase(req.ino);
          unlink(path.c_str());
        }
        fail(st);
        break;
      }
      case SemKind::kOp: {
        Status st = Loaded(req.ino);
        bool undo = false;
        for (const SemOpBuf& o : req.ops) undo |= (o.flg & SEM_UNDO) != 0;
        // Room for this process's adjustments before anything changes: a
        // full disk refuses the operation instead of losing it later.
        if (st.ok()) st = Reserve(req.ino, undo ? 8 + 2 * table_.Stat(req.ino)->nsems : 0);
        if (st.ok()) st = table_.Op(req.ino, who, req.ops, req.token, now, &done);
        if (st.code() == Status::Code::kWouldBlock) {
          rep.state = SemState::kQueued;
          break;
        }
        if (st.ok()) st = Save(req.ino);
        fail(st);
        break;
      }
      case SemKind::kCtl: {
        Status st = Loaded(req.ino);
        if (!st.ok()) {
          fail(st);
          break;
        }
        auto stat = table_.Stat(req.ino);
        rep.nsems = stat->nsems;
        rep.otime = stat->otime;
        rep.ctime = stat->ctime;
        auto value = [&](Result<int> r) {
          if (r.ok()) rep.result = *r;
          fail(r.status());
        };
        switch (req.cmd) {
          case GETVAL: value(table_.GetVal(req.ino, req.num)); break;
          case GETPID: value(table_.GetPid(req.ino, req.num)); break;
          case GETNCNT: value(table_.GetNcnt(req.ino, req.num)); break;
          case GETZCNT: value(table_.GetZcnt(req.ino, req.num)); break;
          case GETALL: {
            auto all = table_.GetAll(req.ino);
            if (all.ok()) rep.values = *all;
            fail(all.status());
            break;
          }
          case IPC_STAT: fail(Status::Ok()); break;
          case SETVAL: {
            Status s = table_.SetVal(req.ino, who, req.num, req.value, now, &done);
            if (s.ok()) s = Save(req.ino);
            fail(s);
            break;
          }
          case SETALL: {
            Status s = table_.SetAll(req.ino, who, req.values, now, &done);
            if (s.ok()) s = Save(req.ino);
            fail(s);
            break;
          }
          case IPC_SET: {
            Status s = table_.Touch(req.ino, now);
            if (s.ok()) s = Save(req.ino);
            fail(s);
            break;
          }
          case IPC_RMID: {
            Status s = table_.Remove(req.ino, &done);
            if (s.ok()) s = Save(req.ino);  // removes the state file
            fail(s);
            break;
          }
          default: fail(Status::System(EINVAL, "unknown semctl command"));
        }
        break;
      }
      case SemKind::kCancel: {
        const auto key = std::make_pair(from, req.token);
        if (table_.Queued(req.ino, from, req.token)) {
          if (req.value == 1) {
            table_.Cancel(req.ino, from, req.token);
            rep.state = SemState::kCancelled;
          } else {
            rep.state = SemState::kQueued;
          }
        } else if (auto it = unacked_.find(key); it != unacked_.end()) {
          rep.state = SemState::kDone;
          rep.err = it->second;
          unacked_.erase(it);
        } else {
          rep.state = SemState::kUnknown;
        }
        break;
      }
      case SemKind::kExit: {
        const std::vector<uint64_t> sets = table_.SetsWithUndo(who);
        table_.Exited(who, now, &done);
        for (uint64_t ino : sets) {
          Status s = Save(ino);
          if (!s.ok()) spdlog::error("semaphore set {}: {}", ino, s.message());
        }
        break;
      }
    }
    for (const SemCompleted& c : done)
      if (c.node != o_.self) unacked_[{c.node, c.token}] = c.err;
  }
  Answer(std::move(done));
  return rep;
}

void Semaphores::Answer(std::vector<SemCompleted> done) {
  for (const SemCompleted& c : done) {
    const SemWake w{0, c.token, c.err};
    if (c.node == o_.self || !o_.call_async) {
      Woken(w);
      continue;
    }
    o_.call_async(c.node, ownership::kSemWake, w.Encode(), [this, node = c.node, token = c.token](bool ok) {
      if (!ok) return;  // kept in unacked_: the waiter asks within a second
      MutexLock lock(&mu_);
      unacked_.erase({node, token});
    });
  }
}

void Semaphores::NodeGone(uint32_t node) {
  std::vector<SemCompleted> done;
  {
    MutexLock lock(&mu_);
    table_.DropNode(node, Now(), &done);
    for (auto& [ino, f] : files_) {
      Status s = Save(ino);
      if (!s.ok()) spdlog::error("semaphore set {}: {}", ino, s.message());
    }
    std::erase_if(unacked_, [&](const auto& e) { return e.first.first == node; });
    for (const SemCompleted& c : done)
      if (c.node != o_.self) unacked_[{c.node, c.token}] = c.err;
  }
  Answer(std::move(done));
}

void Semaphores::Forget(uint64_t ino) {
  std::vector<SemCompleted> done;
  {
    MutexLock lock(&mu_);
    if (!table_.Has(ino) && !Loaded(ino).ok()) {
      unlink((o_.dir + "/" + std::to_string(ino)).c_str());  // undecodable, or none
      return;
    }
    table_.Forget(ino, &done);
    (void)Save(ino);
    for (const SemCompleted& c : done)
      if (c.node != o_.self) unacked_[{c.node, c.token}] = c.err;
  }
  Answer(std::move(done));
}

bool Semaphores::Serves(uint64_t ino) {
  MutexLock lock(&mu_);
  if (table_.Has(ino)) return true;
  struct stat st;
  return stat((o_.dir + "/" + std::to_string(ino)).c_str(), &st) == 0;
}

uint64_t Semaphores::ops_served() const { return kSemOpsServed.value(); }

size_t Semaphores::sets() {
  MutexLock lock(&mu_);
  return files_.size();
}

}  // namespace cshm::fs
