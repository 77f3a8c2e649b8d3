// Diffs against twins (TreadMarks' multiple-writer protocol): the bytes of a
// page that differ from the copy this node last fetched or wrote back. Only
// those bytes travel to the owner, so two nodes writing different bytes of one
// page both survive. Equal bytes between two differing ones are never sent:
// they may be another node's newer value at the owner.
#pragma once

#include <string_view>
#include <vector>

#include "ownership/owned_segments.h"

namespace cshm::fs {

// Appends to `out` the runs where `now` differs from `twin` (same length),
// at offsets base + index.
void DiffInto(uint64_t base, std::string_view twin, std::string_view now, std::vector<ownership::WriteRun>* out);

}  // namespace cshm::fs
