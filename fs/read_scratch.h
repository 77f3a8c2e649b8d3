// What a FUSE READ keeps until its reply is sent (FileSystem::Read,
// Cluster::Read).
#pragma once

#include <memory>
#include <string>

namespace cshm::fs {

struct ReadScratch {
  std::string frame;               // a remote owner's reply, answered from without a copy
  std::shared_ptr<void> twinless;  // held while a READ that kept no twins is answered
};

}  // namespace cshm::fs
