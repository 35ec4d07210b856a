//===- Pipelines.h - Stage-to-stage pass pipelines (internal) -----*- C++ -*-===//
//
// Defined in compiler/lib/Pipeline.cpp next to compile(), so that the stage
// order lives in one file; flashjit-opt registers them for the lit tests.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_TRANSFORMS_PIPELINES_H
#define FLASHJIT_TRANSFORMS_PIPELINES_H

namespace mlir {
class DialectRegistry;
class OpPassManager;
} // namespace mlir

namespace flashjit {
/// Every dialect and LLVM IR translation the pipeline uses.
void registerDialects(mlir::DialectRegistry &registry);
/// tile -> gpu.
void buildTileToGpuPipeline(mlir::OpPassManager &pm);
/// gpu -> nvvm.
void buildGpuToNvvmPipeline(mlir::OpPassManager &pm);
} // namespace flashjit

#endif
