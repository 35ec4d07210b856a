//===- SearchSpace.cpp - Enumerate and prune forward tile configs ----------===//
#include "flashjit/kernels/SearchSpace.h"

#include "flashjit/kernels/Forward.h"

#include <algorithm>
#include <map>

namespace flashjit {

std::string_view toString(PruneReason r) {
  switch (r) {
  case PruneReason::Shape:
    return "shape (block_m not a multiple of 16 rows per warp)";
  case PruneReason::SharedMemory:
    return "shared memory above the per-block maximum";
  case PruneReason::Registers:
    return "registers per thread above 255 (estimate)";
  case PruneReason::RegisterFile:
    return "registers x threads above the register file (estimate)";
  }
  return "?";
}

int SearchSpace::prunedCount() const {
  int n = 0;
  for (const auto &[reason, count] : pruned)
    n += count;
  return n;
}


SearchSpace forwardSearchSpace(const AttentionSpec &spec, Arch arch,
                               const ForwardKnobs &knobs) {
  SearchSpace space;
  const TileConfig baseline = defaultTileConfig(spec, arch);
  space.candidates.push_back(baseline);
  std::map<PruneReason, int> pruned;
  std::vector<bool> packings{false};
  if (spec.gqaGroup > 1)
    packings.push_back(true);
  for (int blockM : knobs.blockM)
    for (int blockN : knobs.blockN)
      for (int warps : knobs.warps)
        for (int stages : knobs.stages)
          for (bool packGqa : packings) {
            const TileConfig c{blockM, blockN, warps, stages, packGqa};
            ++space.enumerated;
            if (auto reason = exceededLimit(c, spec, arch)) {
              ++pruned[*reason];
              continue;
            }
            if (c != baseline && validate(c, spec, arch))
              space.candidates.push_back(c);
          }
  for (const auto &[reason, count] : pruned)
    space.pruned.emplace_back(reason, count);
  return space;
}

} // namespace flashjit
