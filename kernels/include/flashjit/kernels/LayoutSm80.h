//===- LayoutSm80.h - The sm80 forward family: layout and defaults -------===//
//
// Plain C++ facts about the sm80 family's kernels (FlashAttention-2: cp.async,
// ldmatrix, mma.sync) that its generator, its resource checks and the tests
// need: shared-memory layout and size, register estimates, and the per-arch
// default tile table.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_LAYOUTSM80_H
#define FLASHJIT_KERNELS_LAYOUTSM80_H

#include "flashjit/compiler/AttentionSpec.h"
#include "flashjit/kernels/Hardware.h"

#include <cstdint>
#include <optional>

namespace flashjit {

/// MMA granularity: m16n8k16. Head dims are padded to kMmaK inside shared
/// memory (never in the caller's tensors).
inline constexpr int kMmaM = 16;
inline constexpr int kMmaN = 8;
inline constexpr int kMmaK = 16;

/// Elements of one 16-byte shared-memory chunk (an ldmatrix row).
inline constexpr int kSmemChunkElems = 8;
/// 16-byte chunks of one 128-byte shared-memory line: the 32 banks, and the
/// chunks a quarter warp stores in one wavefront.
inline constexpr int kSmemLineChunks = 8;
/// At most log2(kSmemLineChunks) swizzle bits: one bank group per row of 8.
inline constexpr int kMaxSwizzleBits = 3;
static_assert(1 << kMaxSwizzleBits == kSmemLineChunks);
/// Swizzle bits of rows of `chunks` 16-byte chunks (an even number, with no
/// padding between rows): as many as put 8 consecutive rows into 8
/// different bank groups, min(ctz(chunks), 3).
constexpr int swizzleBitsOfRow(int chunks) {
  int bits = 0;
  while (bits < kMaxSwizzleBits && chunks % (2 << bits) == 0)
    ++bits;
  return bits;
}
/// Row r of a swizzled tile keeps its chunk c at chunk c ^ rowSwizzle(r,
/// bits): rows whose starts share a bank group (every 2^(3-bits) rows)
/// permute the chunks of each aligned 2^bits group differently, so an
/// ldmatrix's 8 rows hit 8 bank groups, while a quarter warp copying 8
/// consecutive chunks still stores one whole 128-byte line.
constexpr int rowSwizzle(int row, int bits) {
  return (row >> (kMaxSwizzleBits - bits)) & ((1 << bits) - 1);
}

/// k-steps (of kMmaK columns) per iteration of the full kernel's rolled
/// Q K^T (ForwardLayout::qkStepsPerRolledIteration).
inline constexpr int kQkStepsPerRolledIteration = 4;

/// Keys per step of the quick form (TileConfig::quick) through a K/V tile:
/// one k-step of P V, two n8 score tiles.
inline constexpr int kQuickSliceKeys = kMmaK;

/// ptxas optimisation level (as `ptxas -O<n>`, the driver JIT's
/// CU_JIT_OPTIMIZATION_LEVEL) of the full kernels (ptxas's default, the
/// JIT's highest level) and of the quick form. The
/// quick form is there to be ready soon, and every floating-point operation
/// of the PTX carries a rounding mode (.rn, or ex2.approx), which ptxas may
/// neither fuse nor reorder at any level: the same results at 1.
inline constexpr int kPtxasOptLevel = 3;
inline constexpr int kQuickPtxasOptLevel = 1;

/// Shared-memory and register layout of one forward kernel.
struct ForwardLayout {
  int paddedHeadDimQK = 0; ///< head_dim_qk rounded up to kMmaK
  int paddedHeadDimV = 0;  ///< head_dim_v rounded up to kMmaK
  /// rowSwizzle bits of Q/K and of V rows. Swizzled rows are exactly the
  /// padded head dim (an even number of chunks, so at least one bit);
  /// otherwise each row is padded by one 16-byte chunk and the bits are 0.
  int swizzleBitsQK = 0;
  int swizzleBitsV = 0;
  bool swizzledRows() const { return swizzleBitsQK > 0; }
  /// smem row pitch (elements) of Q and K tiles, and of V tiles
  int pitchQK = 0;
  int pitchV = 0;
  int rowsPerWarp = 0;     ///< blockM / warps
  int mTilesPerWarp = 0;   ///< rowsPerWarp / kMmaM
  int threads = 0;
  int qTileBytes = 0;
  int kTileBytes = 0;      ///< one stage
  int vTileBytes = 0;      ///< one stage
  int sharedMemBytes = 0;  ///< total dynamic shared memory
  int kOffsetBytes = 0;    ///< start of the K stages
  int vOffsetBytes = 0;    ///< start of the V stages
  /// Q fragments stay in registers for the whole kernel; otherwise (large
  /// head dims) they are re-read from shared memory for every K/V tile.
  bool qInRegisters = true;
  /// Q K^T's first qkRolledIterations * qkStepsPerRolledIteration k-steps
  /// run as a run-time loop of that many unrolled k-steps an iteration (the
  /// rest unrolled after it); 0: all unrolled. forwardLayout says where.
  int qkRolledIterations = 0;
  /// kQkStepsPerRolledIteration in the full kernel; in the quick form the
  /// k-steps of one swizzle group (1 to 4).
  int qkStepsPerRolledIteration = kQkStepsPerRolledIteration;
  /// Rough count of 32-bit registers per thread the accumulators, the Q
  /// fragments and the scores need (the pruning estimate, not ptxas's count).
  int estimatedRegisters = 0;
  /// O is rescaled only when some row of the warp has a new maximum, in a
  /// branch of its own. The branch keeps ptxas from interleaving the
  /// rescale with the softmax, which frees registers where they are short
  /// and costs speed where they are not (H200 A/B in bench/results).
  bool rescaleOnNewMax = false;
};
ForwardLayout forwardLayout(const AttentionSpec &spec, const TileConfig &config);

/// The sm80 family's default per arch: THE one table of its tile sizes.
TileConfig defaultTileConfigSm80(const AttentionSpec &spec, Arch arch);
/// The sm80 family's checks of a config (KernelFamily::validate).
Status validateSm80(const TileConfig &config, const AttentionSpec &spec,
                    Arch arch);
std::optional<TileLimit> exceededLimitSm80(const TileConfig &config,
                                           const AttentionSpec &spec,
                                           Arch arch);

} // namespace flashjit

#endif // FLASHJIT_KERNELS_LAYOUTSM80_H
