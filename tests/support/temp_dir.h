// A temporary directory removed (recursively) when the object goes.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>

namespace cshm::testing {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/cshm-test-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  // CSHM_TEST_KEEP=1 keeps it (daemon logs and state) for a post-mortem.
  ~TempDir() {
    if (getenv("CSHM_TEST_KEEP") != nullptr) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace cshm::testing
