//===- LowerAttentionToGPU.cpp - Tile-level kernels to gpu.module ----------===//
#include "flashjit/Transforms/Passes.h"
#include "flashjit/compiler/KernelFamily.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"

namespace flashjit {
#define GEN_PASS_DEF_LOWERATTENTIONTOGPU
#include "flashjit/Transforms/Passes.h.inc"
} // namespace flashjit

using namespace mlir;
using namespace flashjit;

namespace {
struct LowerAttentionToGPUPass
    : public flashjit::impl::LowerAttentionToGPUBase<LowerAttentionToGPUPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    MLIRContext *ctx = &getContext();
    SmallVector<tile::AttentionFwdOp> kernels;
    module.walk([&](tile::AttentionFwdOp op) { kernels.push_back(op); });
    for (tile::AttentionFwdOp op : kernels) {
      if (!op.getConfig()) {
        op.emitOpError("has no tile config; run flashjit-select-tile-config");
        return signalPassFailure();
      }
      Arch arch = *parseArch(op.getArch().str());
      OpBuilder builder(op);
      auto target = NVVM::NVVMTargetAttr::get(
          ctx, /*optLevel=*/3, "nvptx64-nvidia-cuda", op.getArch(),
          ptxFeature(arch));
      auto gpuModule = gpu::GPUModuleOp::create(
          builder, op.getLoc(), op.getSymName(), builder.getArrayAttr(target));
      const TileConfig config = tile::fromAttr(*op.getConfig());
      auto family = familyOf(config.family);
      if (!family) {
        op.emitOpError() << family.message();
        return signalPassFailure();
      }
      if (Status s = (*family)->build(builder, gpuModule.getOperation(),
                                      op.getSymName().str(),
                                      op.getAttentionSpec(), config);
          !s) {
        op.emitOpError("kernel generation failed: ") << s.message();
        return signalPassFailure();
      }
      op.erase();
    }
    if (!kernels.empty())
      module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                      UnitAttr::get(ctx));
  }
};
} // namespace
