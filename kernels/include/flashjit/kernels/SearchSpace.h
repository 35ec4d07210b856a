//===- SearchSpace.h - The tile configs an autotuner may try --------------===//
//
// Plain C++: the knobs of the kernel families, forward and backward, their
// values, and the pruning that drops configs before anything is compiled
// (shape rules, shared memory, registers), counting why.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_SEARCHSPACE_H
#define FLASHJIT_KERNELS_SEARCHSPACE_H

#include "flashjit/compiler/AttentionSpec.h"

#include <string>
#include <utility>
#include <optional>
#include <vector>

namespace flashjit {

/// Values each knob takes in a search (THE table), per kernel family.
struct ForwardKnobs {
  // sm80 family.
  std::vector<int> blockM{64, 128};
  std::vector<int> blockN{16, 32, 48, 64, 128};
  std::vector<int> warps{4, 8};
  std::vector<int> stages{1, 2, 3};
  /// pack_gqa is searched both ways when the spec has a GQA group > 1.
  // sm90 family: consumer warpgroups (64 query rows each), K/V tile rows,
  // stages; pingpong (two consumer warpgroups only) and overlap both ways.
  std::vector<int> consumersSm90{1, 2, 3};
  std::vector<int> blockNSm90{64, 80, 96, 128, 176};
  std::vector<int> stagesSm90{2};
  /// The families searched; empty: every family that supports the spec on
  /// the arch.
  std::vector<Family> families;
};

/// Values each knob of the backward's main kernel takes in a search.
struct BackwardKnobs {
  // sm80 family: query rows per step, keys per CTA, warps, K/V load stages
  // (the mma.sync kernel's; the scalar kernel loads in one).
  std::vector<int> blockM{16, 32, 64};
  std::vector<int> blockN{16, 32, 64, 128};
  std::vector<int> warps{2, 4, 8};
  std::vector<int> stages{1, 2};
  /// Whose tiles: the scalar kernel's (true), the mma.sync kernel's
  /// (false); unset: the arch's default kernel's (TileConfig::scalar).
  std::optional<bool> scalar;
};

/// Why a config was dropped before compiling: the limit it exceeds.
using PruneReason = TileLimit;
std::string_view toString(PruneReason r);

struct SearchSpace {
  /// Configs worth compiling; the per-arch default comes first (the
  /// baseline every other candidate is checked and compared against).
  std::vector<TileConfig> candidates;
  /// Decode spaces: candidate i runs with splits[i] split-KV CTAs per row
  /// block (0: the runtime's heuristic, chooseSplits), a run-time argument
  /// and not a kernel of its own. Empty elsewhere (every candidate: 0).
  std::vector<int> splits;
  int splitsOf(size_t candidate) const {
    return candidate < splits.size() ? splits[candidate] : 0;
  }
  /// Every combination of knob values considered.
  int enumerated = 0;
  /// Dropped configs per reason (reasons with a zero count are left out).
  std::vector<std::pair<PruneReason, int>> pruned;
  int prunedCount() const;
};

/// The search space of the forward families for a spec on an arch; the
/// default config (preferredFamily's) comes first.
SearchSpace forwardSearchSpace(const AttentionSpec &spec, Arch arch,
                               const ForwardKnobs &knobs = {});
/// Values each knob of a decode search takes (decodeSearchSpace).
struct DecodeKnobs {
  std::vector<int> blockN{16, 32, 64, 128};
  std::vector<int> stages{1, 2};
  /// Split counts besides the heuristic's (0); those above the key blocks
  /// or grid z's limit (batch x splits <= 65535) are left out.
  std::vector<int> splits{1, 2, 4, 8, 16, 32, 64, 128};
};

/// The search space of a decode-like problem (`tileRows` = seqlen_q x the
/// GQA group <= kDecodeMaxTileRows rows per row block, `seqlenK` keys,
/// `batch` sequences) in the sm80 family: the decode table's config with
/// the runtime's split heuristic first, then the table's row tile (block_m,
/// warps, pack_gqa) with every K/V tile depth and stage count, each at
/// every split count. Empty when the problem is not decode-like.
SearchSpace decodeSearchSpace(const AttentionSpec &spec, Arch arch,
                              int64_t tileRows, int64_t seqlenK, int64_t batch,
                              const DecodeKnobs &knobs = {});

/// The search space of the backward's main kernel for a backward spec
/// (AttentionSpec::direction) on an arch; the default config first.
SearchSpace backwardSearchSpace(const AttentionSpec &spec, Arch arch,
                                const BackwardKnobs &knobs = {});

} // namespace flashjit

#endif // FLASHJIT_KERNELS_SEARCHSPACE_H
