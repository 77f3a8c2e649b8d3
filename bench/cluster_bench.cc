// cluster_bench M0 M1 M2: figures of the cluster data path on three mounted
// nodes of one cluster (node i mounted at Mi; node 0 owns the test files),
// beside their physical limits measured in the same run. Prints one JSON
// object:
//   tcp_rtt_us          loopback TCP: 64-byte request, 4 KiB response (median)
//   remote_fault_us     first touch of a 4 KiB page owned by another node (median)
//   local_fault_us      the same on the owner node
//   remote_seq_gbs      read(2) of 64 MiB owned by another node, 1 MiB buffers
//   shm_seq_gbs         the same from /dev/shm
//   msync_us_sharers_K  msync of one dirty page to a remote owner with K other
//                       nodes holding a copy (median)
//   migrate_ms_N        moving a segment of N MiB to a node holding none of it
//   reread_gbs_before / _after  a remote-heavy workload (re-reading 16 MiB with
//                       its cache dropped) before and after the segment moved
//                       to the reading node
// Run it on a cluster with automatic migration off ([migrate] enabled = false).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kPage = 4096;

double Us(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::micro>(b - a).count(); }
double Median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}
[[noreturn]] void Die(const std::string& what) {
  perror(what.c_str());
  exit(1);
}

void ReadAll(int fd, char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r <= 0) Die("read");
    got += static_cast<size_t>(r);
  }
}

double TcpRttUs() {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(ls, 1) != 0 ||
      getsockname(ls, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    Die("listen");
  const int rounds = 3000;
  std::thread server([&] {
    int s = accept(ls, nullptr, nullptr);
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char req[64];
    std::string page(kPage, 'p');
    for (int i = 0; i < rounds; i++) {
      ReadAll(s, req, sizeof(req));
      if (write(s, page.data(), page.size()) != static_cast<ssize_t>(page.size())) Die("write");
    }
    close(s);
  });
  int c = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(c, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) Die("connect");
  int one = 1;
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  char req[64] = {};
  std::vector<char> resp(kPage);
  std::vector<double> us;
  for (int i = 0; i < rounds; i++) {
    auto t0 = Clock::now();
    if (write(c, req, sizeof(req)) != sizeof(req)) Die("write");
    ReadAll(c, resp.data(), resp.size());
    us.push_back(Us(t0, Clock::now()));
  }
  server.join();
  close(c);
  close(ls);
  return Median(us);
}

void MakeFile(const std::string& path, size_t size) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) Die(path);
  std::string chunk(1 << 20, 'c');
  for (size_t off = 0; off < size; off += chunk.size())
    if (pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(off)) != static_cast<ssize_t>(chunk.size()))
      Die("pwrite");
  close(fd);
}

double FaultUs(const std::string& path, size_t pages) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) Die(path);
  // The writer's node keeps what write(2) stored in its page cache: drop it,
  // so that every touch is a real fault to the daemon.
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  auto* p = static_cast<char*>(mmap(nullptr, pages * kPage, PROT_READ, MAP_SHARED, fd, 0));
  if (p == MAP_FAILED) Die("mmap");
  madvise(p, pages * kPage, MADV_RANDOM);  // one page per fault
  std::vector<size_t> order(pages);
  for (size_t i = 0; i < pages; i++) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(7));
  std::vector<double> us;
  volatile char sink = 0;
  for (size_t i : order) {
    auto t0 = Clock::now();
    sink = sink + p[i * kPage];
    us.push_back(Us(t0, Clock::now()));
  }
  munmap(p, pages * kPage);
  close(fd);
  return Median(us);
}

double SeqReadGbs(const std::string& path, size_t size) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) Die(path);
  std::vector<char> buf(1 << 20);
  auto t0 = Clock::now();
  size_t total = 0;
  ssize_t n;
  while ((n = read(fd, buf.data(), buf.size())) > 0) total += static_cast<size_t>(n);
  auto t1 = Clock::now();
  close(fd);
  if (total != size) Die("short read");
  return total / (Us(t0, t1) / 1e6) / 1e9;
}

double MsyncUs(const std::string& writer, const std::vector<std::string>& sharers) {
  int fd = open(writer.c_str(), O_RDWR);
  if (fd < 0) Die(writer);
  auto* w = static_cast<char*>(mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  std::vector<volatile char*> readers;
  for (const auto& s : sharers) {
    int rfd = open(s.c_str(), O_RDONLY);
    readers.push_back(static_cast<char*>(mmap(nullptr, kPage, PROT_READ, MAP_SHARED, rfd, 0)));
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
  return Median(us);
}

double MigrateMs(const std::string& path, int node) {
  const std::string v = std::to_string(node);
  auto t0 = Clock::now();
  if (setxattr(path.c_str(), "user.cshm.owner", v.data(), v.size(), 0) != 0) Die("migrate");
  return Us(t0, Clock::now()) / 1000;
}

double RereadGbs(const std::string& path, size_t size, int rounds) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) Die(path);
  std::vector<char> buf(1 << 20);
  auto t0 = Clock::now();
  for (int r = 0; r < rounds; r++) {
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    for (size_t off = 0; off < size; off += buf.size())
      if (pread(fd, buf.data(), buf.size(), static_cast<off_t>(off)) <= 0) Die("pread");
  }
  double s = Us(t0, Clock::now()) / 1e6;
  close(fd);
  return size * static_cast<double>(rounds) / s / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s M0 M1 M2  (three mounts of one cluster)\n", argv[0]);
    return 2;
  }
  const std::string m0 = argv[1], m1 = argv[2], m2 = argv[3];
  const size_t big = 64 << 20;
  double rtt = TcpRttUs();
  MakeFile(m0 + "/bench-fault", 16 << 20);
  double remote_fault = FaultUs(m1 + "/bench-fault", 4096);
  MakeFile(m0 + "/bench-fault-local", 16 << 20);
  double local_fault = FaultUs(m0 + "/bench-fault-local", 4096);
  MakeFile(m0 + "/bench-seq", big);
  MakeFile("/dev/shm/cshm-bench-seq", big);
  double remote_seq = SeqReadGbs(m1 + "/bench-seq", big);
  double shm_seq = SeqReadGbs("/dev/shm/cshm-bench-seq", big);
  unlink("/dev/shm/cshm-bench-seq");
  MakeFile(m0 + "/bench-msync", kPage);
  double ms0 = MsyncUs(m1 + "/bench-msync", {});
  double ms1 = MsyncUs(m1 + "/bench-msync", {m2 + "/bench-msync"});
  double ms2 = MsyncUs(m1 + "/bench-msync", {m2 + "/bench-msync", m0 + "/bench-msync"});
  // Migration: segments of 1, 16 and 256 MiB from node 0 to node 2, which
  // holds none of their pages (all are sent).
  double mig[3];
  const size_t mib[3] = {1, 16, 256};
  for (int i = 0; i < 3; i++) {
    const std::string f = m0 + "/bench-mig-" + std::to_string(mib[i]);
    MakeFile(f, mib[i] << 20);
    mig[i] = MigrateMs(m2 + "/bench-mig-" + std::to_string(mib[i]), 2);
    unlink(f.c_str());
  }
  // A remote-heavy workload before and after its segment moves to the reader.
  MakeFile(m0 + "/bench-work", 16 << 20);
  double before = RereadGbs(m1 + "/bench-work", 16 << 20, 8);
  MigrateMs(m1 + "/bench-work", 1);
  double after = RereadGbs(m1 + "/bench-work", 16 << 20, 8);
  for (const char* f : {"/bench-fault", "/bench-fault-local", "/bench-seq", "/bench-msync", "/bench-work"})
    unlink((m0 + f).c_str());
  printf("{\"tcp_rtt_us\": %.1f, \"remote_fault_us\": %.1f, \"local_fault_us\": %.1f, \"remote_seq_gbs\": %.3f, "
         "\"shm_seq_gbs\": %.3f, \"msync_us_sharers_0\": %.1f, \"msync_us_sharers_1\": %.1f, "
         "\"msync_us_sharers_2\": %.1f, \"migrate_ms_1\": %.1f, \"migrate_ms_16\": %.1f, "
         "\"migrate_ms_256\": %.1f, \"reread_gbs_before\": %.3f, \"reread_gbs_after\": %.3f}\n",
         rtt, remote_fault, local_fault, remote_seq, shm_seq, ms0, ms1, ms2, mig[0], mig[1], mig[2], before, after);
  return 0;
}
