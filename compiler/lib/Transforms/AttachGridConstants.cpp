//===- AttachGridConstants.cpp - Tensor maps as byval grid constants ------===//
#include "flashjit/Transforms/Passes.h"

#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"

namespace flashjit {
#define GEN_PASS_DEF_ATTACHGRIDCONSTANTS
#include "flashjit/Transforms/Passes.h.inc"
} // namespace flashjit

using namespace mlir;

namespace {
/// Bytes and alignment of a CUtensorMap (cuda.h: 128 bytes, 64-byte
/// aligned as cuTensorMapEncodeTiled requires).
constexpr int64_t kTensorMapBytes = 128;
constexpr int64_t kTensorMapAlign = 64;
constexpr const char *kListAttr = "flashjit.grid_constant_args";

struct AttachGridConstantsPass
    : public flashjit::impl::AttachGridConstantsBase<AttachGridConstantsPass> {
  void runOnOperation() override {
    MLIRContext *ctx = &getContext();
    auto mapType = LLVM::LLVMArrayType::get(IntegerType::get(ctx, 8),
                                            kTensorMapBytes);
    getOperation().walk([&](LLVM::LLVMFuncOp func) {
      auto list = func->getAttrOfType<DenseI32ArrayAttr>(kListAttr);
      if (!list)
        return;
      for (int32_t i : list.asArrayRef()) {
        if (i < 0 || unsigned(i) >= func.getNumArguments() ||
            !isa<LLVM::LLVMPointerType>(func.getArgument(i).getType())) {
          func.emitOpError() << kListAttr << " names argument " << i
                             << ", which is not a pointer parameter";
          return signalPassFailure();
        }
        func.setArgAttr(i, LLVM::LLVMDialect::getByValAttrName(),
                        TypeAttr::get(mapType));
        func.setArgAttr(i, LLVM::LLVMDialect::getAlignAttrName(),
                        IntegerAttr::get(IntegerType::get(ctx, 64),
                                         kTensorMapAlign));
        func.setArgAttr(i, NVVM::NVVMDialect::getGridConstantAttrName(),
                        UnitAttr::get(ctx));
      }
      func->removeAttr(kListAttr);
    });
  }
};
} // namespace
