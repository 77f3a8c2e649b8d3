// Command-line and shim arguments: cshmfs's -o items and sizes, the shim's
// CSHM_KEYS. Any input is accepted or refused with a message.
#include <sys/ipc.h>

#include <cstdint>
#include <string>

#include "fs/mount_options.h"
#include "ipc_compat/key_scope.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string s(reinterpret_cast<const char*>(data), size);
  auto scope = cshm::ipc::KeyScope::Parse(s);
  if (scope) (void)scope->Contains(IPC_PRIVATE);
  (void)cshm::fs::ParseSize(s, 1ull << 34);
  cshm::fs::MountOptions o;
  auto st = cshm::fs::ApplyMountOption(s, &o);
  if (!st.ok() && st.message().empty()) __builtin_trap();
  // Whole command lines: split on NUL bytes.
  std::vector<std::string> args = {"cshmfs"};
  size_t start = 0;
  for (size_t i = 0; i <= s.size() && args.size() < 16; i++)
    if (i == s.size() || s[i] == '\0') {
      args.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  std::vector<const char*> argv;
  for (auto& a : args) argv.push_back(a.c_str());
  (void)cshm::fs::ParseCommandLine(static_cast<int>(argv.size()), argv.data());
  return 0;
}
