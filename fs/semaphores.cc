#include "fs/semaphores.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/sem.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <spdlog/spdlog.h>
#include <xxhash.h>

#include "common/bytes.h"
#include "common/metrics.h"
#include "common/proc_status.h"
#include "fs/sem_ioctl.h"

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
constexpr auto kCheckEvery = std::chrono::seconds(1);

metrics::Counter kSemOpsServed("cshm_semaphore_operations_total",
                               "semaphore calls (semop, semctl, exits) this node answered as a set's owner");

int64_t Now() { return static_cast<int64_t>(time(nullptr)); }

int ErrnoOf(const Status& s) {
  if (s.ok()) return 0;
  const int e = s.ToErrno();
  return e > 0 ? e : EIO;
}

}  // namespace

Result<std::unique_ptr<Semaphores>> Semaphores::Open(Options options) {
  if (mkdir(options.dir.c_str(), 0700) != 0 && errno != EEXIST)
    return Status::FromErrno(errno, "creating " + options.dir);
  std::unique_ptr<Semaphores> s(new Semaphores(std::move(options)));
  s->wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (s->wake_fd_ < 0) return Status::FromErrno(errno, "eventfd for the semaphore exit watcher");
  s->watcher_ = std::thread([p = s.get()] { p->ExitLoop(); });
  s->waiter_ = std::thread([p = s.get()] { p->WaitLoop(); });
  return s;
}

void Semaphores::Stop() {
  {
    MutexLock lock(&wait_mu_);
    stopping_ = true;
  }
  const uint64_t one = 1;
  if (wake_fd_ >= 0) (void)!write(wake_fd_, &one, sizeof(one));
  wait_cv_.NotifyAll();
  if (watcher_.joinable()) watcher_.join();
  if (waiter_.joinable()) waiter_.join();
  // Nobody will answer what still waits.
  std::vector<uint64_t> left;
  {
    MutexLock lock(&wait_mu_);
    for (auto& [token, p] : pending_) left.push_back(token);
  }
  for (uint64_t token : left) Finish(token, EIO);
}

Semaphores::~Semaphores() {
  Stop();
  for (auto& [tgid, fd] : pidfds_) close(fd);
  if (wake_fd_ >= 0) close(wake_fd_);
  for (auto& [ino, f] : files_) close(f.fd);
}

// ---------------------------------------------------------------- accessor side

void Semaphores::Run(uint64_t ino, std::string io, pid_t caller_tid, bool writable, std::function<bool()> interrupted,
                     Reply reply) {
  SemIoctl h;
  std::memcpy(&h, io.data(), sizeof(h));
  char* entries = io.data() + sizeof(h);
  const size_t room = io.size() - sizeof(h);
  auto done = [&](int err) {
    h.err = err;
    std::memcpy(io.data(), &h, sizeof(h));
    reply(io);
  };
  auto owner = o_.owner_of(ino);
  if (!owner.ok()) return done(ErrnoOf(owner.status()) == ENOENT ? EIDRM : ErrnoOf(owner.status()));
  // Adjustments are kept per process: the thread's thread group, in this
  // daemon's pid namespace (the one its exit is watched in).
  pid_t tgid = caller_tid;
  if (h.pid != caller_tid) {
    const ProcStatus ps = ReadProcStatus(caller_tid);
    if (ps.tgid > 0) tgid = ps.tgid;
  }
  SemRequest req;
  req.ino = ino;
  req.pid = tgid;
  switch (h.op) {
    case kSemCreate: {
      req.kind = SemKind::kCreate;
      req.num = h.count;
      auto r = Ask(*owner, req);
      return done(r.ok() ? r->err : ErrnoOf(r.status()));
    }
    case kSemOp: {
      if (h.count == 0 || room < h.count * sizeof(struct sembuf)) return done(EINVAL);
      bool undo = false, alters = false;
      for (uint32_t i = 0; i < h.count; i++) {
        struct sembuf b;
        std::memcpy(&b, entries + i * sizeof(b), sizeof(b));
        req.ops.push_back(SemOpBuf{b.sem_num, b.sem_op, b.sem_flg});
        undo |= (b.sem_flg & SEM_UNDO) != 0;
        alters |= b.sem_op != 0;
      }
      if (alters && !writable) return done(EACCES);
      req.kind = SemKind::kOp;
      {
        MutexLock lock(&wait_mu_);
        if (undo_lost_.erase({tgid, *owner}) > 0) {
          spdlog::warn("process {}'s SEM_UNDO adjustments at node {} were applied when this node lost its lease "
                       "there; its semop fails with EIO",
                       tgid, *owner);
          return done(EIO);
        }
        if (stopping_) return done(EIO);
        // In place before it is sent: a wake-up can come before the answer.
        req.token = ++next_token_;
        Pending& p = pending_[req.token];
        p.ino = ino;
        p.owner = *owner;
        p.io = std::move(io);
        p.reply = std::move(reply);
        p.interrupted = std::move(interrupted);
        if (h.timeout_ns >= 0) p.deadline = Clock::now() + std::chrono::nanoseconds(h.timeout_ns);
        p.next_check = Clock::now() + kCheckEvery;
      }
      // From here the call is pending_'s to answer: nothing may escape.
      Result<SemReply> r = Status::System(EIO, "");
      try {
        if (undo) WatchExit(tgid, *owner);
        r = Ask(*owner, req);
      } catch (const std::exception& e) {
        spdlog::error("semop: internal error: {}", e.what());
      }
      if (!r.ok()) return Finish(req.token, ErrnoOf(r.status()));
      if (r->state != SemState::kQueued) return Finish(req.token, r->err);
      wait_cv_.NotifyAll();  // answered by a wake-up, or by the wait loop
      return;
    }
    case kSemCtl: {
      req.kind = SemKind::kCtl;
      req.cmd = h.cmd;
      req.num = h.num;
      req.value = h.value;
      if ((h.cmd == SETVAL || h.cmd == SETALL) && !writable) return done(EACCES);
      if (h.cmd == SETALL) {
        if (room < h.count * sizeof(uint16_t)) return done(EINVAL);
        req.values.resize(h.count);
        std::memcpy(req.values.data(), entries, h.count * sizeof(uint16_t));
      }
      auto r = Ask(*owner, req);
      if (!r.ok()) return done(ErrnoOf(r.status()));
      h.result = r->result;
      h.nsems = r->nsems;
      h.otime = r->otime;
      h.ctime = r->ctime;
      if (h.cmd == GETALL && r->err == 0) {
        if (r->values.size() * sizeof(uint16_t) > room) return done(EINVAL);
        std::memcpy(entries, r->values.data(), r->values.size() * sizeof(uint16_t));
      }
      return done(r->err);
    }
    default:
      return done(EINVAL);
  }
}

void Semaphores::Finish(uint64_t token, int err) {
  Pending p;
  {
    MutexLock lock(&wait_mu_);
    auto it = pending_.find(token);
    if (it == pending_.end()) return;  // answered already
    p = std::move(it->second);
    pending_.erase(it);
  }
  SemIoctl h;
  std::memcpy(&h, p.io.data(), sizeof(h));
  h.err = err;
  std::memcpy(p.io.data(), &h, sizeof(h));
  p.reply(p.io);
}

Result<SemReply> Semaphores::Ask(uint32_t owner, const SemRequest& req) {
  if (owner == o_.self || !o_.call) return Serve(o_.self, req);
  CSHM_ASSIGN_OR_RETURN(std::string reply, o_.call(owner, ownership::kSem, req.Encode()));
  return SemReply::Decode(reply);
}

void Semaphores::WaitLoop() {
  MutexLock lock(&wait_mu_);
  while (!stopping_) {
    const auto now = Clock::now();
    struct Todo {
      uint64_t token, ino;
      uint32_t owner;
      int why;  // 0: only ask; EINTR/EAGAIN: take it back; EIO: the owner is lost
    };
    std::vector<Todo> todo;
    auto wake_at = now + std::chrono::milliseconds(50);  // signals are looked for this often
    for (auto& [token, p] : pending_) {
      if (p.busy) continue;
      int why = -1;
      if (p.lost) why = EIO;
      else if (p.interrupted && p.interrupted()) why = EINTR;
      else if (now >= p.deadline) why = EAGAIN;
      else if (now >= p.next_check) why = 0;
      if (why < 0) {
        wake_at = std::min(wake_at, p.deadline);
        continue;
      }
      p.busy = true;
      todo.push_back(Todo{token, p.ino, p.owner, why});
    }
    lock.Unlock();
    for (const Todo& t : todo) {
      if (t.why == EIO) {
        spdlog::warn("a semop waiting at node {} failed: this node's lease with it ran out", t.owner);
        Finish(t.token, EIO);
        continue;
      }
      // The wake-up is pushed; asking only finds one lost on the way, or an
      // owner that restarted and forgot the operation.
      const int err = Cancel(t.ino, t.owner, t.token, /*give_up=*/t.why != 0);
      if (t.why != 0) {
        Finish(t.token, err == -1 ? t.why : err);
      } else if (err != -2) {
        Finish(t.token, err);
      } else {
        MutexLock again(&wait_mu_);
        auto it = pending_.find(t.token);
        if (it != pending_.end()) {
          it->second.busy = false;
          it->second.next_check = Clock::now() + kCheckEvery;
        }
      }
    }
    lock.Lock();
    if (todo.empty()) wait_cv_.WaitUntil(lock, wake_at);
  }
}

int Semaphores::Cancel(uint64_t ino, uint32_t owner, uint64_t token, bool give_up) {
  SemRequest req;
  req.kind = SemKind::kCancel;
  req.ino = ino;
  req.token = token;
  req.value = give_up ? 1 : 0;
  auto r = Ask(owner, req);
  auto finished_here = [&]() -> std::optional<int> {
    MutexLock lock(&wait_mu_);
    if (!pending_.contains(token)) return 0;  // a wake-up answered it meanwhile: it was applied
    return std::nullopt;
  };
  if (!r.ok()) {
    if (auto e = finished_here()) return *e;
    if (!give_up) return -2;  // the lease decides
    spdlog::warn("cannot take back a semop queued at node {} ({}); whether it happens is unknown: EIO", owner,
                 r.status().message());
    return EIO;
  }
  switch (r->state) {
    case SemState::kCancelled:
      return -1;
    case SemState::kQueued:
      return -2;
    case SemState::kDone:
      return r->err;
    case SemState::kUnknown:
      // Answered and acknowledged meanwhile (the wake-up came first), or the
      // owner restarted and lost it.
      if (auto e = finished_here()) return *e;
      spdlog::warn("node {} restarted while a semop waited there; it fails with EIO", owner);
      return EIO;
  }
  return EIO;
}

void Semaphores::Woken(const SemWake& w) {
  // Unknown: it was answered meanwhile (its cancel learnt the outcome).
  Finish(w.token, w.err);
}

void Semaphores::OwnerLost(uint32_t node) {
  MutexLock lock(&wait_mu_);
  for (auto& [token, p] : pending_)
    if (p.owner == node) p.lost = true;
  for (auto& [tgid, owners] : undo_owners_)
    if (owners.erase(node) > 0) undo_lost_.insert({tgid, node});
  std::erase_if(exits_, [&](const auto& e) { return e.first == node; });  // it applies them all itself
  wait_cv_.NotifyAll();
}

void Semaphores::WatchExit(pid_t tgid, uint32_t owner) {
  MutexLock lock(&wait_mu_);
  undo_owners_[tgid].insert(owner);
  if (pidfds_.contains(tgid)) return;
  const int fd = static_cast<int>(syscall(SYS_pidfd_open, tgid, 0));
  if (fd < 0) {
    spdlog::warn("cannot watch process {} for its SEM_UNDO adjustments at exit: {}", tgid, std::strerror(errno));
    return;
  }
  pidfds_[tgid] = fd;
  const uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
}

void Semaphores::ExitLoop() {
  while (true) {
    std::vector<pollfd> fds;
    std::vector<pid_t> who;
    {
      MutexLock lock(&wait_mu_);
      if (stopping_) return;
      fds.push_back(pollfd{wake_fd_, POLLIN, 0});
      who.push_back(0);
      for (auto& [tgid, fd] : pidfds_) {
        fds.push_back(pollfd{fd, POLLIN, 0});
        who.push_back(tgid);
      }
    }
    const int n = poll(fds.data(), fds.size(), static_cast<int>(kCheckEvery / std::chrono::milliseconds(1)));
    if (n < 0 && errno != EINTR) {
      spdlog::error("the semaphore exit watcher's poll failed: {}", std::strerror(errno));
      return;
    }
    uint64_t drain = 0;
    (void)!read(wake_fd_, &drain, sizeof(drain));
    {
      MutexLock lock(&wait_mu_);
      for (size_t i = 1; i < fds.size(); i++) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        const pid_t tgid = who[i];
        close(pidfds_[tgid]);
        pidfds_.erase(tgid);
        for (uint32_t owner : undo_owners_[tgid]) exits_.emplace_back(owner, tgid);
        undo_owners_.erase(tgid);
        std::erase_if(undo_lost_, [&](const auto& l) { return l.first == tgid; });
      }
    }
    DeliverExits();
  }
}

void Semaphores::DeliverExits() {
  std::vector<std::pair<uint32_t, pid_t>> exits;
  {
    MutexLock lock(&wait_mu_);
    exits.swap(exits_);
  }
  std::vector<std::pair<uint32_t, pid_t>> again;
  for (auto [owner, tgid] : exits) {
    SemRequest req;
    req.kind = SemKind::kExit;
    req.pid = tgid;
    auto r = Ask(owner, req);
    if (!r.ok()) again.emplace_back(owner, tgid);  // told when it answers again (or it forgets us)
  }
  MutexLock lock(&wait_mu_);
  exits_.insert(exits_.end(), again.begin(), again.end());
}

// ---------------------------------------------------------------- owner side

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
  files_[ino] = File{fd, static_cast<uint64_t>(st.st_blocks) * 512, len};
  return Status::Ok();
}

Status Semaphores::Reserve(uint64_t ino, size_t extra) {
  File& f = files_[ino];
  const uint64_t need = kHeader + f.saved + extra;
  if (need <= f.allocated) return Status::Ok();
  const uint64_t want = (need + kReserveStep - 1) / kReserveStep * kReserveStep;
  if (fallocate(f.fd, 0, 0, static_cast<off_t>(want)) != 0)
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
    close(it->second.fd);
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
  if (pwrite(it->second.fd, out.data(), out.size(), 0) != static_cast<ssize_t>(out.size()))
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
    const SemProcess who{from, req.pid};
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
        files_[req.ino] = File{fd, 0, 0};
        Status st = table_.Create(req.ino, req.num, now);
        if (st.ok()) st = Reserve(req.ino, 64 + 6ull * req.num);
        if (st.ok()) st = Save(req.ino);
        if (!st.ok()) {
          std::vector<SemCompleted> none;
          (void)table_.Remove(req.ino, &none);
          close(fd);
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
        const std::vector<uint64_t> sets = table_.SetsWithUndo(from, req.pid);
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
