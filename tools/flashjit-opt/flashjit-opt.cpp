//===- flashjit-opt.cpp - MlirOptMain with flashjit's dialect and passes ---===//
//
// Drives the lit tests: every flashjit pass by name, plus the two stage
// pipelines (flashjit-tile-to-gpu, flashjit-gpu-to-nvvm) that compile() runs.
//
//===----------------------------------------------------------------------===//
#include "flashjit/Transforms/Passes.h"
#include "flashjit/kernels/Families.h"
#include "flashjit/Transforms/Pipelines.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  flashjit::registerKernelFamilies();
  mlir::DialectRegistry registry;
  flashjit::registerDialects(registry);
  flashjit::registerFlashjitPasses();
  mlir::registerCanonicalizerPass();
  mlir::registerCSEPass();
  mlir::PassPipelineRegistration<>(
      "flashjit-tile-to-gpu", "The pipeline's tile -> gpu stage",
      [](mlir::OpPassManager &pm) { flashjit::buildTileToGpuPipeline(pm); });
  mlir::PassPipelineRegistration<>(
      "flashjit-gpu-to-nvvm", "The pipeline's gpu -> nvvm stage",
      [](mlir::OpPassManager &pm) { flashjit::buildGpuToNvvmPipeline(pm); });
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "flashjit optimizer driver\n", registry));
}
