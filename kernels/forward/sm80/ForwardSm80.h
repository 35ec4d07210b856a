//===- ForwardSm80.h - The sm80 family's generator -------------*- C++ -*-===//
//
// Internal to kernels/ (pulls in MLIR).
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_FORWARD_SM80_FORWARDSM80_H
#define FLASHJIT_KERNELS_FORWARD_SM80_FORWARDSM80_H

#include "flashjit/compiler/AttentionSpec.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/Builders.h"

namespace flashjit {

/// FlashAttention-2 forward for sm_80 and newer: cp.async K/V pipeline,
/// ldmatrix + mma.sync m16n8k16, online softmax in exp2. Builds the kernel
/// `name` at the end of `module`'s body. Parameters follow ForwardKernelArgs.
mlir::LogicalResult buildForwardSm80(mlir::OpBuilder &builder,
                                     mlir::gpu::GPUModuleOp module,
                                     llvm::StringRef name,
                                     const AttentionSpec &spec,
                                     const TileConfig &config);

} // namespace flashjit

#endif
