//===- Sm80Ops.cpp - The sm80 family's copies and MMAs --------------------===//
#include "common/Sm80Ops.h"

#include "flashjit/kernels/LayoutSm80.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "llvm/ADT/DenseMap.h"

#include <algorithm>

using namespace mlir;

namespace flashjit {

Value rowSwizzleOf(Emitter &e, Value row, int bits) {
  return e.andI(e.shrU(row, e.idx(kMaxSwizzleBits - bits)),
                e.idx((1 << bits) - 1));
}
Value swizzledCol(Emitter &e, int bits, Value row, Value col) {
  if (bits == 0)
    return col;
  return e.xorI(col, e.mul(rowSwizzleOf(e, row, bits), e.idx(kSmemChunkElems)));
}

void copyTile(Emitter &e, const TileCopier &k, Value tid, Value src,
              Value base, RowOffsetFn rowOffset, Value rowStart, Value rowLimit,
              int rows, int dim, int paddedDim, int swizzleBits, Value dst,
              ArrayRef<Value> prefix, bool inLoop, Value rowStride) {
  // Columns past `dim` must read as zeros, not as the next row's data.
  const int vec = copyElems(k.spec, dim);
  const bool asyncCopies = vec * elementBytes(k.spec.dtype) >= 4;
  const int chunksPerRow = paddedDim / vec;
  const int chunks = rows * chunksPerRow;
  const int threads = k.threads;
  // Thread t copies chunk t % chunksPerRow of rows t / chunksPerRow + i *
  // rowsPerRound: one lane row and column, then constants (threads past
  // rowsPerRound * chunksPerRow idle). In the main loop the lane row is
  // opaque, or LLVM hoists one 64-bit row per chunk out of the loop (16
  // registers at d=128). When that would idle more than an eighth of the
  // threads (scalar copies of wide heads), threads take consecutive chunks.
  const int rowsPerRound = threads / chunksPerRow;
  const bool laneRows = 8 * rowsPerRound * chunksPerRow >= 7 * threads;
  Value laneRow, laneCol;
  if (laneRows) {
    laneRow = e.div(tid, chunksPerRow);
    if (inLoop)
      laneRow = e.opaque(laneRow);
    laneCol = e.mul(e.rem(tid, chunksPerRow), e.idx(vec));
  }
  // The lane's column in shared memory in a round whose first row is
  // `first`: the swizzle of row laneRow + first, which depends on first % 8
  // only (one value per residue, built where first needed).
  llvm::SmallDenseMap<int, Value> laneSmemCols;
  auto roundSmemCol = [&](int first) -> Value {
    if (swizzleBits == 0)
      return laneCol;
    // rowSwizzle repeats every 8 rows (one per bank group of a line).
    const int residue = first % kSmemLineChunks;
    Value &col = laneSmemCols[residue];
    if (!col)
      col =
          swizzledCol(e, swizzleBits, e.add(laneRow, e.idx(residue)), laneCol);
    return col;
  };
  // `smemCol`, when given, is the chunk's swizzled column in shared memory;
  // `srcIdx` its source element (valid rows).
  auto copyChunk = [&](OpBuilder &b, Value row, Value col,
                       Value smemCol = Value(), Value srcIdx = Value()) {
    Emitter ce{b, e.loc};
    Value globalRow = ce.add(rowStart, row);
    Value valid = ce.lt(col, ce.idx(dim));
    if (rowLimit)
      valid = ce.andI(ce.lt(globalRow, rowLimit), valid);
    // base + select(...), not select(base + ..., base): LLVM keeps the
    // first form's base out of the per-chunk registers.
    if (!srcIdx)
      srcIdx =
          ce.add(base, ce.select(valid, ce.add(rowOffset(ce, globalRow), col),
                                 ce.idx(0)));
    SmallVector<Value> dstIdx(prefix.begin(), prefix.end());
    dstIdx.push_back(row);
    dstIdx.push_back(smemCol ? smemCol
                             : swizzledCol(ce, swizzleBits, row, col));
    if (asyncCopies) {
      Value srcElems = ce.select(valid, ce.idx(vec), ce.idx(0));
      bool bypassL1 = vec * elementBytes(k.spec.dtype) == 16;
      nvgpu::DeviceAsyncCopyOp::create(
          b, e.loc, nvgpu::DeviceAsyncTokenType::get(b.getContext()), dst,
          dstIdx, src, ValueRange{srcIdx}, b.getIndexAttr(vec), srcElems,
          bypassL1 ? b.getUnitAttr() : UnitAttr());
      return;
    }
    // Narrower than 4 bytes: cp.async cannot, so load and store.
    auto ifOp = scf::IfOp::create(
        b, e.loc, valid,
        [&](OpBuilder &tb, Location l) {
          Value v = memref::LoadOp::create(tb, l, src, ValueRange{srcIdx});
          scf::YieldOp::create(tb, l, v);
        },
        [&](OpBuilder &eb, Location l) {
          Value zero = arith::ConstantOp::create(
              eb, l,
              eb.getZeroAttr(cast<MemRefType>(dst.getType()).getElementType()));
          scf::YieldOp::create(eb, l, zero);
        });
    memref::StoreOp::create(b, e.loc, ifOp.getResult(0), dst, dstIdx);
  };
  // Threads taking consecutive chunks: chunk c's row and column.
  auto copyChunkAt = [&](Emitter &x, Value chunk) {
    copyChunk(x.b, x.div(chunk, chunksPerRow),
              x.mul(x.rem(chunk, chunksPerRow), x.idx(vec)));
  };
  // Outside the main loop (and in the quick form's) the rounds are a
  // run-time loop: shared memory needs no static indices, and unrolled they
  // made the prologue a fifth of the kernel's PTX (compile time scales with
  // it).
  const bool rolled = !inLoop || k.quick;
  if (rolled && laneRows) {
    const bool idleThreads = rowsPerRound * chunksPerRow != threads;
    e.runtimeLoop(e.idx(0), e.idx(rows), rowsPerRound,
                  [&](Emitter &x, Value first) {
                    Value row = x.add(laneRow, first);
                    Value cond;
                    if (rows % rowsPerRound != 0)
                      cond = x.lt(row, x.idx(rows));
                    if (idleThreads) {
                      Value active = x.lt(laneRow, x.idx(rowsPerRound));
                      cond = cond ? x.andI(cond, active) : active;
                    }
                    x.ifThen(cond, [&] { copyChunk(x.b, row, laneCol); });
                  });
    return;
  }
  if (rolled) {
    e.runtimeLoop(tid, e.idx(chunks), threads, copyChunkAt);
    return;
  }
  // Rows known to be in range with a constant stride: each round's source
  // is the previous one's plus rowsPerRound rows (one 64-bit add a chunk),
  // opaque so that LLVM does not hoist every multiple of the stride. A
  // padding column reads nothing (0 bytes) from its row's first element.
  Value chainIdx, chainStep;
  if (laneRows && !rowLimit && rowStride && asyncCopies) {
    Value colValid = e.lt(laneCol, e.idx(dim));
    chainIdx = e.add(e.add(base, e.mul(e.add(rowStart, laneRow), rowStride)),
                     dim == paddedDim ? laneCol
                                      : e.select(colValid, laneCol, e.idx(0)));
    chainStep = e.mul(rowStride, e.idx(rowsPerRound));
  }
  if (laneRows) {
    for (int first = 0; first < rows; first += rowsPerRound) {
      Value srcIdx;
      if (chainIdx) {
        if (first > 0)
          chainIdx = e.opaque(e.add(chainIdx, chainStep), 64);
        srcIdx = chainIdx;
      }
      // Threads whose lane row is past this round's rows (the last round,
      // or idle threads) copy nothing.
      const int roundRows = std::min(rowsPerRound, rows - first);
      Value cond = roundRows * chunksPerRow == threads
                       ? Value()
                       : e.lt(laneRow, e.idx(roundRows));
      Value smemCol = roundSmemCol(first);
      e.ifThen(cond, [&] {
        copyChunk(e.b, e.add(laneRow, e.idx(first)), laneCol, smemCol, srcIdx);
      });
    }
    return;
  }
  for (int first = 0; first < chunks; first += threads) {
    Value chunk = e.add(tid, e.idx(first));
    Value cond =
        first + threads <= chunks ? Value() : e.lt(chunk, e.idx(chunks));
    e.ifThen(cond, [&] { copyChunkAt(e, chunk); });
  }
}

void commitGroup(Emitter &e) { NVVM::CpAsyncCommitGroupOp::create(e.b, e.loc); }

void waitGroups(Emitter &e, int pending) {
  NVVM::CpAsyncWaitGroupOp::create(e.b, e.loc, pending);
}


Value pairRegister(OpBuilder &b, Location loc, DType dtype, Value pair) {
  if (dtype != DType::BF16)
    return pair;
  Value packedPair = vector::BitCastOp::create(
      b, loc, VectorType::get({1}, b.getI32Type()), pair);
  return vector::ExtractOp::create(b, loc, packedPair, ArrayRef<int64_t>{0});
}

Registers ldmatrix(Emitter &x, DType dtype, Value view, ValueRange indices,
                   bool transpose, int tiles) {
  Type elemTy = dtype == DType::BF16 ? Type(x.b.getBF16Type())
                                     : Type(x.b.getF16Type());
  Value frag = nvgpu::LdMatrixOp::create(x.b, x.loc,
                                         VectorType::get({tiles, 2}, elemTy),
                                         view, indices, transpose, tiles);
  Registers regs;
  for (int i = 0; i < tiles; ++i)
    regs.push_back(pairRegister(x.b, x.loc, dtype, x.extract(frag, {i})));
  return regs;
}

AccTile mmaSync(OpBuilder &b, Location loc, DType dtype, ArrayRef<Value> a,
                ArrayRef<Value> bRegs, const AccTile &c) {
  Type f32 = b.getF32Type();
  auto resultType = LLVM::LLVMStructType::getLiteral(b.getContext(),
                                                     SmallVector<Type>(4, f32));
  const NVVM::MMATypes type =
      dtype == DType::BF16 ? NVVM::MMATypes::bf16 : NVVM::MMATypes::f16;
  auto op = NVVM::MmaOp::create(
      b, loc, resultType, a, bRegs, ValueRange(c),
      SmallVector<int64_t>{kMmaM, kMmaN, kMmaK}, std::nullopt, std::nullopt,
      std::array<NVVM::MMATypes, 2>{type, type},
      std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row,
                                     NVVM::MMALayout::col});
  AccTile d;
  for (int i = 0; i < 4; ++i)
    d[i] = LLVM::ExtractValueOp::create(b, loc, op, i);
  return d;
}

} // namespace flashjit
