//===- SearchSpace.cpp - Enumerate and prune forward tile configs ----------===//
#include "flashjit/kernels/SearchSpace.h"

#include "flashjit/kernels/Backward.h"
#include "flashjit/kernels/Decode.h"
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

namespace {
/// The enumeration every search space shares: counts each config it is
/// shown, and each one pruned by the resource it exceeds.
class Enumeration {
public:
  Enumeration(SearchSpace &space, const AttentionSpec &spec, Arch arch)
      : space_(space), spec_(spec), arch_(arch) {}
  /// Whether `c` fits the arch's limits and is valid (counted either way).
  bool admits(const TileConfig &c) {
    ++space_.enumerated;
    if (auto reason = exceededLimit(c, spec_, arch_)) {
      ++pruned_[*reason];
      return false;
    }
    return validate(c, spec_, arch_).isOk();
  }
  /// The pruned counts into the space, by reason.
  void finish() {
    for (const auto &[reason, count] : pruned_)
      space_.pruned.emplace_back(reason, count);
  }

private:
  SearchSpace &space_;
  const AttentionSpec &spec_;
  Arch arch_;
  std::map<PruneReason, int> pruned_;
};
} // namespace


SearchSpace forwardSearchSpace(const AttentionSpec &spec, Arch arch,
                               const ForwardKnobs &knobs) {
  SearchSpace space;
  auto searched = [&](Family f) {
    const KernelFamily *family = findFamily(f);
    if (!family || !family->supports(spec, arch))
      return false;
    return knobs.families.empty() ||
           std::find(knobs.families.begin(), knobs.families.end(), f) !=
               knobs.families.end();
  };
  // The default first; where its family is not searched, the default of
  // the first that is.
  TileConfig baseline = defaultTileConfig(spec, arch);
  if (!searched(baseline.family))
    for (Family f : {Family::Sm80, Family::Sm90})
      if (searched(f)) {
        baseline = defaultTileConfig(spec, arch, f);
        break;
      }
  space.candidates.push_back(baseline);
  Enumeration enumeration(space, spec, arch);
  auto consider = [&](const TileConfig &c) {
    if (enumeration.admits(c) && c != baseline)
      space.candidates.push_back(c);
  };
  if (searched(Family::Sm80)) {
    std::vector<bool> packings{false};
    if (spec.gqaGroup > 1)
      packings.push_back(true);
    for (int blockM : knobs.blockM)
      for (int blockN : knobs.blockN)
        for (int warps : knobs.warps)
          for (int stages : knobs.stages)
            for (bool packGqa : packings)
              consider(TileConfig{blockM, blockN, warps, stages, packGqa});
  }
  if (searched(Family::Sm90))
    for (int consumers : knobs.consumersSm90)
      for (int blockN : knobs.blockNSm90)
        for (int stages : knobs.stagesSm90)
          for (bool pingpong : {false, true})
            for (bool overlap : {false, true}) {
              if (pingpong && consumers != 2)
                continue; // pingpong takes turns between two warpgroups
              TileConfig c;
              c.family = Family::Sm90;
              c.blockM = 64 * consumers;
              c.warps = 4 * consumers;
              c.blockN = blockN;
              c.stages = stages;
              c.pingpong = pingpong;
              c.overlap = overlap;
              consider(c);
            }
  enumeration.finish();
  return space;
}

SearchSpace decodeSearchSpace(const AttentionSpec &spec, Arch arch,
                              int64_t tileRows, int64_t seqlenK, int64_t batch,
                              const DecodeKnobs &knobs) {
  SearchSpace space;
  const std::optional<TileConfig> table =
      decodeTileConfig(spec, arch, tileRows);
  if (!table)
    return space;
  space.candidates.push_back(*table);
  space.splits.push_back(0);
  Enumeration enumeration(space, spec, arch);
  for (int blockN : knobs.blockN)
    for (int stages : knobs.stages) {
      TileConfig c = *table;
      c.blockN = blockN;
      c.stages = stages;
      if (!enumeration.admits(c))
        continue;
      const int64_t keyBlocks = (seqlenK + blockN - 1) / blockN;
      for (int splits : knobs.splits)
        if (splits >= 1 && splits <= kMaxSplits && splits <= keyBlocks &&
            batch * splits <= kMaxGridZ) {
          space.candidates.push_back(c);
          space.splits.push_back(splits);
        }
    }
  enumeration.finish();
  return space;
}

SearchSpace backwardSearchSpace(const AttentionSpec &spec, Arch arch,
                                const BackwardKnobs &knobs) {
  SearchSpace space;
  if (spec.direction != Direction::Backward)
    return space;
  // The runtime's default first (preferredFamily's: the sm90 kernel's from
  // d = 64 on sm_90a), or the scalar kernel's when that is searched; then
  // the sm80 kernel's tiles and the sm90 kernel's.
  const TileConfig sm80 = defaultBackwardConfigSm80(spec, arch, knobs.scalar);
  const TileConfig baseline =
      knobs.scalar.value_or(false) ? sm80 : defaultTileConfig(spec, arch);
  space.candidates.push_back(baseline);
  const std::vector<int> oneStage{1};
  const std::vector<int> &stages = sm80.scalar ? oneStage : knobs.stages;
  Enumeration enumeration(space, spec, arch);
  for (int blockM : knobs.blockM)
    for (int blockN : knobs.blockN)
      for (int warps : knobs.warps)
        for (int stageCount : stages) {
          TileConfig c;
          c.family = sm80.family;
          c.scalar = sm80.scalar; // the searched main kernel's tiles
          c.blockM = blockM;
          c.blockN = blockN;
          c.warps = warps;
          c.stages = stageCount;
          if (enumeration.admits(c) && c != baseline)
            space.candidates.push_back(c);
        }
  // The sm90 family's kernel (wgmma) where it serves the spec: a warpgroup
  // per 64 keys, 64 queries a step, one or two stages.
  const KernelFamily *sm90 = findFamily(Family::Sm90);
  if (!knobs.scalar.value_or(false) && sm90 &&
      sm90->supports(spec, arch).isOk())
    for (int warps : {4, 8})
      for (int stageCount : {1, 2}) {
        TileConfig c = sm90->defaultConfig(spec, arch);
        c.warps = warps;
        c.blockN = 16 * warps;
        c.stages = stageCount;
        if (enumeration.admits(c) && c != baseline)
          space.candidates.push_back(c);
      }
  enumeration.finish();
  return space;
}

} // namespace flashjit
