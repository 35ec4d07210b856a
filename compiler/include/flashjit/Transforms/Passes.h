//===- Passes.h - flashjit's own passes ---------------------------*- C++ -*-===//
#ifndef FLASHJIT_TRANSFORMS_PASSES_H
#define FLASHJIT_TRANSFORMS_PASSES_H

#include "flashjit/Dialect/Tile/TileDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

namespace flashjit {

#define GEN_PASS_DECL
#include "flashjit/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "flashjit/Transforms/Passes.h.inc"

} // namespace flashjit

#endif
