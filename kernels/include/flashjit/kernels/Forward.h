//===- Forward.h - What every forward kernel family shares ----------------===//
//
// Plain C++: the forward kernels' parameter ABI (ForwardKernelArgs, passed
// by every family's kernels, followed by the family's tensor maps: see
// LaunchFacts), the family interface and the sm80 family's layout facts.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_FORWARD_H
#define FLASHJIT_KERNELS_FORWARD_H

#include "flashjit/compiler/AttentionSpec.h"
#include "flashjit/compiler/KernelFamily.h"
#include "flashjit/kernels/Families.h"
#include "flashjit/kernels/LayoutSm80.h"
#include "flashjit/kernels/LayoutSm90.h"

#include <cstdint>

namespace flashjit {

/// Kernel parameters in order (the ABI between generator and launcher).
/// Every kernel takes all of them; a kernel ignores the ones its spec does
/// not use (the launcher passes null / 0 there). Pointers are global device
/// addresses; strides count elements.
struct ForwardKernelArgs {
  void *q, *k, *v, *o;
  float *lse;               ///< spec.writeLse
  const void *bias;         ///< BiasMode::Tensor, dtype of Q
  const float *alibiSlopes; ///< BiasMode::Alibi
  const int32_t *cuSeqlensQ, *cuSeqlensK; ///< spec.varlen, [batch + 1]
  const int32_t *keyLengths;              ///< spec.keyLengths, [batch]
  /// Batch strides are 0 under varlen (rows are addressed through
  /// cu_seqlens), so that one formula serves both.
  int64_t qBatchStride, qHeadStride, qRowStride;
  int64_t kBatchStride, kHeadStride, kRowStride;
  int64_t vBatchStride, vHeadStride, vRowStride;
  int64_t oBatchStride, oHeadStride, oRowStride;
  int64_t lseBatchStride, lseHeadStride;
  /// 0 along broadcast dimensions.
  int64_t biasBatchStride, biasHeadStride, biasRowStride;
  int64_t alibiBatchStride;
  int32_t seqlenQ, seqlenK; ///< the largest ones under varlen
  /// MaskMode::Window extents, >= 0; an unbounded side is passed as
  /// seqlenQ + seqlenK (clamped to int32), which no row reaches past.
  int32_t windowLeft, windowRight;
  float scaleLog2; ///< softmax_scale * log2(e)
  float softcap;   ///< spec.softcap: the cap (> 0)
};
inline constexpr int kForwardKernelPointerArgs = 10;
inline constexpr int kForwardKernelStrideArgs = 18;
inline constexpr int kForwardKernelArgCount = 34;

/// log2(e): scores are scaled into the exp2 domain once.
inline constexpr double kLog2e = 1.4426950408889634;

} // namespace flashjit

#endif // FLASHJIT_KERNELS_FORWARD_H
