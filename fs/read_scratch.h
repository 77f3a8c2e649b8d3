// What a FUSE READ keeps until its reply is sent (FileSystem::Read,
// Cluster::Read).
#pragma once

#include <memory>
#include <string>

#include "store/page_store.h"

namespace cshm::fs {

struct ReadScratch {
  std::string frame;               // a remote owner's reply, answered from without a copy
  std::shared_ptr<void> twinless;  // held while a READ that kept no twins is answered
  // Set by the caller: answers the READ from this node's page store file
  // (spliced, no copy in the daemon), under the segment's lock. Once it is
  // called, `replied` is true and the READ must not be answered again, even
  // if Read then fails.
  store::FileSink from_file;
  bool replied = false;
};

}  // namespace cshm::fs
