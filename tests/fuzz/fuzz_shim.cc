// The shim's System V calls (ipc_compat/sysv_segments.h) driven by arbitrary
// sequences of shmget/shmat/shmdt/shmctl/ftok arguments, on a fresh directory
// standing in for the mount. Every call must either succeed or fail with -1
// and an errno that the libc function may set; no crash, leak or stray
// mapping. Addresses given to shmat point into a reservation of our own (a
// bad shmat address is the caller's own memory to lose, as with libc).
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "ipc_compat/sysv_segments.h"

namespace {

constexpr size_t kRegion = 16u << 20;  // where shmat may be told to map

struct Input {
  const uint8_t* p;
  size_t n;
  bool empty() const { return n == 0; }
  uint64_t Take(int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes && n > 0; i++, p++, n--) v = v << 8 | *p;
    return v;
  }
};

// Puts the reservation back over [p, p+len) of the region. A detach leaves a
// hole there, and whatever the process maps next (the allocator, the
// sanitizer) may land in it; an attach with SHM_REMAP at that address would
// then overwrite memory that is not ours.
void Reserve(char* region, void* p, size_t len) {
  char* c = static_cast<char*>(p);
  if (c < region || c >= region + kRegion) return;
  len = std::min<size_t>((len + 4095) / 4096 * 4096, static_cast<size_t>(region + kRegion - c));
  if (mmap(c, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED) abort();
}

bool Known(int err, std::initializer_list<int> allowed) {
  for (int e : allowed)
    if (err == e) return true;
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static char* region = static_cast<char*>(mmap(nullptr, kRegion, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  // Never destroyed: the atexit handler that removes it runs after statics go.
  static const std::string* base = [] {
    char tmpl[] = "/tmp/cshm-fuzz-shim.XXXXXX";
    auto* made = new std::string(mkdtemp(tmpl));
    atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(*base, ec);
    });
    return made;
  }();
  const std::string dir = *base + "/mount";
  std::filesystem::create_directory(dir);
  {
    cshm::ipc::SysvSegments sysv(dir);
    std::vector<int> ids;  // shmids that shmget returned
    std::vector<void*> attached;
    std::vector<size_t> lengths;  // of each attached segment, as it was when attached
    Input in{data, size};
    for (int ops = 0; ops < 24 && !in.empty(); ops++) {
      errno = 0;
      const int op = static_cast<int>(in.Take(1) % 5);
      auto pick_id = [&]() -> int {
        const uint64_t v = in.Take(1);
        if (!ids.empty() && v < 200) return ids[v % ids.size()];
        return static_cast<int>(in.Take(4));  // any number at all
      };
      if (op == 0) {  // shmget
        const key_t key = (in.Take(1) % 5 == 0) ? IPC_PRIVATE : static_cast<key_t>(in.Take(1) % 4 + 1);
        const uint64_t raw = in.Take(2);
        const size_t len = raw == 0xffff ? (1ull << 41) : raw * 64;  // also past the limit
        const int flags = static_cast<int>(in.Take(2));
        const int id = sysv.Get(key, len, flags);
        if (id == -1 && !Known(errno, {EINVAL, EEXIST, ENOENT, EACCES, ENOSPC, EAGAIN, ENOMEM})) abort();
        if (id != -1) ids.push_back(id);
      } else if (op == 1) {  // shmat
        const int id = pick_id();
        const int flags = static_cast<int>(in.Take(2)) & (SHM_RDONLY | SHM_RND | SHM_REMAP | SHM_EXEC);
        void* addr = nullptr;
        const uint64_t off = in.Take(3) % kRegion;
        // Only where the whole segment fits in the reservation: its size now
        // (an id can name a new segment once its inode number is reused).
        struct shmid_ds ds {};
        if (off % 2 == 0 && sysv.Control(id, IPC_STAT, &ds) == 0 && ds.shm_segsz + off + 2 * SHMLBA <= kRegion)
          addr = region + off;
        void* p = sysv.Attach(id, addr, flags);
        if (p == reinterpret_cast<void*>(-1)) {
          if (!Known(errno, {EINVAL, EACCES, ENOMEM, EIDRM})) abort();
        } else {
          volatile char c = *static_cast<volatile char*>(p);  // the mapping is there
          (void)c;
          struct shmid_ds now {};
          attached.push_back(p);
          lengths.push_back(sysv.Control(id, IPC_STAT, &now) == 0 ? now.shm_segsz : 0);
        }
      } else if (op == 2) {  // shmdt
        void* p = (!attached.empty() && in.Take(1) < 200) ? attached[in.Take(1) % attached.size()]
                                                           : region + in.Take(3) % kRegion;
        if (sysv.Detach(p) == -1) {
          if (!Known(errno, {EINVAL})) abort();
        } else {
          for (size_t i = 0; i < attached.size(); i++) {
            if (attached[i] != p) continue;
            Reserve(region, p, lengths[i]);
            attached.erase(attached.begin() + static_cast<long>(i));
            lengths.erase(lengths.begin() + static_cast<long>(i));
            break;
          }
        }
      } else if (op == 3) {  // shmctl
        const int id = pick_id();
        static const int cmds[] = {IPC_STAT, IPC_SET, IPC_RMID, IPC_INFO, SHM_INFO, SHM_STAT, SHM_LOCK, SHM_UNLOCK};
        const uint64_t c = in.Take(1);
        const int cmd = c < 200 ? cmds[c % 8] : static_cast<int>(in.Take(2));
        struct shmid_ds ds {};
        ds.shm_perm.mode = static_cast<unsigned short>(in.Take(2));
        ds.shm_perm.uid = static_cast<uid_t>(in.Take(1));
        const int r = sysv.Control(id, cmd, &ds);
        if (r == -1 && !Known(errno, {EINVAL, EACCES, EPERM, EIDRM, ENOMEM, EFAULT, EOVERFLOW})) abort();
      } else {  // ftok
        const uint64_t which = in.Take(1);
        const std::string path = which % 3 == 0 ? dir : which % 3 == 1 ? dir + "/.sysv" : "/nonexistent/x";
        key_t key;
        (void)sysv.Ftok(path.c_str(), static_cast<int>(in.Take(1)), &key);
      }
    }
    sysv.DetachAll();
    Reserve(region, region, kRegion);  // whatever was attached into it, and the holes
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}
