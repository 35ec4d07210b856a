//===- DecodeKernels.cpp - Split combine and paged append kernels ---------===//
//
// combine (one warp per (row, head) entry, splits in run-time loops):
//   m   = max_s lse_s                       (lanes over splits, warp max)
//   sum = sum_s exp(lse_s - m)              (lanes over splits, warp sum)
//   O   = sum_s exp(lse_s - m) / sum * O_s  (lanes over columns)
//   LSE = m + log(sum)
// An entry whose splits are all empty (every lse_s = -inf) has sum = 0 and
// writes O = 0, LSE = -inf, like a fully masked row of the forward kernel.
//
// append: every thread copies chunks of the new rows (16 bytes where the
// alignment allows) to row cacheLengths[b] + j of the page the block table
// names, K then V, in grid-stride loops.
//
//===----------------------------------------------------------------------===//
#include "decode/DecodeKernels.h"

#include "common/ForwardKernel.h"
#include "flashjit/kernels/Decode.h"
#include "flashjit/kernels/Forward.h"
#include "flashjit/kernels/LayoutSm80.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"

#include <limits>
#include <tuple>

using namespace mlir;

namespace flashjit {
namespace {

/// The memref types of bare-pointer global tensors (ForwardKernel's).
struct GlobalTypes {
  MemRefType elem, f32, i32;
  GlobalTypes(OpBuilder &b, Type elemTy) {
    auto space = b.getI64IntegerAttr(kGlobalSpace);
    elem = MemRefType::get({kGlobalExtent}, elemTy, AffineMap(), space);
    f32 = MemRefType::get({kGlobalExtent}, b.getF32Type(), AffineMap(), space);
    i32 = MemRefType::get({kGlobalExtent}, b.getI32Type(), AffineMap(), space);
  }
};

Type elementType(OpBuilder &b, const AttentionSpec &spec) {
  return spec.dtype == DType::BF16 ? Type(b.getBF16Type())
                                   : Type(b.getF16Type());
}

/// A kernel `name` of `threads` threads taking `argTypes`, the builder at
/// its entry.
gpu::GPUFuncOp declareKernel(OpBuilder &b, gpu::GPUModuleOp module,
                             StringRef name, ArrayRef<Type> argTypes,
                             int threads) {
  b.setInsertionPointToEnd(module.getBody());
  auto func = gpu::GPUFuncOp::create(b, module.getLoc(), name,
                                     b.getFunctionType(argTypes, {}));
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b.getUnitAttr());
  func.setKnownBlockSizeAttr(b.getDenseI32ArrayAttr({threads, 1, 1}));
  b.setInsertionPointToStart(&func.getBody().front());
  return func;
}

/// a / b and a - (a / b) * b of non-negative indices below 2^31, in 32 bits
/// (ptxas expands a 64-bit division into a subroutine).
std::pair<Value, Value> divRem32(Emitter &e, Value a, Value b) {
  Type i32 = e.b.getI32Type();
  auto to32 = [&](Value v) {
    return v.getType().isIndex()
               ? arith::IndexCastUIOp::create(e.b, e.loc, i32, v).getResult()
               : v;
  };
  Value q = arith::IndexCastUIOp::create(
      e.b, e.loc, e.b.getIndexType(),
      arith::DivUIOp::create(e.b, e.loc, to32(a), to32(b)));
  Value bIdx = b.getType().isIndex() ? b : e.toIndex(b);
  return {q, e.sub(a, e.mul(q, bIdx))};
}

/// The warp's max (sum) of `v`: XOR shuffles over all 32 lanes.
Value warpReduce(Emitter &e, Value v, bool isMax) {
  for (int offset = kThreadsPerWarp / 2; offset > 0; offset /= 2) {
    Value other = gpu::ShuffleOp::create(e.b, e.loc, v, offset,
                                         kThreadsPerWarp,
                                         gpu::ShuffleMode::XOR)
                      .getShuffleResult();
    v = isMax ? e.fmax(v, other) : e.fadd(v, other);
  }
  return v;
}

/// for (iv = lb; iv < ub; iv += step) with a run-time step.
void strideLoop(Emitter &e, Value lb, Value ub, Value step,
                function_ref<void(Emitter &, Value)> body) {
  scf::ForOp::create(e.b, e.loc, lb, ub, step, ValueRange{},
                     [&](OpBuilder &b, Location l, Value iv, ValueRange) {
                       Emitter inner{b, l};
                       body(inner, iv);
                       scf::YieldOp::create(b, l);
                     });
}

} // namespace

void buildCombineKernel(OpBuilder &builder, gpu::GPUModuleOp module,
                        StringRef name, const AttentionSpec &spec) {
  OpBuilder::InsertionGuard guard(builder);
  const Type elemTy = elementType(builder, spec);
  const GlobalTypes g(builder, elemTy);
  Type i32 = builder.getI32Type(), i64 = builder.getI64Type();
  SmallVector<Type> argTypes = {g.f32, g.f32, g.elem, g.f32, g.i32};
  argTypes.append(6, i64);
  argTypes.append(4, i32);
  assert(argTypes.size() == kCombineKernelArgCount);
  gpu::GPUFuncOp func =
      declareKernel(builder, module, name, argTypes, kCombineThreads);
  Location loc = module.getLoc();
  Emitter e{builder, loc};
  auto arg = [&](int i) { return func.getBody().front().getArgument(i); };
  Value partialO = arg(0), partialLse = arg(1), o = arg(2), lse = arg(3),
        cuSeqlensQ = arg(4);
  Value entries = e.toIndex(arg(5));
  Value oBS = e.toIndex(arg(6)), oHS = e.toIndex(arg(7)),
        oRS = e.toIndex(arg(8)), lseBS = e.toIndex(arg(9)),
        lseHS = e.toIndex(arg(10));
  Value numSplits = e.toIndex(arg(11)), headsQ = arg(12), seqlenQ = arg(13),
        batchCount = arg(14);

  constexpr int kWarps = kCombineThreads / kThreadsPerWarp;
  Value tid = gpu::ThreadIdOp::create(builder, loc, gpu::Dimension::x);
  Value lane = e.rem(tid, kThreadsPerWarp);
  Value entry =
      e.add(e.mul(gpu::BlockIdOp::create(builder, loc, gpu::Dimension::x),
                  e.idx(kWarps)),
            e.div(tid, kThreadsPerWarp));
  const Value negInf = e.f32(-std::numeric_limits<float>::infinity());
  const Value zero = e.f32(0);

  e.ifThen(e.lt(entry, entries), [&] {
    auto [row, head] = divRem32(e, entry, headsQ);
    // A row is (batch, query); under varlen the packed row (batch strides
    // are 0), of which those past the last sequence belong to none.
    Value batch = e.idx(0), query = row, valid;
    if (spec.varlen) {
      Value rows = e.toIndex(memref::LoadOp::create(
          builder, loc, cuSeqlensQ, ValueRange{e.toIndex(batchCount)}));
      valid = e.lt(row, rows);
    } else {
      std::tie(batch, query) = divRem32(e, row, seqlenQ);
    }
    e.ifThen(valid, [&] {
      auto lseOf = [&](Emitter &x, Value s) {
        return memref::LoadOp::create(
            x.b, x.loc, partialLse,
            ValueRange{x.add(x.mul(s, entries), entry)});
      };
      // Pass 1 and 2: the largest partial LSE, then the sum of the
      // partials' weights relative to it, lanes striding over the splits.
      Value lanesMax =
          e.runtimeLoop(lane, numSplits, kThreadsPerWarp, ValueRange{negInf},
                        [&](Emitter &x, Value s, ValueRange m) {
                          return SmallVector<Value>{
                              x.fmax(m[0], lseOf(x, s))};
                        })[0];
      Value m = warpReduce(e, lanesMax, /*isMax=*/true);
      // Every split empty: m = -inf; subtract 0 so that exp sees -inf.
      Value mUse = e.select(e.feq(m, negInf), zero, m);
      auto weightOf = [&](Emitter &x, Value s) {
        return x.exp2(x.fmul(x.fsub(lseOf(x, s), mUse), x.f32(kLog2e)));
      };
      Value lanesSum =
          e.runtimeLoop(lane, numSplits, kThreadsPerWarp, ValueRange{zero},
                        [&](Emitter &x, Value s, ValueRange sum) {
                          return SmallVector<Value>{
                              x.fadd(sum[0], weightOf(x, s))};
                        })[0];
      Value sum = warpReduce(e, lanesSum, /*isMax=*/false);
      Value empty = e.feq(sum, zero); // else sum >= 1 (the maximum's term)
      Value inv = e.select(
          empty, zero, NVVM::RcpApproxFtzF32Op::create(builder, loc, e.b.getF32Type(), sum));
      // Pass 3: lane l holds columns l, l + 32, ...; a column past
      // head_dim_v reads the row's last one and is not stored.
      const int dv = spec.headDimV;
      const int colTiles = (dv + kThreadsPerWarp - 1) / kThreadsPerWarp;
      const int64_t pitch = partialPitch(dv);
      auto colOf = [&](Emitter &x, int c) {
        return x.add(lane, x.idx(c * kThreadsPerWarp));
      };
      SmallVector<Value> acc = e.runtimeLoop(
          e.idx(0), numSplits, 1, SmallVector<Value>(colTiles, zero),
          [&](Emitter &x, Value s, ValueRange carried) {
            Value w = x.fmul(weightOf(x, s), inv);
            Value rowBase =
                x.mul(x.add(x.mul(s, entries), entry), x.idx(pitch));
            SmallVector<Value> next;
            for (int c = 0; c < colTiles; ++c) {
              Value col = x.minS(colOf(x, c), x.idx(dv - 1));
              Value v = memref::LoadOp::create(x.b, x.loc, partialO,
                                               ValueRange{x.add(rowBase, col)});
              next.push_back(x.fma(w, v, carried[c]));
            }
            return next;
          });
      Value oBase = e.add(e.add(e.mul(batch, oBS), e.mul(query, oRS)),
                          e.mul(head, oHS));
      for (int c = 0; c < colTiles; ++c) {
        Value col = colOf(e, c);
        Value inCols = (c + 1) * kThreadsPerWarp <= dv
                           ? Value()
                           : e.lt(col, e.idx(dv));
        e.ifThen(inCols, [&] {
          Value out = arith::TruncFOp::create(builder, loc, elemTy, acc[c]);
          memref::StoreOp::create(builder, loc, out, o,
                                  ValueRange{e.add(oBase, col)});
        });
      }
      if (spec.writeLse) {
        Value lseVal = e.select(
            empty, negInf, e.fadd(m, e.fmul(e.log2(sum), e.f32(kLn2))));
        e.ifThen(e.cmp(arith::CmpIPredicate::eq, lane, e.idx(0)), [&] {
          Value at = e.add(e.add(e.mul(batch, lseBS), e.mul(head, lseHS)),
                           query);
          memref::StoreOp::create(builder, loc, lseVal, lse, ValueRange{at});
        });
      }
    });
  });
  gpu::ReturnOp::create(builder, loc);
}

void buildAppendKernel(OpBuilder &builder, gpu::GPUModuleOp module,
                       StringRef name, const AttentionSpec &spec) {
  OpBuilder::InsertionGuard guard(builder);
  const Type elemTy = elementType(builder, spec);
  const GlobalTypes g(builder, elemTy);
  Type i32 = builder.getI32Type(), i64 = builder.getI64Type();
  SmallVector<Type> argTypes = {g.elem, g.elem, g.elem, g.elem, g.i32, g.i32};
  argTypes.append(13, i64);
  argTypes.append(5, i32);
  assert(argTypes.size() == kAppendKernelArgCount);
  gpu::GPUFuncOp func =
      declareKernel(builder, module, name, argTypes, kAppendThreads);
  Location loc = module.getLoc();
  Emitter e{builder, loc};
  auto arg = [&](int i) { return func.getBody().front().getArgument(i); };
  auto index = [&](int i) { return e.toIndex(arg(i)); };
  Value kNew = arg(0), vNew = arg(1), kCache = arg(2), vCache = arg(3),
        blockTable = arg(4), cacheLengths = arg(5);
  Value blockTableStride = index(18);
  Value newKeys = index(19), headsKV = arg(20), pageSize = index(21),
        pageDivMul = arg(22), pageDivShift = arg(23);

  Value batch = gpu::BlockIdOp::create(builder, loc, gpu::Dimension::y);
  Value tid = gpu::ThreadIdOp::create(builder, loc, gpu::Dimension::x);
  Value first = e.add(
      e.mul(gpu::BlockIdOp::create(builder, loc, gpu::Dimension::x),
            e.idx(kAppendThreads)),
      tid);
  Value step = e.mul(gpu::GridDimOp::create(builder, loc, gpu::Dimension::x),
                     e.idx(kAppendThreads));
  Value cacheLength = e.toIndex(
      memref::LoadOp::create(builder, loc, cacheLengths, ValueRange{batch}));
  Value tableRow = e.mul(batch, blockTableStride);

  struct Operand {
    Value src, dst;
    int srcStrides, dstStrides; ///< first argument index of each triple
    int dim;
  };
  for (const Operand &t : {Operand{kNew, kCache, 6, 12, spec.headDimQK},
                           Operand{vNew, vCache, 9, 15, spec.headDimV}}) {
    const int vec = copyElems(spec, t.dim);
    const int chunksPerRow = t.dim / vec;
    Value units =
        e.mul(e.mul(newKeys, e.toIndex(headsKV)), e.idx(chunksPerRow));
    strideLoop(e, first, units, step, [&](Emitter &x, Value unit) {
      Value rowIdx = x.div(unit, chunksPerRow);
      Value col = x.mul(x.rem(unit, chunksPerRow), x.idx(vec));
      auto [j, head] = divRem32(x, rowIdx, headsKV);
      Value key = x.add(cacheLength, j);
      Value page = pageOfKey(x, key, pageDivMul, pageDivShift);
      Value slot = x.sub(key, x.mul(page, pageSize));
      Value id = x.toIndex(memref::LoadOp::create(
          x.b, x.loc, blockTable, ValueRange{x.add(tableRow, page)}));
      auto stride = [&](int i) { return x.toIndex(arg(i)); };
      Value dstIdx = x.add(
          x.add(x.mul(id, stride(t.dstStrides)),
                x.mul(slot, stride(t.dstStrides + 2))),
          x.add(x.mul(head, stride(t.dstStrides + 1)), col));
      Value srcIdx = x.add(
          x.add(x.mul(batch, stride(t.srcStrides)),
                x.mul(j, stride(t.srcStrides + 2))),
          x.add(x.mul(head, stride(t.srcStrides + 1)), col));
      if (vec == 1) {
        Value v = memref::LoadOp::create(x.b, x.loc, t.src, ValueRange{srcIdx});
        memref::StoreOp::create(x.b, x.loc, v, t.dst, ValueRange{dstIdx});
        return;
      }
      const int bytes = vec * elementBytes(spec.dtype);
      auto chunkType = VectorType::get({vec}, elemTy);
      Value v = vector::LoadOp::create(x.b, x.loc, chunkType, t.src,
                                       ValueRange{srcIdx},
                                       /*nontemporal=*/false,
                                       llvm::MaybeAlign(bytes));
      vector::StoreOp::create(x.b, x.loc, v, t.dst, ValueRange{dstIdx},
                              /*nontemporal=*/false, llvm::MaybeAlign(bytes));
    });
  }
  gpu::ReturnOp::create(builder, loc);
}

} // namespace flashjit
