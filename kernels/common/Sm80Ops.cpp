//===- Sm80Ops.cpp - The sm80 family's copies and MMAs --------------------===//
#include "common/Sm80Ops.h"

#include "flashjit/kernels/LayoutSm80.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "llvm/ADT/DenseMap.h"

#include <algorithm>
#include <cassert>

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

/// Rounds of a rolled copy of shuffled rows per loop iteration.
constexpr int kShuffledRoundsPerIteration = 4;

/// Lane `srcLane`'s value of the index `v` (64 bits: two 32-bit shuffles),
/// taken by every lane of the warp.
static Value shuffleIndex(Emitter &x, Value v, Value srcLane) {
  Type i32 = x.b.getI32Type(), i64 = x.b.getI64Type();
  Value v64 = arith::IndexCastOp::create(x.b, x.loc, i64, v);
  Value c32 = arith::ConstantIntOp::create(x.b, x.loc, i64, 32);
  Value lane = arith::IndexCastOp::create(x.b, x.loc, i32, srcLane);
  Value width = x.i32(kThreadsPerWarp);
  auto shuffle = [&](Value half) -> Value {
    Value got = gpu::ShuffleOp::create(x.b, x.loc, half, lane, width,
                                       gpu::ShuffleMode::IDX)
                    .getShuffleResult();
    return arith::ExtUIOp::create(x.b, x.loc, i64, got);
  };
  Value lo = shuffle(arith::TruncIOp::create(x.b, x.loc, i32, v64));
  Value hi = shuffle(arith::TruncIOp::create(
      x.b, x.loc, i32, arith::ShRUIOp::create(x.b, x.loc, v64, c32)));
  Value joined = arith::OrIOp::create(
      x.b, x.loc, lo, arith::ShLIOp::create(x.b, x.loc, hi, c32));
  return arith::IndexCastOp::create(x.b, x.loc, x.b.getIndexType(), joined);
}

void copyTile(Emitter &e, const TileCopier &k, Value tid, Value src,
              Value base, RowOffsetFn rowOffset, Value rowStart, Value rowLimit,
              int rows, int dim, int paddedDim, int swizzleBits, Value dst,
              ArrayRef<Value> prefix, bool inLoop, Value rowStride,
              ArrayRef<Value> laneRowOffsets) {
  assert((rowOffset || !laneRowOffsets.empty()) &&
         "copyTile: rows need rowOffset or laneRowOffsets");
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
  // `srcIdx` its source element (valid rows); `rowOff` its row's offset.
  auto copyChunk = [&](OpBuilder &b, Value row, Value col,
                       Value smemCol = Value(), Value srcIdx = Value(),
                       Value rowOff = Value()) {
    Emitter ce{b, e.loc};
    Value globalRow = ce.add(rowStart, row);
    Value valid = ce.lt(col, ce.idx(dim));
    if (rowLimit)
      valid = ce.andI(ce.lt(globalRow, rowLimit), valid);
    // base + select(...), not select(base + ..., base): LLVM keeps the
    // first form's base out of the per-chunk registers.
    if (!rowOff && !srcIdx)
      rowOff = rowOffset(ce, globalRow);
    if (!srcIdx)
      srcIdx = ce.add(base, ce.select(valid, ce.add(rowOff, col), ce.idx(0)));
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
  // Row `row`'s offset from the lanes that hold it (laneRowOffsets), taken
  // by every lane of the warp (outside any per-lane condition: gpu.shuffle
  // is Pure, so a pass that sinks ops into regions, which this pipeline
  // does not run, could move it under one). `group`,
  // when given, is row / 32, the same in every lane: one shuffle of the
  // value of that group (a constant when static) instead of one per group.
  const bool shuffledRows = !laneRowOffsets.empty();
  auto laneRowOffset = [&](Emitter &x, Value row, Value group) -> Value {
    Value srcLane = x.rem(row, kThreadsPerWarp);
    auto pick = [&](ArrayRef<Value> vals, Value j) {
      Value picked = vals[0];
      for (size_t i = 1; i < vals.size(); ++i)
        picked = x.select(x.cmp(arith::CmpIPredicate::eq, j,
                                x.idx(static_cast<int64_t>(i))),
                          vals[i], picked);
      return picked;
    };
    if (group)
      return shuffleIndex(x, pick(laneRowOffsets, group), srcLane);
    SmallVector<Value> held;
    for (Value v : laneRowOffsets)
      held.push_back(shuffleIndex(x, v, srcLane));
    return pick(held, x.div(row, kThreadsPerWarp));
  };
  // Lane rows of a round starting at a multiple of rowsPerRound share their
  // group when rowsPerRound divides 32.
  const bool uniformGroups =
      laneRows && kThreadsPerWarp % rowsPerRound == 0;
  auto roundGroup = [&](Emitter &x, Value first) {
    return uniformGroups ? x.div(first, kThreadsPerWarp) : Value();
  };
  // Threads taking consecutive chunks: chunk c's row and column.
  auto copyChunkAt = [&](Emitter &x, Value chunk, Value rowOff = Value()) {
    copyChunk(x.b, x.div(chunk, chunksPerRow),
              x.mul(x.rem(chunk, chunksPerRow), x.idx(vec)), Value(), Value(),
              rowOff);
  };
  // Shuffled rows: every lane runs every round, copying under a condition.
  auto copyChunkRound = [&](Emitter &x, Value first) {
    Value chunk = x.add(tid, first);
    Value rowOff = laneRowOffset(x, x.div(chunk, chunksPerRow), Value());
    x.ifThen(x.lt(chunk, x.idx(chunks)),
             [&] { copyChunkAt(x, chunk, rowOff); });
  };
  // Outside the main loop (and in the quick form's) the rounds are a
  // run-time loop: shared memory needs no static indices, and unrolled they
  // made the prologue a fifth of the kernel's PTX (compile time scales with
  // it). Shuffled rows are rolled everywhere, several rounds per iteration
  // (one round's shuffles wait under another's copies): unrolled, ptxas
  // hoisted every round's shuffles and spilled at d = 128.
  const bool rolled = !inLoop || k.quick || shuffledRows;
  const int roundsPerIteration = shuffledRows ? kShuffledRoundsPerIteration : 1;
  if (rolled && laneRows) {
    const bool idleThreads = rowsPerRound * chunksPerRow != threads;
    const int step = rowsPerRound * roundsPerIteration;
    e.runtimeLoop(e.idx(0), e.idx(rows), step, [&](Emitter &x, Value start) {
      for (int r = 0; r < roundsPerIteration; ++r) {
        Value first = x.add(start, x.idx(r * rowsPerRound));
        Value row = x.add(laneRow, first);
        Value rowOff = shuffledRows
                           ? laneRowOffset(x, row, roundGroup(x, first))
                           : Value();
        Value cond;
        if (rows % step != 0)
          cond = x.lt(row, x.idx(rows));
        if (idleThreads) {
          Value active = x.lt(laneRow, x.idx(rowsPerRound));
          cond = cond ? x.andI(cond, active) : active;
        }
        x.ifThen(cond, [&] {
          copyChunk(x.b, row, laneCol, Value(), Value(), rowOff);
        });
      }
    });
    return;
  }
  if (rolled && shuffledRows) {
    const int step = threads * roundsPerIteration;
    e.runtimeLoop(e.idx(0), e.idx(chunks), step, [&](Emitter &x, Value start) {
      for (int r = 0; r < roundsPerIteration; ++r)
        copyChunkRound(x, x.add(start, x.idx(r * threads)));
    });
    return;
  }
  if (rolled) {
    e.runtimeLoop(tid, e.idx(chunks), threads,
                  [&](Emitter &x, Value chunk) { copyChunkAt(x, chunk); });
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

FragmentLanes fragmentLanes(Emitter &e, Value lane, Value row, Value chunk,
                            int pitch, int bits) {
  FragmentLanes f{Value(), Value(), bits};
  if (bits > 0) {
    // Every operand's lane row is lane % 8 plus a multiple of 8.
    Value swz = rowSwizzleOf(e, e.rem(lane, 8), bits);
    chunk = e.xorI(chunk, e.andI(swz, e.idx(1)));
    if (bits > 1)
      f.pairSwz =
          e.mul(e.andI(swz, e.idx((1 << bits) - 2)), e.idx(kSmemChunkElems));
  }
  f.base =
      e.add(e.mul(row, e.idx(pitch)), e.mul(chunk, e.idx(kSmemChunkElems)));
  return f;
}

FragmentViews fragmentViews(Emitter &x, DType dtype, Value dynSmem,
                            ArrayRef<int64_t> shape, int offsetBytes,
                            const FragmentLanes &f, int cols, bool inLoop,
                            Value colOffset) {
  FragmentViews fv;
  fv.groupElems =
      std::max((1 << f.bits) * kSmemChunkElems, kFragmentPairElems);
  const int count = (std::min(fv.groupElems, cols) + kFragmentPairElems - 1) /
                    kFragmentPairElems;
  Value pairSwz = f.pairSwz && inLoop ? x.opaque(f.pairSwz) : f.pairSwz;
  Type elemTy = dtype == DType::BF16 ? Type(x.b.getBF16Type())
                                     : Type(x.b.getF16Type());
  auto type = MemRefType::get(
      shape, elemTy, AffineMap(),
      cast<MemRefType>(dynSmem.getType()).getMemorySpace());
  for (int j = 0; j < count; ++j) {
    Value laneElems = f.base;
    if (colOffset) {
      // colOffset + 16 j + (lo ^ (s & ~1)) * 8 - lo, lo = (colOffset + 16 j)
      // mod the group; at() subtracts the 16 j.
      laneElems = x.add(laneElems, x.add(colOffset, x.idx(j * kFragmentPairElems)));
      if (pairSwz) {
        Value lo = x.andI(x.add(colOffset, x.idx(j * kFragmentPairElems)),
                          x.idx(fv.groupElems - 1));
        laneElems = x.add(laneElems, x.sub(x.xorI(pairSwz, lo), lo));
      }
    } else if (pairSwz) { // (lo ^ (s & ~1)) * 8, lo = 2j
      laneElems =
          x.add(laneElems, x.xorI(pairSwz, x.idx(j * kFragmentPairElems)));
    }
    Value start = x.add(x.idx(offsetBytes),
                        x.mul(laneElems, x.idx(elementBytes(dtype))));
    if (inLoop)
      start = x.opaque(start);
    fv.views.push_back(memref::ViewOp::create(x.b, x.loc, type, dynSmem,
                                              start, ValueRange{}));
  }
  return fv;
}

} // namespace flashjit
