#include "tests/sim/fake_kernel.h"

#include "fs/read_scratch.h"

namespace cshm::sim {

using store::kPageSize;


void KernelLog::Add(std::string what, uint64_t ino, uint64_t page, std::string_view data, std::string status) {
  Event e;
  e.at = std::chrono::system_clock::now();
  e.what = std::move(what);
  e.ino = ino;
  e.page = page;
  e.head = std::string(data.substr(0, kHead));
  e.status = std::move(status);
  MutexLock lock(&mu_);
  events_.push_back(std::move(e));
  if (events_.size() > kKeep) events_.pop_front();
}

std::string KernelLog::Of(uint64_t ino, uint64_t page, const std::function<std::string(std::string_view)>& describe) {
  MutexLock lock(&mu_);
  std::string out;
  for (const Event& e : events_) {
    if (e.ino != ino || e.page != page) continue;
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(e.at.time_since_epoch()).count();
    const time_t secs = static_cast<time_t>(us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char t[40];
    snprintf(t, sizeof t, "%02d:%02d:%02d.%06lld ", tm.tm_hour, tm.tm_min, tm.tm_sec,
             static_cast<long long>(us % 1000000));
    out += t + e.what;
    if (!e.head.empty()) out += " [" + describe(e.head) + "]";
    if (!e.status.empty()) out += " " + e.status;
    out += "\n";
  }
  return out;
}

std::map<FakeKernel::Key, FakeKernel::Page>::iterator FakeKernel::Settle(MutexLock& lock, const Key& k) {
  std::map<Key, Page>::iterator it;
  changed_.Wait(lock, [&]() REQUIRES(mu_) {
    it = pages_.find(k);
    return it == pages_.end() || it->second.state == State::kClean || it->second.state == State::kDirty;
  });
  return it;
}

Result<std::map<FakeKernel::Key, FakeKernel::Page>::iterator> FakeKernel::Fault(MutexLock& lock, const Key& k) {
  for (;;) {
    auto it = Settle(lock, k);
    if (it != pages_.end()) return it;
    // The missing page and the absent ones after it, up to the readahead
    // window (stopping at a cached one): one READ, every page locked
    // (loading) until it is answered.
    uint64_t n = 1;
    while (n < readahead_ && !pages_.count(Key{k.first, k.second + n})) n++;
    for (uint64_t i = 0; i < n; i++) {
      pages_[Key{k.first, k.second + i}] = Page{};
      Note(i == 0 ? "fault" : "readahead", Key{k.first, k.second + i});
    }
    mu_.Unlock();  // the caller's `lock` holds it again when this returns
    std::string buf(n * kPageSize, '\0');
    fs::ReadScratch scratch;
    auto got = fs_->Read(k.first, k.second * kPageSize, n * kPageSize, buf.data(), &scratch);
    std::string data;
    if (got.ok()) data.assign(got->data(), got->size());
    mu_.Lock();
    changed_.NotifyAll();
    if (!got.ok()) {
      for (uint64_t i = 0; i < n; i++) {
        Note("faulted", Key{k.first, k.second + i}, {}, got.status().message());
        pages_.erase(Key{k.first, k.second + i});
      }
      return IoError("fault of page " + std::to_string(k.second) + " of inode " + std::to_string(k.first) + ": " +
                     got.status().message());
    }
    for (uint64_t i = 0; i < n; i++) {
      const Key ki{k.first, k.second + i};
      // A page read ahead past the end of the file is not cached (the
      // kernel stops at i_size); the faulting page is, zeros past the end.
      if (i > 0 && data.size() <= i * kPageSize) {
        Note("faulted", ki, {}, "past the end: not cached");
        pages_.erase(ki);
        continue;
      }
      Page& p = pages_[ki];
      p.state = State::kClean;
      p.data = i * kPageSize < data.size() ? data.substr(i * kPageSize, kPageSize) : std::string();
      p.data.resize(kPageSize, '\0');  // past the end of the file: zeros
      Note("faulted", ki, p.data);
    }
  }
}

Status FakeKernel::WriteBack(const Key& k) {
  Page& p = pages_[k];
  p.state = State::kWriteBack;
  const std::string data = p.data;
  Note("write-back", k, data);
  mu_.Unlock();  // the caller's lock holds it again when this returns
  Status st = fs_->Write(k.first, k.second * kPageSize, data.data(), data.size(), /*writeback=*/true);
  mu_.Lock();
  Note("written back", k, {}, st.ok() ? "ok" : st.message());
  // Clean whatever the answer: the kernel forgets the bytes of a failed
  // write-back (and the daemon drops the page soon after).
  auto it = pages_.find(k);
  if (it != pages_.end()) it->second.state = State::kClean;
  changed_.NotifyAll();
  return st;
}

void FakeKernel::Invalidate(uint64_t ino, uint64_t off, uint64_t len) {
  MutexLock lock(&mu_);
  const uint64_t first = off / kPageSize;
  const uint64_t end = len == 0 ? UINT64_MAX : (off + len + kPageSize - 1) / kPageSize;
  for (uint64_t p = first; p < std::min(end, first + 16); p++) Note("invalidate", Key{ino, p});
  for (;;) {
    auto it = pages_.lower_bound(Key{ino, first});
    // The first page of the range not yet dropped (waiting for the busy ones).
    while (it != pages_.end() && it->first.first == ino && it->first.second < end &&
           it->second.state == State::kClean) {
      Note("dropped", it->first, it->second.data);
      it = pages_.erase(it);
    }
    if (it == pages_.end() || it->first.first != ino || it->first.second >= end) return;
    const Key k = it->first;
    if (it->second.state == State::kDirty) {
      (void)WriteBack(k);  // its outcome is the daemon's to report
      continue;
    }
    Settle(lock, k);  // loading or under write-back
  }
}

Result<std::string> FakeKernel::Load(uint64_t ino, uint64_t off, size_t len) {
  MutexLock lock(&mu_);
  std::string out;
  while (out.size() < len) {
    const uint64_t at = off + out.size();
    CSHM_ASSIGN_OR_RETURN(auto it, Fault(lock, Key{ino, at / kPageSize}));
    const size_t in = at % kPageSize, n = std::min<size_t>(len - out.size(), kPageSize - in);
    out.append(it->second.data, in, n);
  }
  return out;
}

Status FakeKernel::Store(uint64_t ino, uint64_t off, std::string_view bytes) {
  MutexLock lock(&mu_);
  size_t done = 0;
  while (done < bytes.size()) {
    const uint64_t at = off + done;
    CSHM_ASSIGN_OR_RETURN(auto it, Fault(lock, Key{ino, at / kPageSize}));
    const size_t in = at % kPageSize, n = std::min<size_t>(bytes.size() - done, kPageSize - in);
    it->second.data.replace(in, n, bytes.substr(done, n));
    it->second.state = State::kDirty;
    Note("store", it->first, it->second.data);
    done += n;
  }
  return Status::Ok();
}

Status FakeKernel::Msync(uint64_t ino) {
  Status first;
  {
    MutexLock lock(&mu_);
    for (auto it = pages_.lower_bound(Key{ino, 0}); it != pages_.end() && it->first.first == ino;) {
      const Key k = it->first;
      // A page under write-back (an invalidation's) is waited for, as
      // msync's filemap_write_and_wait_range waits for it; then written back
      // if it is dirty again. (Skipped, msync returned before the bytes it
      // covers had reached the owner.)
      it = Settle(lock, k);
      if (it != pages_.end() && it->second.state == State::kDirty) {
        Status st = WriteBack(k);
        if (first.ok()) first = st;
      }
      it = pages_.upper_bound(k);
    }
  }
  Status synced = fs_->Fsync(ino);
  Note("fsync", Key{ino, 0}, {}, synced.ok() ? "ok" : synced.message());
  return first.ok() ? synced : first;
}

void FakeKernel::WriteBackSome(uint64_t ino, uint64_t page) {
  MutexLock lock(&mu_);
  auto it = Settle(lock, Key{ino, page});
  if (it != pages_.end() && it->second.state == State::kDirty) (void)WriteBack(Key{ino, page});
}

}  // namespace cshm::sim
