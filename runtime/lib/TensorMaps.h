//===- TensorMaps.h - TMA tensor maps of a kernel call --------------------===//
//
// Private to runtime/lib. Kernels that load with TMA (LaunchFacts::usesTma)
// take a 128-byte CUtensorMap per operand by value, after their other
// arguments (ForwardKernelArgs, and BackwardKernelArgs for a backward).
// Each describes its tensor as 4D, innermost first: {head_dim, rows, heads,
// batches} (varlen: rows = all packed rows, one batch), strides in bytes,
// boxes of LaunchFacts' size, 128-byte swizzle, zeros past every edge.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_RUNTIME_LIB_TENSORMAPS_H
#define FLASHJIT_RUNTIME_LIB_TENSORMAPS_H

#include "Driver.h"

#include "flashjit/runtime/Runtime.h"

namespace flashjit {

/// Encodes the tensor maps `facts` asks for into plan.tensorMaps (Q, K, V,
/// dO in that order, those with a box) and sets plan.tensorMapCount. dO is
/// `backward`'s (required when facts.tmaDO has rows).
Status encodeTensorMaps(const driver::Api &cu, const ForwardProblem &problem,
                        const LaunchFacts &facts, ForwardPlan &plan,
                        const BackwardProblem *backward = nullptr);

} // namespace flashjit

#endif
