#include "fs/pending_writes.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>

namespace cshm::fs {
namespace {

Status WriteFile(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno(errno, "keeping an undelivered write-back in " + tmp);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      close(fd);
      unlink(tmp.c_str());
      return Status::FromErrno(err, "keeping an undelivered write-back in " + tmp);
    }
    done += static_cast<size_t>(n);
  }
  // Written to disk: the kernel has forgotten these bytes.
  if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp.c_str(), path.c_str()) != 0)
    return Status::FromErrno(errno, "keeping an undelivered write-back in " + path);
  return Status::Ok();
}

Result<std::string> ReadFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, path);
  std::string out;
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  if (n < 0) return Status::FromErrno(errno, path);
  return out;
}

}  // namespace

Result<std::unique_ptr<PendingWrites>> PendingWrites::Open(const std::string& dir) {
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return Status::FromErrno(errno, "creating " + dir);
  std::unique_ptr<PendingWrites> p(new PendingWrites(dir));
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return Status::FromErrno(errno, "opening " + dir);
  MutexLock lock(&p->mu_);  // (nobody else has it yet)
  while (dirent* e = readdir(d)) {
    uint64_t seq = 0, ino = 0;
    char tail = 0;
    if (sscanf(e->d_name, "%16" SCNx64 ".%16" SCNx64 "%c", &seq, &ino, &tail) != 2) {
      if (e->d_name[0] != '.') unlink((dir + "/" + e->d_name).c_str());  // a torn .tmp
      continue;
    }
    p->queue_[ino][seq] = dir + "/" + e->d_name;
    p->next_ = std::max(p->next_, seq + 1);
  }
  closedir(d);
  lock.Unlock();
  return p;
}

Status PendingWrites::Add(uint64_t ino, const std::string& payload) {
  uint64_t seq;
  {
    MutexLock lock(&mu_);
    seq = next_++;
  }
  char name[48];
  snprintf(name, sizeof(name), "/%016" PRIx64 ".%016" PRIx64, seq, ino);
  const std::string path = dir_ + name;
  CSHM_RETURN_IF_ERROR(WriteFile(path, payload));
  MutexLock lock(&mu_);
  queue_[ino][seq] = path;
  return Status::Ok();
}

bool PendingWrites::Has(uint64_t ino) {
  MutexLock lock(&mu_);
  auto it = queue_.find(ino);
  return it != queue_.end() && !it->second.empty();
}

std::vector<uint64_t> PendingWrites::Inodes() {
  MutexLock lock(&mu_);
  std::vector<uint64_t> out;
  for (auto& [ino, q] : queue_)
    if (!q.empty()) out.push_back(ino);
  return out;
}

size_t PendingWrites::size() {
  MutexLock lock(&mu_);
  size_t n = 0;
  for (auto& [ino, q] : queue_) n += q.size();
  return n;
}

Status PendingWrites::Drain(uint64_t ino, const std::function<Status(const std::string& payload)>& send) {
  {
    // Another Drain of this inode waits for nothing but its own sends, each
    // with its deadline.
    MutexLock lock(&mu_);
    drained_.Wait(lock, [&]() REQUIRES(mu_) { return draining_.count(ino) == 0; });
    draining_.insert(ino);
  }
  struct Done {
    PendingWrites* w;
    uint64_t ino;
    ~Done() {
      {
        MutexLock lock(&w->mu_);
        w->draining_.erase(ino);
      }
      w->drained_.NotifyAll();
    }
  } done{this, ino};
  while (true) {
    std::string path;
    uint64_t seq;
    {
      MutexLock lock(&mu_);
      auto it = queue_.find(ino);
      if (it == queue_.end() || it->second.empty()) {
        if (it != queue_.end()) queue_.erase(it);
        return Status::Ok();
      }
      seq = it->second.begin()->first;
      path = it->second.begin()->second;
    }
    auto payload = ReadFile(path);
    Status st = payload.ok() ? send(*payload) : payload.status();
    if (!st.ok() && st.code() != Status::Code::kNotFound && st.code() != Status::Code::kCorruption &&
        payload.ok())
      return st;
    unlink(path.c_str());  // delivered, or impossible to deliver ever
    MutexLock lock(&mu_);
    queue_[ino].erase(seq);
  }
}

}  // namespace cshm::fs
