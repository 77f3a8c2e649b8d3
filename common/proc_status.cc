#include "common/proc_status.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace cshm {

ProcStatus ReadProcStatus(pid_t pid) {
  ProcStatus st;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    st.exists = true;
    if (line.rfind("State:", 0) == 0) {
      st.zombie = line.find('Z') != std::string::npos || line.find('X') != std::string::npos;
    } else if (line.rfind("Tgid:", 0) == 0) {
      st.tgid = static_cast<pid_t>(std::strtol(line.c_str() + 5, nullptr, 10));
    } else if (line.rfind("Threads:", 0) == 0) {
      st.threads = std::strtol(line.c_str() + 8, nullptr, 10);
    } else if (line.rfind("SigPnd:", 0) == 0 || line.rfind("ShdPnd:", 0) == 0) {
      st.pending |= std::strtoull(line.c_str() + 7, nullptr, 16);
    }
  }
  return st;
}

uint64_t ReadProcStart(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return 0;
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so
  // the fields are counted from the last ')'. starttime is field 22, the
  // 20th after it.
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(line.substr(close + 1));
  std::string field;
  for (int i = 0; i < 20; i++)
    if (!(fields >> field)) return 0;
  return std::strtoull(field.c_str(), nullptr, 10);
}

}  // namespace cshm
