//===- LayoutSm90.h - The sm90 forward family: layout and defaults -------===//
//
// Plain C++ facts about the sm90 family's kernels (FlashAttention-3: TMA,
// wgmma, a producer warpgroup and consumer warpgroups of 64 query rows):
// shared-memory layout, register budget, tensor-map boxes and the default
// tile table. Its generator is kernels/forward/sm90/ForwardSm90.cpp.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_LAYOUTSM90_H
#define FLASHJIT_KERNELS_LAYOUTSM90_H

#include "flashjit/compiler/AttentionSpec.h"
#include "flashjit/compiler/KernelFamily.h"

#include <optional>

namespace flashjit {

/// Query rows of one wgmma (m64), owned by one consumer warpgroup.
inline constexpr int kWgmmaRows = 64;
inline constexpr int kWarpgroupThreads = 128;
inline constexpr int kMaxConsumerWarpgroups = 3;
/// Columns of one TMA box: 128 bytes of 16-bit elements, the span of the
/// 128-byte swizzle that wgmma's descriptors describe.
inline constexpr int kTmaBoxCols = 64;
inline constexpr int kTmaBoxRowBytes = 128;
/// 128-byte-swizzled tiles repeat their pattern every 8 rows (1024 bytes):
/// every box starts at a multiple of it, and SBO is this.
inline constexpr int kSwizzleAtomBytes = 1024;
/// Registers a producer thread keeps after setmaxnreg.dec.
inline constexpr int kProducerRegisters = 24;

struct Sm90Layout {
  int consumers = 0;   ///< consumer warpgroups (config.warps / 4)
  int threads = 0;     ///< (consumers + 1) warpgroups
  int qkSteps = 0;     ///< k16 steps of Q K^T: ceil(head_dim_qk / 16)
  int pvN = 0;         ///< wgmma N of P V: head_dim_v rounded up to 8
  int dTilesV = 0;     ///< n8 output tiles (pvN / 8)
  int boxesQK = 0;     ///< 64-column TMA boxes of a Q or K row
  int boxesV = 0;      ///< 64-column TMA boxes of a V row
  int qBoxBytes = 0;   ///< one 64-row box of Q
  int kBoxBytes = 0;   ///< one block_n-row box of K or V
  int qOffset = 0;     ///< Q: [consumer][box] boxes
  int kOffset = 0;     ///< K: [stage][box]
  int vOffset = 0;     ///< V: [stage][box]
  /// Q and K columns that wgmma reads past head_dim_qk, [padBegin, padEnd):
  /// with spec.headsInRows TMA fills them with the next head's values (any
  /// bits: NaN, Inf), so the kernel zeroes them in shared memory (Q once;
  /// K per tile, by the producer's idle warps, before kReady). Empty
  /// otherwise (TMA's out-of-bounds fill is zero).
  int padBegin = 0, padEnd = 0;
  bool zeroesPads() const { return padEnd > padBegin; }
  int barrierOffset = 0; ///< the mbarriers (barrierCount 8-byte words)
  int barrierCount = 0;
  int sharedMemBytes = 0;
  /// Registers a consumer thread may hold after setmaxnreg.inc, and the
  /// estimate of what it needs (O, scores, P, and with overlap the previous
  /// tile's P, plus the softmax and addressing).
  int consumerRegisters = 0;
  int estimatedRegisters = 0;
};
Sm90Layout sm90Layout(const AttentionSpec &spec, const TileConfig &config);

/// Whether the sm90 family serves `spec` on `arch`: sm_90a, and tensors TMA
/// can address (16-byte aligned heads: globalAlignElems 8; or 16-byte
/// aligned rows that hold their heads side by side: headsInRows).
Status supportsSm90(const AttentionSpec &spec, Arch arch);
TileConfig defaultTileConfigSm90(const AttentionSpec &spec, Arch arch);
Status validateSm90(const TileConfig &config, const AttentionSpec &spec,
                    Arch arch);
std::optional<TileLimit> exceededLimitSm90(const TileConfig &config,
                                           const AttentionSpec &spec,
                                           Arch arch);
LaunchFacts launchFactsSm90(const AttentionSpec &spec,
                            const TileConfig &config);

} // namespace flashjit

#endif // FLASHJIT_KERNELS_LAYOUTSM90_H
