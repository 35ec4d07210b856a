//===- PTX.h - gpu.module (NVVM) -> LLVM IR -> PTX -----------------*- C++ -*-===//
#ifndef FLASHJIT_TARGET_PTX_H
#define FLASHJIT_TARGET_PTX_H

#include "flashjit/compiler/AttentionSpec.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"

#include <memory>

namespace flashjit {

/// Translates a gpu.module in the LLVM/NVVM dialects to LLVM IR for the
/// NVPTX target of `arch` and runs LLVM's O3 pipeline on it.
Expected<std::unique_ptr<llvm::Module>>
translateToLLVMIR(mlir::gpu::GPUModuleOp module, llvm::LLVMContext &llvmCtx,
                  Arch arch);

/// Runs the NVPTX backend: LLVM IR -> PTX text.
Expected<std::string> emitPTX(llvm::Module &module, Arch arch);

} // namespace flashjit

#endif
