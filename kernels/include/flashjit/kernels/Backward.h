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

/// Where the sm80 backward main kernel keeps its tiles in shared memory
/// (byte offsets, 16-byte aligned): K, V, Q and dO tiles in the input
/// dtype (exactly head_dim columns: the kernel indexes them with run-time
/// loops, no padding needed), the float32 dK and dV accumulators of its
/// block_n keys, P and dS of one block_m x block_n step, and the step's
/// rows' LSE (log2 domain) and D.
struct BackwardLayout {
  int threads = 0;
  int kOffset = 0, vOffset = 0, qOffset = 0, dOOffset = 0;
  int dKOffset = 0, dVOffset = 0, pOffset = 0, dSOffset = 0;
  int lseOffset = 0, dSumOffset = 0;
  int sharedMemBytes = 0;
};
BackwardLayout backwardLayoutSm80(const AttentionSpec &spec,
                                  const TileConfig &config);
/// block_m 16 query rows per step, block_n 32 keys per CTA (16 above head
/// dim 128, so that sm_86's 99 KB hold the tiles), 4 warps.
TileConfig defaultBackwardConfigSm80(const AttentionSpec &spec, Arch arch);
/// block_m and block_n in {16, 32, 64}, warps in {1, 2, 4, 8}, no packed
/// GQA or quick form, shared memory within the arch's limit.
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
