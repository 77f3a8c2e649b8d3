#include "common/proc_status.h"

#include <cstdlib>
#include <fstream>
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

}  // namespace cshm
