// cshm_bench CASE ARGS...: one measurement, printed as one JSON object on
// stdout. bench/run.py starts the filesystems and calls it for every case on
// cshm and on the baseline of that case, in the same run. Each case works on
// any directory or file (cshm, /dev/shm, the FUSE floor), so that baseline and
// cshm run the same code. Times are medians where a case repeats; `t0`/`t1`
// are CLOCK_MONOTONIC seconds, for cases the driver runs on several nodes at
// once (it adds them up over the common interval).
//
//   tcp-rtt                    loopback TCP, 64-byte request / 4 KiB response: us
//                              (ends on two CPUs), us_same_cpu (on one)
//   tcp-stream MIB             loopback TCP one-way throughput, 1 MiB writes: gbs
//   make FILE MIB              creates FILE with MIB MiB of data (write(2))
//   cached DIR MIB             a MIB MiB mapping, every page dirty: sequential
//                              memset (memset_gbs), random 8-byte load+store (rand_mops)
//   fault FILE PAGES           first touch of PAGES random 4 KiB pages of a mapping
//                              of FILE, one page per fault (MADV_RANDOM): us
//   seq FILE                   first-touch sequential read of a mapping of FILE: gbs
//   read FILE [START_NS]       read(2) of FILE after dropping this node's cache: gbs
//   msync FILE [SHARER...]     msync of one dirty page of FILE while each SHARER
//                              (the same file on another node) holds a copy: us
//   msync-range FILE MIB       msync of a MIB MiB contiguous dirty range: ms
//   lock-rtt FILE              uncontended F_SETLKW + F_UNLCK of FILE's first byte: us
//   lock-counter FILE N [START_NS]  N increments of the 8-byte counter at FILE's
//                              start, each under an fcntl write lock: ops
//   migrate FILE NODE          moves FILE's segment to NODE (user.cshm.owner): ms
//   reread FILE ROUNDS         re-reads FILE ROUNDS times, cache dropped each time: gbs
//   pwrite FILE BS COUNT       COUNT pwrite(2)s of BS bytes, one after the other,
//                              into a new FILE, then fsync: us (median per call),
//                              gbs (the calls' bytes over their time), fsync_ms
//   shm KEY N                  shmget(KEY, 0, 0) + shmat + shmdt of an existing
//                              SysV segment N times (made first if absent, 4 KiB;
//                              under the shim, a cluster segment): us (median)
//   shm-rm KEY                 removes that segment (IPC_RMID)
#include <arpa/inet.h>
#include <pthread.h>
#include <sched.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kPage = 4096;

double Us(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::micro>(b - a).count(); }
double Mono(Clock::time_point t) { return std::chrono::duration<double>(t.time_since_epoch()).count(); }
double Median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}
[[noreturn]] void Die(const std::string& what) {
  fprintf(stderr, "cshm_bench: %s: %s\n", what.c_str(), strerror(errno));
  exit(1);
}
[[noreturn]] void Usage() {
  fprintf(stderr, "usage: cshm_bench CASE ARGS...  (the cases are listed at the top of bench/cshm_bench.cc)\n");
  exit(2);
}
size_t Number(const char* s) {
  char* end = nullptr;
  unsigned long long v = strtoull(s, &end, 10);
  if (end == s || *end != '\0') Usage();
  return static_cast<size_t>(v);
}

// Concurrent cases start together: each process sleeps until START_NS
// (CLOCK_MONOTONIC, chosen by the driver a little in the future).
void WaitUntil(const char* start_ns) {
  if (start_ns == nullptr) return;
  const uint64_t ns = Number(start_ns);
  timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

void ReadAll(int fd, char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r <= 0) Die("read");
    got += static_cast<size_t>(r);
  }
}

void WriteAll(int fd, const char* buf, size_t n) {
  size_t put = 0;
  while (put < n) {
    ssize_t r = write(fd, buf + put, n - put);
    if (r <= 0) Die("write");
    put += static_cast<size_t>(r);
  }
}

// A connected loopback TCP pair (client, server side), both TCP_NODELAY.
std::pair<int, int> TcpPair() {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(ls, 1) != 0 ||
      getsockname(ls, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    Die("listen");
  int c = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(c, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) Die("connect");
  int s = accept(ls, nullptr, nullptr);
  if (s < 0) Die("accept");
  close(ls);
  int one = 1;
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return {c, s};
}

void Pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

// One request/response exchange series with the client on CPU `client_cpu`
// and the server on `server_cpu`: median microseconds.
double TcpRttOn(int client_cpu, int server_cpu) {
  auto [c, s] = TcpPair();
  const int rounds = 2000;
  Pin(client_cpu);
  std::thread server([s = s, server_cpu] {
    Pin(server_cpu);
    char req[64];
    std::string page(kPage, 'p');
    for (int i = 0; i < rounds; i++) {
      ReadAll(s, req, sizeof(req));
      WriteAll(s, page.data(), page.size());
    }
  });
  char req[64] = {};
  std::vector<char> resp(kPage);
  std::vector<double> us;
  for (int i = 0; i < rounds; i++) {
    auto t0 = Clock::now();
    WriteAll(c, req, sizeof(req));
    ReadAll(c, resp.data(), resp.size());
    us.push_back(Us(t0, Clock::now()));
  }
  server.join();
  close(c);
  close(s);
  return Median(us);
}

// On a VM, whether the two ends share a CPU decides the figure (a wake-up
// across CPUs is an interrupt between vCPUs: tens of microseconds here), and
// unpinned threads land either way from run to run. Between two machines the
// answer always wakes a thread on the other side, so the floor is the
// cross-CPU figure; the same-CPU one is reported beside it.
void TcpRtt() {
  const int cpus = static_cast<int>(std::thread::hardware_concurrency());
  const double same = TcpRttOn(0, 0);
  const double cross = cpus > 1 ? TcpRttOn(0, 1) : same;
  printf("{\"us\": %.2f, \"us_same_cpu\": %.2f}\n", cross, same);
}

void TcpStream(size_t mib) {
  auto [c, s] = TcpPair();
  std::thread server([s = s, mib] {
    std::vector<char> chunk(1 << 20, 's');
    for (size_t i = 0; i < mib; i++) WriteAll(s, chunk.data(), chunk.size());
  });
  std::vector<char> buf(1 << 20);
  auto t0 = Clock::now();
  size_t total = 0;
  while (total < (mib << 20)) {
    ssize_t r = read(c, buf.data(), buf.size());
    if (r <= 0) Die("read");
    total += static_cast<size_t>(r);
  }
  auto t1 = Clock::now();
  server.join();
  close(c);
  close(s);
  printf("{\"gbs\": %.3f}\n", total / (Us(t0, t1) / 1e6) / 1e9);
}

void Make(const std::string& path, size_t mib) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) Die(path);
  std::string chunk(1 << 20, 'c');
  for (size_t i = 0; i < mib; i++)
    if (pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(i << 20)) != static_cast<ssize_t>(chunk.size()))
      Die("pwrite " + path);
  close(fd);
  printf("{\"mib\": %zu}\n", mib);
}

char* Map(const std::string& path, int flags, size_t* size, int* fd_out) {
  int fd = open(path.c_str(), flags);
  if (fd < 0) Die(path);
  struct stat st {};
  fstat(fd, &st);
  *size = static_cast<size_t>(st.st_size);
  const int prot = (flags & O_ACCMODE) == O_RDONLY ? PROT_READ : PROT_READ | PROT_WRITE;
  void* p = mmap(nullptr, *size, prot, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) Die("mmap " + path);
  *fd_out = fd;
  return static_cast<char*>(p);
}

void Cached(const std::string& dir, size_t mib) {
  const std::string path = dir + "/bench-cached";
  const size_t size = mib << 20;
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || ftruncate(fd, static_cast<off_t>(size)) != 0) Die(path);
  auto* p = static_cast<char*>(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  if (p == MAP_FAILED) Die("mmap");
  for (size_t i = 0; i < size; i += kPage) p[i] = 1;  // every page resident and dirty
  double best = 0;
  for (int rep = 0; rep < 10; rep++) {  // the best of 10: this VM's neighbours vary
    auto t0 = Clock::now();
    memset(p, rep, size);
    best = std::max(best, size / (Us(t0, Clock::now()) / 1e6) / 1e9);
  }
  uint64_t x = 88172645463325252ull;
  const size_t words = size / 8;
  auto* w = reinterpret_cast<uint64_t*>(p);
  const size_t ops = 20'000'000;
  auto t0 = Clock::now();
  for (size_t i = 0; i < ops; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    w[x % words] += 1;
  }
  const double mops = ops / Us(t0, Clock::now());
  munmap(p, size);
  close(fd);
  unlink(path.c_str());
  printf("{\"memset_gbs\": %.3f, \"rand_mops\": %.2f}\n", best, mops);
}

void Fault(const std::string& path, size_t pages) {
  size_t size;
  int fd;
  char* p = Map(path, O_RDONLY, &size, &fd);
  pages = std::min(pages, size / kPage);
  // The cache of a FUSE file can be dropped (clean pages); /dev/shm's cannot,
  // and its "fault" is a page-table fill.
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  madvise(p, size, MADV_RANDOM);  // no read-around: one page per fault
  std::vector<size_t> order(size / kPage);
  for (size_t i = 0; i < order.size(); i++) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(7));
  std::vector<double> us;
  volatile char sink = 0;
  for (size_t k = 0; k < pages; k++) {
    auto t0 = Clock::now();
    sink = sink + p[order[k] * kPage];
    us.push_back(Us(t0, Clock::now()));
  }
  munmap(p, size);
  close(fd);
  printf("{\"us\": %.2f}\n", Median(us));
}

void Seq(const std::string& path) {
  size_t size;
  int fd;
  char* p = Map(path, O_RDONLY, &size, &fd);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  madvise(p, size, MADV_SEQUENTIAL);
  volatile char sink = 0;
  auto t0 = Clock::now();
  for (size_t off = 0; off < size; off += kPage) sink = sink + p[off];
  auto t1 = Clock::now();
  munmap(p, size);
  close(fd);
  printf("{\"gbs\": %.3f}\n", size / (Us(t0, t1) / 1e6) / 1e9);
}

void Read(const std::string& path, const char* start_ns) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) Die(path);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  std::vector<char> buf(1 << 20);
  WaitUntil(start_ns);
  auto t0 = Clock::now();
  size_t total = 0;
  ssize_t n;
  while ((n = read(fd, buf.data(), buf.size())) > 0) total += static_cast<size_t>(n);
  auto t1 = Clock::now();
  if (n < 0) Die("read " + path);
  close(fd);
  printf("{\"gbs\": %.3f, \"bytes\": %zu, \"t0\": %.6f, \"t1\": %.6f}\n", total / (Us(t0, t1) / 1e6) / 1e9, total,
         Mono(t0), Mono(t1));
}

void Msync(const std::string& writer, const std::vector<std::string>& sharers) {
  int fd = open(writer.c_str(), O_RDWR);
  if (fd < 0) Die(writer);
  auto* w = static_cast<char*>(mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  if (w == MAP_FAILED) Die("mmap " + writer);
  std::vector<volatile char*> readers;
  for (const auto& s : sharers) {
    int rfd = open(s.c_str(), O_RDONLY);
    if (rfd < 0) Die(s);
    auto* r = static_cast<char*>(mmap(nullptr, kPage, PROT_READ, MAP_SHARED, rfd, 0));
    if (r == MAP_FAILED) Die("mmap " + s);
    readers.push_back(r);
  }
  std::vector<double> us;
  volatile char sink = 0;
  for (int i = 0; i < 300; i++) {
    for (auto* r : readers) sink = sink + r[0];  // each sharer holds a copy again
    w[0] = static_cast<char>(i);
    auto t0 = Clock::now();
    if (msync(w, kPage, MS_SYNC) != 0) Die("msync");
    us.push_back(Us(t0, Clock::now()));
  }
  printf("{\"us\": %.2f}\n", Median(us));
}

void MsyncRange(const std::string& path, size_t mib) {
  const size_t size = mib << 20;
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0 || ftruncate(fd, static_cast<off_t>(size)) != 0) Die(path);
  auto* p = static_cast<char*>(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  if (p == MAP_FAILED) Die("mmap");
  std::vector<double> ms;
  for (int i = 0; i < 5; i++) {
    memset(p, 'a' + i, size);
    auto t0 = Clock::now();
    if (msync(p, size, MS_SYNC) != 0) Die("msync");
    ms.push_back(Us(t0, Clock::now()) / 1000);
  }
  munmap(p, size);
  close(fd);
  printf("{\"ms\": %.3f}\n", Median(ms));
}

bool Lock(int fd, short type) {
  struct flock l {};
  l.l_type = type;
  l.l_whence = SEEK_SET;
  l.l_start = 0;
  l.l_len = 8;
  return fcntl(fd, F_SETLKW, &l) == 0;
}

void LockRtt(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR);
  if (fd < 0) Die(path);
  std::vector<double> us;
  for (int i = 0; i < 500; i++) {
    auto t0 = Clock::now();
    if (!Lock(fd, F_WRLCK) || !Lock(fd, F_UNLCK)) Die("fcntl lock");
    us.push_back(Us(t0, Clock::now()));
  }
  close(fd);
  printf("{\"us\": %.2f}\n", Median(us));
}

// Each increment is a read-modify-write of shared memory under the lock; the
// unlock is a release, so the next holder on any node sees it.
void LockCounter(const std::string& path, size_t n, const char* start_ns) {
  size_t size;
  int fd;
  char* p = Map(path, O_RDWR, &size, &fd);
  auto* counter = reinterpret_cast<volatile uint64_t*>(p);
  WaitUntil(start_ns);
  auto t0 = Clock::now();
  for (size_t i = 0; i < n; i++) {
    if (!Lock(fd, F_WRLCK)) Die("fcntl lock");
    *counter = *counter + 1;
    if (!Lock(fd, F_UNLCK)) Die("fcntl unlock");
  }
  auto t1 = Clock::now();
  munmap(p, size);
  close(fd);
  printf("{\"ops\": %zu, \"t0\": %.6f, \"t1\": %.6f}\n", n, Mono(t0), Mono(t1));
}

void Migrate(const std::string& path, const std::string& node) {
  auto t0 = Clock::now();
  if (setxattr(path.c_str(), "user.cshm.owner", node.data(), node.size(), 0) != 0) Die("migrate " + path);
  printf("{\"ms\": %.3f}\n", Us(t0, Clock::now()) / 1000);
}

void Reread(const std::string& path, size_t rounds) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) Die(path);
  struct stat st {};
  fstat(fd, &st);
  const size_t size = static_cast<size_t>(st.st_size);
  std::vector<char> buf(1 << 20);
  auto t0 = Clock::now();
  for (size_t r = 0; r < rounds; r++) {
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    for (size_t off = 0; off < size; off += buf.size())
      if (pread(fd, buf.data(), buf.size(), static_cast<off_t>(off)) <= 0) Die("pread");
  }
  const double s = Us(t0, Clock::now()) / 1e6;
  close(fd);
  printf("{\"gbs\": %.3f}\n", size * static_cast<double>(rounds) / s / 1e9);
}

void Pwrite(const std::string& path, size_t bs, size_t count) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) Die(path);
  std::string buf(bs, 'w');
  std::vector<double> each;
  each.reserve(count);
  const auto t0 = Clock::now();
  for (size_t i = 0; i < count; i++) {
    const auto a = Clock::now();
    if (pwrite(fd, buf.data(), bs, static_cast<off_t>(i * bs)) != static_cast<ssize_t>(bs)) Die("pwrite " + path);
    each.push_back(Us(a, Clock::now()));
  }
  const auto t1 = Clock::now();
  if (fsync(fd) != 0) Die("fsync " + path);
  const auto t2 = Clock::now();
  close(fd);
  printf("{\"us\": %.3f, \"gbs\": %.4f, \"fsync_ms\": %.3f}\n", Median(each),
         static_cast<double>(bs * count) / (Us(t0, t1) / 1e6) / 1e9, Us(t1, t2) / 1e3);
}

void Shm(key_t key, size_t n) {
  if (shmget(key, kPage, IPC_CREAT | 0600) < 0) Die("shmget IPC_CREAT");
  std::vector<double> each;
  each.reserve(n);
  for (size_t i = 0; i < n; i++) {
    const auto a = Clock::now();
    int id = shmget(key, 0, 0);
    if (id < 0) Die("shmget");
    void* p = shmat(id, nullptr, 0);
    if (p == reinterpret_cast<void*>(-1)) Die("shmat");
    if (shmdt(p) != 0) Die("shmdt");
    each.push_back(Us(a, Clock::now()));
  }
  printf("{\"us\": %.3f}\n", Median(each));
}

void ShmRm(key_t key) {
  int id = shmget(key, 0, 0);
  if (id < 0 || shmctl(id, IPC_RMID, nullptr) != 0) Die("shm-rm");
  printf("{}\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) Usage();
  const std::string c = argv[1];
  auto arg = [&](int i) -> const char* { return i < argc ? argv[i] : nullptr; };
  auto need = [&](int n) {
    if (argc < n + 2) Usage();
  };
  if (c == "tcp-rtt") {
    TcpRtt();
  } else if (c == "tcp-stream") {
    need(1), TcpStream(Number(argv[2]));
  } else if (c == "make") {
    need(2), Make(argv[2], Number(argv[3]));
  } else if (c == "cached") {
    need(2), Cached(argv[2], Number(argv[3]));
  } else if (c == "fault") {
    need(2), Fault(argv[2], Number(argv[3]));
  } else if (c == "seq") {
    need(1), Seq(argv[2]);
  } else if (c == "read") {
    need(1), Read(argv[2], arg(3));
  } else if (c == "msync") {
    need(1), Msync(argv[2], std::vector<std::string>(argv + 3, argv + argc));
  } else if (c == "msync-range") {
    need(2), MsyncRange(argv[2], Number(argv[3]));
  } else if (c == "lock-rtt") {
    need(1), LockRtt(argv[2]);
  } else if (c == "lock-counter") {
    need(2), LockCounter(argv[2], Number(argv[3]), arg(4));
  } else if (c == "migrate") {
    need(2), Migrate(argv[2], argv[3]);
  } else if (c == "reread") {
    need(2), Reread(argv[2], Number(argv[3]));
  } else if (c == "pwrite") {
    need(3), Pwrite(argv[2], Number(argv[3]), Number(argv[4]));
  } else if (c == "shm") {
    need(2), Shm(static_cast<key_t>(Number(argv[2])), Number(argv[3]));
  } else if (c == "shm-rm") {
    need(1), ShmRm(static_cast<key_t>(Number(argv[2])));
  } else {
    Usage();
  }
  return 0;
}
