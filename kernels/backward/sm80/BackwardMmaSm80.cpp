//===- BackwardMmaSm80.cpp - The backward's main kernel on mma.sync -------===//
//
// FlashAttention-2's backward (flash_bwd_kernel.h, the seqk-parallel form)
// on the forward's building blocks (Sm80Ops: cp.async tile copies into
// swizzled shared memory, ldmatrix, mma.sync m16n8k16; ForwardKernel: the
// sequence bounds, the score mods and the masks). One CTA per block_n keys
// of one K/V head (deterministic mode: key tiles x, x + gridDim.x, ...):
//
//   K, V -> shared memory (cp.async); dK = dV = 0 in registers
//   for every query head of the GQA group, every block of block_m queries
//   that sees the keys (queryBlockRange), Q and dO (and, for short steps,
//   the rows' LSE' and D) of the next step loading (cp.async, `stages`
//   copies) behind this one's products:
//     S  = Q K^T, dP = dO V^T               (one warp grid, registers)
//     P  = exp2(S' - LSE')                  (S': scale, softcap, bias; the
//                                            forward's masks where a tile
//                                            crosses them)
//     dS = P (dP - D)  (dBias = dS; then * (1 - tanh^2) under softcap)
//     P, dS -> shared memory, rounded to the input dtype
//     dV += P^T dO, dK += dS^T Q            (ldmatrix.trans of P, dS, dO, Q)
//     dQ  = dS K                            (ldmatrix.trans of K), added to
//                                            the workspace: float32 atomics,
//                                            or, deterministic, plain adds
//                                            into this CTA's partial sum
//   dK * scale and dV stored, rounded; key padding rows 0.
//
// Each product has its own warp grid (BackwardLayout): S and dP share one
// (dS pairs their elements), the others read their operands from shared
// memory. Rows past seqlen_q have LSE' = +inf and D = 0, so their P and dS
// are 0 and they add nothing; K, V, Q and dO rows and columns past the
// tensors are zeros in shared memory.
//
//===----------------------------------------------------------------------===//
#include "backward/BackwardEntry.h"
#include "common/Sm80Ops.h"

#include "flashjit/kernels/LayoutSm80.h"

#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <limits>

using namespace mlir;

namespace flashjit {
namespace {

/// A warp's block of one product (its WarpGrid): rows [row0, row0 + 16
/// mTiles) x columns [col0, col0 + 8 nTiles).
struct WarpBlock {
  Value row0, col0;
  int mTiles = 0, nTiles = 0;
};
WarpBlock warpBlock(Emitter &x, Value warp, const WarpGrid &g) {
  return {x.mul(x.rem(warp, g.warpsM), x.idx(g.rows)),
          x.mul(x.div(warp, g.warpsM), x.idx(g.cols)), g.rows / kMmaM,
          g.cols / kMmaN};
}

/// One MMA operand in a shared-memory tile, read by ldmatrix x4 through its
/// fragment views (Sm80Ops.h).
struct TileOperand {
  DType dtype;
  FragmentViews views;
  SmallVector<Value, 1> prefix; ///< the stage, for Q and dO
  bool transpose = false;

  /// The four 8x8 matrices whose lane rows start at tile row `row` and
  /// columns at `col` (constants: multiples of 16).
  Registers load(Emitter &x, int row, int col) const {
    auto [view, c] = views.at(col);
    SmallVector<Value, 3> indices(prefix.begin(), prefix.end());
    indices.push_back(x.idx(row));
    indices.push_back(x.idx(c));
    return ldmatrix(x, dtype, view, indices, transpose, /*tiles=*/4);
  }
};

/// acc[mt][nt] += sum over k-steps ks of A(mt, ks) B(ks, nt): `a(mt, ks)`
/// gives the A fragment of rows 16 mt.. and k 16 ks..; `b(np, ks)` the B
/// fragments of n8 tiles 2 np (registers 0-1) and 2 np + 1 (2-3).
void product(Emitter &x, DType dtype, Scores &acc, int kSteps,
             function_ref<Registers(int, int)> a,
             function_ref<Registers(int, int)> b) {
  const int mTiles = acc.size(), nTiles = acc.front().size();
  for (int ks = 0; ks < kSteps; ++ks) {
    SmallVector<Registers> aRegs;
    for (int mt = 0; mt < mTiles; ++mt)
      aRegs.push_back(a(mt, ks));
    for (int np = 0; np < nTiles / 2; ++np) {
      Registers bRegs = b(np, ks);
      ArrayRef<Value> b0 = ArrayRef<Value>(bRegs).take_front(2);
      ArrayRef<Value> b1 = ArrayRef<Value>(bRegs).drop_front(2);
      for (int mt = 0; mt < mTiles; ++mt) {
        acc[mt][2 * np] = mmaSync(x.b, x.loc, dtype, aRegs[mt], b0,
                                  acc[mt][2 * np]);
        acc[mt][2 * np + 1] = mmaSync(x.b, x.loc, dtype, aRegs[mt], b1,
                                      acc[mt][2 * np + 1]);
      }
    }
  }
}

/// Whether this warp takes part in grid `g` of a kernel of `warps` warps
/// (null: every warp does).
Value inGrid(Emitter &x, Value warp, const WarpGrid &g, int warps) {
  return g.warps() == warps ? Value() : x.lt(warp, x.idx(g.warps()));
}

/// `update` of `acc` on the warps where `cond` holds (every warp when it is
/// null); the others keep `acc`.
void updateWhere(Emitter &x, Value cond, Scores &acc,
                 function_ref<void(Scores &)> update) {
  if (!cond)
    return update(acc);
  const int mTiles = acc.size(), nTiles = acc.front().size();
  auto ifOp = scf::IfOp::create(
      x.b, x.loc, cond,
      [&](OpBuilder &tb, Location tl) {
        Scores updated = acc;
        update(updated);
        scf::YieldOp::create(tb, tl, flatten(updated));
      },
      [&](OpBuilder &eb, Location el) {
        scf::YieldOp::create(eb, el, flatten(acc));
      });
  acc = unflatten(ifOp.getResults(), mTiles, nTiles);
}

Scores zeroTiles(Emitter &x, const WarpBlock &w) {
  Value zero = x.f32(0);
  return Scores(w.mTiles, SmallVector<AccTile>(w.nTiles, {zero, zero, zero,
                                                          zero}));
}

} // namespace

void buildMainMma(OpBuilder &builder, gpu::GPUModuleOp module, StringRef name,
                  const AttentionSpec &spec, const TileConfig &cfg) {
  const BackwardLayout L = backwardLayoutSm80(spec, cfg);
  const int T = L.threads;
  Entry k(builder, module, name, spec, cfg, T);
  ForwardKernel &fk = k.fk;
  BackwardArgs &a = k.a;
  Emitter &e = k.e;
  Location loc = fk.loc;
  const DType dtype = spec.dtype;
  const int bm = cfg.blockM, bn = cfg.blockN;
  const int dqk = spec.headDimQK, dv = spec.headDimV;
  const int pdqk = L.paddedHeadDimQK, pdv = L.paddedHeadDimV;
  const int gqa = spec.gqaGroup;
  const int stages = cfg.stages;
  const double inf = std::numeric_limits<double>::infinity();

  Value xBlock = gpu::BlockIdOp::create(builder, loc, gpu::Dimension::x);
  Value xCount = gpu::GridDimOp::create(builder, loc, gpu::Dimension::x);
  Value keyRows = k.locateKeyTile(spec);
  fk.rowLimit = fk.seqQ; // the last query of a block (tileNeedsMask)
  fk.prepareScoreMods(/*mTiles=*/0);
  fk.negInfF = e.f32(-inf);
  fk.zeroF = e.f32(0);
  // The deterministic mode's CTA x adds into partial sum x alone.
  Value split = spec.deterministic ? xBlock : e.idx(0);

  // ---- shared memory
  auto smemSpace = gpu::AddressSpaceAttr::get(
      builder.getContext(), gpu::GPUDialect::getWorkgroupAddressSpace());
  Value dynSmem = gpu::DynamicSharedMemoryOp::create(
      builder, loc,
      MemRefType::get({ShapedType::kDynamic}, builder.getI8Type(), AffineMap(),
                      smemSpace));
  Type elemTy = fk.elemTy;
  auto view = [&](ArrayRef<int64_t> shape, int offsetBytes) -> Value {
    auto type = MemRefType::get(shape, elemTy, AffineMap(), smemSpace);
    return memref::ViewOp::create(builder, loc, type, dynSmem,
                                  e.idx(offsetBytes), ValueRange{});
  };
  const SmallVector<int64_t> kShape{bn, pdqk}, vShape{bn, pdv};
  const SmallVector<int64_t> qShape{stages, bm, pdqk}, dOShape{stages, bm, pdv};
  const SmallVector<int64_t> pShape{bm, L.pitchPdS};
  Value kS = view(kShape, L.kOffset), vS = view(vShape, L.vOffset);
  Value qS = view(qShape, L.qOffset), dOS = view(dOShape, L.dOOffset);
  Value pS = view(pShape, L.pOffset), dSS = view(pShape, L.dSOffset);
  // LSE' (row 0) and D (row 1) of each stage's query rows: copied with Q
  // and dO, so that no step waits on a global load of them.
  Value rowValsS;
  if (L.stagedRowValues)
    rowValsS = memref::ViewOp::create(
        builder, loc,
        MemRefType::get({2, stages, bm}, fk.f32, AffineMap(), smemSpace),
        dynSmem, e.idx(L.lseOffset), ValueRange{});
  auto barrier = [&](Emitter &x) { gpu::BarrierOp::create(x.b, x.loc); };

  const TileCopier copier{spec, T, /*quick=*/false};
  // Rows [first, first + rows) of a tensor of row stride `rowStride` from
  // element `base` into `dst` (rows past `limit` and columns past `dim` as
  // zeros).
  auto copyRows = [&](Emitter &x, Value src, Value base, Value rowStride,
                      Value first, Value limit, int rows, int dim,
                      int paddedDim, int bits, Value dst,
                      ArrayRef<Value> prefix, bool inLoop) {
    auto rowOffset = [&](Emitter &y, Value r) { return y.mul(r, rowStride); };
    copyTile(x, copier, k.tid, src, base, rowOffset, first, limit, rows, dim,
             paddedDim, bits, dst, prefix, inLoop, rowStride);
  };
  // Q and dO of query block `mBlock` of head `head` into stage `slot`.
  auto loadQdO = [&](Emitter &x, Value head, Value mBlock, Value slot) {
    Value first = x.mul(mBlock, x.idx(bm));
    Value qBase = x.add(x.add(x.mul(fk.batch, fk.qBS), x.mul(head, fk.qHS)),
                        x.mul(fk.startQ, fk.qRS));
    copyRows(x, fk.q, qBase, fk.qRS, first, fk.seqQ, bm, dqk, pdqk,
             L.swizzleBitsQK, qS, {slot}, /*inLoop=*/true);
    Value dOBase = x.add(x.add(x.mul(fk.batch, a.dOBS), x.mul(head, a.dOHS)),
                         x.mul(fk.startQ, a.dORS));
    copyRows(x, a.dO, dOBase, a.dORS, first, fk.seqQ, bm, dv, pdv,
             L.swizzleBitsV, dOS, {slot}, /*inLoop=*/true);
    if (L.stagedRowValues)
      k.stageRowValues(x, rowValsS, head, first, slot, bm, T);
  };

  Value keyTiles = e.div(e.add(keyRows, e.idx(bn - 1)), bn);
  const int dvTiles = L.dv.rows / kMmaM * (L.dv.cols / kMmaN);
  const int dkTiles = L.dk.rows / kMmaM * (L.dk.cols / kMmaN);
  // CTA x takes key tiles x, x + gridDim.x, ... (one of them outside
  // deterministic mode, where the grid has a CTA per tile).
  scf::ForOp::create(
      builder, loc, xBlock, keyTiles, xCount, ValueRange{},
      [&](OpBuilder &nb, Location nl, Value nBlock, ValueRange) {
        Emitter x{nb, nl};
        Value keyLo = x.mul(nBlock, x.idx(bn));
        barrier(x); // every warp is done with the previous tile's K and V
        Value kvBase =
            x.add(x.mul(fk.batch, fk.kBS), x.mul(fk.startK, fk.kRS));
        copyRows(x, fk.kT, x.add(kvBase, x.mul(fk.kvHead, fk.kHS)), fk.kRS,
                 keyLo, fk.seqK, bn, dqk, pdqk, L.swizzleBitsQK, kS, {},
                 /*inLoop=*/false);
        Value vBase = x.add(
            x.add(x.mul(fk.batch, fk.vBS), x.mul(fk.startK, fk.vRS)),
            x.mul(fk.kvHead, fk.vHS));
        copyRows(x, fk.v, vBase, fk.vRS, keyLo, fk.seqK, bn, dv, pdv,
                 L.swizzleBitsV, vS, {}, /*inLoop=*/false);
        commitGroup(x);
        const StepWalk walk = StepWalk::of(fk, x, nBlock, gqa);
        Value steps = walk.steps;
        x.ifThen(x.gt(steps, x.idx(0)), [&] {
          loadQdO(x, walk.firstHead, walk.loM, x.idx(0));
        });
        commitGroup(x);

        SmallVector<Value> init(4 * (dvTiles + dkTiles), x.f32(0));
        init.push_back(walk.loM);
        init.push_back(walk.firstHead);
        auto stepLoop = x.runtimeLoop(
            x.idx(0), steps, 1, init,
            [&](Emitter &s, Value it, ValueRange carried) {
              Value mBlock = carried[4 * (dvTiles + dkTiles)];
              Value head = carried[4 * (dvTiles + dkTiles) + 1];
              const auto [nextM, nextHead] = walk.next(s, mBlock, head);
              Value following = s.add(it, s.idx(1));
              Value slot = stages == 1 ? s.idx(0) : s.rem(it, stages);
              // ---- this step's Q and dO have landed; with two stages the
              // next step's load into the other (last read one step ago).
              waitGroups(s, 0);
              barrier(s);
              if (stages > 1) {
                s.ifThen(s.lt(following, steps), [&] {
                  loadQdO(s, nextHead, nextM,
                          s.rem(following, stages));
                });
                commitGroup(s);
              }

              // ---- the thread's coordinates, read afresh: values kept
              // across the loop cost registers the accumulators need.
              Value tid = s.freshSreg("%tid.x");
              Value warp = s.div(tid, kWarpSize);
              Value lane = s.rem(tid, kWarpSize);
              fk.group = s.div(lane, 4);
              fk.inGroup = s.rem(lane, 4);
              const WarpBlock sdp = warpBlock(s, warp, L.sdp);
              const WarpBlock dvW = warpBlock(s, warp, L.dv);
              const WarpBlock dkW = warpBlock(s, warp, L.dk);
              const WarpBlock dqW = warpBlock(s, warp, L.dq);
              Value qLo = s.mul(mBlock, s.idx(bm));
              fk.mStart = qLo;
              fk.warpRow0 = sdp.row0;
              fk.yBlock = head;
              // ldmatrix lane rows (Sm80Ops.h): A operands (rows 0-7, k
              // 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15); B operands
              // of two n8 tiles from [n][k] rows, and transposed A operands
              // from [k][row] rows, (0-7, 0-7), (0-7, 8-15), (8-15, 0-7),
              // (8-15, 8-15); transposed B operands from [k][n] rows (k 0-7,
              // n 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15).
              auto aLanes = [&](Value row0, int pitch, int bits) {
                return fragmentLanes(s, lane, s.add(row0, s.rem(lane, 16)),
                                     s.div(lane, 16), pitch, bits);
              };
              auto bLanes = [&](Value row0, int pitch, int bits) {
                return fragmentLanes(
                    s, lane,
                    s.add(row0, s.add(s.rem(lane, 8),
                                      s.mul(s.div(lane, 16), s.idx(8)))),
                    s.rem(s.div(lane, 8), 2), pitch, bits);
              };
              auto bTransLanes = [&](int pitch, int bits) {
                return fragmentLanes(
                    s, lane,
                    s.add(s.rem(lane, 8),
                          s.mul(s.rem(s.div(lane, 8), 2), s.idx(8))),
                    s.div(lane, 16), pitch, bits);
              };
              auto operand = [&](ArrayRef<int64_t> shape, int offset,
                                 const FragmentLanes &lanes, int cols,
                                 ArrayRef<Value> prefix, Value colOffset,
                                 bool transpose) {
                TileOperand op{dtype,
                               fragmentViews(s, dtype, dynSmem, shape, offset,
                                             lanes, cols, /*inLoop=*/true,
                                             colOffset),
                               SmallVector<Value, 1>(prefix.begin(),
                                                     prefix.end()),
                               transpose};
                return op;
              };

              // ---- the thread's S rows' LSE' (which 0, negated) or D
              // (which 1), `past` for rows past seqlen_q (-inf and 0: P =
              // dS = 0 there), from shared memory (stagedRowValues) or the
              // workspace. Read where used: values read early stay live
              // through a product.
              auto rowValues = [&](int which, bool negate, double past) {
                SmallVector<Value> vals;
                for (int mt = 0; mt < sdp.mTiles; ++mt)
                  for (int half = 0; half < 2; ++half) {
                    Value i = fk.rowIndex(s, mt, half);
                    Value v;
                    if (L.stagedRowValues) {
                      Value inBlock = s.add(
                          s.add(sdp.row0, s.idx(mt * kMmaM + half * 8)),
                          fk.group);
                      v = memref::LoadOp::create(
                          s.b, s.loc, rowValsS,
                          ValueRange{s.idx(which), slot, inBlock});
                    } else {
                      Value row = k.wsRow(
                          s, head, s.minS(i, s.sub(fk.seqQ, s.idx(1))));
                      v = k.loadF32(s, a.ws,
                                    s.add(k.rowArray(which), row));
                    }
                    if (negate)
                      v = arith::NegFOp::create(s.b, s.loc, v);
                    vals.push_back(
                        s.select(s.lt(i, fk.seqQ), v, s.f32(past)));
                  }
                return vals;
              };
              // S, dP, P and dS on the warps of their grid (all but where
              // block_m x block_n has fewer 16 x 16 blocks than warps).
              s.ifThen(inGrid(s, warp, L.sdp, cfg.warps), [&] {
              if (spec.bias == BiasMode::Alibi) {
                Value slope = memref::LoadOp::create(
                    s.b, s.loc, fk.alibiSlopes,
                    ValueRange{s.add(s.mul(fk.batch, fk.alibiBS), head)});
                Value slopeLog2 = s.fmul(slope, s.f32(kLog2e));
                fk.alibiLog2.assign(sdp.mTiles,
                                    SmallVector<Value>(2, slopeLog2));
              }

              // ---- S = Q K^T, P
              Scores sAcc = zeroTiles(s, sdp);
              {
                TileOperand qA = operand(qShape, L.qOffset,
                                         aLanes(sdp.row0, pdqk,
                                                L.swizzleBitsQK),
                                         pdqk, {slot}, Value(), false);
                TileOperand kB = operand(kShape, L.kOffset,
                                         bLanes(sdp.col0, pdqk,
                                                L.swizzleBitsQK),
                                         pdqk, {}, Value(), false);
                product(
                    s, dtype, sAcc, pdqk / kMmaK,
                    [&](int mt, int ks) {
                      return qA.load(s, mt * kMmaM, ks * kMmaK);
                    },
                    [&](int np, int ks) {
                      return kB.load(s, np * 2 * kMmaN, ks * kMmaK);
                    });
              }
              const SmallVector<Value> negLse =
                  rowValues(0, /*negate=*/true, -inf);
              Scores tanhS;
              fk.transform(s, nBlock, sdp.col0, sAcc,
                           spec.softcap ? &tanhS : nullptr);
              Value tileStart;
              Value needsMask = fk.tileNeedsMask(s, nBlock, tileStart);
              sAcc = fk.applyMask(s, needsMask, tileStart, sdp.col0, sAcc);
              Scores p = sAcc;
              for (int mt = 0; mt < sdp.mTiles; ++mt)
                for (int nt = 0; nt < sdp.nTiles; ++nt)
                  for (int i = 0; i < 4; ++i) {
                    Value &v = p[mt][nt][i];
                    v = s.exp2(s.fma(v, fk.softmaxScale,
                                     negLse[2 * mt + i / 2]));
                  }

              // ---- dP = dO V^T, dS
              Scores dS = zeroTiles(s, sdp);
              {
                TileOperand dOA = operand(dOShape, L.dOOffset,
                                          aLanes(sdp.row0, pdv,
                                                 L.swizzleBitsV),
                                          pdv, {slot}, Value(), false);
                TileOperand vB = operand(vShape, L.vOffset,
                                         bLanes(sdp.col0, pdv,
                                                L.swizzleBitsV),
                                         pdv, {}, Value(), false);
                product(
                    s, dtype, dS, pdv / kMmaK,
                    [&](int mt, int ks) {
                      return dOA.load(s, mt * kMmaM, ks * kMmaK);
                    },
                    [&](int np, int ks) {
                      return vB.load(s, np * 2 * kMmaN, ks * kMmaK);
                    });
              }
              const SmallVector<Value> dSum =
                  rowValues(1, /*negate=*/false, 0);
              for (int mt = 0; mt < sdp.mTiles; ++mt)
                for (int nt = 0; nt < sdp.nTiles; ++nt)
                  for (int i = 0; i < 4; ++i) {
                    const int half = i / 2, el = i % 2;
                    Value &ds = dS[mt][nt][i];
                    ds = s.fmul(p[mt][nt][i],
                                s.fsub(ds, dSum[2 * mt + half]));
                    // dBias = dS before the softcap's derivative (the bias
                    // is added after the cap), for the sequence's pairs.
                    if (spec.biasGrad) {
                      Value query = fk.rowQuery(s, mt, half);
                      Value key = fk.keyOf(s, nBlock, sdp.col0, nt, el);
                      s.ifThen(s.andI(s.lt(query, fk.seqQ),
                                      s.lt(key, fk.seqK)),
                               [&] {
                                 k.store(s, ds, a.dBias,
                                         k.dBiasIndex(s, head, query, key));
                               });
                    }
                    if (spec.softcap) { // d(cap tanh(u))/du = cap (1 - tanh^2)
                      Value t = tanhS[mt][nt][i];
                      ds = s.fmul(ds, s.fsub(s.f32(1), s.fmul(t, t)));
                    }
                  }
              // P and dS, rounded, into shared memory: row half h of tile
              // (mt, nt) holds columns 2 inGroup, +1 of row 8 h + group.
              for (int mt = 0; mt < sdp.mTiles; ++mt)
                for (int half = 0; half < 2; ++half) {
                  Value row = s.add(s.add(sdp.row0, s.idx(mt * kMmaM + half * 8)),
                                    fk.group);
                  for (int nt = 0; nt < sdp.nTiles; ++nt) {
                    Value col =
                        s.add(s.add(sdp.col0, s.idx(nt * kMmaN)),
                              s.mul(fk.inGroup, s.idx(2)));
                    for (auto [tiles, dst] :
                         {std::pair{&p, pS}, std::pair{&dS, dSS}}) {
                      const AccTile &t = (*tiles)[mt][nt];
                      Value pair =
                          fk.roundPair(s, t[2 * half], t[2 * half + 1]);
                      vector::StoreOp::create(s.b, s.loc, pair, dst,
                                              ValueRange{row, col},
                                              /*nontemporal=*/false,
                                              llvm::MaybeAlign(4));
                    }
                  }
                }
              });
              barrier(s); // P and dS are whole

              // ---- dV += P^T dO, dK += dS^T Q
              Scores dVAcc = unflatten(carried.take_front(4 * dvTiles),
                                       dvW.mTiles, dvW.nTiles);
              Scores dKAcc =
                  unflatten(carried.slice(4 * dvTiles, 4 * dkTiles),
                            dkW.mTiles, dkW.nTiles);
              auto transposedProduct = [&](Scores &acc, const WarpBlock &w,
                                           int offsetBytes,
                                           ArrayRef<int64_t> bShape,
                                           int bOffset, int bPitch, int bBits) {
                TileOperand aT = operand(pShape, offsetBytes,
                                         bLanes(s.idx(0), L.pitchPdS, 0),
                                         w.mTiles * kMmaM, {}, w.row0, true);
                TileOperand bT = operand(bShape, bOffset,
                                         bTransLanes(bPitch, bBits), w.nTiles * kMmaN,
                                         {slot}, w.col0, true);
                product(
                    s, dtype, acc, bm / kMmaK,
                    [&](int mt, int ks) {
                      return aT.load(s, ks * kMmaK, mt * kMmaM);
                    },
                    [&](int np, int ks) {
                      return bT.load(s, ks * kMmaK, np * 2 * kMmaN);
                    });
              };
              // The regions' builders are `builder`, which `s` emits with:
              // the products land in the branches.
              updateWhere(s, inGrid(s, warp, L.dv, cfg.warps), dVAcc,
                          [&](Scores &acc) {
                            transposedProduct(acc, dvW, L.pOffset, dOShape,
                                              L.dOOffset, pdv,
                                              L.swizzleBitsV);
                          });
              updateWhere(s, inGrid(s, warp, L.dk, cfg.warps), dKAcc,
                          [&](Scores &acc) {
                            transposedProduct(acc, dkW, L.dSOffset, qShape,
                                              L.qOffset, pdqk,
                                              L.swizzleBitsQK);
                          });

              // ---- dQ = dS K, into the workspace
              s.ifThen(inGrid(s, warp, L.dq, cfg.warps), [&] {
              Scores dQAcc = zeroTiles(s, dqW);
              {
                TileOperand dSA = operand(pShape, L.dSOffset,
                                          aLanes(dqW.row0, L.pitchPdS, 0), bn,
                                          {}, Value(), false);
                TileOperand kT = operand(kShape, L.kOffset,
                                         bTransLanes(pdqk, L.swizzleBitsQK),
                                         dqW.nTiles * kMmaN, {}, dqW.col0, true);
                product(
                    s, dtype, dQAcc, bn / kMmaK,
                    [&](int mt, int ks) {
                      return dSA.load(s, mt * kMmaM, ks * kMmaK);
                    },
                    [&](int np, int ks) {
                      return kT.load(s, ks * kMmaK, np * 2 * kMmaN);
                    });
              }
              for (int mt = 0; mt < dqW.mTiles; ++mt)
                for (int half = 0; half < 2; ++half) {
                  Value query = s.add(
                      s.add(qLo, dqW.row0),
                      s.add(s.idx(mt * kMmaM + half * 8), fk.group));
                  s.ifThen(s.lt(query, fk.seqQ), [&] {
                    Value rowAt = k.dqIndex(s, split, head, query, s.idx(0));
                    for (int nt = 0; nt < dqW.nTiles; ++nt)
                      for (int el = 0; el < 2; ++el) {
                        Value col = s.add(
                            s.add(dqW.col0, s.idx(nt * kMmaN + el)),
                            s.mul(fk.inGroup, s.idx(2)));
                        Value sum = dQAcc[mt][nt][2 * half + el];
                        Value inCols =
                            dqk == pdqk ? Value() : s.lt(col, s.idx(dqk));
                        k.addDq(s, rowAt, col, sum, inCols);
                      }
                  });
                }
              });

              if (stages == 1) {
                barrier(s); // every warp is done with Q, dO, P and dS
                s.ifThen(s.lt(following, steps), [&] {
                  loadQdO(s, nextHead, nextM, s.idx(0));
                });
                commitGroup(s);
              }
              SmallVector<Value> next = flatten(dVAcc);
              next.append(flatten(dKAcc));
              next.push_back(nextM);
              next.push_back(nextHead);
              return next;
            });
        // No copy stays in flight past the tile (a tile no query sees
        // issued K and V and ran no step).
        waitGroups(x, 0);

        // ---- dK (times the scale) and dV of the tile's keys; key padding
        // (past key lengths) saw no query and stores 0.
        Value tid = x.freshSreg("%tid.x");
        Value warp = x.div(tid, kWarpSize);
        Value lane = x.rem(tid, kWarpSize);
        Value group = x.div(lane, 4), inGroup = x.rem(lane, 4);
        auto storeTiles = [&](ValueRange flat, const WarpGrid &g, int dim,
                              int paddedDim, Value dst, Value bs, Value hs,
                              Value rs, Value factor) {
          const WarpBlock w = warpBlock(x, warp, g);
          const Scores tiles = unflatten(flat, w.mTiles, w.nTiles);
          x.ifThen(inGrid(x, warp, g, cfg.warps), [&] {
            k.storeKeyTiles(x, tiles, x.add(keyLo, w.row0), w.col0, keyRows,
                            group, inGroup, dim, paddedDim, dst, bs, hs, rs,
                            factor);
          });
        };
        ValueRange results = stepLoop;
        storeTiles(results.take_front(4 * dvTiles), L.dv, dv, pdv, a.dV,
                   a.dVBS, a.dVHS, a.dVRS, Value());
        storeTiles(results.slice(4 * dvTiles, 4 * dkTiles), L.dk, dqk, pdqk,
                   a.dK, a.dKBS, a.dKHS, a.dKRS, a.scale);
        scf::YieldOp::create(nb, nl);
      });
  k.finish();
}

} // namespace flashjit
