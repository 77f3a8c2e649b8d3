// The accessor side of the semaphores (fs/semaphores.h): a shim's call on
// this node asked of its set's owner, the wait for a queued operation's
// wake-up (deadlines, signals, lost owners), and the SEM_UNDO exit watcher.
// The owner side is fs/semaphores_owner.cc.
#include "fs/semaphores.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/sem.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <spdlog/spdlog.h>

#include "common/proc_status.h"
#include "fs/sem_ioctl.h"

namespace cshm::fs {

using ownership::SemKind;
using ownership::SemOpBuf;
using ownership::SemReply;
using ownership::SemRequest;
using ownership::SemState;
using ownership::SemWake;

namespace {

constexpr auto kCheckEvery = std::chrono::seconds(1);

}  // namespace

int Semaphores::ErrnoOf(const Status& s) {
  if (s.ok()) return 0;
  const int e = s.ToErrno();
  return e > 0 ? e : EIO;
}

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
  for (auto& [process, fd] : pidfds_) close(fd);
  if (wake_fd_ >= 0) close(wake_fd_);
  for (auto& [ino, f] : files_)
    if (f.fd >= 0) close(f.fd);
}


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
  const Process process{tgid, h.op == kSemOp ? ReadProcStart(tgid) : 0};
  req.start = process.second;
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
        if (process.second == 0) return done(EINTR);  // it has exited meanwhile: nobody to answer
        if (undo_lost_.erase({process, *owner}) > 0) {
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
        Asking(process, +1);
        if (undo && !WatchExit(process, *owner)) {
          r = Status::System(EINTR, "the process exited before its operation was sent");
        } else {
          r = Ask(*owner, req);
        }
        Asking(process, -1);
      } catch (const std::exception& e) {
        spdlog::error("semop: internal error: {}", e.what());
        Asking(process, -1);
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
  for (auto& [process, owners] : undo_owners_)
    if (owners.erase(node) > 0) undo_lost_.insert({process, node});
  std::erase_if(exits_, [&](const auto& e) { return e.first == node; });  // it applies them all itself
  wait_cv_.NotifyAll();
}

bool Semaphores::WatchExit(const Process& p, uint32_t owner) {
  // Called while the operation counts as asking (Asking): an exit seen from
  // here on is held until it is answered; one seen before shows here.
  auto exited = [](int fd) {
    pollfd pfd{fd, POLLIN, 0};
    return poll(&pfd, 1, 0) > 0;
  };
  MutexLock lock(&wait_mu_);
  auto it = pidfds_.find(p);
  if (it != pidfds_.end()) {
    if (exited(it->second)) return false;  // the watcher tells its owners
    undo_owners_[p].insert(owner);
    return true;
  }
  const int fd = static_cast<int>(syscall(SYS_pidfd_open, p.first, 0));
  if (fd < 0 && errno == ESRCH) return false;
  if (fd < 0) {
    spdlog::warn("cannot watch process {} for its SEM_UNDO adjustments at exit: {}", p.first, std::strerror(errno));
    undo_owners_[p].insert(owner);
    return true;
  }
  // The pidfd is of whichever process has the pid now: if that one did not
  // start when ours did, ours has exited and the pid was used again.
  if (ReadProcStart(p.first) != p.second || exited(fd)) {
    close(fd);
    return false;
  }
  undo_owners_[p].insert(owner);
  pidfds_[p] = fd;
  const uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
  return true;
}

void Semaphores::Asking(const Process& p, int delta) {
  MutexLock lock(&wait_mu_);
  int& n = asking_[p];
  n += delta;
  if (n > 0) return;
  asking_.erase(p);
  const bool exit_held = std::any_of(exits_.begin(), exits_.end(), [&](const auto& e) { return e.second == p; });
  const uint64_t one = 1;
  if (exit_held) (void)!write(wake_fd_, &one, sizeof(one));  // it can be told now
}

void Semaphores::ExitLoop() {
  while (true) {
    std::vector<pollfd> fds;
    std::vector<Process> who;
    {
      MutexLock lock(&wait_mu_);
      if (stopping_) return;
      fds.push_back(pollfd{wake_fd_, POLLIN, 0});
      who.push_back(Process{0, 0});
      for (auto& [process, fd] : pidfds_) {
        fds.push_back(pollfd{fd, POLLIN, 0});
        who.push_back(process);
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
        const Process& process = who[i];
        close(pidfds_[process]);
        pidfds_.erase(process);
        for (uint32_t owner : undo_owners_[process]) exits_.emplace_back(owner, process);
        undo_owners_.erase(process);
        std::erase_if(undo_lost_, [&](const auto& l) { return l.first == process; });
      }
    }
    DeliverExits();
  }
}

void Semaphores::DeliverExits() {
  std::vector<std::pair<uint32_t, Process>> exits, held;
  {
    MutexLock lock(&wait_mu_);
    for (auto& e : exits_) (asking_.contains(e.second) ? held : exits).push_back(e);
    exits_ = std::move(held);  // told once their operations are answered (Asking wakes the loop)
  }
  std::vector<std::pair<uint32_t, Process>> again;
  for (auto [owner, process] : exits) {
    SemRequest req;
    req.kind = SemKind::kExit;
    req.pid = process.first;
    req.start = process.second;
    auto r = Ask(owner, req);
    if (!r.ok()) again.emplace_back(owner, process);  // told when it answers again (or it forgets us)
  }
  MutexLock lock(&wait_mu_);
  exits_.insert(exits_.end(), again.begin(), again.end());
}

}  // namespace cshm::fs
