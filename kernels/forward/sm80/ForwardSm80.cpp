//===- ForwardSm80.cpp - FlashAttention-2 forward for sm_80 and newer ------===//
//
// Builds one gpu.func per spec/config, thread-level: nvgpu for cp.async and
// ldmatrix, nvvm.mma.sync on 32-bit registers and scalar accumulators:
//
//   load Q tile (cp.async) -> ldmatrix into registers (kept for the kernel
//   where they fit; else re-read per K/V tile, at d = 121-128 with a mask in
//   a run-time loop of 4 k-steps)
//   prefetch max(stages-1, 1) K/V tiles (cp.async, one commit group per tile)
//   for each K/V tile, last to first (the masked tiles come first):
//     wait for its group; barrier; prefetch the tile stages-1 ahead
//     (one stage: load V now and the next K after Q K^T, as FA2 does)
//     S  = Q K^T                      (ldmatrix K, mma.sync m16n8k16)
//     S  = mask(S)                    (only tiles that cross a boundary)
//     m' = max(m, row_max(S) * scale) ; alpha = exp2(m - m')
//     P  = exp2(S * scale - m')       ; l = l * alpha + row_sum(P)
//     O  = O * alpha + P V            (P from registers, ldmatrix.trans V)
//   O /= l ; LSE = (m + log2 l) / log2(e) ; masked store of exactly head_dim
//
// The quick form (TileConfig::quick) does the same per K/V tile in 16-key
// slices, in run-time loops: row maxima first, then the scores again for P,
// row sums and P V; with one m16 tile per warp (ForwardLayout); bitwise the
// same results from about half the PTX.
//
// Causal CTAs map their index so that the longest (last) row blocks start
// first (ctaCoordinates). One warp owns 16 * mTiles query rows; fragment
// layouts are those of PTX's mma.m16n8k16 (lane = 4 * group +
// thread-in-group).
//
//===----------------------------------------------------------------------===//
#include "flashjit/kernels/Forward.h"
#include "forward/sm80/ForwardSm80.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/MathExtras.h"

#include <algorithm>
#include <cassert>
#include <array>
#include <cmath>
#include <limits>

using namespace mlir;

namespace flashjit {
namespace {

/// Global tensors are passed as bare pointers (one kernel parameter each).
/// MLIR's bare-pointer convention needs a static shape, so the memrefs carry
/// this placeholder extent; bounds come from the run-time sequence lengths.
constexpr int64_t kGlobalExtent = int64_t(1) << 40;
constexpr int kGlobalSpace = 1;
constexpr double kLn2 = 0.6931471805599453;
/// K and V bytes of the heads whose causal CTAs run together
/// (ctaCoordinates): a third of an H100's 50 MB L2.
constexpr int64_t kLptChunkBytes = int64_t(16) << 20;
/// Score tiles of one quick-form slice.
constexpr int kSliceTiles = kQuickSliceKeys / kMmaN;

/// Thin arithmetic helpers so that the generator reads like the algorithm.
struct Emitter {
  OpBuilder &b;
  Location loc;

  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }
  Value i32(int32_t v) { return arith::ConstantIntOp::create(b, loc, v, 32); }
  Value f32(double v) {
    return arith::ConstantFloatOp::create(b, loc, b.getF32Type(),
                                          APFloat(float(v)));
  }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, loc, x, y); }
  Value sub(Value x, Value y) { return arith::SubIOp::create(b, loc, x, y); }
  Value mul(Value x, Value y) { return arith::MulIOp::create(b, loc, x, y); }
  Value div(Value x, int64_t d) {
    return arith::DivUIOp::create(b, loc, x, idx(d));
  }
  Value rem(Value x, int64_t d) {
    return arith::RemUIOp::create(b, loc, x, idx(d));
  }
  Value minS(Value x, Value y) { return arith::MinSIOp::create(b, loc, x, y); }
  Value maxS(Value x, Value y) { return arith::MaxSIOp::create(b, loc, x, y); }
  Value cmp(arith::CmpIPredicate p, Value x, Value y) {
    return arith::CmpIOp::create(b, loc, p, x, y);
  }
  Value lt(Value x, Value y) { return cmp(arith::CmpIPredicate::slt, x, y); }
  Value le(Value x, Value y) { return cmp(arith::CmpIPredicate::sle, x, y); }
  Value ge(Value x, Value y) { return cmp(arith::CmpIPredicate::sge, x, y); }
  Value gt(Value x, Value y) { return cmp(arith::CmpIPredicate::sgt, x, y); }
  Value andI(Value x, Value y) { return arith::AndIOp::create(b, loc, x, y); }
  Value xorI(Value x, Value y) { return arith::XOrIOp::create(b, loc, x, y); }
  Value shl(Value x, Value n) { return arith::ShLIOp::create(b, loc, x, n); }
  Value shrU(Value x, Value n) { return arith::ShRUIOp::create(b, loc, x, n); }
  Value orI(Value x, Value y) { return arith::OrIOp::create(b, loc, x, y); }
  Value select(Value c, Value x, Value y) {
    return arith::SelectOp::create(b, loc, c, x, y);
  }
  Value toIndex(Value v) {
    return arith::IndexCastOp::create(b, loc, b.getIndexType(), v);
  }
  Value fadd(Value x, Value y) { return arith::AddFOp::create(b, loc, x, y); }
  Value fsub(Value x, Value y) { return arith::SubFOp::create(b, loc, x, y); }
  Value fmul(Value x, Value y) { return arith::MulFOp::create(b, loc, x, y); }
  Value fmax(Value x, Value y) {
    return arith::MaximumFOp::create(b, loc, x, y);
  }
  Value fma(Value x, Value y, Value z) {
    return math::FmaOp::create(b, loc, x, y, z);
  }
  Value exp2(Value x) { return math::Exp2Op::create(b, loc, x); }
  Value log2(Value x) { return math::Log2Op::create(b, loc, x); }
  Value feq(Value x, Value y) {
    return arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, x, y);
  }
  Value extract(Value vec, ArrayRef<int64_t> pos) {
    return vector::ExtractOp::create(b, loc, vec, pos);
  }
  /// The same index, hidden from LLVM's loop optimisations by an asm move
  /// with side effects (as a `bits`-wide integer: 32 for shared-memory
  /// offsets and rows, 64 for global element offsets). Addresses built on
  /// it inside the main loop stay "one register + immediate offset" instead
  /// of LICM hoisting one register per fragment out of the loop (24 of them
  /// at d=128, enough to spill).
  Value opaque(Value index, int bits = 32) {
    Type type = b.getIntegerType(bits);
    Value v = arith::IndexCastOp::create(b, loc, type, index);
    return toIndex(asmMov(type, bits == 64 ? "mov.b64 $0, $1;" : "mov.b32 $0, $1;",
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
    return LLVM::InlineAsmOp::create(
               b, loc, type, operands, text, constraints,
               /*has_side_effects=*/true, /*is_align_stack=*/false,
               LLVM::tailcallkind::TailCallKind::None,
               /*asm_dialect=*/nullptr, /*operand_attrs=*/nullptr)
        .getResult(0);
  }
  /// Emits `body` under `cond` (unconditionally when `cond` is null), at
  /// this emitter's builder.
  void ifThen(Value cond, function_ref<void()> body) {
    if (!cond)
      return body();
    auto ifOp = scf::IfOp::create(b, loc, cond, /*withElse=*/false);
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
    auto loop = scf::ForOp::create(
        b, loc, lb, ub, idx(step), init,
        [&](OpBuilder &bodyBuilder, Location l, Value iv, ValueRange carried) {
          Emitter inner{bodyBuilder, l};
          scf::YieldOp::create(bodyBuilder, l, body(inner, iv, carried));
        });
    // scf-to-cf copies LLVM-dialect attributes to the latch branch, and
    // cf-to-llvm makes this one llvm.br's loop_annotation (NVPTX then marks
    // the loop .pragma "nounroll" for ptxas too).
    MLIRContext *ctx = b.getContext();
    auto noUnroll = LLVM::LoopUnrollAttr::get(
        ctx, /*disable=*/b.getBoolAttr(true), /*count=*/{},
        /*runtimeDisable=*/{}, /*full=*/{}, {}, {}, {});
    auto annotation = LLVM::LoopAnnotationAttr::get(
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
      Value other = gpu::ShuffleOp::create(b, loc, v, offset, kWarpSize,
                                           gpu::ShuffleMode::XOR)
                        .getShuffleResult();
      v = isMax ? fmax(v, other) : fadd(v, other);
    }
    return v;
  }
};

/// mma.sync operand registers, two elements each.
using Registers = SmallVector<Value, 4>;
/// This thread's 4 values of an m16n8 f32 accumulator tile: row half h,
/// column el at 2 * h + el.
using AccTile = std::array<Value, 4>;
/// Tile t of accumulator tiles kept 4 values each in `vals`.
AccTile tileAt(ValueRange vals, int t) {
  return {vals[4 * t], vals[4 * t + 1], vals[4 * t + 2], vals[4 * t + 3]};
}
void setTile(MutableArrayRef<Value> vals, int t, const AccTile &tile) {
  std::copy(tile.begin(), tile.end(), vals.begin() + 4 * t);
}

/// Per-kernel constants and values shared by the helpers below.
struct ForwardKernel {
  const AttentionSpec &spec;
  const TileConfig &cfg;
  ForwardLayout layout;
  Type elemTy;
  int mTiles;   ///< m16 tiles per warp
  int nTiles;   ///< n8 score tiles per K/V tile
  int kStepsQK; ///< k16 steps over the padded head_dim_qk
  int dTilesV;  ///< n8 output tiles that hold at least one real column

  ForwardKernel(const AttentionSpec &s, const TileConfig &c, Type elem)
      : spec(s), cfg(c), layout(forwardLayout(s, c)), elemTy(elem) {
    mTiles = layout.mTilesPerWarp;
    nTiles = cfg.blockN / kMmaN;
    kStepsQK = layout.paddedHeadDimQK / kMmaK;
    dTilesV = (spec.headDimV + kMmaN - 1) / kMmaN;
  }
};

/// rowSwizzle (Forward.h) of tile row `row` in a layout of `bits` swizzle
/// bits, in 16-byte chunks.
Value rowSwizzleOf(Emitter &e, Value row, int bits) {
  return e.andI(e.shrU(row, e.idx(kMaxSwizzleBits - bits)),
                e.idx((1 << bits) - 1));
}
/// Where element column `col` of tile row `row` sits in a shared-memory row
/// swizzled by `bits` (0: not swizzled).
Value swizzledCol(Emitter &e, int bits, Value row, Value col) {
  if (bits == 0)
    return col;
  return e.xorI(col, e.mul(rowSwizzleOf(e, row, bits), e.idx(kSmemChunkElems)));
}

/// Element offset of the start of tile row `row` (an index into the rows of
/// the tensor being copied) from the copy's base offset.
using RowOffsetFn = function_ref<Value(Emitter &, Value row)>;

/// Copies rows [rowStart, rowStart + rows) x [0, paddedDim) of a global
/// tensor into shared memory `dst[prefix..., row, col]`, row r starting at
/// element `base + rowOffset(r)`; rows at or past `rowLimit` (none when it is
/// null) and columns at or past `dim` are filled with zeros (and read nothing:
/// their source is `base`, an in-bounds element). Copies of 4 bytes or more are
/// cp.async (the caller commits and waits for them). `inLoop`: emitted in the
/// main loop, where the rounds are unrolled (lane rows made opaque); outside
/// it they are a run-time loop (Emitter::runtimeLoop). `rowStride`:
/// rowOffset(r) is r times it (K and V), which lets in-range rows walk a
/// pointer chain; `swizzleBits`: the destination's (rowSwizzle).
void copyTile(Emitter &e, const ForwardKernel &k, Value tid, Value src,
              Value base, RowOffsetFn rowOffset, Value rowStart, Value rowLimit,
              int rows, int dim, int paddedDim, int swizzleBits, Value dst,
              ArrayRef<Value> prefix, bool inLoop, Value rowStride = Value()) {
  // Columns past `dim` must read as zeros, not as the next row's data.
  const int vec = copyElems(k.spec, dim);
  const bool asyncCopies = vec * elementBytes(k.spec.dtype) >= 4;
  const int chunksPerRow = paddedDim / vec;
  const int chunks = rows * chunksPerRow;
  const int threads = k.layout.threads;
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
          Value zero =
              arith::ConstantOp::create(eb, l, eb.getZeroAttr(k.elemTy));
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
  const bool rolled = !inLoop || k.cfg.quick;
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

/// Closes the current cp.async group (an empty group when nothing was
/// issued, so that group counting stays uniform across iterations).
/// nvvm's token-free ops: nvgpu's group op needs at least one token to print
/// in a form that parses back, and copies under scf.if have none to give.
void commitGroup(Emitter &e) { NVVM::CpAsyncCommitGroupOp::create(e.b, e.loc); }

/// Waits until at most `pending` of the most recent groups are in flight.
void waitGroups(Emitter &e, int pending) {
  NVVM::CpAsyncWaitGroupOp::create(e.b, e.loc, pending);
}

} // namespace

LogicalResult buildForwardSm80(OpBuilder &builder, gpu::GPUModuleOp module,
                               StringRef name, const AttentionSpec &spec,
                               const TileConfig &cfg) {
  MLIRContext *ctx = builder.getContext();
  Location loc = module.getLoc();
  OpBuilder::InsertionGuard guard(builder);
  builder.setInsertionPointToEnd(module.getBody());

  Type elemTy = spec.dtype == DType::BF16 ? Type(builder.getBF16Type())
                                          : Type(builder.getF16Type());
  ForwardKernel k(spec, cfg, elemTy);
  const ForwardLayout &L = k.layout;
  Type f32 = builder.getF32Type();
  Type i64 = builder.getI64Type();
  Type i32 = builder.getI32Type();
  auto globalSpace = builder.getI64IntegerAttr(kGlobalSpace);
  auto gmem =
      MemRefType::get({kGlobalExtent}, elemTy, AffineMap(), globalSpace);
  auto gmemF32 =
      MemRefType::get({kGlobalExtent}, f32, AffineMap(), globalSpace);
  auto smemSpace = gpu::AddressSpaceAttr::get(
      ctx, gpu::GPUDialect::getWorkgroupAddressSpace());

  auto gmemI32 =
      MemRefType::get({kGlobalExtent}, i32, AffineMap(), globalSpace);

  // ---- signature: ForwardKernelArgs, in order -------------------------------
  SmallVector<Type> argTypes = {gmem, gmem,    gmem,    gmem,    gmemF32,
                                gmem, gmemF32, gmemI32, gmemI32, gmemI32};
  argTypes.append(kForwardKernelStrideArgs, i64);
  argTypes.append({i32, i32, i32, i32, f32, f32});
  assert(argTypes.size() == kForwardKernelArgCount);
  auto func = gpu::GPUFuncOp::create(builder, loc, name,
                                     builder.getFunctionType(argTypes, {}));
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(),
                builder.getUnitAttr());
  // The GPU-to-NVVM conversion turns this into .maxntid (setting
  // nvvm.maxntid here as well duplicated the attribute in the nvvm stage,
  // which then did not parse).
  func.setKnownBlockSizeAttr(builder.getDenseI32ArrayAttr({L.threads, 1, 1}));
  // One CTA per SM is enough: without this ptxas caps registers to fit two
  // and spills (seen at d=16/64 with 256 threads).
  func->setAttr("nvvm.minctasm", builder.getI32IntegerAttr(1));

  Block &entry = func.getBody().front();
  builder.setInsertionPointToStart(&entry);
  Emitter e{builder, loc};
  auto arg = [&](int i) { return entry.getArgument(i); };
  Value q = arg(0), kT = arg(1), v = arg(2), o = arg(3), lse = arg(4);
  Value bias = arg(5), alibiSlopes = arg(6);
  Value cuSeqlensQ = arg(7), cuSeqlensK = arg(8), keyLengths = arg(9);
  auto stride = [&](int i) {
    return e.toIndex(arg(kForwardKernelPointerArgs + i));
  };
  Value qBS = stride(0), qHS = stride(1), qRS = stride(2);
  Value kBS = stride(3), kHS = stride(4), kRS = stride(5);
  Value vBS = stride(6), vHS = stride(7), vRS = stride(8);
  Value oBS = stride(9), oHS = stride(10), oRS = stride(11);
  Value lseBS = stride(12), lseHS = stride(13);
  Value biasBS = stride(14), biasHS = stride(15), biasRS = stride(16);
  Value alibiBS = stride(17);
  constexpr int kScalars = kForwardKernelPointerArgs + kForwardKernelStrideArgs;
  // seqK becomes the sequence's own length below (varlen, key lengths);
  // seqKArg stays the argument (the causal CTA order sizes chunks by it).
  Value seqKArg = arg(kScalars + 1);
  Value seqQ = e.toIndex(arg(kScalars)), seqK = e.toIndex(seqKArg);
  Value windowLeft = e.toIndex(arg(kScalars + 2));
  Value windowRight = e.toIndex(arg(kScalars + 3));
  Value scaleLog2 = arg(kScalars + 4), softcap = arg(kScalars + 5);

  // ---- thread coordinates
  // ----------------------------------------------------
  Value tid = gpu::ThreadIdOp::create(builder, loc, gpu::Dimension::x);
  Value warp = e.div(tid, kWarpSize);
  Value lane = e.rem(tid, kWarpSize);
  Value group = e.div(lane, 4);   // MMA row within an 8-row half
  Value inGroup = e.rem(lane, 4); // MMA column pair
  const bool causal = spec.mask == MaskMode::Causal;
  // The CTA's row block, its query head (with packed GQA the K/V head whose
  // group of query heads shares the rows) and its batch. A causal block's
  // work grows with its row block, and the hardware starts CTAs in the
  // order of their linear index: with blockIdx.x as the row block, every
  // head's heaviest blocks start last and the final wave runs them alone.
  // Causal CTAs are therefore handed out longest first: within a chunk of
  // heads of one batch, row blocks from the last down, the chunk's heads
  // fastest. A chunk is a power of two heads whose K and V fit
  // kLptChunkBytes (they stay in L2 while its CTAs stream them); the last
  // chunk of a batch also takes the remainder. This costs one division
  // (at the start, and again before a staged epilogue: cheap next to even
  // one K/V tile). `fresh`: read the special registers again (see the
  // staged epilogue); the causal map always reads them so.
  auto ctaCoordinates = [&](bool fresh) -> std::array<Value, 3> {
    if (!fresh && !causal)
      return {gpu::BlockIdOp::create(builder, loc, gpu::Dimension::x),
              gpu::BlockIdOp::create(builder, loc, gpu::Dimension::y),
              gpu::BlockIdOp::create(builder, loc, gpu::Dimension::z)};
    Value x = e.freshSreg("%ctaid.x");
    Value y = e.freshSreg("%ctaid.y");
    Value z = e.freshSreg("%ctaid.z");
    if (!causal)
      return {x, y, z};
    Value rowBlocks = e.freshSreg("%nctaid.x");
    Value heads = e.freshSreg("%nctaid.y");
    // log2(heads a chunk) = floor(log2(budget keys)) - ceil(log2(seqlen_k)),
    // at least 0; ceil(log2(n)) = 32 - clz(n - 1).
    const int64_t kvBytesPerKey =
        int64_t(spec.headDimQK + spec.headDimV) * elementBytes(spec.dtype);
    const int64_t budgetLog2 = llvm::Log2_64(kLptChunkBytes / kvBytesPerKey);
    Value keysM1 = e.sub(e.maxS(seqKArg, e.i32(1)), e.i32(1));
    Value keysLog2 = e.sub(e.idx(32), e.toIndex(LLVM::CountLeadingZerosOp::create(
                                          builder, loc, keysM1,
                                          /*is_zero_poison=*/false)));
    Value chunkLog2 = e.maxS(e.sub(e.idx(budgetLog2), keysLog2), e.idx(0));
    Value lastChunk = e.sub(e.maxS(e.shrU(heads, chunkLog2), e.idx(1)), e.idx(1));
    Value chunk = e.minS(e.shrU(y, chunkLog2), lastChunk);
    Value firstHead = e.shl(chunk, chunkLog2);
    Value chunkHeads =
        e.select(e.cmp(arith::CmpIPredicate::eq, chunk, lastChunk),
                 e.sub(heads, firstHead), e.shl(e.idx(1), chunkLog2));
    Value within = e.add(e.mul(e.sub(y, firstHead), rowBlocks), x);
    // A 32-bit division: ptxas expands a 64-bit one into a subroutine that
    // cost 9% of the d=128 kernel's compile. The runtime keeps every
    // launch's grid below 2^32 CTAs, which bounds `within`.
    auto toI32 = [&](Value v) {
      return arith::IndexCastUIOp::create(builder, loc, builder.getI32Type(), v);
    };
    Value fromLast = arith::IndexCastUIOp::create(
        builder, loc, builder.getIndexType(),
        arith::DivUIOp::create(builder, loc, toI32(within), toI32(chunkHeads)));
    Value head = e.add(firstHead, e.sub(within, e.mul(fromLast, chunkHeads)));
    return {e.sub(e.sub(rowBlocks, e.idx(1)), fromLast), head, z};
  };
  auto [mBlock, yBlock, batch] = ctaCoordinates(/*fresh=*/false);
  const int gqa = spec.gqaGroup;
  const bool packed = cfg.packGqa;
  Value kvHead = packed ? yBlock : e.div(yBlock, gqa);

  // ---- this sequence: where its rows start and how many there are
  // --------------
  Value startQ = e.idx(0), startK = e.idx(0);
  auto loadIndex = [&](Value mem, Value i) {
    return e.toIndex(memref::LoadOp::create(builder, loc, mem, ValueRange{i}));
  };
  if (spec.varlen) {
    Value next = e.add(batch, e.idx(1));
    startQ = loadIndex(cuSeqlensQ, batch);
    seqQ = e.sub(loadIndex(cuSeqlensQ, next), startQ);
    startK = loadIndex(cuSeqlensK, batch);
    seqK = e.sub(loadIndex(cuSeqlensK, next), startK);
  }
  if (spec.keyLengths)
    seqK = loadIndex(keyLengths, batch);

  // Tile rows: query rows, or with packed GQA (query, head) pairs with the
  // head fastest, so that row r is query r / group of head r % group.
  auto queryOf = [&](Emitter &x, Value row) {
    return packed ? x.div(row, gqa) : row;
  };
  auto headOf = [&](Emitter &x, Value row) {
    return packed ? x.add(x.mul(kvHead, x.idx(gqa)), x.rem(row, gqa)) : yBlock;
  };
  Value rowLimit = packed ? e.mul(seqQ, e.idx(gqa)) : seqQ;
  Value qSeqBase = e.add(e.mul(batch, qBS), e.mul(startQ, qRS));
  Value oSeqBase = e.add(e.mul(batch, oBS), e.mul(startQ, oRS));
  auto qRowOffset = [&](Emitter &x, Value row) {
    return x.add(x.mul(queryOf(x, row), qRS), x.mul(headOf(x, row), qHS));
  };
  Value kBase =
      e.add(e.add(e.mul(batch, kBS), e.mul(startK, kRS)), e.mul(kvHead, kHS));
  Value vBase =
      e.add(e.add(e.mul(batch, vBS), e.mul(startK, vRS)), e.mul(kvHead, vHS));
  Value mStart = e.mul(mBlock, e.idx(cfg.blockM));

  // ---- shared memory
  // ------------------------------------------------------------
  auto dynSmem = gpu::DynamicSharedMemoryOp::create(
      builder, loc,
      MemRefType::get({ShapedType::kDynamic}, builder.getI8Type(), AffineMap(),
                      smemSpace));
  auto view = [&](ArrayRef<int64_t> shape, int offsetBytes) -> Value {
    auto type = MemRefType::get(shape, elemTy, AffineMap(), smemSpace);
    return memref::ViewOp::create(builder, loc, type, dynSmem,
                                  e.idx(offsetBytes), ValueRange{});
  };
  Value qSmem = view({cfg.blockM, L.pitchQK}, 0);
  Value kSmem = view({cfg.stages, cfg.blockN, L.pitchQK}, L.kOffsetBytes);
  Value vSmem = view({cfg.stages, cfg.blockN, L.pitchV}, L.vOffsetBytes);

  // ---- K/V tile range: tiles [loBlock, hiBlock), visited last to first
  // ------- Masks are bottom-right aligned: query i sees keys up to i + diag
  // (causal), or [i + diag - window_left, i + diag + window_right].
  Value diag = e.sub(seqK, seqQ);
  const bool window = spec.mask == MaskMode::Window;
  Value active = e.lt(mStart, rowLimit); // false past this sequence's rows
  // The block's first and last query (rebuilt where used, see rowIndex).
  auto firstQueryOf = [&](Emitter &x) { return queryOf(x, mStart); };
  auto lastQueryOf = [&](Emitter &x) {
    return queryOf(
        x, x.maxS(x.sub(x.minS(x.add(mStart, x.idx(cfg.blockM)), rowLimit),
                        x.idx(1)),
                  mStart));
  };
  Value firstQuery = firstQueryOf(e), lastQuery = lastQueryOf(e);
  Value keyLo = e.idx(0), keyHi = seqK; // keys any row of the block sees
  if (causal || window) {
    Value reach = e.add(e.add(lastQuery, diag), e.idx(1));
    if (window)
      reach = e.add(reach, windowRight);
    keyHi = e.maxS(e.minS(keyHi, reach), e.idx(0));
  }
  if (window)
    keyLo = e.maxS(e.sub(e.add(firstQuery, diag), windowLeft), e.idx(0));
  Value hiBlock = e.div(e.add(keyHi, e.idx(cfg.blockN - 1)), cfg.blockN);
  Value loBlock = e.div(keyLo, cfg.blockN);
  Value nBlocks =
      e.select(active, e.maxS(e.sub(hiBlock, loBlock), e.idx(0)), e.idx(0));

  // Only the first tile visited (hiBlock - 1) can reach past seqlen_k: the
  // prologue loads it; the loop loads tiles below it, whose rows need no
  // bounds check.
  // K or V: where its rows come from and go to.
  struct KVOperand {
    Value src, base, rowStride, smem;
    int dim, paddedDim, swizzleBits;
  };
  const KVOperand kOperand{kT,
                           kBase,
                           kRS,
                           kSmem,
                           spec.headDimQK,
                           L.paddedHeadDimQK,
                           L.swizzleBitsQK};
  const KVOperand vOperand{
      v, vBase, vRS, vSmem, spec.headDimV, L.paddedHeadDimV, L.swizzleBitsV};
  auto loadKV = [&](const KVOperand &t, Value nBlock, Value slot,
                    bool inLoop) {
    auto rowOffset = [&](Emitter &x, Value r) { return x.mul(r, t.rowStride); };
    copyTile(e, k, tid, t.src, t.base, rowOffset,
             e.mul(nBlock, e.idx(cfg.blockN)), inLoop ? Value() : seqK,
             cfg.blockN, t.dim, t.paddedDim, t.swizzleBits, t.smem, {slot},
             inLoop, t.rowStride);
  };
  auto tileOfIteration = [&](Value it) { // iteration it -> tile hiBlock-1-it
    return e.sub(e.sub(hiBlock, e.idx(1)), it);
  };

  // ---- Q: global -> smem -> registers
  // --------------------------------------------
  copyTile(e, k, tid, q, qSeqBase, qRowOffset, mStart, rowLimit, cfg.blockM,
           spec.headDimQK, L.paddedHeadDimQK, L.swizzleBitsQK, qSmem, {},
           /*inLoop=*/false);
  commitGroup(e);
  // Prefetch the first stages-1 K/V tiles (each its own group); one stage
  // prefetches the first tile into its only slot.
  const int prologueTiles = std::max(cfg.stages - 1, 1);
  for (int s = 0; s < prologueTiles; ++s) {
    e.ifThen(e.lt(e.idx(s), nBlocks), [&] {
      loadKV(kOperand, tileOfIteration(e.idx(s)), e.idx(s), /*inLoop=*/false);
      loadKV(vOperand, tileOfIteration(e.idx(s)), e.idx(s), /*inLoop=*/false);
    });
    commitGroup(e);
  }
  // Wait for Q only (the K/V groups may stay in flight).
  waitGroups(e, prologueTiles);
  gpu::BarrierOp::create(builder, loc);

  // Operands stay as mma.sync's 32-bit registers of two elements (i32 for
  // bf16, vector<2xf16> for f16) and accumulators as 4 scalars: exactly what
  // nvvm.mma.sync takes, so no vector glue surrounds each MMA (that glue was
  // most of the ops the conversions, CSE and LLVM worked through).
  const bool bf16 = spec.dtype == DType::BF16;
  auto toRegister = [&](OpBuilder &b, Value pair) -> Value {
    if (!bf16)
      return pair;
    Value packed = vector::BitCastOp::create(
        b, loc, VectorType::get({1}, b.getI32Type()), pair);
    return vector::ExtractOp::create(b, loc, packed, ArrayRef<int64_t>{0});
  };
  // An ldmatrix of `tiles` 8x8 matrices, one register each.
  auto ldmatrix = [&](Emitter &x, Value view, ValueRange indices,
                      bool transpose, int tiles) -> Registers {
    Value frag = nvgpu::LdMatrixOp::create(
        x.b, x.loc, VectorType::get({tiles, 2}, elemTy), view, indices,
        transpose, tiles);
    Registers regs;
    for (int i = 0; i < tiles; ++i)
      regs.push_back(toRegister(x.b, x.extract(frag, {i})));
    return regs;
  };
  // Two f32 values rounded to a pair of elements (one 4-byte store) ...
  auto roundPair = [&](Emitter &x, Value lo, Value hi) -> Value {
    Value pair = vector::FromElementsOp::create(
        x.b, x.loc, VectorType::get({2}, f32), ValueRange{lo, hi});
    return arith::TruncFOp::create(x.b, x.loc, VectorType::get({2}, elemTy),
                                   pair);
  };
  // ... and into one register (an mma.sync operand).
  auto packPair = [&](Emitter &x, Value lo, Value hi) -> Value {
    return toRegister(x.b, roundPair(x, lo, hi));
  };
  Value warpRow0 = e.mul(warp, e.idx(L.rowsPerWarp));
  // ldmatrix: lane i gives the address of row i % 8 of matrix i / 8, at
  // chunk c (0 or 1) of its fragment's 32-byte pair of 16-byte chunks. A
  // fragment starting at chunk 2p has this lane's chunk (2p + c) ^ s, s =
  // rowSwizzle(row) < 2^bits, which is 2p - lo + ((lo ^ (s & ~1)) + (c ^
  // (s & 1))) for lo = 2p mod 2^bits. So an operand's fragments are read
  // through one view per lo (at most 4), each starting at this lane's offset
  // for that lo and indexed by constants only; row offsets are multiples of
  // 8 rows, which keep s.
  struct FragmentLanes {
    Value base;    // elements: row * pitch + (c ^ (s & 1)) * 8
    Value pairSwz; // elements: (s & ~1) * 8; null below 2 swizzle bits
    int bits;
  };
  auto fragmentLanes = [&](Value row, Value chunk, int pitch, int bits) {
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
  };
  // Q (A operand): matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows
  // 0-7, k 8-15), (rows 8-15, k 8-15).
  const FragmentLanes qLanes =
      fragmentLanes(e.add(warpRow0, e.rem(lane, 16)), e.div(lane, 16),
                    L.pitchQK, L.swizzleBitsQK);
  // K (B operands of two n8 tiles): (keys 0-7, k 0-7), (keys 0-7, k 8-15),
  // (keys 8-15, k 0-7), (keys 8-15, k 8-15).
  const FragmentLanes kLanes =
      fragmentLanes(e.add(e.rem(lane, 8), e.mul(e.div(lane, 16), e.idx(8))),
                    e.rem(e.div(lane, 8), 2), L.pitchQK, L.swizzleBitsQK);
  // V, transposed (B operands of two n8 column tiles): (keys 0-7, d 0-7),
  // (keys 8-15, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 8-15). A .x2 read
  // takes lanes 0-15 only, whose chunk is 0.
  const FragmentLanes vLanes = fragmentLanes(
      e.add(e.rem(lane, 8), e.mul(e.rem(e.div(lane, 8), 2), e.idx(8))),
      e.div(lane, 16), L.pitchV, L.swizzleBitsV);
  // The views of one operand whose fragments start at element columns
  // below `cols`, in shared memory from `offsetBytes`. Inside the main loop
  // the starts are opaque (Emitter::opaque).
  constexpr int kPairElems = 2 * kSmemChunkElems; // a fragment's chunk pair
  struct FragmentViews {
    SmallVector<Value> views; // view j: fragments with lo = 2j
    int groupElems;           // elements of a swizzle group (at least a pair)
    /// The view and the constant column of a fragment starting at `col`.
    std::pair<Value, int64_t> at(int col) const {
      const int loElems = col % groupElems;
      return {views[loElems / kPairElems], col - loElems};
    }
  };
  auto fragmentViews = [&](Emitter &x, ArrayRef<int64_t> shape, int offsetBytes,
                           const FragmentLanes &f, int cols, bool inLoop) {
    FragmentViews fv;
    fv.groupElems = std::max((1 << f.bits) * kSmemChunkElems, kPairElems);
    const int count =
        (std::min(fv.groupElems, cols) + kPairElems - 1) / kPairElems;
    Value pairSwz = f.pairSwz && inLoop ? x.opaque(f.pairSwz) : f.pairSwz;
    auto type = MemRefType::get(shape, elemTy, AffineMap(), smemSpace);
    for (int j = 0; j < count; ++j) {
      Value laneElems = f.base;
      if (pairSwz) // (lo ^ (s & ~1)) * 8, lo = 2j
        laneElems = x.add(laneElems, x.xorI(pairSwz, x.idx(j * kPairElems)));
      Value start = x.add(x.idx(offsetBytes),
                          x.mul(laneElems, x.idx(elementBytes(spec.dtype))));
      if (inLoop)
        start = x.opaque(start);
      fv.views.push_back(memref::ViewOp::create(x.b, x.loc, type, dynSmem,
                                                start, ValueRange{}));
    }
    return fv;
  };
  auto qFragments = [&](Emitter &x, bool inLoop) {
    return fragmentViews(x, {cfg.blockM, L.pitchQK}, 0, qLanes,
                         L.paddedHeadDimQK, inLoop);
  };
  // A operand of m-tile mt, k-step ks, from qFragments views, `colOffset`
  // (null: none) columns further right.
  auto loadQFragment = [&](Emitter &qe, const FragmentViews &qViews, int mt,
                           int ks, Value colOffset = {}) -> Registers {
    auto [view, col] = qViews.at(ks * kMmaK);
    Value colIdx = colOffset ? qe.add(colOffset, qe.idx(col)) : qe.idx(col);
    return ldmatrix(qe, view, ValueRange{qe.idx(mt * kMmaM), colIdx},
                    /*transpose=*/false, /*tiles=*/4);
  };
  // qFrag[mt][ks], loaded once when Q stays in registers.
  SmallVector<SmallVector<Registers>> qFrag(k.mTiles);
  if (L.qInRegisters) {
    const FragmentViews qViews = qFragments(e, /*inLoop=*/false);
    for (int mt = 0; mt < k.mTiles; ++mt)
      for (int ks = 0; ks < k.kStepsQK; ++ks)
        qFrag[mt].push_back(loadQFragment(e, qViews, mt, ks));
  }

  // ---- this thread's rows: row (mt, half) is tile row
  //      warpRow0 + 16 mt + 8 half + group. Rebuilt where used: values kept
  //      across the main loop cost registers the accumulators need.
  auto rowIndex = [&](Emitter &x, int mt, int half) {
    return x.add(x.add(mStart, warpRow0),
                 x.add(x.idx(mt * kMmaM + half * 8), group));
  };
  auto rowQuery = [&](Emitter &x, int mt, int half) {
    return queryOf(x, rowIndex(x, mt, half));
  };
  auto rowHead = [&](Emitter &x, int mt, int half) {
    return headOf(x, rowIndex(x, mt, half));
  };

  // ---- score transforms (softcap, bias)
  // --------------------------------------- Plain kernels keep raw scores and
  // fold the scale into the softmax; with a transform, scores are moved into
  // the log2 domain first.
  const bool transformScores = spec.softcap || spec.bias != BiasMode::None;
  Value softmaxScale = transformScores ? e.f32(1.0) : scaleLog2;
  Value capLog2, capInner; // softcap * log2(e); scale / softcap
  if (spec.softcap) {
    capLog2 = e.fmul(softcap, e.f32(kLog2e));
    capInner = arith::DivFOp::create(builder, loc, scaleLog2, capLog2);
  }
  auto scoreToLog2 = [&](Emitter &x, Value s) -> Value {
    if (!spec.softcap)
      return x.fmul(s, scaleLog2);
    // tanh(y) = 1 - 2 / (exp(2y) + 1): exact at both ends (exp2 -> 0, inf),
    // absolute error ~1e-7 near 0.
    Value t = x.exp2(x.fmul(s, x.fmul(capInner, x.f32(2 * kLog2e))));
    Value ratio = arith::DivFOp::create(
        x.b, x.loc, x.f32(2), x.fadd(t, x.f32(1)), arith::FastMathFlags::afn);
    return x.fmul(x.fsub(x.f32(1), ratio), capLog2);
  };
  // ALiBi slope * log2(e) per row (the row's head picks the slope).
  SmallVector<SmallVector<Value>> alibiLog2(k.mTiles);
  if (spec.bias == BiasMode::Alibi)
    for (int mt = 0; mt < k.mTiles; ++mt)
      for (int half = 0; half < 2; ++half) {
        Value slope = memref::LoadOp::create(
            builder, loc, alibiSlopes,
            ValueRange{e.add(e.mul(batch, alibiBS), rowHead(e, mt, half))});
        alibiLog2[mt].push_back(e.fmul(slope, e.f32(kLog2e)));
      }
  // Bias rows and keys are clamped into the sequence so that rows and keys
  // past its end read a real element (the mask discards them).
  auto biasRow = [&](Emitter &x, int mt, int half) {
    Value query = x.minS(rowQuery(x, mt, half), x.sub(seqQ, x.idx(1)));
    return x.add(
        x.add(x.mul(batch, biasBS), x.mul(rowHead(x, mt, half), biasHS)),
        x.mul(query, biasRS));
  };
  auto addBias = [&](Emitter &x, Value score, int mt, int half,
                     Value key) -> Value {
    if (spec.bias == BiasMode::Tensor) {
      Value lastKey = x.sub(seqK, x.idx(1));
      Value idx = x.add(biasRow(x, mt, half), x.minS(key, lastKey));
      Value b = memref::LoadOp::create(x.b, x.loc, bias, ValueRange{idx});
      Value bf = arith::ExtFOp::create(x.b, x.loc, x.b.getF32Type(), b);
      return x.fma(bf, x.f32(kLog2e), score);
    }
    if (spec.bias == BiasMode::Alibi) {
      // -slope * |key - (query + diag)|
      Value dist = x.sub(key, x.add(rowQuery(x, mt, half), diag));
      dist = x.maxS(dist, x.sub(x.idx(0), dist));
      Value distF = arith::SIToFPOp::create(
          x.b, x.loc, x.b.getF32Type(),
          arith::IndexCastOp::create(x.b, x.loc, x.b.getI32Type(), dist));
      return x.fsub(score, x.fmul(alibiLog2[mt][half], distF));
    }
    return score;
  };

  // ---- main loop
  // --------------------------------------------------------------
  const float negInf = -std::numeric_limits<float>::infinity();
  Value negInfF = e.f32(negInf);
  Value zeroF = e.f32(0);
  const AccTile zeroAcc{zeroF, zeroF, zeroF, zeroF};
  // Loop-carried: the 4 values of each O[mt][dt], then m[mt][half], then
  // l[mt][half].
  const int oCount = k.mTiles * k.dTilesV, mOffset = 4 * oCount,
            lOffset = mOffset + 2 * k.mTiles;
  SmallVector<Value> init(mOffset, zeroF);
  init.append(2 * k.mTiles, negInfF);
  init.append(2 * k.mTiles, zeroF);

  auto mma = [&](OpBuilder &b, ArrayRef<Value> a, ArrayRef<Value> bRegs,
                 const AccTile &c) -> AccTile {
    auto resultType = LLVM::LLVMStructType::getLiteral(
        b.getContext(), SmallVector<Type>(4, f32));
    const NVVM::MMATypes type = bf16 ? NVVM::MMATypes::bf16 : NVVM::MMATypes::f16;
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
  };
  // An accumulator tile with row half h multiplied by factor[h].
  auto scaleRows = [&](Emitter &x, AccTile acc, ArrayRef<Value> factor) {
    for (int i = 0; i < 4; ++i)
      acc[i] = x.fmul(acc[i], factor[i / 2]);
    return acc;
  };

  // One K/V tile's work is built from the pieces below. The full kernel
  // runs them once on the whole tile; its quick form (cfg.quick) in
  // run-time loops over 16-key slices: a first pass for the row maxima, a
  // second that recomputes each slice's scores for P, its row sums and
  // P V. Every score, maximum, exponential, rounding and MMA is the same
  // operation on the same values in the same order (row sums add 16-key
  // slices in order in both), so both give the same results bit for bit.
  using Scores = SmallVector<SmallVector<AccTile>>; // [mt][key tile]
  auto forOp = scf::ForOp::create(
      builder, loc, e.idx(0), nBlocks, e.idx(1), init,
      [&](OpBuilder &b, Location l, Value it, ValueRange carried) {
        Emitter le{b, l};
        Value nBlock = tileOfIteration(it);
        Value slot = le.rem(it, cfg.stages);
        // ---- pipeline: this tile's group done, prefetch stages-1 ahead ----
        // One stage (FlashAttention-2's order): K of this tile has landed
        // (and V, for the first tile); V loads behind Q K^T, and the next
        // K behind the softmax and P V (after the barrier below). The quick
        // form reads K in both passes, so with one stage it loads the next
        // K and V together once the tile is done.
        const bool splitKV = cfg.stages == 1 && !cfg.quick;
        if (cfg.stages == 1) {
          waitGroups(le, 0);
          gpu::BarrierOp::create(b, l); // and every warp is done with V
          if (splitKV) {
            le.ifThen(le.gt(it, le.idx(0)), [&] {
              loadKV(vOperand, nBlock, le.idx(0), /*inLoop=*/true);
            });
            commitGroup(le);
          }
        } else {
          waitGroups(le, cfg.stages - 2);
          gpu::BarrierOp::create(b, l);
          Value ahead = le.add(it, le.idx(cfg.stages - 1));
          // `b` is `builder` (the region builders pass it through), so the
          // helpers that emit via `e` land in the branch too.
          le.ifThen(le.lt(ahead, nBlocks), [&] {
            Value slotAhead = le.rem(ahead, cfg.stages);
            loadKV(kOperand, tileOfIteration(ahead), slotAhead, /*inLoop=*/true);
            loadKV(vOperand, tileOfIteration(ahead), slotAhead, /*inLoop=*/true);
          });
          commitGroup(le);
        }

        // ---- S = Q K^T ----
        const FragmentViews qViews =
            L.qInRegisters ? FragmentViews() : qFragments(le, /*inLoop=*/true);
        const FragmentViews kViews = fragmentViews(
            le, {cfg.stages, cfg.blockN, L.pitchQK}, L.kOffsetBytes, kLanes,
            L.paddedHeadDimQK, /*inLoop=*/true);
        // Scores as 4 values per tile (loop-carried and branch results), and
        // back.
        auto flatten = [&](const Scores &tiles) {
          SmallVector<Value> flat;
          for (const auto &row : tiles)
            for (const AccTile &t : row)
              flat.append(t.begin(), t.end());
          return flat;
        };
        auto unflatten = [&](ValueRange flat, int nTiles) {
          Scores tiles(k.mTiles);
          for (int mt = 0; mt < k.mTiles; ++mt)
            for (int nt = 0; nt < nTiles; ++nt)
              tiles[mt].push_back(tileAt(flat, mt * nTiles + nt));
          return tiles;
        };
        // k-step ks of Q K^T into acc, whose key tiles start at tile row
        // `keyRow0` (null: 0); `colOffset` (null: 0) moves both operands
        // right by whole swizzle groups, which keeps the views.
        auto qkStep = [&](Emitter &x, int ks, Value colOffset, Value keyRow0,
                          Scores &acc) {
          auto col = [&](int64_t c) {
            return colOffset ? x.add(colOffset, x.idx(c)) : x.idx(c);
          };
          SmallVector<Registers> a;
          for (int mt = 0; mt < k.mTiles; ++mt)
            a.push_back(L.qInRegisters
                            ? qFrag[mt][ks]
                            : loadQFragment(x, qViews, mt, ks, colOffset));
          auto [kView, kCol] = kViews.at(ks * kMmaK);
          const int nTiles = acc.front().size();
          for (int np = 0; np < nTiles / 2; ++np) {
            // B operands of key tiles 2np (registers 0-1) and 2np+1 (2-3).
            Value row = x.idx(np * 16);
            if (keyRow0)
              row = x.add(keyRow0, row);
            Registers bRegs =
                ldmatrix(x, kView, ValueRange{slot, row, col(kCol)},
                         /*transpose=*/false, /*tiles=*/4);
            ArrayRef<Value> b0 = ArrayRef<Value>(bRegs).take_front(2),
                            b1 = ArrayRef<Value>(bRegs).drop_front(2);
            for (int mt = 0; mt < k.mTiles; ++mt) {
              acc[mt][2 * np] = mma(x.b, a[mt], b0, acc[mt][2 * np]);
              acc[mt][2 * np + 1] = mma(x.b, a[mt], b1, acc[mt][2 * np + 1]);
            }
          }
        };
        // Scores of `nTiles` key tiles from tile row `keyRow0`. The first
        // qkRolledIterations * qkStepsPerRolledIteration k-steps run as a
        // run-time loop (Q comes from shared memory there, so nothing needs
        // static register indices), the rest unrolled.
        auto scoresOf = [&](Emitter &x, Value keyRow0, int nTiles) {
          Scores acc(k.mTiles, SmallVector<AccTile>(nTiles, zeroAcc));
          const int stepsPer = L.qkStepsPerRolledIteration;
          const int rolledSteps = L.qkRolledIterations * stepsPer;
          if (rolledSteps > 0) {
            const int64_t stepCols =
                int64_t{stepsPer} * kMmaK;
            // The views hold for column offsets of whole swizzle groups.
            assert(stepCols % kViews.groupElems == 0 &&
                   (L.qInRegisters || stepCols % qViews.groupElems == 0));
            SmallVector<Value> last = x.runtimeLoop(
                x.idx(0), x.idx(rolledSteps * kMmaK), stepCols, flatten(acc),
                [&](Emitter &y, Value colOffset, ValueRange carriedAcc) {
                  auto rolled = unflatten(carriedAcc, nTiles);
                  for (int ks = 0; ks < stepsPer; ++ks)
                    qkStep(y, ks, colOffset, keyRow0, rolled);
                  return flatten(rolled);
                });
            acc = unflatten(last, nTiles);
          }
          for (int ks = rolledSteps; ks < k.kStepsQK; ++ks)
            qkStep(x, ks, Value(), keyRow0, acc);
          return acc;
        };

        // ---- scores into the log2 domain: scale, softcap, bias ----
        auto keyOf = [&](Emitter &x, Value keyRow0, int nt, int el) {
          Value keyBase =
              x.add(x.mul(nBlock, x.idx(cfg.blockN)), x.mul(inGroup, x.idx(2)));
          if (keyRow0)
            keyBase = x.add(keyBase, keyRow0);
          return x.add(keyBase, x.idx(nt * kMmaN + el));
        };
        auto transform = [&](Emitter &x, Value keyRow0, Scores &acc) {
          if (!transformScores)
            return;
          for (int mt = 0; mt < k.mTiles; ++mt)
            for (int nt = 0; nt < int(acc[mt].size()); ++nt)
              for (int half = 0; half < 2; ++half)
                for (int el = 0; el < 2; ++el) {
                  Value &score = acc[mt][nt][2 * half + el];
                  score = addBias(x, scoreToLog2(x, score), mt, half,
                                  keyOf(x, keyRow0, nt, el));
                }
        };

        // ---- mask the tiles that cross seqlen_k or a mask boundary ----
        Value tileStart, needsMask; // set by maskCondition
        auto maskCondition = [&] {
          tileStart = le.mul(nBlock, le.idx(cfg.blockN));
          Value tileLast =
              le.sub(le.add(tileStart, le.idx(cfg.blockN)), le.idx(1));
          needsMask = le.ge(tileLast, seqK);
          if (causal || window) {
            // The block's first query sees keys up to firstQuery + diag (+
            // right).
            Value reach = le.add(firstQueryOf(le), diag);
            if (window)
              reach = le.add(reach, windowRight);
            needsMask = le.orI(needsMask, le.gt(tileLast, reach));
          }
          if (window) // its last query sees keys from lastQuery + diag - left
            needsMask = le.orI(
                needsMask,
                le.lt(tileStart,
                      le.sub(le.add(lastQueryOf(le), diag), windowLeft)));
        };
        auto applyMask = [&](Emitter &x, Value keyRow0, const Scores &acc) {
          const int nTiles = acc.front().size();
          auto maskIf = scf::IfOp::create(
              x.b, x.loc, needsMask,
              [&](OpBuilder &mb, Location ml) {
                Emitter me{mb, ml};
                // Per row, the keys it sees as [lo, hi) relative to this
                // thread's first key column in the slice: one compare with
                // a constant per score. They fit 32 bits: hi is clamped to
                // [0, seqK], lo to >= 0, and a visited tile starts at most
                // a block's rows past any of its rows' lo.
                Value firstKey = me.add(tileStart, me.mul(inGroup, me.idx(2)));
                if (keyRow0)
                  firstKey = me.add(firstKey, keyRow0);
                auto relative = [&](Value key) {
                  return arith::IndexCastOp::create(mb, ml, mb.getI32Type(),
                                                    me.sub(key, firstKey));
                };
                auto masked = acc;
                for (int mt = 0; mt < k.mTiles; ++mt)
                  for (int half = 0; half < 2; ++half) {
                    Value qDiag = me.add(rowQuery(me, mt, half), diag);
                    Value hi = seqK;
                    if (causal)
                      hi = me.minS(hi, me.add(qDiag, me.idx(1)));
                    if (window)
                      hi = me.minS(
                          hi, me.add(me.add(qDiag, windowRight), me.idx(1)));
                    Value hiRel = relative(me.maxS(hi, me.idx(0)));
                    Value loRel;
                    if (window)
                      loRel = relative(
                          me.maxS(me.sub(qDiag, windowLeft), me.idx(0)));
                    for (int nt = 0; nt < nTiles; ++nt)
                      for (int el = 0; el < 2; ++el) {
                        Value col = me.i32(nt * kMmaN + el);
                        Value ok = me.lt(col, hiRel);
                        if (window)
                          ok = me.andI(ok, me.ge(col, loRel));
                        Value &score = masked[mt][nt][2 * half + el];
                        score = me.select(ok, score, negInfF);
                      }
                  }
                scf::YieldOp::create(mb, ml, flatten(masked));
              },
              [&](OpBuilder &ub, Location ul) {
                scf::YieldOp::create(ub, ul, flatten(acc));
              });
          return unflatten(maskIf.getResults(), nTiles);
        };
        // The scores of `nTiles` key tiles from tile row `keyRow0`, ready
        // for the softmax.
        auto maskedScores = [&](Emitter &x, Value keyRow0, int nTiles) {
          Scores acc = scoresOf(x, keyRow0, nTiles);
          transform(x, keyRow0, acc);
          return applyMask(x, keyRow0, acc);
        };
        // Row half `half` of m-tile row `tiles`: this thread's scores.
        auto rowScores = [](ArrayRef<AccTile> tiles, int half) {
          SmallVector<Value> scores;
          for (const AccTile &t : tiles)
            for (int el = 0; el < 2; ++el)
              scores.push_back(t[2 * half + el]);
          return scores;
        };

        // ---- online softmax ----
        SmallVector<Value> next(carried.begin(), carried.end());
        // exp2(m_old - m_new), and the m that exp2 subtracts, per m-tile
        // and row half.
        SmallVector<SmallVector<Value>> alphas(k.mTiles, SmallVector<Value>(2));
        SmallVector<SmallVector<Value>> mUses(k.mTiles, SmallVector<Value>(2));
        Value maxMoved; // some row of this thread has a new maximum
        // The row's new maximum from this thread's part of it.
        auto updateMax = [&](int mt, int half, Value threadMax) {
          Value rowMax = le.quadReduce(threadMax, true);
          Value mOld = carried[mOffset + 2 * mt + half];
          Value mNew = le.fmax(mOld, le.fmul(rowMax, softmaxScale));
          // A row with every key masked so far keeps m = -inf; subtract 0
          // instead so that exp2 sees -inf, not NaN.
          Value mUse = le.select(le.feq(mNew, negInfF), zeroF, mNew);
          mUses[mt][half] = mUse;
          alphas[mt][half] = le.exp2(le.fsub(mOld, mUse));
          next[mOffset + 2 * mt + half] = mNew;
          if (L.rescaleOnNewMax) {
            Value moved = arith::CmpFOp::create(
                b, l, arith::CmpFPredicate::OGT, mNew, mOld);
            maxMoved = maxMoved ? le.orI(maxMoved, moved) : moved;
          }
        };
        // P = exp2(S * scale - m') of m-tile mt's score tiles, into
        // rowTerms (per row half) and pRows[tile][half]: row half `half` of
        // P's tile, rounded into one register right after its exps (ptxas
        // allocated d=96 causal without spills in this order, not with the
        // rounding deferred).
        auto exponentials = [&](Emitter &x, int mt, ArrayRef<AccTile> tiles,
                                SmallVector<SmallVector<Value>> &rowTerms,
                                SmallVector<std::array<Value, 2>> &pRows) {
          for (AccTile p : tiles) {
            for (int half = 0; half < 2; ++half) {
              Value negM = arith::NegFOp::create(x.b, x.loc, mUses[mt][half]);
              for (int el = 0; el < 2; ++el) {
                Value &pe = p[2 * half + el];
                pe = x.exp2(x.fma(pe, softmaxScale, negM));
                rowTerms[half].push_back(pe);
              }
            }
            pRows.push_back({packPair(x, p[0], p[1]), packPair(x, p[2], p[3])});
          }
        };
        // This thread's part of a row sum of P over one 16-key slice (its
        // 4 terms, as a tree).
        constexpr int kSliceTerms = 2 * kSliceTiles;
        auto sliceSum = [](Emitter &x, ArrayRef<Value> terms) {
          return x.treeReduce(SmallVector<Value>(terms), /*isMax=*/false);
        };
        // O tiles (mt, dt) with row half h times alpha[mt][h], from `from`
        // into `to`.
        auto rescaleO = [&](Emitter &x, int mt, ValueRange from,
                            MutableArrayRef<Value> to) {
          for (int dt = 0; dt < k.dTilesV; ++dt)
            setTile(to, mt * k.dTilesV + dt,
                    scaleRows(x, tileAt(from, mt * k.dTilesV + dt), alphas[mt]));
        };
        // With rescaleOnNewMax, O *= alpha only when some row of the warp
        // has a new maximum (alpha = 1 everywhere otherwise: most
        // iterations after the first tiles). The vote keeps the branch
        // warp-uniform.
        auto rescaleOnNewMax = [&] {
          Value anyMoved =
              NVVM::VoteSyncOp::create(b, l, b.getI1Type(), le.i32(-1),
                                       maxMoved, NVVM::VoteSyncKind::any)
                  .getResult();
          auto branch = scf::IfOp::create(
              b, l, anyMoved,
              [&](OpBuilder &rb, Location rl) {
                Emitter re{rb, rl};
                SmallVector<Value> scaled(mOffset);
                for (int mt = 0; mt < k.mTiles; ++mt)
                  rescaleO(re, mt, carried, scaled);
                scf::YieldOp::create(rb, rl, scaled);
              },
              [&](OpBuilder &sb, Location sl) {
                scf::YieldOp::create(sb, sl, carried.take_front(mOffset));
              });
          for (int i = 0; i < mOffset; ++i)
            next[i] = branch.getResult(i);
        };
        // ---- O += P V for the 16 keys from tile row `keyRow` (A operands
        // pOfTile[mt]) ----
        auto vFragments = [&] {
          return fragmentViews(le, {cfg.stages, cfg.blockN, L.pitchV},
                               L.vOffsetBytes, vLanes, L.paddedHeadDimV,
                               /*inLoop=*/true);
        };
        auto pvStep = [&](Emitter &x, const FragmentViews &vViews, Value keyRow,
                          ArrayRef<Registers> pOfTile,
                          MutableArrayRef<Value> o) {
          for (int dp = 0; dp * 2 < k.dTilesV; ++dp) {
            bool pair = 2 * dp + 1 < k.dTilesV;
            auto [vView, vCol] = vViews.at(dp * 16);
            // B operands of column tiles 2dp (registers 0-1) and 2dp+1 (2-3).
            Registers bRegs =
                ldmatrix(x, vView, ValueRange{slot, keyRow, x.idx(vCol)},
                         /*transpose=*/true, pair ? 4 : 2);
            for (int mt = 0; mt < k.mTiles; ++mt)
              for (int half = 0; half < (pair ? 2 : 1); ++half) {
                const int tile = mt * k.dTilesV + 2 * dp + half;
                setTile(o, tile,
                        mma(x.b, pOfTile[mt],
                            ArrayRef<Value>(bRegs).slice(2 * half, 2),
                            tileAt(o, tile)));
              }
          }
        };
        // P's A operand of one 16-key slice: register r is row half r % 2
        // of its score tile r / 2.
        auto sliceOperand = [](ArrayRef<std::array<Value, 2>> pRows) {
          Registers a;
          for (int r = 0; r < 4; ++r)
            a.push_back(pRows[r / 2][r % 2]);
          return a;
        };

        if (cfg.quick) {
          maskCondition();
          // Pass 1: this thread's part of each row maximum, a slice a step.
          SmallVector<Value> threadMax = le.runtimeLoop(
              le.idx(0), le.idx(cfg.blockN), kQuickSliceKeys,
              SmallVector<Value>(2 * k.mTiles, negInfF),
              [&](Emitter &x, Value keyRow0, ValueRange runningMax) {
                Scores s = maskedScores(x, keyRow0, kSliceTiles);
                SmallVector<Value> maxima;
                for (int mt = 0; mt < k.mTiles; ++mt)
                  for (int half = 0; half < 2; ++half)
                    maxima.push_back(x.fmax(
                        runningMax[2 * mt + half],
                        x.treeReduce(rowScores(s[mt], half), /*isMax=*/true)));
                return maxima;
              });
          for (int mt = 0; mt < k.mTiles; ++mt) {
            for (int half = 0; half < 2; ++half)
              updateMax(mt, half, threadMax[2 * mt + half]);
            if (!L.rescaleOnNewMax)
              rescaleO(le, mt, carried, next);
          }
          if (L.rescaleOnNewMax)
            rescaleOnNewMax();
          // Pass 2: P, its row sums (from -0, which adds exactly) and
          // O += P V, a slice a step.
          SmallVector<Value> passInit(next.begin(), next.begin() + mOffset);
          passInit.append(2 * k.mTiles, le.f32(-0.0));
          const FragmentViews vViews = vFragments();
          SmallVector<Value> passOut = le.runtimeLoop(
              le.idx(0), le.idx(cfg.blockN), kQuickSliceKeys, passInit,
              [&](Emitter &x, Value keyRow0, ValueRange c) {
                Scores s = maskedScores(x, keyRow0, kSliceTiles);
                SmallVector<Value> out(c.begin(), c.begin() + mOffset);
                SmallVector<Registers> pOfTile;
                SmallVector<Value> sums;
                for (int mt = 0; mt < k.mTiles; ++mt) {
                  SmallVector<SmallVector<Value>> rowTerms(2);
                  SmallVector<std::array<Value, 2>> pRows;
                  exponentials(x, mt, s[mt], rowTerms, pRows);
                  for (int half = 0; half < 2; ++half)
                    sums.push_back(x.fadd(c[mOffset + 2 * mt + half],
                                          sliceSum(x, rowTerms[half])));
                  pOfTile.push_back(sliceOperand(pRows));
                }
                pvStep(x, vViews, keyRow0, pOfTile, out);
                out.append(sums);
                return out;
              });
          std::copy(passOut.begin(), passOut.begin() + mOffset, next.begin());
          for (int i = 0; i < 2 * k.mTiles; ++i)
            next[lOffset + i] = le.fma(carried[lOffset + i],
                                       alphas[i / 2][i % 2], passOut[mOffset + i]);
          if (cfg.stages == 1) {
            // Every warp is done with this tile's K and V.
            gpu::BarrierOp::create(b, l);
            Value following = le.add(it, le.idx(1));
            le.ifThen(le.lt(following, nBlocks), [&] {
              loadKV(kOperand, tileOfIteration(following), le.idx(0),
                     /*inLoop=*/true);
              loadKV(vOperand, tileOfIteration(following), le.idx(0),
                     /*inLoop=*/true);
            });
            commitGroup(le);
          }
          scf::YieldOp::create(b, l, next);
          return;
        }

        Scores sAcc = scoresOf(le, Value(), k.nTiles);
        transform(le, Value(), sAcc);
        maskCondition();
        sAcc = applyMask(le, Value(), sAcc);
        if (splitKV) {
          waitGroups(le, 0); // V of this tile
          gpu::BarrierOp::create(b, l); // and every warp is done with K
          Value following = le.add(it, le.idx(1));
          le.ifThen(le.lt(following, nBlocks), [&] {
            loadKV(kOperand, tileOfIteration(following), le.idx(0),
                   /*inLoop=*/true);
          });
          commitGroup(le);
        }
        SmallVector<SmallVector<Registers>> pFrag(k.mTiles); // A operands of P V
        for (int mt = 0; mt < k.mTiles; ++mt) {
          for (int half = 0; half < 2; ++half)
            updateMax(mt, half,
                      le.treeReduce(rowScores(sAcc[mt], half), /*isMax=*/true));
          SmallVector<SmallVector<Value>> rowTerms(2);
          SmallVector<std::array<Value, 2>> pRows;
          exponentials(le, mt, sAcc[mt], rowTerms, pRows);
          for (int half = 0; half < 2; ++half) {
            ArrayRef<Value> terms = rowTerms[half];
            Value sum = sliceSum(le, terms.take_front(kSliceTerms));
            for (size_t at = kSliceTerms; at < terms.size(); at += kSliceTerms)
              sum = le.fadd(sum, sliceSum(le, terms.slice(at, kSliceTerms)));
            next[lOffset + 2 * mt + half] =
                le.fma(carried[lOffset + 2 * mt + half], alphas[mt][half], sum);
          }
          if (!L.rescaleOnNewMax)
            rescaleO(le, mt, carried, next);
          // P as A fragments: k-step kk joins score tiles 2kk and 2kk+1.
          for (int kk = 0; kk < k.nTiles / 2; ++kk)
            pFrag[mt].push_back(
                sliceOperand(ArrayRef(pRows).slice(2 * kk, kSliceTiles)));
        }
        if (L.rescaleOnNewMax)
          rescaleOnNewMax();
        const FragmentViews vViews = vFragments();
        for (int kk = 0; kk < k.nTiles / 2; ++kk) {
          SmallVector<Registers> pOfTile;
          for (int mt = 0; mt < k.mTiles; ++mt)
            pOfTile.push_back(pFrag[mt][kk]);
          pvStep(le, vViews, le.idx(kk * 16), pOfTile, next);
        }
        scf::YieldOp::create(b, l, next);
      });
  ValueRange results = forOp.getResults();
  // No copy is in flight here: every group issued was for a tile < nBlocks,
  // and each was waited for before its tile was used.

  // ---- epilogue: normalise, store O and LSE
  // -----------------------------------
  auto storeAlign = spec.globalAlignElems >= 2;
  auto pairType = VectorType::get({2}, elemTy);
  // With 8- or 16-byte row chunks, O goes through this warp's own rows of
  // the Q tile in shared memory (no other warp reads them, so a warp
  // barrier suffices) and leaves as whole chunks: a warp writes full rows
  // instead of 4-byte pieces of 8 rows.
  const int oVec = copyElems(spec, spec.headDimV);
  const bool stageO = oVec * elementBytes(spec.dtype) >= 8 &&
                      L.paddedHeadDimV <= L.paddedHeadDimQK;
  // The staged epilogue rebuilds this thread's coordinates from fresh
  // reads of %tid and %ctaid: otherwise LLVM keeps every derived value (warp
  // row, group, column pair, O base) live across the main loop, where the
  // accumulators need the registers (the direct stores of narrow-copy
  // kernels need fewer, and there ptxas did better without).
  if (stageO) {
    Value tidE = e.freshSreg("%tid.x");
    warp = e.div(tidE, kWarpSize);
    lane = e.rem(tidE, kWarpSize);
    group = e.div(lane, 4);
    inGroup = e.rem(lane, 4);
    warpRow0 = e.mul(warp, e.idx(L.rowsPerWarp));
    auto [mBlockE, yBlockE, batchE] = ctaCoordinates(/*fresh=*/true);
    mStart = e.mul(mBlockE, e.idx(cfg.blockM));
    yBlock = yBlockE;
    batch = batchE;
    kvHead = packed ? yBlock : e.div(yBlock, gqa);
    oSeqBase = e.add(e.mul(batch, oBS), e.mul(startQ, oRS));
    NVVM::SyncWarpOp::create(builder, loc, e.i32(-1)); // last Q reads done
  }
  // This thread's two columns of O tile dt, and the start of O's row for
  // (query, head).
  auto fragmentCol = [&](int dt) {
    return e.add(e.idx(dt * kMmaN), e.mul(inGroup, e.idx(2)));
  };
  auto oRowBase = [&](Emitter &x, Value query, Value head) {
    return x.add(oSeqBase, x.add(x.mul(query, oRS), x.mul(head, oHS)));
  };
  for (int mt = 0; mt < k.mTiles; ++mt)
    for (int half = 0; half < 2; ++half) {
      Value lSum = e.quadReduce(results[lOffset + 2 * mt + half], false);
      Value m = results[mOffset + 2 * mt + half];
      Value empty = e.feq(lSum, zeroF); // every key masked: O = 0, LSE = -inf
      // rcp.approx: l >= 1 for a row with keys (its maximum adds exp2(0)),
      // so the approximation's ulp is all it costs; the IEEE reciprocal
      // expands into a slow path that cost 4% of a compile.
      Value inv = e.select(empty, zeroF,
                           NVVM::RcpApproxFtzF32Op::create(builder, loc, f32, lSum));
      Value query = rowQuery(e, mt, half), head = rowHead(e, mt, half);
      if (stageO) {
        Value stageRow =
            e.add(warpRow0, e.add(e.idx(mt * kMmaM + half * 8), group));
        for (int dt = 0; dt < k.dTilesV; ++dt) {
          const AccTile acc = tileAt(results, mt * k.dTilesV + dt);
          Value lo = e.fmul(acc[2 * half], inv);
          Value hi = e.fmul(acc[2 * half + 1], inv);
          Value pair = roundPair(e, lo, hi);
          // Staged in the Q tile.
          vector::StoreOp::create(
              builder, loc, pair, qSmem,
              ValueRange{stageRow, swizzledCol(e, L.swizzleBitsQK, stageRow,
                                               fragmentCol(dt))},
              /*nontemporal=*/false, llvm::MaybeAlign(4));
        }
      }
      auto inRange = scf::IfOp::create(
          builder, loc, e.lt(rowIndex(e, mt, half), rowLimit), false);
      OpBuilder::InsertionGuard g(builder);
      builder.setInsertionPointToStart(&inRange.getThenRegion().front());
      Value rowBase = oRowBase(e, query, head);
      const int directTiles = stageO ? 0 : k.dTilesV; // staged: written above
      for (int dt = 0; dt < directTiles; ++dt) {
        const AccTile acc = tileAt(results, mt * k.dTilesV + dt);
        Value c0 = e.fmul(acc[2 * half], inv);
        Value c1 = e.fmul(acc[2 * half + 1], inv);
        Value col = fragmentCol(dt);
        Value idx = e.add(rowBase, col);
        auto trunc = [&](Value x) {
          return arith::TruncFOp::create(builder, loc, elemTy, x);
        };
        bool fullTile = (dt + 1) * kMmaN <= spec.headDimV;
        if (fullTile && storeAlign) {
          Value pair = vector::FromElementsOp::create(
              builder, loc, pairType, ValueRange{trunc(c0), trunc(c1)});
          // Both halves in one 4-byte store: the column is even and the
          // row starts on an even element (storeAlign).
          vector::StoreOp::create(builder, loc, pair, o, ValueRange{idx},
                                  /*nontemporal=*/false, llvm::MaybeAlign(4));
          continue;
        }
        for (int el = 0; el < 2; ++el) {
          Value val = trunc(el == 0 ? c0 : c1);
          Value elIdx = e.add(idx, e.idx(el));
          if (fullTile) {
            memref::StoreOp::create(builder, loc, val, o, ValueRange{elIdx});
            continue;
          }
          Value inCols = e.lt(e.add(col, e.idx(el)), e.idx(spec.headDimV));
          e.ifThen(inCols, [&] {
            memref::StoreOp::create(builder, loc, val, o, ValueRange{elIdx});
          });
        }
      }
      if (spec.writeLse) {
        Value lseVal = e.select(empty, negInfF,
                                e.fmul(e.fadd(m, e.log2(lSum)), e.f32(kLn2)));
        Value first = e.cmp(arith::CmpIPredicate::eq, inGroup, e.idx(0));
        e.ifThen(first, [&] {
          Value lseIdx = e.add(e.add(e.mul(batch, lseBS), e.mul(head, lseHS)),
                               e.add(startQ, query));
          memref::StoreOp::create(builder, loc, lseVal, lse, ValueRange{lseIdx});
        });
      }
    }
  if (stageO) {
    // This warp's rows of O, chunk c of row r at lane (r * chunksPerRow + c)
    // % 32: consecutive lanes write consecutive chunks of a row.
    NVVM::SyncWarpOp::create(builder, loc, e.i32(-1));
    const int chunksPerRow = spec.headDimV / oVec;
    const int chunks = L.rowsPerWarp * chunksPerRow;
    auto chunkType = VectorType::get({oVec}, elemTy);
    // A run-time loop, not unrolled: the data comes from shared memory, so
    // nothing needs static register indices, and unrolled rounds made this
    // store a quarter of the kernel's PTX (compile time scales with it).
    e.runtimeLoop(lane, e.idx(chunks), kWarpSize, [&](Emitter &x, Value chunk) {
      OpBuilder &b = x.b;
      Location l = x.loc;
      Value row = x.div(chunk, chunksPerRow);
      Value col = x.mul(x.rem(chunk, chunksPerRow), x.idx(oVec));
      Value tileRow = x.add(warpRow0, row);
      Value globalRow = x.add(mStart, tileRow);
      x.ifThen(x.lt(globalRow, rowLimit), [&] {
        const int chunkBytes = oVec * elementBytes(spec.dtype);
        Value val = vector::LoadOp::create(
            b, l, chunkType, qSmem,
            ValueRange{tileRow, swizzledCol(x, L.swizzleBitsQK, tileRow, col)},
            /*nontemporal=*/false, llvm::MaybeAlign(chunkBytes));
        Value idx = x.add(
            oRowBase(x, queryOf(x, globalRow), headOf(x, globalRow)), col);
        vector::StoreOp::create(b, l, val, o, ValueRange{idx},
                                /*nontemporal=*/false,
                                llvm::MaybeAlign(chunkBytes));
      });
    });
  }
  gpu::ReturnOp::create(builder, loc);
  return success();
}

} // namespace flashjit
