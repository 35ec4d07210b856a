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
#include "common/ForwardKernel.h"
#include "common/Sm80Ops.h"

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

/// Score tiles of one quick-form slice.
constexpr int kSliceTiles = kQuickSliceKeys / kMmaN;

/// The sm80 family's constants of one kernel.
struct Sm80Kernel {
  const AttentionSpec &spec;
  const TileConfig &cfg;
  ForwardLayout layout;
  int mTiles;   ///< m16 tiles per warp
  int nTiles;   ///< n8 score tiles per K/V tile
  int kStepsQK; ///< k16 steps over the padded head_dim_qk
  int dTilesV;  ///< n8 output tiles that hold at least one real column

  /// How its tiles are copied (copyTile).
  TileCopier copier;

  Sm80Kernel(const AttentionSpec &s, const TileConfig &c)
      : spec(s), cfg(c), layout(forwardLayout(s, c)),
        copier{s, layout.threads, c.quick} {
    mTiles = layout.mTilesPerWarp;
    nTiles = cfg.blockN / kMmaN;
    kStepsQK = layout.paddedHeadDimQK / kMmaK;
    dTilesV = (spec.headDimV + kMmaN - 1) / kMmaN;
  }
};

} // namespace

LogicalResult buildForwardSm80(OpBuilder &builder, gpu::GPUModuleOp module,
                               StringRef name, const AttentionSpec &spec,
                               const TileConfig &cfg) {
  MLIRContext *ctx = builder.getContext();
  OpBuilder::InsertionGuard guard(builder);
  Sm80Kernel k(spec, cfg);
  const ForwardLayout &L = k.layout;
  ForwardKernel fk(builder, module, name, spec, cfg, L.threads);
  Location loc = fk.loc;
  Emitter &e = fk.e;
  Type elemTy = fk.elemTy;
  auto smemSpace = gpu::AddressSpaceAttr::get(
      ctx, gpu::GPUDialect::getWorkgroupAddressSpace());
  Value q = fk.q, kT = fk.kT, v = fk.v, o = fk.o;
  Value kRS = fk.kRS, vRS = fk.vRS;

  // ---- thread coordinates
  // ----------------------------------------------------
  Value tid = gpu::ThreadIdOp::create(builder, loc, gpu::Dimension::x);
  Value warp = e.div(tid, kWarpSize);
  Value lane = e.rem(tid, kWarpSize);
  fk.group = e.div(lane, 4);   // MMA row within an 8-row half
  fk.inGroup = e.rem(lane, 4); // MMA column pair
  fk.locateRows();
  Value rowLimit = fk.rowLimit, qSeqBase = fk.qSeqBase, mStart = fk.mStart;
  Value seqK = fk.seqK;
  auto qRowOffset = [&](Emitter &x, Value row) {
    return fk.qRowOffset(x, row);
  };

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
  fk.blockRange();
  Value nBlocks = fk.nBlocks;

  // Only the first tile visited (hiBlock - 1) can reach past seqlen_k: the
  // prologue loads it; the loop loads tiles below it, whose rows need no
  // bounds check.
  // K or V: where its rows come from and go to.
  struct KVOperand {
    Value src, base, rowStride, smem;
    int dim, paddedDim, swizzleBits;
    Value pageStride; ///< pagedKV: the batch stride argument
  };
  const KVOperand kOperand{kT,
                           fk.kBase,
                           kRS,
                           kSmem,
                           spec.headDimQK,
                           L.paddedHeadDimQK,
                           L.swizzleBitsQK,
                           fk.kBS};
  const KVOperand vOperand{v,
                           fk.vBase,
                           vRS,
                           vSmem,
                           spec.headDimV,
                           L.paddedHeadDimV,
                           L.swizzleBitsV,
                           fk.vBS};
  // pagedKV: the block-table lookups of tile nBlock's keys, a key per lane
  // (key first + lane + 32 j in entry j; every warp holds the whole tile),
  // all table loads in flight together. K and V share them.
  using PagedRow = ForwardKernel::PagedRow;
  auto pagedLookups = [&](Value nBlock) {
    SmallVector<PagedRow> rows;
    Value firstKey = e.mul(nBlock, e.idx(cfg.blockN));
    for (int j = 0; j * kWarpSize < cfg.blockN; ++j)
      rows.push_back(
          fk.pagedRow(e, e.add(firstKey, e.add(lane, e.idx(j * kWarpSize)))));
    return rows;
  };
  // `lookups`: pagedLookups(nBlock) when the caller has them.
  auto loadKV = [&](const KVOperand &t, Value nBlock, Value slot, bool inLoop,
                    ArrayRef<PagedRow> lookups = {}) {
    if (spec.pagedKV) {
      // Each key's row through the block table, shuffled from the lane that
      // looked it up to the lanes that copy it: one dependent table load
      // per copied chunk kept a one-warp decode CTA at a third of the
      // bandwidth.
      SmallVector<PagedRow> own;
      if (lookups.empty())
        lookups = own = pagedLookups(nBlock);
      SmallVector<Value> laneOffsets;
      for (const PagedRow &r : lookups)
        laneOffsets.push_back(
            ForwardKernel::pagedOffset(e, r, t.pageStride, t.rowStride));
      copyTile(e, k.copier, tid, t.src, t.base, /*rowOffset=*/nullptr,
               e.mul(nBlock, e.idx(cfg.blockN)), seqK, cfg.blockN, t.dim,
               t.paddedDim, t.swizzleBits, t.smem, {slot}, inLoop, Value(),
               laneOffsets);
      return;
    }
    auto rowOffset = [&](Emitter &x, Value r) { return x.mul(r, t.rowStride); };
    copyTile(e, k.copier, tid, t.src, t.base, rowOffset,
             e.mul(nBlock, e.idx(cfg.blockN)), inLoop ? Value() : seqK,
             cfg.blockN, t.dim, t.paddedDim, t.swizzleBits, t.smem, {slot},
             inLoop, t.rowStride);
  };
  // K and V of one tile (a paged cache's table looked up once for both).
  auto loadKVTile = [&](Value nBlock, Value slot, bool inLoop) {
    SmallVector<PagedRow> lookups;
    if (spec.pagedKV)
      lookups = pagedLookups(nBlock);
    loadKV(kOperand, nBlock, slot, inLoop, lookups);
    loadKV(vOperand, nBlock, slot, inLoop, lookups);
  };
  auto tileOfIteration = [&](Value it) { return fk.tileOfIteration(e, it); };

  // ---- Q: global -> smem -> registers
  // --------------------------------------------
  copyTile(e, k.copier, tid, q, qSeqBase, qRowOffset, mStart, rowLimit, cfg.blockM,
           spec.headDimQK, L.paddedHeadDimQK, L.swizzleBitsQK, qSmem, {},
           /*inLoop=*/false);
  commitGroup(e);
  // Prefetch the first stages-1 K/V tiles (each its own group); one stage
  // prefetches the first tile into its only slot.
  const int prologueTiles = std::max(cfg.stages - 1, 1);
  for (int s = 0; s < prologueTiles; ++s) {
    e.ifThen(e.lt(e.idx(s), nBlocks), [&] {
      loadKVTile(tileOfIteration(e.idx(s)), e.idx(s), /*inLoop=*/false);
    });
    commitGroup(e);
  }
  // Wait for Q only (the K/V groups may stay in flight).
  waitGroups(e, prologueTiles);
  gpu::BarrierOp::create(builder, loc);

  // An ldmatrix of `tiles` 8x8 matrices, one register each.
  auto ldmatrix = [&](Emitter &x, Value view, ValueRange indices,
                      bool transpose, int tiles) -> Registers {
    return flashjit::ldmatrix(x, spec.dtype, view, indices, transpose, tiles);
  };
  fk.warpRow0 = e.mul(warp, e.idx(L.rowsPerWarp));
  // The operands' lane addressing (Sm80Ops.h).
  auto fragmentLanes = [&](Value row, Value chunk, int pitch, int bits) {
    return flashjit::fragmentLanes(e, lane, row, chunk, pitch, bits);
  };
  // Q (A operand): matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows
  // 0-7, k 8-15), (rows 8-15, k 8-15).
  const FragmentLanes qLanes =
      fragmentLanes(e.add(fk.warpRow0, e.rem(lane, 16)), e.div(lane, 16),
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
  auto fragmentViews = [&](Emitter &x, ArrayRef<int64_t> shape, int offsetBytes,
                           const FragmentLanes &f, int cols, bool inLoop) {
    return flashjit::fragmentViews(x, spec.dtype, dynSmem, shape, offsetBytes,
                                   f, cols, inLoop);
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

  fk.prepareScoreMods(k.mTiles);

  // ---- main loop
  // --------------------------------------------------------------
  // Loop-carried: the 4 values of each O[mt][dt], then m[mt][half], then
  // l[mt][half].
  SmallVector<Value> init = fk.softmaxInit(k.mTiles, k.dTilesV);
  Value negInfF = fk.negInfF, zeroF = fk.zeroF;
  const AccTile zeroAcc{zeroF, zeroF, zeroF, zeroF};
  const int oCount = k.mTiles * k.dTilesV, mOffset = 4 * oCount,
            lOffset = mOffset + 2 * k.mTiles;

  auto mma = [&](OpBuilder &b, ArrayRef<Value> a, ArrayRef<Value> bRegs,
                 const AccTile &c) -> AccTile {
    return mmaSync(b, loc, spec.dtype, a, bRegs, c);
  };
  // One K/V tile's work is built from the pieces below. The full kernel
  // runs them once on the whole tile; its quick form (cfg.quick) in
  // run-time loops over 16-key slices: a first pass for the row maxima, a
  // second that recomputes each slice's scores for P, its row sums and
  // P V. Every score, maximum, exponential, rounding and MMA is the same
  // operation on the same values in the same order (row sums add 16-key
  // slices in order in both), so both give the same results bit for bit.
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
            loadKVTile(tileOfIteration(ahead), slotAhead, /*inLoop=*/true);
          });
          commitGroup(le);
        }

        // ---- S = Q K^T ----
        const FragmentViews qViews =
            L.qInRegisters ? FragmentViews() : qFragments(le, /*inLoop=*/true);
        const FragmentViews kViews = fragmentViews(
            le, {cfg.stages, cfg.blockN, L.pitchQK}, L.kOffsetBytes, kLanes,
            L.paddedHeadDimQK, /*inLoop=*/true);
        auto unflattenTiles = [&](ValueRange flat, int nTiles) {
          return unflatten(flat, k.mTiles, nTiles);
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
                  auto rolled = unflattenTiles(carriedAcc, nTiles);
                  for (int ks = 0; ks < stepsPer; ++ks)
                    qkStep(y, ks, colOffset, keyRow0, rolled);
                  return flatten(rolled);
                });
            acc = unflattenTiles(last, nTiles);
          }
          for (int ks = rolledSteps; ks < k.kStepsQK; ++ks)
            qkStep(x, ks, Value(), keyRow0, acc);
          return acc;
        };

        // ---- mask the tiles that cross seqlen_k or a mask boundary ----
        Value tileStart, needsMask; // set by maskCondition
        auto maskCondition = [&] {
          needsMask = fk.tileNeedsMask(le, nBlock, tileStart);
        };
        auto applyMask = [&](Emitter &x, Value keyRow0, const Scores &acc) {
          return fk.applyMask(x, needsMask, tileStart, keyRow0, acc);
        };
        auto transform = [&](Emitter &x, Value keyRow0, Scores &acc) {
          fk.transform(x, nBlock, keyRow0, acc);
        };
        // The scores of `nTiles` key tiles from tile row `keyRow0`, ready
        // for the softmax.
        auto maskedScores = [&](Emitter &x, Value keyRow0, int nTiles) {
          Scores acc = scoresOf(x, keyRow0, nTiles);
          transform(x, keyRow0, acc);
          return applyMask(x, keyRow0, acc);
        };
        // ---- online softmax ----
        SmallVector<Value> next(carried.begin(), carried.end());
        ForwardKernel::SoftmaxStep sm(fk, le, carried, next, k.mTiles,
                                      k.dTilesV, L.rescaleOnNewMax);
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
              sm.updateMax(mt, half, threadMax[2 * mt + half]);
            if (!L.rescaleOnNewMax)
              sm.rescaleO(le, mt, carried, next);
          }
          if (L.rescaleOnNewMax)
            sm.rescaleWhereMaxMoved(b, l);
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
                  sm.exponentials(x, mt, s[mt], rowTerms, pRows);
                  for (int half = 0; half < 2; ++half)
                    sums.push_back(
                        x.fadd(c[mOffset + 2 * mt + half],
                               ForwardKernel::sliceSum(x, rowTerms[half])));
                  pOfTile.push_back(ForwardKernel::sliceOperand(pRows));
                }
                pvStep(x, vViews, keyRow0, pOfTile, out);
                out.append(sums);
                return out;
              });
          std::copy(passOut.begin(), passOut.begin() + mOffset, next.begin());
          for (int i = 0; i < 2 * k.mTiles; ++i)
            next[lOffset + i] =
                le.fma(carried[lOffset + i], sm.alphas[i / 2][i % 2],
                       passOut[mOffset + i]);
          if (cfg.stages == 1) {
            // Every warp is done with this tile's K and V.
            gpu::BarrierOp::create(b, l);
            Value following = le.add(it, le.idx(1));
            le.ifThen(le.lt(following, nBlocks), [&] {
              loadKVTile(tileOfIteration(following), le.idx(0),
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
          waitGroups(le, 0);            // V of this tile
          gpu::BarrierOp::create(b, l); // and every warp is done with K
          Value following = le.add(it, le.idx(1));
          le.ifThen(le.lt(following, nBlocks), [&] {
            loadKV(kOperand, tileOfIteration(following), le.idx(0),
                   /*inLoop=*/true);
          });
          commitGroup(le);
        }
        // A operands of P V: pFrag[mt][kk] (k-step kk of P).
        SmallVector<SmallVector<Registers>> pFrag = sm.softmaxTile(sAcc);
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
  // With 8- or 16-byte row chunks, O goes through this warp's own rows of
  // the Q tile in shared memory (no other warp reads them, so a warp
  // barrier suffices) and leaves as whole chunks: a warp writes full rows
  // instead of 4-byte pieces of 8 rows.
  const int oVec = copyElems(spec, spec.headDimV);
  const bool stageO = oVec * elementBytes(spec.dtype) >= 8 &&
                      L.paddedHeadDimV <= L.paddedHeadDimQK && !spec.splitKV;
  // The staged epilogue rebuilds this thread's coordinates from fresh
  // reads of %tid and %ctaid: otherwise LLVM keeps every derived value (warp
  // row, group, column pair, O base) live across the main loop, where the
  // accumulators need the registers (the direct stores of narrow-copy
  // kernels need fewer, and there ptxas did better without).
  if (stageO) {
    Value tidE = e.freshSreg("%tid.x");
    warp = e.div(tidE, kWarpSize);
    lane = e.rem(tidE, kWarpSize);
    fk.group = e.div(lane, 4);
    fk.inGroup = e.rem(lane, 4);
    fk.warpRow0 = e.mul(warp, e.idx(L.rowsPerWarp));
    auto [mBlockE, yBlockE, batchE] = fk.ctaCoordinates(/*fresh=*/true);
    fk.mStart = mStart = e.mul(mBlockE, e.idx(cfg.blockM));
    fk.yBlock = yBlockE;
    fk.batch = batchE;
    fk.kvHead = fk.packed ? fk.yBlock : e.div(fk.yBlock, fk.gqa);
    fk.oSeqBase = e.add(e.mul(fk.batch, fk.oBS), e.mul(fk.startQ, fk.oRS));
    NVVM::SyncWarpOp::create(builder, loc, e.i32(-1)); // last Q reads done
  }
  for (int mt = 0; mt < k.mTiles; ++mt)
    for (int half = 0; half < 2; ++half) {
      const ForwardKernel::FinalRow row = fk.finishRow(
          results[lOffset + 2 * mt + half], results[mOffset + 2 * mt + half]);
      Value query = fk.rowQuery(e, mt, half), head = fk.rowHead(e, mt, half);
      if (stageO) {
        Value stageRow = e.add(
            fk.warpRow0, e.add(e.idx(mt * kMmaM + half * 8), fk.group));
        for (int dt = 0; dt < k.dTilesV; ++dt) {
          const AccTile acc = tileAt(results, mt * k.dTilesV + dt);
          Value lo = e.fmul(acc[2 * half], row.inv);
          Value hi = e.fmul(acc[2 * half + 1], row.inv);
          Value pair = fk.roundPair(e, lo, hi);
          // Staged in the Q tile.
          vector::StoreOp::create(
              builder, loc, pair, qSmem,
              ValueRange{stageRow, swizzledCol(e, L.swizzleBitsQK, stageRow,
                                               fk.fragmentCol(dt))},
              /*nontemporal=*/false, llvm::MaybeAlign(4));
        }
      }
      auto inRange = scf::IfOp::create(
          builder, loc, e.lt(fk.rowIndex(e, mt, half), rowLimit), false);
      OpBuilder::InsertionGuard g(builder);
      builder.setInsertionPointToStart(&inRange.getThenRegion().front());
      if (spec.splitKV) { // this split's float32 partials
        fk.storePartialRow(results, mt, half, k.dTilesV, row, query, head);
        continue;
      }
      Value rowBase = fk.oRowBase(e, query, head);
      // Staged rows were written above.
      fk.storeRowDirect(results, mt, half, stageO ? 0 : k.dTilesV, rowBase,
                        row.inv);
      fk.storeLse(row, query, head);
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
      Value tileRow = x.add(fk.warpRow0, row);
      Value globalRow = x.add(mStart, tileRow);
      x.ifThen(x.lt(globalRow, rowLimit), [&] {
        const int chunkBytes = oVec * elementBytes(spec.dtype);
        Value val = vector::LoadOp::create(
            b, l, chunkType, qSmem,
            ValueRange{tileRow, swizzledCol(x, L.swizzleBitsQK, tileRow, col)},
            /*nontemporal=*/false, llvm::MaybeAlign(chunkBytes));
        Value idx = x.add(
            fk.oRowBase(x, fk.queryOf(x, globalRow), fk.headOf(x, globalRow)),
            col);
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
