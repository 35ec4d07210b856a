//===- BackwardSm90.h - The sm90 family's backward kernels -------*- C++ -*-===//
//
// Internal to kernels/ (pulls in MLIR).
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_BACKWARD_SM90_BACKWARDSM90_H
#define FLASHJIT_KERNELS_BACKWARD_SM90_BACKWARDSM90_H

#include "flashjit/compiler/AttentionSpec.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/Builders.h"

namespace flashjit {

/// Builds the three entries of a backward spec (Backward.h) at the end of
/// `module`: <name>_pre and <name>_dq (the shared ones) and the wgmma main
/// kernel <name>. `cfg` is validated.
mlir::LogicalResult buildBackwardSm90(mlir::OpBuilder &builder,
                                      mlir::gpu::GPUModuleOp module,
                                      llvm::StringRef name,
                                      const AttentionSpec &spec,
                                      const TileConfig &cfg);

} // namespace flashjit

#endif // FLASHJIT_KERNELS_BACKWARD_SM90_BACKWARDSM90_H
