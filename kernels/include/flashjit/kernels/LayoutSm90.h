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
#include "flashjit/kernels/Hardware.h"

#include <optional>

namespace flashjit {

/// k of one wgmma of 16-bit inputs.
inline constexpr int kWgmmaK = 16;
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
/// The same swizzle as copyTile writes it: 16-byte chunk c of row r at
/// chunk c ^ (r % 8), 3 bits.
inline constexpr int kBoxSwizzleBits = 3;
/// Registers a producer thread keeps after setmaxnreg.dec: one thread
/// issuing TMA, or every thread addressing its cp.async copies.
inline constexpr int kProducerRegisters = 24;
inline constexpr int kCopyingProducerRegisters = 40;

struct Sm90Layout {
  /// Q, K and V by TMA (one producer thread issues; rowsTmaAligned), else
  /// copied by the producer warpgroup's cp.async (zeros past the tensors).
  bool tma = true;
  int consumers = 0;   ///< consumer warpgroups (config.warps / 4)
  int producerRegisters = 0; ///< after setmaxnreg.dec
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
  int barrierOffset = 0; ///< the mbarriers (barrierCount 8-byte words)
  int barrierCount = 0;
  int sharedMemBytes = 0;
  /// Registers a consumer thread may hold after setmaxnreg.inc, and the
  /// estimate of what it needs (O, scores, P, the softmax and addressing,
  /// and with overlap a margin for the previous tile's P in flight).
  int consumerRegisters = 0;
  int estimatedRegisters = 0;
};
Sm90Layout sm90Layout(const AttentionSpec &spec, const TileConfig &config);

/// Whether the sm90 family serves `spec` on `arch`: sm_90a, and rows that
/// TMA can address or cp.async can copy (4-byte pieces or wider).
Status supportsSm90(const AttentionSpec &spec, Arch arch);
TileConfig defaultTileConfigSm90(const AttentionSpec &spec, Arch arch);
Status validateSm90(const TileConfig &config, const AttentionSpec &spec,
                    Arch arch);
std::optional<TileLimit> exceededLimitSm90(const TileConfig &config,
                                           const AttentionSpec &spec,
                                           Arch arch);
LaunchFacts launchFactsSm90(const AttentionSpec &spec,
                            const TileConfig &config);

// ---- the backward (kernels/backward/sm90/BackwardSm90.cpp) ----------------

/// Query rows of one backward step (a wgmma's N for S^T and dP^T, its M for
/// dQ).
inline constexpr int kBackwardSm90BlockM = 64;
/// The largest head dim of the sm90 backward: dK and dV stay in registers
/// (head_dim / 2 each per thread) beside a sub-step's S^T and dP^T. With
/// TMA loads and dQ added by bulk reductions 128 fits in 255 registers
/// (32-query sub-steps spill 4-8 bytes at d = 128 causal: 16-query ones
/// past d = 96); where every thread copies (rows not 16-byte aligned) its
/// copies' addressing leaves too few past 64 (ptxas 13.0 spills 4-72
/// bytes at d = 72-96).
inline constexpr int kBackwardSm90MaxHeadDim = 128;
/// Past kBackwardSm90MaxHeadDim (to 256) the two warpgroups share 64 keys
/// and split dK's, dV's and dQ's columns (`splitColumns`): both compute
/// the step's S^T and dP^T, so 2 of every 7 wgmma FLOPs are repeated, but
/// each keeps d = 128's accumulators. Where both head dims pass 128 (dK
/// and dV of 128 columns a warpgroup), to 160: ptxas 13.0 spills 4-76
/// bytes from 176 (GQA, deterministic, causal) to 256.
inline constexpr int kBackwardSm90MaxHeadDimSplit = kMaxHeadDim;
inline constexpr int kBackwardSm90MaxHeadDimSplitBoth = 160;
inline constexpr int kBackwardSm90MaxHeadDimCopied = 64;
/// With varlen or a window mask (ptxas spills 36-56 bytes at d = 128).
inline constexpr int kBackwardSm90MaxHeadDimMasked = 96;
/// With a bias or softcap: per-score loads, distances and the cap's tanh
/// kept for dS (ptxas 13.0 spills 4-40 bytes at d = 128); with varlen or a
/// window too, 64 (4-8 bytes at d = 96). dBias's per-score stores spill
/// from d = 32 (28-176 bytes): the sm80 family writes dBias.
inline constexpr int kBackwardSm90MaxHeadDimScoreMods = 96;
inline constexpr int kBackwardSm90MaxHeadDimScoreModsMasked = 64;

/// The sm90 backward's main kernel: one or two warpgroups of 64 keys each
/// (block_n = 64 x warps / 4; past d = 128 two of the same 64 keys, each
/// with half the columns), 64 query rows per step; every tile in
/// 128-byte-swizzled boxes of 64 columns (wgmma's layout), loaded by TMA
/// where rows start 16-byte aligned (`tma`), else copied by cp.async.
struct BackwardSm90Layout {
  int warpgroups = 0, threads = 0;
  /// Q, K, V and dO by TMA (one thread issues, mbarriers complete): the
  /// spec's rows are 16-byte aligned.
  bool tma = false;
  int qkSteps = 0, vSteps = 0; ///< k16 steps over head_dim_qk, head_dim_v
  /// The warpgroups share their keys; warpgroup w takes columns [w dkN,
  /// (w + 1) dkN) of dK and dQ and [w dvN, (w + 1) dvN) of dV: whole
  /// boxes (MN-major B operands start at one: docs/MLIR-NOTES.md), the
  /// second's past the head dims zeros of padding boxes (`storedBoxesQK`,
  /// `storedBoxesV`).
  bool splitColumns = false;
  /// wgmma N of dK, dV: head dims rounded to 8 (split: a warpgroup's boxes)
  int dkN = 0, dvN = 0;
  /// A step's S^T, P^T, dP^T and dS^T in sub-steps of block_m / subSteps
  /// queries: two beside large dK and dV accumulators (registers).
  int subSteps = 1;
  int boxesQK = 0, boxesV = 0; ///< 64-column boxes of a Q/K, dO/V row
  /// Boxes of Q and K, and of dO, in shared memory: boxesQK and boxesV,
  /// split: 2 dkN / 64 and 2 dvN / 64 (the padding ones zeroed once).
  int storedBoxesQK = 0, storedBoxesV = 0;
  int kBoxBytes = 0;           ///< one block_n-row box (K, V)
  int qBoxBytes = 0;           ///< one 64-row box (Q, dO, dS)
  int kOffset = 0, vOffset = 0;
  int qOffset = 0, dOOffset = 0; ///< [stage][box]
  int qStageBytes = 0, dOStageBytes = 0;
  int dSOffset = 0;        ///< dS [key box][query][key], rounded
  int rowValuesOffset = 0; ///< LSE' and D: [2][stage][block_m] f32
  /// A step's dQ in float32 rows, `dqRowFloats` apart (at least dkN, 8 past
  /// a multiple of 32: a warp's pair stores hit every bank twice), one
  /// buffer per warpgroup when both sum every column (`dqBuffers`).
  int dQOffset = 0, dqRowFloats = 0, dqBuffers = 1;
  /// Both warpgroups take dQ columns of their own (a 64-column box each;
  /// splitColumns: dkN each).
  bool dqSplitsColumns = false;
  /// TMA's mbarriers: K and V's, then one per stage (Q and dO).
  int barrierOffset = 0, barrierCount = 0;
  int sharedMemBytes = 0;
  int estimatedRegisters = 0;
};
BackwardSm90Layout backwardLayoutSm90(const AttentionSpec &spec,
                                      const TileConfig &config);
/// Backward specs the sm90 family serves: head dims up to
/// kBackwardSm90MaxHeadDim (kBackwardSm90MaxHeadDimSplit with TMA and
/// neither varlen, a window nor score modifiers, and
/// kBackwardSm90MaxHeadDimSplitBoth where both head dims pass 128;
/// kBackwardSm90MaxHeadDimCopied without TMA,
/// kBackwardSm90MaxHeadDimMasked with varlen or a window,
/// kBackwardSm90MaxHeadDimScoreMods(Masked) with a bias or softcap), no
/// dBias.
Status supportsBackwardSm90(const AttentionSpec &spec, Arch arch);
TileConfig defaultBackwardConfigSm90(const AttentionSpec &spec, Arch arch);
Status validateBackwardSm90(const TileConfig &config,
                            const AttentionSpec &spec, Arch arch);
LaunchFacts backwardLaunchFactsSm90(const AttentionSpec &spec,
                                    const TileConfig &config);

} // namespace flashjit

#endif // FLASHJIT_KERNELS_LAYOUTSM90_H
