//===- Emitter.h - Thin IR-building helpers of the kernel generators -*- C++
//-*-===//
//
// Internal to kernels/ (pulls in MLIR): arithmetic, loops, reductions and
// the accumulator tiles every family's generator builds with, so that a
// generator reads like the algorithm.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_COMMON_EMITTER_H
#define FLASHJIT_KERNELS_COMMON_EMITTER_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Builders.h"

#include <array>

namespace flashjit {

using llvm::function_ref;
using llvm::StringRef;
using mlir::ArrayRef;
using mlir::Location;
using mlir::MutableArrayRef;
using mlir::OpBuilder;
using mlir::SmallVector;
using mlir::Type;
using mlir::Value;
using mlir::ValueRange;

/// Threads of a warp.
inline constexpr int kThreadsPerWarp = 32;

/// Thin arithmetic helpers so that the generator reads like the algorithm.
struct Emitter {
  OpBuilder &b;
  Location loc;

  Value idx(int64_t v) {
    return mlir::arith::ConstantIndexOp::create(b, loc, v);
  }
  Value i32(int32_t v) {
    return mlir::arith::ConstantIntOp::create(b, loc, v, 32);
  }
  Value f32(double v) {
    return mlir::arith::ConstantFloatOp::create(b, loc, b.getF32Type(),
                                                llvm::APFloat(float(v)));
  }
  Value add(Value x, Value y) {
    return mlir::arith::AddIOp::create(b, loc, x, y);
  }
  Value sub(Value x, Value y) {
    return mlir::arith::SubIOp::create(b, loc, x, y);
  }
  Value mul(Value x, Value y) {
    return mlir::arith::MulIOp::create(b, loc, x, y);
  }
  Value div(Value x, int64_t d) {
    return mlir::arith::DivUIOp::create(b, loc, x, idx(d));
  }
  Value rem(Value x, int64_t d) {
    return mlir::arith::RemUIOp::create(b, loc, x, idx(d));
  }
  Value minS(Value x, Value y) {
    return mlir::arith::MinSIOp::create(b, loc, x, y);
  }
  Value maxS(Value x, Value y) {
    return mlir::arith::MaxSIOp::create(b, loc, x, y);
  }
  Value cmp(mlir::arith::CmpIPredicate p, Value x, Value y) {
    return mlir::arith::CmpIOp::create(b, loc, p, x, y);
  }
  Value lt(Value x, Value y) {
    return cmp(mlir::arith::CmpIPredicate::slt, x, y);
  }
  Value le(Value x, Value y) {
    return cmp(mlir::arith::CmpIPredicate::sle, x, y);
  }
  Value ge(Value x, Value y) {
    return cmp(mlir::arith::CmpIPredicate::sge, x, y);
  }
  Value gt(Value x, Value y) {
    return cmp(mlir::arith::CmpIPredicate::sgt, x, y);
  }
  Value andI(Value x, Value y) {
    return mlir::arith::AndIOp::create(b, loc, x, y);
  }
  Value xorI(Value x, Value y) {
    return mlir::arith::XOrIOp::create(b, loc, x, y);
  }
  Value shl(Value x, Value n) {
    return mlir::arith::ShLIOp::create(b, loc, x, n);
  }
  Value shrU(Value x, Value n) {
    return mlir::arith::ShRUIOp::create(b, loc, x, n);
  }
  Value orI(Value x, Value y) {
    return mlir::arith::OrIOp::create(b, loc, x, y);
  }
  Value select(Value c, Value x, Value y) {
    return mlir::arith::SelectOp::create(b, loc, c, x, y);
  }
  Value toIndex(Value v) {
    return mlir::arith::IndexCastOp::create(b, loc, b.getIndexType(), v);
  }
  Value fadd(Value x, Value y) {
    return mlir::arith::AddFOp::create(b, loc, x, y);
  }
  Value fsub(Value x, Value y) {
    return mlir::arith::SubFOp::create(b, loc, x, y);
  }
  Value fmul(Value x, Value y) {
    return mlir::arith::MulFOp::create(b, loc, x, y);
  }
  Value fmax(Value x, Value y) {
    return mlir::arith::MaximumFOp::create(b, loc, x, y);
  }
  Value fma(Value x, Value y, Value z) {
    return mlir::math::FmaOp::create(b, loc, x, y, z);
  }
  Value exp2(Value x) { return mlir::math::Exp2Op::create(b, loc, x); }
  Value log2(Value x) { return mlir::math::Log2Op::create(b, loc, x); }
  Value feq(Value x, Value y) {
    return mlir::arith::CmpFOp::create(b, loc, mlir::arith::CmpFPredicate::OEQ,
                                       x, y);
  }
  Value extract(Value vec, ArrayRef<int64_t> pos) {
    return mlir::vector::ExtractOp::create(b, loc, vec, pos);
  }
  /// The same index, hidden from LLVM's loop optimisations by an asm move
  /// with side effects (as a `bits`-wide integer: 32 for shared-memory
  /// offsets and rows, 64 for global element offsets). Addresses built on
  /// it inside the main loop stay "one register + immediate offset" instead
  /// of LICM hoisting one register per fragment out of the loop (24 of them
  /// at d=128, enough to spill).
  Value opaque(Value index, int bits = 32) {
    Type type = b.getIntegerType(bits);
    Value v = mlir::arith::IndexCastOp::create(b, loc, type, index);
    return toIndex(asmMov(type,
                          bits == 64 ? "mov.b64 $0, $1;" : "mov.b32 $0, $1;",
                          bits == 64 ? "=l,l" : "=r,r", v));
  }
  /// A special register (%tid.x, %ctaid.y, ...) read by an asm move with
  /// side effects: a fresh read that LLVM does not merge with earlier ones,
  /// so that values derived from it are not kept live from before a loop.
  Value freshSreg(StringRef name) {
    return toIndex(
        asmMov(b.getI32Type(), ("mov.u32 $0, " + name + ";").str(), "=r"));
  }
  /// A one-result inline-asm move with side effects (LLVM neither hoists,
  /// merges nor drops it).
  Value asmMov(Type type, StringRef text, StringRef constraints,
               ValueRange operands = {}) {
    return mlir::LLVM::InlineAsmOp::create(
               b, loc, type, operands, text, constraints,
               /*has_side_effects=*/true, /*is_align_stack=*/false,
               mlir::LLVM::tailcallkind::TailCallKind::None,
               /*asm_dialect=*/nullptr, /*operand_attrs=*/nullptr)
        .getResult(0);
  }
  /// Emits `body` under `cond` (unconditionally when `cond` is null), at
  /// this emitter's builder.
  void ifThen(Value cond, function_ref<void()> body) {
    if (!cond)
      return body();
    auto ifOp = mlir::scf::IfOp::create(b, loc, cond, /*withElse=*/false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(&ifOp.getThenRegion().front());
    body();
  }
  /// for (iv = lb; iv < ub; iv += step) body(iv), kept a loop: LLVM may not
  /// unroll it (PTX size, and so compile time, would grow with it). For
  /// loops over shared memory, which needs no static register indices.
  void runtimeLoop(Value lb, Value ub, int64_t step,
                   function_ref<void(Emitter &, Value)> body) {
    runtimeLoop(lb, ub, step, ValueRange{},
                [&](Emitter &inner, Value iv, ValueRange) {
                  body(inner, iv);
                  return SmallVector<Value>{};
                });
  }
  /// The same with loop-carried values: body(iv, carried) returns the next
  /// ones; returns the last.
  SmallVector<Value> runtimeLoop(
      Value lb, Value ub, int64_t step, ValueRange init,
      function_ref<SmallVector<Value>(Emitter &, Value, ValueRange)> body) {
    auto loop = mlir::scf::ForOp::create(
        b, loc, lb, ub, idx(step), init,
        [&](OpBuilder &bodyBuilder, Location l, Value iv, ValueRange carried) {
          Emitter inner{bodyBuilder, l};
          mlir::scf::YieldOp::create(bodyBuilder, l, body(inner, iv, carried));
        });
    // scf-to-cf copies LLVM-dialect attributes to the latch branch, and
    // cf-to-llvm makes this one llvm.br's loop_annotation (NVPTX then marks
    // the loop .pragma "nounroll" for ptxas too).
    mlir::MLIRContext *ctx = b.getContext();
    auto noUnroll = mlir::LLVM::LoopUnrollAttr::get(
        ctx, /*disable=*/b.getBoolAttr(true), /*count=*/{},
        /*runtimeDisable=*/{}, /*full=*/{}, {}, {}, {});
    auto annotation = mlir::LLVM::LoopAnnotationAttr::get(
        ctx, /*disableNonforced=*/{}, /*vectorize=*/{}, /*interleave=*/{},
        noUnroll, /*unrollAndJam=*/{}, /*licm=*/{}, /*distribute=*/{},
        /*pipeline=*/{}, /*peeled=*/{}, /*unswitch=*/{}, /*mustProgress=*/{},
        /*isVectorized=*/{}, /*startLoc=*/{}, /*endLoc=*/{},
        /*parallelAccesses=*/{});
    loop->setAttr("loop_annotation", annotation);
    return SmallVector<Value>(loop.getResults());
  }
  /// max or sum of `vals` as a balanced tree: depth log2(n) instead of a
  /// chain of n dependent instructions (the softmax's critical path).
  Value treeReduce(SmallVector<Value> vals, bool isMax) {
    while (vals.size() > 1) {
      SmallVector<Value> next;
      for (size_t i = 0; i + 1 < vals.size(); i += 2)
        next.push_back(isMax ? fmax(vals[i], vals[i + 1])
                             : fadd(vals[i], vals[i + 1]));
      if (vals.size() % 2)
        next.push_back(vals.back());
      vals = std::move(next);
    }
    return vals.front();
  }
  /// XOR-shuffle within the 4 lanes that share an MMA row.
  Value quadReduce(Value v, bool isMax) {
    for (int offset : {1, 2}) {
      Value other =
          mlir::gpu::ShuffleOp::create(b, loc, v, offset, kThreadsPerWarp,
                                       mlir::gpu::ShuffleMode::XOR)
              .getShuffleResult();
      v = isMax ? fmax(v, other) : fadd(v, other);
    }
    return v;
  }
};

/// MMA A/B operand registers (mma.sync, and wgmma's A from registers), two
/// elements each.
using Registers = SmallVector<Value, 4>;
/// This thread's 4 values of an m16n8 f32 accumulator tile: row half h,
/// column el at 2 * h + el. A warp's 16 rows of an n8 column slice of a
/// wgmma m64nN accumulator have the same layout.
using AccTile = std::array<Value, 4>;
/// Tile t of accumulator tiles kept 4 values each in `vals`.
inline AccTile tileAt(ValueRange vals, int t) {
  return {vals[4 * t], vals[4 * t + 1], vals[4 * t + 2], vals[4 * t + 3]};
}
inline void setTile(MutableArrayRef<Value> vals, int t, const AccTile &tile) {
  std::copy(tile.begin(), tile.end(), vals.begin() + 4 * t);
}

} // namespace flashjit

#endif // FLASHJIT_KERNELS_COMMON_EMITTER_H
