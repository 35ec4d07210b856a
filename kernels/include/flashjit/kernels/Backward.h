//===- Backward.h - The backward kernels' parameters and entries ----------===//
//
// Plain C++: what a launcher needs to run the kernels of a backward spec
// (AttentionSpec::direction == Backward). One module holds three entries,
// launched in this order on one stream:
//
//   <name>_pre   D = rowsum(dO * O) and LSE * log2(e) (+inf for a row that
//                saw no key) of every query row, into the workspace.
//                Grid (ceil(seqlen_q / kBackwardAuxRows), heads_q, batch).
//   <name>       dK, dV of block_n keys per CTA (written), dQ partial sums
//                added to the workspace: atomically into one sum, or, when
//                deterministic, CTA x into split x's sum without atomics.
//                Grid (x, heads_kv, batch): x = ceil(seqlen_k / block_n),
//                or the split count when deterministic (CTA x then visits
//                key tiles x, x + gridDim.x, ...). The workspace's dQ sums
//                must be zero before it.
//   <name>_dq    dQ = scale * (sum of the splits' partial sums), rounded.
//                Grid as <name>_pre.
//
// <name> is kernelName(spec, config, arch); launchFacts describe it, the
// other two take kBackwardAuxThreads threads and no shared memory. Every
// entry takes ForwardKernelArgs (the forward call's: Q, K, V, O, LSE, bias,
// sequence bounds, masks) followed by BackwardKernelArgs.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_BACKWARD_H
#define FLASHJIT_KERNELS_BACKWARD_H

#include "flashjit/kernels/Forward.h"

#include <cstdint>
#include <optional>
#include <string>

namespace flashjit {

/// The backward's own parameters, after ForwardKernelArgs (whose `lse` is
/// read, not written).
struct BackwardKernelArgs {
  const void *dO;
  void *dQ, *dK, *dV;
  void *dBias;      ///< spec.biasGrad
  float *workspace; ///< BackwardWorkspace (BackwardParams.h)
  int64_t dOBatchStride, dOHeadStride, dORowStride;
  int64_t dQBatchStride, dQHeadStride, dQRowStride;
  int64_t dKBatchStride, dKHeadStride, dKRowStride;
  int64_t dVBatchStride, dVHeadStride, dVRowStride;
  int64_t dBiasBatchStride, dBiasHeadStride, dBiasRowStride;
  /// The workspace: row numbering and where its arrays start (floats).
  int64_t wsRowBatchStride, wsRowHeadStride;
  int64_t wsLseOffset, wsDOutSumOffset, wsDqAccumOffset, wsDqSplitStride;
  int64_t wsDqRowStride;
  /// Key tiles visited per pass of the grid: gridDim.x of <name>.
  int32_t dqSplits;
  float scale; ///< the softmax scale (dQ and dK carry it)
};
inline constexpr int kBackwardPointerArgs = 6;
inline constexpr int kBackwardStrideArgs = 22;
inline constexpr int kBackwardArgCount = 30;

/// The entries of a backward module whose main kernel is `name`.
inline std::string backwardPreprocessEntry(const std::string &name) {
  return name + "_pre";
}
inline std::string backwardConvertEntry(const std::string &name) {
  return name + "_dq";
}
/// Threads of <name>_pre and <name>_dq, and the query rows each CTA takes.
inline constexpr int kBackwardAuxThreads = 128;
inline constexpr int kBackwardAuxRows = 64;

/// How the warps of the mma.sync kernel share one product of R x C
/// results: warpsM x warpsN warps, warp w taking the `rows` x `cols` block
/// (w % warpsM, w / warpsM) (FlashAttention-2's TiledMMA atom layouts);
/// warps from warpsM * warpsN on sit the product out. rows is a multiple
/// of 16 (m16 tiles), cols of 16 (pairs of n8 tiles).
struct WarpGrid {
  int warpsM = 0, warpsN = 0;
  int rows = 0, cols = 0;
  int warps() const { return warpsM * warpsN; }
};

/// The sm80 backward main kernel's layout. Shared memory (byte offsets,
/// 16-byte aligned) holds K and V of the CTA's block_n keys, Q and dO of one
/// block_m step, and P and dS of the step.
///
/// The scalar kernel (TileConfig::scalar) keeps exactly head_dim columns
/// (it indexes them with run-time loops), one copy of Q and dO, P and dS in
/// float32, the float32 dK and dV accumulators of its keys and the step's
/// rows' LSE (log2 domain) and D.
///
/// The mma.sync kernel keeps K, V, Q and dO rows of the head dims padded
/// to 32, swizzled (rowSwizzle, LayoutSm80.h), `stages` copies of Q and dO
/// (the next step's load overlaps this one's products), and P and dS
/// rounded to the input dtype in rows of block_n plus one 16-byte chunk
/// (unswizzled, so that a warp's keys may start at any 16 columns: the
/// transposed reads of dV += P^T dO and dK += dS^T Q). dK, dV and the
/// step's S, dP and dQ live in registers.
struct BackwardLayout {
  int threads = 0;
  int kOffset = 0, vOffset = 0, qOffset = 0, dOOffset = 0;
  int pOffset = 0, dSOffset = 0;
  int sharedMemBytes = 0;
  // ---- the scalar kernel
  int dKOffset = 0, dVOffset = 0;
  /// LSE' and D of the block's rows (float32; the mma.sync kernel, where
  /// stagedRowValues: per stage, copied with Q and dO).
  int lseOffset = 0, dSumOffset = 0;
  /// The mma.sync kernel copies LSE' and D into shared memory a step ahead
  /// (short steps), or loads them from global memory where used.
  bool stagedRowValues = false;
  // ---- the mma.sync kernel
  int paddedHeadDimQK = 0, paddedHeadDimV = 0;
  /// rowSwizzle bits of K and Q rows, of V and dO rows.
  int swizzleBitsQK = 0, swizzleBitsV = 0;
  /// Row pitch (elements) of P and dS.
  int pitchPdS = 0;
  /// Bytes of one stage of Q, of dO.
  int qStageBytes = 0, dOStageBytes = 0;
  /// S and dP (block_m x block_n; one grid, as dS = P (dP - D) pairs
  /// them), dV (block_n x head_dim_v), dK (block_n x head_dim_qk), dQ
  /// (block_m x head_dim_qk), padded dims.
  WarpGrid sdp, dv, dk, dq;
  /// Rough count of 32-bit registers per thread: accumulators (dK and dV,
  /// then S and dP (and tanh under softcap) or dQ) plus addressing.
  int estimatedRegisters = 0;
};
BackwardLayout backwardLayoutSm80(const AttentionSpec &spec,
                                  const TileConfig &config);
/// The sm80 backward's default per arch: THE one table of its tiles
/// (LayoutBackwardSm80.cpp), of the scalar kernel or the mma.sync kernel
/// (TileConfig::scalar); unset: of the kernel that runs by default.
TileConfig defaultBackwardConfigSm80(const AttentionSpec &spec, Arch arch,
                                     std::optional<bool> scalar = {});
/// Scalar kernel: block_m and block_n in {16, 32, 64}, warps in {1, 2, 4,
/// 8}, one stage. mma.sync kernel: block_m and block_n in {16, 32, 64,
/// 128}, warps in {1, 2, 4, 8}, stages 1 or 2, S shared by every warp, the
/// register estimate within 255. Both: no packed GQA or quick form, shared
/// memory within the arch's limit.
Status validateBackwardSm80(const TileConfig &config, const AttentionSpec &spec,
                            Arch arch);
/// The dQ partial sums (gridDim.x of the main kernel) of deterministic mode
/// for `keyTiles` key tiles: at most kMaxDqSplits, so the workspace stays
/// small; a function of the problem only, so the bits are the same on
/// every run.
inline constexpr int kMaxDqSplits = 16;
inline int64_t deterministicDqSplits(int64_t keyTiles) {
  return keyTiles < 1 ? 1 : (keyTiles < kMaxDqSplits ? keyTiles : kMaxDqSplits);
}

} // namespace flashjit

#endif // FLASHJIT_KERNELS_BACKWARD_H
