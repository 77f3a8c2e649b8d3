#include "fs/mountinfo.h"

#include <fstream>
#include <sstream>

namespace cshm::fs {

std::string UnescapeMountField(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' && s[i + 2] <= '7' && s[i + 3] >= '0' &&
        s[i + 3] <= '7') {
      out.push_back(static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::optional<MountEntry> FindMount(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  std::optional<MountEntry> found;
  while (std::getline(in, line)) {
    // id parent major:minor root mountpoint options [optional...] - fstype source super
    std::istringstream f(line);
    std::string id, parent, devnum, root, mp;
    f >> id >> parent >> devnum >> root >> mp;
    if (UnescapeMountField(mp) != path) continue;
    std::string tok;
    while (f >> tok && tok != "-") {
    }
    std::string fstype;
    f >> fstype;
    found = MountEntry{devnum, path, fstype};  // later lines are mounted on top
  }
  return found;
}

}  // namespace cshm::fs
