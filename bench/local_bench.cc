// local_bench DIR [--mib N]: memory-access figures for one directory's
// filesystem (run it on /dev/shm and on a cshm mount, in the same run, and
// compare). Prints one JSON object.
//   fault_us_median   first touch (read) of a 4 KiB page of a new file, random order
//   dirty_memset_gbs  sequential memset over an N MiB mapping whose pages are all dirty
//   dirty_rand_mops   random 8-byte load+store pairs over that mapping (millions/s)
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kPage = 4096;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

char* MapFile(const std::string& path, size_t size, int* fd) {
  *fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (*fd < 0 || ftruncate(*fd, static_cast<off_t>(size)) != 0) {
    perror(path.c_str());
    exit(1);
  }
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
  if (p == MAP_FAILED) {
    perror("mmap");
    exit(1);
  }
  return static_cast<char*>(p);
}

double FaultMedianUs(const std::string& dir) {
  const size_t pages = 4096;  // 16 MiB
  int fd;
  char* p = MapFile(dir + "/bench-fault", pages * kPage, &fd);
  // No read-around: each touch is one fault of one page.
  madvise(p, pages * kPage, MADV_RANDOM);
  // Random order defeats readahead: every touch is a fault of its own.
  std::vector<size_t> order(pages);
  for (size_t i = 0; i < pages; i++) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(42));
  std::vector<double> us;
  us.reserve(pages);
  volatile char sink = 0;
  for (size_t i : order) {
    auto t0 = Clock::now();
    sink = sink + p[i * kPage];
    auto t1 = Clock::now();
    us.push_back(Seconds(t0, t1) * 1e6);
  }
  munmap(p, pages * kPage);
  close(fd);
  unlink((dir + "/bench-fault").c_str());
  std::nth_element(us.begin(), us.begin() + us.size() / 2, us.end());
  return us[us.size() / 2];
}

void Dirty(const std::string& dir, size_t mib, double* memset_gbs, double* rand_mops) {
  const size_t size = mib << 20;
  int fd;
  char* p = MapFile(dir + "/bench-dirty", size, &fd);
  for (size_t i = 0; i < size; i += kPage) p[i] = 1;  // every page resident and dirty
  double best = 0;
  for (int rep = 0; rep < 5; rep++) {
    auto t0 = Clock::now();
    memset(p, rep, size);
    auto t1 = Clock::now();
    best = std::max(best, size / Seconds(t0, t1) / 1e9);
  }
  *memset_gbs = best;
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
  auto t1 = Clock::now();
  *rand_mops = ops / Seconds(t0, t1) / 1e6;
  munmap(p, size);
  close(fd);
  unlink((dir + "/bench-dirty").c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s DIR [--mib N]\n", argv[0]);
    return 2;
  }
  std::string dir = argv[1];
  size_t mib = 64;
  if (argc == 4 && std::string(argv[2]) == "--mib") mib = std::stoul(argv[3]);
  double fault = FaultMedianUs(dir);
  double gbs, mops;
  Dirty(dir, mib, &gbs, &mops);
  printf("{\"dir\": \"%s\", \"fault_us_median\": %.3f, \"dirty_memset_gbs\": %.2f, \"dirty_rand_mops\": %.1f}\n",
         dir.c_str(), fault, gbs, mops);
  return 0;
}
