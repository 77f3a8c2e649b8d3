// Reading /proc/self/mountinfo: which filesystem is mounted at a path, and the
// device number that names its backing device info in /sys/class/bdi.
#pragma once

#include <optional>
#include <string>

namespace cshm::fs {

struct MountEntry {
  std::string devnum;  // "major:minor"
  std::string mountpoint;
  std::string fstype;
};

// The topmost mount at exactly `path` (an absolute, resolved path), if any.
std::optional<MountEntry> FindMount(const std::string& path);

// Decodes mountinfo's octal escapes ("\040" for a space).
std::string UnescapeMountField(const std::string& s);

}  // namespace cshm::fs
