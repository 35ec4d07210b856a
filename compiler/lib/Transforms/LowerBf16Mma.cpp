//===- LowerBf16Mma.cpp - bf16 nvgpu.mma.sync -> nvvm.mma.sync --------------===//
#include "flashjit/Transforms/Passes.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/WalkPatternRewriteDriver.h"

namespace flashjit {
#define GEN_PASS_DEF_LOWERBF16MMA
#include "flashjit/Transforms/Passes.h.inc"
} // namespace flashjit

using namespace mlir;

namespace {
/// vector<Nx2xbf16> -> N i32 registers (two bf16 values packed per register,
/// as mma.sync takes them).
SmallVector<Value> packRegisters(PatternRewriter &rw, Location loc, Value v) {
  auto type = cast<VectorType>(v.getType());
  auto pairI32 = VectorType::get({1}, rw.getI32Type());
  SmallVector<Value> regs;
  for (int64_t i = 0; i < type.getDimSize(0); ++i) {
    Value pair = vector::ExtractOp::create(rw, loc, v, ArrayRef<int64_t>{i});
    Value packed = vector::BitCastOp::create(rw, loc, pairI32, pair);
    regs.push_back(
        vector::ExtractOp::create(rw, loc, packed, ArrayRef<int64_t>{0}));
  }
  return regs;
}

struct Bf16MmaToNVVM : OpRewritePattern<nvgpu::MmaSyncOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(nvgpu::MmaSyncOp op,
                                PatternRewriter &rw) const override {
    auto aType = cast<VectorType>(op.getMatrixA().getType());
    auto cType = cast<VectorType>(op.getMatrixC().getType());
    if (!aType.getElementType().isBF16() || !cType.getElementType().isF32())
      return rw.notifyMatchFailure(op, "not a bf16 x bf16 -> f32 mma");
    Location loc = op.getLoc();
    SmallVector<Value> a = packRegisters(rw, loc, op.getMatrixA());
    SmallVector<Value> b = packRegisters(rw, loc, op.getMatrixB());
    SmallVector<Value> c;
    for (int64_t i = 0; i < cType.getDimSize(0); ++i)
      for (int64_t j = 0; j < cType.getDimSize(1); ++j)
        c.push_back(vector::ExtractOp::create(rw, loc, op.getMatrixC(),
                                              ArrayRef<int64_t>{i, j}));
    Type f32 = rw.getF32Type();
    auto resultType = LLVM::LLVMStructType::getLiteral(
        rw.getContext(), SmallVector<Type>(c.size(), f32));
    SmallVector<int64_t> shape;
    for (Attribute dim : op.getMmaShape())
      shape.push_back(cast<IntegerAttr>(dim).getInt());
    auto mma = NVVM::MmaOp::create(
        rw, loc, resultType, a, b, c, shape, std::nullopt, std::nullopt,
        std::array<NVVM::MMATypes, 2>{NVVM::MMATypes::bf16,
                                      NVVM::MMATypes::bf16},
        std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row,
                                       NVVM::MMALayout::col});
    // Row by row: vector-to-llvm lowers only 1-D vector.from_elements.
    const int64_t rows = cType.getDimSize(0), cols = cType.getDimSize(1);
    auto rowType = VectorType::get({cols}, f32);
    Value d = ub::PoisonOp::create(rw, loc, cType);
    for (int64_t i = 0; i < rows; ++i) {
      SmallVector<Value> row;
      for (int64_t j = 0; j < cols; ++j)
        row.push_back(LLVM::ExtractValueOp::create(rw, loc, mma, i * cols + j));
      Value rowVec = vector::FromElementsOp::create(rw, loc, rowType, row);
      d = vector::InsertOp::create(rw, loc, rowVec, d, ArrayRef<int64_t>{i});
    }
    rw.replaceOp(op, d);
    return success();
  }
};

struct LowerBf16MmaPass
    : public flashjit::impl::LowerBf16MmaBase<LowerBf16MmaPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<Bf16MmaToNVVM>(&getContext());
    // One walk, no folding to a fixpoint: each op is rewritten at most once.
    walkAndApplyPatterns(getOperation(), std::move(patterns));
  }
};
} // namespace
