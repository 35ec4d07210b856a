//===- ForwardSm90.h - The sm90 family's generator -------------*- C++ -*-===//
//
// Internal to kernels/ (pulls in MLIR).
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_FORWARD_SM90_FORWARDSM90_H
#define FLASHJIT_KERNELS_FORWARD_SM90_FORWARDSM90_H

#include "flashjit/compiler/AttentionSpec.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/Builders.h"

namespace flashjit {

/// FlashAttention-3 forward for sm_90a: TMA loads on an mbarrier ring filled
/// by a producer warpgroup, wgmma for S = Q K^T and O += P V (P from
/// registers) in consumer warpgroups. Builds the kernel `name` at the end of
/// `module`'s body. Parameters: ForwardKernelArgs, then the tensor maps of
/// Q, K and V (by value, 128 bytes each).
mlir::LogicalResult buildForwardSm90(mlir::OpBuilder &builder,
                                     mlir::gpu::GPUModuleOp module,
                                     llvm::StringRef name,
                                     const AttentionSpec &spec,
                                     const TileConfig &config);

} // namespace flashjit

#endif
