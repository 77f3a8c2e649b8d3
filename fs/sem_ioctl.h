// The ioctl on a semaphore set's file (MOUNT/.sysv/sem-<semid>) by which the
// preload shim asks its node's daemon for semget/semop/semctl
// (docs/ipc_compat.md, "Semaphores"). Header only, shared by the shim and
// cshmfs; plain structs, so that the layout is the same on both sides.
//
// One request: a SemIoctl header followed by `count` entries (struct sembuf
// for kSemOp, uint16_t values for SETALL and GETALL). The kernel copies the
// same number of bytes in and out (a restricted FUSE ioctl sizes both by the
// command), so the command is made per call with SemIoctlCommand(bytes).
#pragma once

#include <sys/ioctl.h>

#include <cstddef>
#include <cstdint>

namespace cshm::fs {

enum SemIoctlOp : uint32_t {
  kSemCreate = 1,  // count = nsems: a new set of zeros (EEXIST if there is one)
  kSemOp = 2,      // count sembufs; timeout_ns < 0: no deadline
  kSemCtl = 3,     // cmd, num, value; SETALL/GETALL carry count = nsems values
};

struct SemIoctl {
  uint32_t op;
  int32_t pid;         // the caller's getpid(): GETPID's answer
  int32_t cmd;         // semctl's
  uint32_t num;        // semnum
  int32_t value;       // SETVAL's
  uint32_t count;      // entries after the header
  int64_t timeout_ns;  // kSemOp: relative; < 0: wait for ever
  // Answers.
  int32_t err;     // 0, or the errno the call fails with
  int32_t result;  // GETVAL/GETPID/GETNCNT/GETZCNT
  uint32_t nsems;  // IPC_STAT
  uint32_t reserved;
  int64_t otime, ctime;
};
static_assert(sizeof(SemIoctl) == 64);

// The largest request: what one restricted ioctl can carry (_IOC_SIZE has 14
// bits). GETALL/SETALL of a set bound its size: kMaxSemsPerSet.
constexpr size_t kSemIoctlMax = (1u << 14) - 1;
constexpr uint32_t kMaxSemsPerSet = (kSemIoctlMax - sizeof(SemIoctl)) / sizeof(uint16_t);
constexpr uint32_t kMaxSemOps = (kSemIoctlMax - sizeof(SemIoctl)) / 6;  // sizeof(struct sembuf)

constexpr int kSemValueMax = 32767;  // SEMVMX: no value is larger

constexpr unsigned SemIoctlCommand(size_t bytes) {
  return _IOC(_IOC_READ | _IOC_WRITE, 'c', 0x53, bytes);
}
constexpr bool IsSemIoctl(unsigned cmd) {
  return _IOC_TYPE(cmd) == 'c' && _IOC_NR(cmd) == 0x53 && _IOC_DIR(cmd) == (_IOC_READ | _IOC_WRITE) &&
         _IOC_SIZE(cmd) >= sizeof(SemIoctl);
}

}  // namespace cshm::fs
