// LockTable: the cluster-wide byte-range (fcntl) and whole-file (flock) locks
// of the segments a node owns. Pure logic, no I/O: the owner serves lock
// requests from every node with it (DESIGN.md contract 4).
//
// A lock belongs to a LockOwner: the node it was taken on and the kernel's
// lock owner id there (a POSIX lock owner, or the open file of a flock). POSIX
// locks of one owner merge and split like fcntl's; flock locks are whole-file
// and independent of POSIX ones, as on Linux.
//
// Thread-safety: not thread-safe; the caller serialises (Cluster holds a mutex).
#pragma once

#include <fcntl.h>

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

namespace cshm::ownership {

constexpr uint64_t kLockEof = UINT64_MAX;  // "to the end of the file" (and beyond)

struct LockOwner {
  uint32_t node = 0;
  uint64_t owner = 0;
  bool operator==(const LockOwner&) const = default;
};

struct Lock {
  int type = F_WRLCK;   // F_RDLCK or F_WRLCK
  uint64_t start = 0;
  uint64_t end = kLockEof;  // inclusive
  uint32_t pid = 0;     // for F_GETLK's answer (the pid on its own node)
  LockOwner who;
  bool flock = false;
};

class LockTable {
 public:
  // The first lock that conflicts with `want`, if any.
  std::optional<Lock> Conflict(uint64_t ino, const Lock& want) const;
  // Takes `want` (F_RDLCK/F_WRLCK) if nothing conflicts; replaces what its
  // owner held in the range. Returns false (and changes nothing) on conflict.
  bool TrySet(uint64_t ino, const Lock& want);
  // Releases `who`'s locks of the kind `flock` in [start, end].
  void Unlock(uint64_t ino, const LockOwner& who, bool flock, uint64_t start, uint64_t end);
  // Everything a node holds (it died or disconnected).
  void ReleaseNode(uint32_t node);
  std::vector<Lock> Locks(uint64_t ino) const;
  // Migration: the locks of `ino` leave with it, and arrive at the new owner.
  std::vector<Lock> Take(uint64_t ino);
  void Put(uint64_t ino, std::vector<Lock> locks);

 private:
  std::map<uint64_t, std::vector<Lock>> locks_;
};

}  // namespace cshm::ownership
