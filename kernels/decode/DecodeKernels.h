//===- DecodeKernels.h - The helper kernels of decode modules -*- C++ -*-===//
//
// Internal to kernels/ (pulls in MLIR). A forward module of a spec with
// splitKV gets the combine kernel, one with pagedKV the append kernel
// (Decode.h has their parameters); both are built into the same gpu.module
// as the forward kernel, so one compile and one cache entry hold all three.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_DECODE_DECODEKERNELS_H
#define FLASHJIT_KERNELS_DECODE_DECODEKERNELS_H

#include "flashjit/compiler/AttentionSpec.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/Builders.h"

namespace flashjit {

/// Merges the split partials of every (row, head) entry by the log-sum-exp
/// rule into O and (when the spec writes it) LSE: kCombineThreads threads,
/// one warp per entry; CombineKernelArgs.
void buildCombineKernel(mlir::OpBuilder &builder,
                        mlir::gpu::GPUModuleOp module, llvm::StringRef name,
                        const AttentionSpec &spec);

/// Copies new K/V rows into their pages: kAppendThreads threads, grid
/// (x, batch); AppendKernelArgs.
void buildAppendKernel(mlir::OpBuilder &builder, mlir::gpu::GPUModuleOp module,
                       llvm::StringRef name, const AttentionSpec &spec);

} // namespace flashjit

#endif // FLASHJIT_KERNELS_DECODE_DECODEKERNELS_H
