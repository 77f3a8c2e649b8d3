// MoveTwins: the node's twins (its kernel's copies of pages as they were
// fetched) as a move uses them: which pages of a segment have one (the
// target offers them, so that unchanged pages need not travel), one twin
// (compared with the old owner's page by hash), and storing twins (the old
// owner keeps its own kernel's copies when its pages go). fs::TwinCache is
// the node's.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace cshm::migrator {

class MoveTwins {
 public:
  virtual ~MoveTwins() = default;
  // A byte per page of `ino`, nonzero where this node has a twin.
  virtual std::string Bitmap(uint64_t ino) = 0;
  virtual bool Has(uint64_t ino, uint64_t page) = 0;
  virtual std::optional<std::string> Get(uint64_t ino, uint64_t page) = 0;
  // Stores the twins of the whole pages `data` covers, from `off`.
  virtual Status Put(uint64_t ino, uint64_t off, std::string_view data) = 0;
};

}  // namespace cshm::migrator
