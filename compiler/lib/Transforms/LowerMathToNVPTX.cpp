//===- LowerMathToNVPTX.cpp - exp2/log2 to the MUFU approximations ---------===//
#include "flashjit/Transforms/Passes.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/WalkPatternRewriteDriver.h"

namespace flashjit {
#define GEN_PASS_DEF_LOWERMATHTONVPTX
#include "flashjit/Transforms/Passes.h.inc"
} // namespace flashjit

using namespace mlir;

namespace {
struct Exp2ToIntrinsic : OpRewritePattern<math::Exp2Op> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(math::Exp2Op op,
                                PatternRewriter &rw) const override {
    if (!op.getType().isF32())
      return rw.notifyMatchFailure(op, "only f32 has ex2.approx");
    // ftz: softmax weights below 2^-126 are as good as zero.
    auto call = LLVM::CallIntrinsicOp::create(
        rw, op.getLoc(), op.getType(),
        rw.getStringAttr("llvm.nvvm.ex2.approx.ftz.f32"),
        ValueRange{op.getOperand()});
    rw.replaceOp(op, call.getResults());
    return success();
  }
};

struct Log2ToIntrinsic : OpRewritePattern<math::Log2Op> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(math::Log2Op op,
                                PatternRewriter &rw) const override {
    if (!op.getType().isF32())
      return rw.notifyMatchFailure(op, "only f32 has lg2.approx");
    auto call = LLVM::CallIntrinsicOp::create(
        rw, op.getLoc(), op.getType(),
        rw.getStringAttr("llvm.nvvm.lg2.approx.f"), ValueRange{op.getOperand()});
    rw.replaceOp(op, call.getResults());
    return success();
  }
};

struct FmaToIntrinsic : OpRewritePattern<math::FmaOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(math::FmaOp op,
                                PatternRewriter &rw) const override {
    if (!op.getType().isF32())
      return rw.notifyMatchFailure(op, "only f32");
    rw.replaceOpWithNewOp<LLVM::FMAOp>(op, op.getA(), op.getB(), op.getC());
    return success();
  }
};

struct LowerMathToNVPTXPass
    : public flashjit::impl::LowerMathToNVPTXBase<LowerMathToNVPTXPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<Exp2ToIntrinsic, Log2ToIntrinsic, FmaToIntrinsic>(&getContext());
    // One walk, no folding to a fixpoint: each op is rewritten at most once.
    walkAndApplyPatterns(getOperation(), std::move(patterns));
  }
};
} // namespace
