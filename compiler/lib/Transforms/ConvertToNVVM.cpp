//===- ConvertToNVVM.cpp - gpu.module -> LLVM + NVVM dialects --------------===//
#include "flashjit/Transforms/Passes.h"

#include "mlir/Conversion/ConvertToLLVM/ToLLVMInterface.h"
#include "mlir/Conversion/GPUToNVVM/GPUToNVVMPass.h"
#include "mlir/Conversion/LLVMCommon/ConversionTarget.h"
#include "mlir/Conversion/LLVMCommon/TypeConverter.h"
#include "mlir/Interfaces/DataLayoutInterfaces.h"
#include "mlir/Transforms/DialectConversion.h"

namespace flashjit {
#define GEN_PASS_DEF_CONVERTTONVVM
#include "flashjit/Transforms/Passes.h.inc"
} // namespace flashjit

using namespace mlir;

namespace {
struct ConvertToNVVMPass
    : public flashjit::impl::ConvertToNVVMBase<ConvertToNVVMPass> {
  void runOnOperation() override {
    gpu::GPUModuleOp module = getOperation();
    LowerToLLVMOptions options(
        &getContext(),
        DataLayout(cast<DataLayoutOpInterface>(module.getOperation())));
    options.overrideIndexBitwidth(64);
    // One kernel parameter per tensor (ForwardKernelArgs), not a descriptor.
    options.useBarePtrCallConv = true;
    LLVMTypeConverter converter(&getContext(), options);
    configureGpuToNVVMTypeConverter(converter);

    RewritePatternSet patterns(&getContext());
    LLVMConversionTarget target(getContext());
    // Above the generic patterns, as in convert-gpu-to-nvvm.
    populateGpuToNVVMConversionPatterns(converter, patterns, /*benefit=*/10);
    for (Dialect *dialect : getContext().getLoadedDialects()) {
      // math is lowered by flashjit-lower-math-to-nvptx, not to libdevice.
      if (isa<math::MathDialect>(dialect))
        continue;
      if (auto *iface = dyn_cast<ConvertToLLVMPatternInterface>(dialect))
        iface->populateConvertToLLVMConversionPatterns(target, converter,
                                                       patterns);
    }
    configureGpuToNVVMConversionLegality(target);
    ConversionConfig config;
    // No pattern here needs rollback; without it the conversion is one pass.
    config.allowPatternRollback = false;
    if (failed(applyPartialConversion(module, target, std::move(patterns),
                                      config)))
      signalPassFailure();
  }
};
} // namespace
