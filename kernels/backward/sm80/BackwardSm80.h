//===- BackwardSm80.h - The sm80 family's backward kernels -------*- C++ -*-===//
//
// Internal to kernels/ (pulls in MLIR).
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_BACKWARD_SM80_BACKWARDSM80_H
#define FLASHJIT_KERNELS_BACKWARD_SM80_BACKWARDSM80_H

#include "flashjit/compiler/AttentionSpec.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/Builders.h"

namespace flashjit {

/// Builds the three entries of a backward spec (Backward.h) at the end of
/// `module`: <name>_pre, <name> and <name>_dq. `cfg` is validated.
mlir::LogicalResult buildBackwardSm80(mlir::OpBuilder &builder,
                                      mlir::gpu::GPUModuleOp module,
                                      llvm::StringRef name,
                                      const AttentionSpec &spec,
                                      const TileConfig &cfg);

} // namespace flashjit

#endif // FLASHJIT_KERNELS_BACKWARD_SM80_BACKWARDSM80_H
