//===- BackwardSm90.cpp - The backward's main kernel on wgmma (sm_90a) ----===//
//
// FlashAttention-3's backward products (hopper/mainloop_bwd_sm90_tma_gmma_ws
// with SdP_swapAB: the scores come out transposed, keys as wgmma's M, so
// that P^T and dS^T are A operands in registers) on the sm80 backward's
// frame (one CTA per block_n keys of one K/V head, every query head of the
// group and every block of 64 queries that sees the keys; the shared
// preprocess and dQ conversion entries). Warpgroup w owns keys
// [64 w, 64 w + 64) of the tile:
//
//   K, V -> shared memory (128-byte-swizzled 64-column boxes, wgmma's
//   layout); dK = dV = 0 in registers
//   per step (64 queries of one head; Q, dO, LSE' and D of the next step
//   loading behind this one's products), in sub-steps of 64, 32 or 16
//   queries:
//     S^T  = K_w Q^T, dP^T = V_w dO^T     wgmma from shared memory
//     P^T  = exp2(S^T' - LSE'), masked (S^T': scale, softcap, bias);
//     dS^T = P^T (dP^T - D), 0 where P^T (then * (1 - tanh^2) under softcap)
//     dV_w += P^T dO, dK_w += dS^T Q      wgmma with A from registers, B
//                                         (dO, Q) MN-major
//     dS^T -> shared memory as dS [query][key], rounded
//     dQ   = dS K                         wgmma from shared memory (K
//                                         MN-major), each warpgroup its own
//                                         keys (or columns); each warp's
//                                         rows through shared memory into
//                                         the workspace by bulk reductions
//                                         (deterministic: one warpgroup,
//                                         into this CTA's partial)
//   dK * scale and dV stored, rounded; key padding rows 0.
//
// Past d = 128 (splitColumns) the two warpgroups share the CTA's 64 keys:
// both compute the step's S^T, P^T, dP^T and dS^T (2 of every 7 wgmma
// FLOPs repeated), warpgroup w accumulates dK and dV over its own whole
// boxes of columns (B from its boxes of Q and dO), stores half of dS's
// rows, and adds dQ = dS K over its boxes, one box at a time. Q, K and dO
// keep an even number of boxes; the padding ones are zeroed once.
//
// Loads: where every row starts 16-byte aligned, thread 0 issues TMA
// (mbarriers: K and V's, one per stage for Q and dO; rows past a sequence
// are a neighbour's or zeros, masked out of P^T and dS^T); otherwise every
// thread copies by cp.async (zeros past the tensors). No warp
// specialisation yet: every thread computes. LSE' and D come by cp.async.
//
//===----------------------------------------------------------------------===//
#include "backward/sm90/BackwardSm90.h"
#include "backward/BackwardEntry.h"
#include "common/Sm80Ops.h"
#include "common/Sm90Ops.h"

#include "flashjit/kernels/LayoutSm90.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"

#include <functional>
#include <limits>

using namespace mlir;

namespace flashjit {
namespace {

constexpr int kMmaTileN = 8;

/// The k16 step `ks` of a K-major operand in 64-column boxes `boxBytes`
/// apart: box ks / 4, 32 bytes further per step in it.
std::function<int64_t(int)> kMajorSteps(int boxBytes) {
  return [boxBytes](int ks) -> int64_t {
    return int64_t(ks / 4) * boxBytes + (ks % 4) * 32;
  };
}

void buildMain(OpBuilder &builder, gpu::GPUModuleOp module, StringRef name,
               const AttentionSpec &spec, const TileConfig &cfg) {
  const BackwardSm90Layout L = backwardLayoutSm90(spec, cfg);
  const int T = L.threads;
  MLIRContext *ctx = builder.getContext();
  // With TMA: Q's, K's, V's and dO's tensor maps after the backward's
  // arguments, __grid_constant__.
  constexpr int kMaps = 4;
  Entry k(builder, module, name, spec, cfg, T,
          SmallVector<Type>(L.tma ? kMaps : 0, LLVM::LLVMPointerType::get(ctx)));
  ForwardKernel &fk = k.fk;
  BackwardArgs &a = k.a;
  Emitter &e = k.e;
  Location loc = fk.loc;
  if (L.tma) {
    constexpr int first = kForwardKernelArgCount + kBackwardArgCount;
    fk.func->setAttr(
        "flashjit.grid_constant_args",
        builder.getDenseI32ArrayAttr({first, first + 1, first + 2, first + 3}));
  }
  const DType dtype = spec.dtype;
  const int bm = cfg.blockM, bn = cfg.blockN;
  const int dqk = spec.headDimQK, dv = spec.headDimV;
  const int gqa = spec.gqaGroup, stages = cfg.stages;

  Value xBlock = gpu::BlockIdOp::create(builder, loc, gpu::Dimension::x);
  Value xCount = gpu::GridDimOp::create(builder, loc, gpu::Dimension::x);
  Value keyRows = k.locateKeyTile(spec);
  fk.rowLimit = fk.seqQ;
  fk.prepareScoreMods(/*mTiles=*/0);
  // The deterministic mode's CTA x adds into partial sum x alone.
  Value split = spec.deterministic ? xBlock : e.idx(0);

  // ---- shared memory: boxes of 64 columns, 128 bytes a row
  const sm90::Window smem = sm90::Window::create(
      builder, loc, module, L.sharedMemBytes, L.barrierOffset,
      L.barrierCount);
  auto smemSpace = gpu::AddressSpaceAttr::get(
      ctx, gpu::GPUDialect::getWorkgroupAddressSpace());
  auto tiles = [&](ArrayRef<int64_t> shape, Type elem, int offset) {
    return smem.view(e, MemRefType::get(shape, elem, AffineMap(), smemSpace),
                     e.idx(offset));
  };
  Type elemTy = fk.elemTy;
  Value kS = tiles({L.boxesQK, bn, kTmaBoxCols}, elemTy, L.kOffset);
  Value vS = tiles({L.boxesV, bn, kTmaBoxCols}, elemTy, L.vOffset);
  Value qS = tiles({stages, L.boxesQK, bm, kTmaBoxCols}, elemTy, L.qOffset);
  Value dOS = tiles({stages, L.boxesV, bm, kTmaBoxCols}, elemTy, L.dOOffset);
  Value dSS = tiles({bn / kTmaBoxCols, bm, kTmaBoxCols}, elemTy, L.dSOffset);
  Value rowValsS = tiles({2, stages, bm}, fk.f32, L.rowValuesOffset);
  // The window as float32 (dQ's rows), its shared address and the
  // workspace's global one (the bulk adds take addresses).
  Value dQS = tiles({L.sharedMemBytes / 4}, fk.f32, 0);
  auto toI64 = [](Emitter &y, Value v) -> Value {
    return arith::IndexCastOp::create(y.b, y.loc, y.b.getI64Type(), v);
  };
  Value smemBase = arith::IndexCastOp::create(builder, loc,
                                              builder.getIndexType(),
                                              smem.address);
  Value wsAddress =
      memref::ExtractAlignedPointerAsIndexOp::create(builder, loc, a.ws);
  auto barrier = [&](Emitter &x) { gpu::BarrierOp::create(x.b, x.loc); };

  // ---- TMA: thread 0 initialises the barriers (K and V's, then one per
  // stage for Q and dO, one arrival each: the expect_tx) and issues every
  // load.
  const Type qBox = sm90::tmaBoxType(ctx, elemTy, bm);
  const Type kBox = sm90::tmaBoxType(ctx, elemTy, bn);
  SmallVector<Value> maps;
  // Split columns: the second warpgroup's boxes past the head dims are
  // zeros, stored once (no load writes them) and fenced for wgmma; the
  // barrier after the TMA set-up orders them (split columns load by TMA).
  if (L.splitColumns) {
    SmallVector<std::pair<int, int>> padding; // byte offset, bytes
    auto pad = [&](int at, int boxes, int stored, int boxBytes) {
      if (stored > boxes)
        padding.push_back({at + boxes * boxBytes, (stored - boxes) * boxBytes});
    };
    pad(L.kOffset, L.boxesQK, L.storedBoxesQK, L.kBoxBytes);
    for (int st = 0; st < stages; ++st) {
      pad(L.qOffset + st * L.qStageBytes, L.boxesQK, L.storedBoxesQK,
          L.qBoxBytes);
      pad(L.dOOffset + st * L.dOStageBytes, L.boxesV, L.storedBoxesV,
          L.qBoxBytes);
    }
    Value zeros = arith::ConstantOp::create(
        builder, loc,
        DenseElementsAttr::get(VectorType::get({4}, fk.f32),
                               builder.getF32FloatAttr(0)));
    for (auto [at, bytes] : padding)
      for (int i = 0; i < bytes / (16 * T); ++i)
        vector::StoreOp::create(builder, loc, zeros, dQS,
                                ValueRange{e.add(e.idx(at / 4 + 4 * T * i),
                                                 e.mul(k.tid, e.idx(4)))},
                                /*nontemporal=*/false, llvm::MaybeAlign(16));
    sm90::fenceAsyncShared(e);
  }
  if (L.tma) {
    maps = {sm90::tensorMap(e, fk.extraArg(kBackwardArgCount), qBox),
            sm90::tensorMap(e, fk.extraArg(kBackwardArgCount + 1), kBox),
            sm90::tensorMap(e, fk.extraArg(kBackwardArgCount + 2), kBox),
            sm90::tensorMap(e, fk.extraArg(kBackwardArgCount + 3), qBox)};
    e.ifThen(e.cmp(arith::CmpIPredicate::eq, k.tid, e.idx(0)), [&] {
      for (int i = 0; i < L.barrierCount; ++i)
        nvgpu::MBarrierInitOp::create(builder, loc, smem.barriers, e.idx(1),
                                      e.idx(i), Value());
      sm90::fenceAsyncShared(e);
    });
    barrier(e);
  }
  Value kvFull = e.idx(0);
  auto stepFull = [&](Emitter &x, Value slot) {
    return x.add(slot, x.idx(1));
  };
  // Varlen tensors are one batch of packed rows: TMA addresses the rows.
  Value batchCoord = spec.varlen ? e.idx(0) : fk.batch;
  auto onThread0 = [&](Emitter &x, function_ref<void()> body) {
    x.ifThen(x.cmp(arith::CmpIPredicate::eq, x.freshSreg("%tid.x"),
                   x.idx(0)),
             body);
  };
  // TMA loads of the 64-column boxes of rows [row, row + rows) of `head`
  // from `map` into the boxes `boxBytes` apart from window byte `at`,
  // completing on barrier `full` (which expects `boxes` x boxBytes).
  auto tmaBoxes = [&](Emitter &x, Value map, Type box, int boxes,
                      int boxBytes, Value at, Value row, Value head,
                      Value full) {
    for (int b = 0; b < boxes; ++b)
      nvgpu::TmaAsyncLoadOp::create(
          x.b, x.loc, smem.view(x, box, x.add(at, x.idx(b * boxBytes))),
          smem.barriers, map,
          ValueRange{x.idx(b * kTmaBoxCols), row, head, batchCoord}, full,
          /*multicastMask=*/Value(), /*predicate=*/Value());
  };
  auto expectBytes = [&](Emitter &x, Value full, int bytes) {
    nvgpu::MBarrierArriveExpectTxOp::create(x.b, x.loc, smem.barriers,
                                            x.idx(bytes), full, Value());
  };

  const TileCopier copier{spec, T, /*quick=*/false};
  // Rows [first, first + rows) of a tensor of row stride `rowStride` from
  // element `base` into the boxes of `dst` (after `prefix`): box b takes
  // columns [64 b, 64 b + 64), those past `dim` and rows past `limit` as
  // zeros.
  auto copyBoxes = [&](Emitter &x, Value src, Value base, Value rowStride,
                       Value first, Value limit, int rows, int dim,
                       Value dst, ArrayRef<Value> prefix, bool inLoop) {
    auto rowOffset = [&](Emitter &y, Value r) { return y.mul(r, rowStride); };
    sm90::copyBoxes(x, copier, k.tid, src, base, rowOffset, first, limit, rows,
                    dim, dst, prefix, /*firstBox=*/Value(), inLoop, rowStride);
  };
  // Q, dO, LSE' and D of query block `mBlock` of head `head` into `slot`
  // (LSE' and D by cp.async: one commit group).
  auto loadStep = [&](Emitter &x, Value head, Value mBlock, Value slot) {
    Value first = x.mul(mBlock, x.idx(bm));
    if (L.tma) {
      onThread0(x, [&] {
        Value full = stepFull(x, slot);
        expectBytes(x, full, (L.boxesQK + L.boxesV) * L.qBoxBytes);
        Value row = x.add(fk.startQ, first);
        tmaBoxes(x, maps[0], qBox, L.boxesQK, L.qBoxBytes,
                 x.add(x.idx(L.qOffset), x.mul(slot, x.idx(L.qStageBytes))),
                 row, head, full);
        tmaBoxes(x, maps[3], qBox, L.boxesV, L.qBoxBytes,
                 x.add(x.idx(L.dOOffset), x.mul(slot, x.idx(L.dOStageBytes))),
                 row, head, full);
      });
      k.stageRowValues(x, rowValsS, head, first, slot, bm, T);
      return;
    }
    Value qBase = x.add(x.add(x.mul(fk.batch, fk.qBS), x.mul(head, fk.qHS)),
                        x.mul(fk.startQ, fk.qRS));
    copyBoxes(x, fk.q, qBase, fk.qRS, first, fk.seqQ, bm, dqk, qS, {slot},
              /*inLoop=*/true);
    Value dOBase = x.add(x.add(x.mul(fk.batch, a.dOBS), x.mul(head, a.dOHS)),
                         x.mul(fk.startQ, a.dORS));
    copyBoxes(x, a.dO, dOBase, a.dORS, first, fk.seqQ, bm, dv, dOS, {slot},
              /*inLoop=*/true);
    k.stageRowValues(x, rowValsS, head, first, slot, bm, T);
  };
  // Step `step` (counted over the CTA's key tiles) has landed in `slot`:
  // its TMA loads completed the slot's barrier for the step / stages-th
  // time; cp.async writes through the generic proxy, wgmma reads through
  // the async one, so each thread fences its landed copies before the
  // barrier.
  auto landed = [&](Emitter &x, Value step, Value slot) {
    waitGroups(x, 0);
    if (L.tma)
      smem.waitParity(x, stepFull(x, slot),
                      sm90::parity(x, x.div(step, stages)));
    else
      sm90::fenceAsyncShared(x);
    barrier(x);
  };

  const int dvRegs = L.dvN / 2, dkRegs = L.dkN / 2;
  Value keyTiles = e.div(e.add(keyRows, e.idx(bn - 1)), bn);
  // CTA x takes key tiles x, x + gridDim.x, ... (one of them outside
  // deterministic mode, where the grid has a CTA per tile).
  // The tile loop carries the steps run so far: a step's slot and barrier
  // phase count over every tile of the CTA.
  scf::ForOp::create(
      builder, loc, xBlock, keyTiles, xCount, ValueRange{e.idx(0)},
      [&](OpBuilder &nb, Location nl, Value nBlock, ValueRange tileCarried) {
        Emitter x{nb, nl};
        Value stepBase = tileCarried[0];
        Value keyLo = x.mul(nBlock, x.idx(bn));
        barrier(x); // every warpgroup is done with the previous K and V
        if (L.tma) {
          onThread0(x, [&] {
            expectBytes(x, kvFull, (L.boxesQK + L.boxesV) * L.kBoxBytes);
            Value row = x.add(fk.startK, keyLo);
            tmaBoxes(x, maps[1], kBox, L.boxesQK, L.kBoxBytes,
                     x.idx(L.kOffset), row, fk.kvHead, kvFull);
            tmaBoxes(x, maps[2], kBox, L.boxesV, L.kBoxBytes,
                     x.idx(L.vOffset), row, fk.kvHead, kvFull);
          });
        } else {
          Value kBase = x.add(
              x.add(x.mul(fk.batch, fk.kBS), x.mul(fk.startK, fk.kRS)),
              x.mul(fk.kvHead, fk.kHS));
          copyBoxes(x, fk.kT, kBase, fk.kRS, keyLo, fk.seqK, bn, dqk, kS, {},
                    /*inLoop=*/false);
          Value vBase = x.add(
              x.add(x.mul(fk.batch, fk.vBS), x.mul(fk.startK, fk.vRS)),
              x.mul(fk.kvHead, fk.vHS));
          copyBoxes(x, fk.v, vBase, fk.vRS, keyLo, fk.seqK, bn, dv, vS, {},
                    /*inLoop=*/false);
        }
        commitGroup(x);
        const StepWalk walk = StepWalk::of(fk, x, nBlock, gqa);
        Value steps = walk.steps;
        // One stage: slot 0 through an opaque move, else LLVM hoists every
        // slot-dependent shared address out of the step loop into
        // registers (30 more; 432 bytes of spill at d = 128).
        auto slotOf = [&](Emitter &y, Value step) {
          if (stages > 1)
            return y.rem(step, stages);
          return y.toIndex(
              y.asmMov(y.b.getI32Type(), "mov.u32 $0, 0;", "=r"));
        };
        x.ifThen(x.gt(steps, x.idx(0)), [&] {
          loadStep(x, walk.firstHead, walk.loM, slotOf(x, stepBase));
        });
        commitGroup(x);
        // K and V have landed (the tile's (nBlock - x) / gridDim.x-th use
        // of their barrier), whether or not a step reads them.
        if (L.tma)
          smem.waitParity(
              x, kvFull,
              sm90::parity(x, arith::DivUIOp::create(
                                     x.b, x.loc, x.sub(nBlock, xBlock),
                                     xCount)));

        SmallVector<Value> init(dvRegs + dkRegs, x.f32(0));
        init.push_back(walk.loM);
        init.push_back(walk.firstHead);
        auto stepLoop = x.runtimeLoop(
            x.idx(0), steps, 1, init,
            [&](Emitter &s, Value it, ValueRange carried) {
              Value mBlock = carried[dvRegs + dkRegs];
              Value head = carried[dvRegs + dkRegs + 1];
              const auto [nextM, nextHead] = walk.next(s, mBlock, head);
              Value following = s.add(it, s.idx(1));
              Value step = s.add(stepBase, it);
              Value slot = slotOf(s, step);
              // ---- this step's tiles have landed (and the previous step's
              // products are done everywhere); two stages: the next step's
              // copies into the other.
              landed(s, step, slot);
              if (stages > 1) {
                s.ifThen(s.lt(following, steps), [&] {
                  loadStep(s, nextHead, nextM,
                           slotOf(s, s.add(step, s.idx(1))));
                });
                commitGroup(s);
              }

              Value tid = s.freshSreg("%tid.x");
              Value wg = s.div(tid, kWarpgroupThreads);
              Value warpInWg = s.rem(s.div(tid, kThreadsPerWarp), 4);
              Value lane = s.rem(tid, kThreadsPerWarp);
              Value group = s.div(lane, 4), inGroup = s.rem(lane, 4);
              Value qLo = s.mul(mBlock, s.idx(bm));
              auto at = [&](int base, int stageBytes, Value extra) {
                Value off = s.add(s.idx(base), s.mul(slot, s.idx(stageBytes)));
                return extra ? s.add(off, extra) : off;
              };
              // This warpgroup's 64 keys: rows 64 wg.. of every K/V box.
              // Split columns: row 0, read afresh for every product (else
              // LLVM keeps K's and V's k-step descriptors live over the
              // sub-steps: 32 registers each at d = 256, 100-170 bytes of
              // spill).
              Value wgRows = s.mul(wg, s.idx(kWgmmaRows * kTmaBoxRowBytes));
              auto keyRowsAt = [&](int offset) {
                if (!L.splitColumns)
                  return s.add(s.idx(offset), wgRows);
                return s.add(s.idx(offset),
                             s.toIndex(s.asmMov(s.b.getI32Type(),
                                                "mov.u32 $0, 0;", "=r")));
              };
              // ALiBi: this step's head's slope * log2(e).
              Value slopeLog2;
              if (spec.bias == BiasMode::Alibi)
                slopeLog2 = s.fmul(
                    memref::LoadOp::create(
                        s.b, s.loc, fk.alibiSlopes,
                        ValueRange{s.add(s.mul(fk.batch, fk.alibiBS), head)}),
                    s.f32(kLog2e));

              // ---- per sub-step of `width` queries (L.subSteps of them):
              // S^T = K_w Q^T, P^T, dV_w += P^T dO, dP^T = V_w dO^T, dS^T,
              // dK_w += dS^T Q, dS -> shared memory. An accumulator feeds
              // the next wgmma only after a wait retired it (fenced).
              const int width = bm / L.subSteps;
              const int nTiles = width / kMmaTileN;
              const int64_t rowStep = 16 * kTmaBoxRowBytes;
              Value keyBase = s.add(
                  L.splitColumns ? keyLo
                                 : s.add(keyLo, s.mul(wg, s.idx(kWgmmaRows))),
                  s.add(s.mul(warpInWg, s.idx(16)), group));
              // A operands (k16 step kk: tiles 2 kk and 2 kk + 1, rows g and
              // g + 8 of each), fenced: packed before the wgmma's fence.
              auto aRegisters = [&](ArrayRef<Value> vals) {
                SmallVector<Value> regs;
                for (int t = 0; t < nTiles; ++t)
                  for (int half = 0; half < 2; ++half)
                    regs.push_back(sm90::asI32(
                        s, fk.packPair(s, vals[4 * t + 2 * half],
                                       vals[4 * t + 2 * half + 1])));
                return sm90::fence(s, regs);
              };
              SmallVector<Value> dVAcc(carried.take_front(dvRegs));
              SmallVector<Value> dKAcc(carried.slice(dvRegs, dkRegs));
              Value dKIssued;
              SmallVector<Value> dSRegs;
              // dK's wgmma retired by a wait: its accumulator, and its A
              // operand kept live to the wait (nothing reuses its registers
              // under the wgmma).
              auto dKRetired = [&] {
                dKAcc = sm90::fence(s, sm90::extractAll(s, dKIssued, dkRegs));
                sm90::fence(s, dSRegs);
              };
              for (int sub = 0; sub < L.subSteps; ++sub) {
                const int row0 = sub * width;
                const int64_t rowBytes = int64_t(row0) * kTmaBoxRowBytes;
                Value qDesc = smem.descriptor(
                    s, at(L.qOffset, L.qStageBytes, s.idx(rowBytes)),
                    L.qBoxBytes);
                Value dODesc = smem.descriptor(
                    s, at(L.dOOffset, L.dOStageBytes, s.idx(rowBytes)),
                    L.qBoxBytes);
                // dK's and dV's B: the warpgroup's boxes of Q and dO.
                Value qShareDesc = qDesc, dOShareDesc = dODesc;
                if (L.splitColumns) {
                  auto share = [&](int base, int stageBytes, int n) {
                    Value box = s.mul(wg, s.idx(n / kTmaBoxCols * L.qBoxBytes));
                    return smem.descriptor(
                        s, at(base, stageBytes, s.add(s.idx(rowBytes), box)),
                        L.qBoxBytes);
                  };
                  qShareDesc = share(L.qOffset, L.qStageBytes, L.dkN);
                  dOShareDesc = share(L.dOOffset, L.dOStageBytes, L.dvN);
                }
                Value sIssued = sm90::mmaFromShared(
                    s, dtype, width, L.qkSteps,
                    smem.descriptor(s, keyRowsAt(L.kOffset), L.kBoxBytes),
                    qDesc, kMajorSteps(L.kBoxBytes), kMajorSteps(L.qBoxBytes));
                SmallVector<Value> sT = sm90::retire(s, 0, sIssued);
                if (dKIssued)
                  dKRetired();

                // Element 4 j + i of a thread: key row 16 warp + group (+ 8
                // for i >= 2), query column row0 + 8 j + 2 inGroup + i % 2.
                auto queryCol = [&](int j, int el) {
                  return s.add(s.idx(row0 + j * kMmaTileN + el),
                               s.mul(inGroup, s.idx(2)));
                };
                // LSE' (which 0) or D (1) of column (j, el) (a query
                // past seqlen_q reads its last row's).
                auto rowValue = [&](int j, int el, int which) {
                  return memref::LoadOp::create(
                      s.b, s.loc, rowValsS,
                      ValueRange{s.idx(which), slot, queryCol(j, el)});
                };
                // P^T is 0 past seqlen_q and seqlen_k: whatever rows TMA
                // brought there (a neighbouring sequence's, or zeros) weigh
                // nothing. Scores are scaled, capped and biased first (the
                // forward's transform, element by element: keys are rows
                // here); `tanhT` keeps the cap's tanh for dS.
                SmallVector<Value> p(4 * nTiles), tanhT(4 * nTiles);
                for (int j = 0; j < nTiles; ++j)
                  for (int el = 0; el < 2; ++el) {
                    Value negLse = arith::NegFOp::create(
                        s.b, s.loc, rowValue(j, el, 0));
                    Value query = s.add(qLo, queryCol(j, el));
                    Value queryIn = s.lt(query, fk.seqQ);
                    Value qDiag = s.add(query, fk.diag);
                    for (int half = 0; half < 2; ++half) {
                      const int i = 4 * j + 2 * half + el;
                      Value key = s.add(keyBase, s.idx(8 * half));
                      Value seen = s.andI(queryIn, s.lt(key, fk.seqK));
                      if (fk.causal || fk.window)
                        seen = s.andI(
                            seen, s.le(key, fk.window
                                                ? s.add(qDiag, fk.windowRight)
                                                : qDiag));
                      if (fk.window)
                        seen = s.andI(seen,
                                      s.ge(key, s.sub(qDiag, fk.windowLeft)));
                      Value score = sT[i];
                      if (fk.transformScores)
                        score = fk.addBiasAt(
                            s,
                            fk.scoreToLog2(s, score,
                                           spec.softcap ? &tanhT[i] : nullptr),
                            head, query, key, slopeLog2);
                      Value pv =
                          s.exp2(s.fma(score, fk.softmaxScale, negLse));
                      p[i] = s.select(seen, pv, s.f32(0));
                    }
                  }
                SmallVector<Value> pRegs = aRegisters(p);
                // dV_w += P^T dO (B MN-major: a k16 step is 16 rows
                // further), under dP^T = V_w dO^T.
                Value dVIssued = sm90::mmaFromRegisters(s, dtype, dVAcc, pRegs,
                                                        dOShareDesc, rowStep);
                Value dPIssued = sm90::mmaFromShared(
                    s, dtype, width, L.vSteps,
                    smem.descriptor(s, keyRowsAt(L.vOffset), L.kBoxBytes),
                    dODesc, kMajorSteps(L.kBoxBytes), kMajorSteps(L.qBoxBytes));
                SmallVector<Value> dPT = sm90::retire(s, 0, dPIssued);
                dVAcc = sm90::fence(s, sm90::extractAll(s, dVIssued, dvRegs));
                sm90::fence(s, pRegs);

                // dS^T = P^T (dP^T - D), and 0 where P^T is (masked: dP^T
                // may hold anything there); under a softcap times
                // d(cap tanh(u))/du = 1 - tanh^2 (the scale comes with dK's
                // and dQ's). dBias is the sm80 family's.
                SmallVector<Value> dS(4 * nTiles);
                for (int j = 0; j < nTiles; ++j)
                  for (int el = 0; el < 2; ++el) {
                    Value dSum = rowValue(j, el, 1);
                    for (int half = 0; half < 2; ++half) {
                      const int i = 4 * j + 2 * half + el;
                      Value zero = s.f32(0);
                      dS[i] = s.select(
                          arith::CmpFOp::create(s.b, s.loc,
                                                arith::CmpFPredicate::OEQ,
                                                p[i], zero),
                          zero, s.fmul(p[i], s.fsub(dPT[i], dSum)));
                      if (spec.softcap)
                        dS[i] = s.fmul(dS[i],
                                       s.fsub(s.f32(1),
                                              s.fmul(tanhT[i], tanhT[i])));
                    }
                  }
                dSRegs = aRegisters(dS);
                dKIssued = sm90::mmaFromRegisters(s, dtype, dKAcc, dSRegs,
                                                  qShareDesc, rowStep);
                // dS -> shared memory [key box][query][key], rounded: this
                // warpgroup's keys are box wg. Split columns: both hold
                // the same dS; warpgroup w stores its rows g + 8 w.
                if (L.splitColumns) {
                  Value first = s.cmp(arith::CmpIPredicate::eq, wg, s.idx(0));
                  Value key = s.add(s.add(s.mul(warpInWg, s.idx(16)), group),
                                    s.mul(wg, s.idx(8)));
                  for (int j = 0; j < nTiles; ++j)
                    for (int el = 0; el < 2; ++el) {
                      Value row = queryCol(j, el);
                      Value col = swizzledCol(s, kBoxSwizzleBits, row, key);
                      Value v =
                          s.select(first, dS[4 * j + el], dS[4 * j + 2 + el]);
                      memref::StoreOp::create(
                          s.b, s.loc,
                          arith::TruncFOp::create(s.b, s.loc, elemTy, v), dSS,
                          ValueRange{s.idx(0), row, col});
                    }
                }
                for (int j = 0; j < nTiles && !L.splitColumns; ++j)
                  for (int i = 0; i < 4; ++i) {
                    Value row = queryCol(j, i % 2);
                    Value key = s.add(
                        s.add(s.mul(warpInWg, s.idx(16)), group),
                        s.idx(8 * (i / 2)));
                    Value col = swizzledCol(s, kBoxSwizzleBits, row, key);
                    memref::StoreOp::create(
                        s.b, s.loc,
                        arith::TruncFOp::create(s.b, s.loc, elemTy,
                                                dS[4 * j + i]),
                        dSS, ValueRange{wg, row, col});
                  }
              }
              sm90::fenceAsyncShared(s);
              barrier(s); // dS is whole

              // ---- dQ = dS K. Two warpgroups: with two boxes of columns,
              // warpgroup w takes box w over every key; else (fast mode)
              // each its own 64 keys (dS box w, K rows 64 w..) over every
              // column, into a buffer of its own; deterministic partials
              // take one writer, the first, over every key. Each warp puts
              // its 16 rows of its share into shared memory as float32
              // rows of the workspace's layout, then reduces them into the
              // workspace, a bulk add per row (no float atomics, no
              // address per element). `keyRow0`: the warpgroup's first key
              // row (null: 0); `colFirst`: its first column; `buffer`: its
              // buffer's index.
              auto dQShare = [&](Emitter &y, Value box, int n, Value keyRow0,
                                 int keys, Value buffer) {
                Value dSAt = y.idx(L.dSOffset);
                Value kAt = y.add(y.idx(L.kOffset),
                                  y.mul(box, y.idx(L.kBoxBytes)));
                if (keyRow0) {
                  dSAt = y.add(dSAt, y.mul(y.div(keyRow0, kTmaBoxCols),
                                           y.idx(L.qBoxBytes)));
                  kAt = y.add(kAt, y.mul(keyRow0, y.idx(kTmaBoxRowBytes)));
                }
                Value issued = sm90::mmaFromShared(
                    y, dtype, n, keys / 16,
                    smem.descriptor(y, dSAt, L.qBoxBytes),
                    smem.descriptor(y, kAt, L.kBoxBytes),
                    kMajorSteps(L.qBoxBytes),
                    [&](int ks) -> int64_t { return ks * rowStep; },
                    /*transB=*/true);
                SmallVector<Value> dQ = sm90::retire(y, 0, issued);
                // The previous step's bulk adds have read the warp's rows.
                sm90::waitBulk(y, /*readsOnly=*/true);
                NVVM::SyncWarpOp::create(y.b, y.loc, y.i32(-1));
                Value colFirst = y.mul(box, y.idx(kTmaBoxCols));
                Value bufferAt = y.add(
                    y.idx(L.dQOffset),
                    y.mul(buffer, y.idx(bm * L.dqRowFloats * 4)));
                Value warpRow = y.mul(warpInWg, y.idx(16));
                for (int half = 0; half < 2; ++half) {
                  Value row = y.add(y.add(warpRow, group), y.idx(8 * half));
                  Value rowAt = y.add(y.div(bufferAt, 4),
                                      y.mul(row, y.idx(L.dqRowFloats)));
                  for (int j = 0; j < n / kMmaTileN; ++j) {
                    Value col = y.add(
                        y.add(colFirst, y.idx(j * kMmaTileN)),
                        y.mul(inGroup, y.idx(2)));
                    Value pair = vector::FromElementsOp::create(
                        y.b, y.loc, VectorType::get({2}, fk.f32),
                        ValueRange{dQ[4 * j + 2 * half],
                                   dQ[4 * j + 2 * half + 1]});
                    vector::StoreOp::create(y.b, y.loc, pair, dQS,
                                            ValueRange{y.add(rowAt, col)},
                                            /*nontemporal=*/false,
                                            llvm::MaybeAlign(8));
                  }
                }
                sm90::fenceAsyncShared(y);
                NVVM::SyncWarpOp::create(y.b, y.loc, y.i32(-1));
                // Lane l < 16 adds row 16 warp + l: the warpgroup's columns
                // of the workspace row (a 64-column box when the two split
                // them, the rest of the row for the second; its padding to
                // a multiple of 4 included: 16-byte pieces; K's padding
                // columns made those 0).
                Value row = y.add(warpRow, lane);
                Value query = y.add(qLo, row);
                Value adds =
                    y.andI(y.lt(lane, y.idx(16)), y.lt(query, fk.seqQ));
                // Split columns: the second's may all be padding.
                if (L.splitColumns)
                  adds = y.andI(adds, y.lt(colFirst, a.wsDqRow));
                y.ifThen(adds, [&] {
                  Value floatAt = k.dqIndex(y, split, head, query, colFirst);
                  Value gmem = y.add(wsAddress,
                                     y.mul(floatAt, y.idx(4)));
                  Value smemAt = y.add(
                      y.add(bufferAt,
                            y.mul(row, y.idx(L.dqRowFloats * 4))),
                      y.mul(colFirst, y.idx(4)));
                  Value cols = y.sub(a.wsDqRow, colFirst);
                  if (L.dqSplitsColumns)
                    cols = y.minS(cols, y.idx(n));
                  Value bytes = y.mul(cols, y.idx(4));
                  sm90::reduceAddBulk(
                      y, toI64(y, gmem),
                      arith::TruncIOp::create(
                          y.b, y.loc, y.b.getI32Type(),
                          toI64(y, y.add(smemBase, smemAt))),
                      arith::IndexCastOp::create(y.b, y.loc,
                                                 y.b.getI32Type(), bytes));
                });
              };
              // Split columns: one code for both warpgroups (a branch per
              // warpgroup cost ptxas 80 registers), the second's 64 columns
              // past head_dim_qk are K's zeros.
              if (L.splitColumns) {
                // A box at a time: 64 more accumulators beside dK and dV
                // spill (ptxas: 104-240 bytes at d = 160-256 with 128).
                const int boxes = L.dkN / kTmaBoxCols;
                for (int b = 0; b < boxes; ++b)
                  dQShare(s, s.add(s.mul(wg, s.idx(boxes)), s.idx(b)),
                          kTmaBoxCols, Value(), bn, s.idx(0));
              } else if (L.dqSplitsColumns) {
                dQShare(s, wg, kTmaBoxCols, Value(), bn, s.idx(0));
              } else if (L.dqBuffers == 2) {
                dQShare(s, s.idx(0), L.dkN, s.mul(wg, s.idx(kWgmmaRows)),
                        kWgmmaRows, wg);
              } else if (L.warpgroups == 2) {
                s.ifThen(s.cmp(arith::CmpIPredicate::eq, wg, s.idx(0)), [&] {
                  dQShare(s, s.idx(0), L.dkN, Value(), bn, s.idx(0));
                });
              } else {
                dQShare(s, s.idx(0), L.dkN, Value(), bn, s.idx(0));
              }

              // The last dK retired (issued before dQ: done by its wait; the
              // warpgroup without a dQ share waits here).
              NVVM::WgmmaWaitGroupSyncOp::create(s.b, s.loc, 0);
              dKRetired();
              SmallVector<Value> next = dVAcc;
              next.append(dKAcc.begin(), dKAcc.end());

              if (stages == 1) {
                barrier(s); // every warpgroup is done with Q, dO and dS
                s.ifThen(s.lt(following, steps), [&] {
                  loadStep(s, nextHead, nextM, s.idx(0));
                });
                commitGroup(s);
              }
              next.push_back(nextM);
              next.push_back(nextHead);
              return next;
            });
        // No copy stays in flight past the tile (a tile no query sees
        // issued K and V and ran no step); deterministic, this tile's dQ
        // adds into the CTA's partial are done before the next tile's.
        waitGroups(x, 0);
        if (spec.deterministic)
          sm90::waitBulk(x, /*readsOnly=*/false);

        // ---- dK (times the scale) and dV of the warpgroup's keys
        Value tid = x.freshSreg("%tid.x");
        Value wg = x.div(tid, kWarpgroupThreads);
        Value warpInWg = x.rem(x.div(tid, kThreadsPerWarp), 4);
        Value lane = x.rem(tid, kThreadsPerWarp);
        Value group = x.div(lane, 4), inGroup = x.rem(lane, 4);
        // Split columns: every warpgroup the CTA's keys, its own columns.
        const int shares = L.splitColumns ? 2 : 1;
        Value firstKey = x.add(
            L.splitColumns ? keyLo : x.add(keyLo, x.mul(wg, x.idx(kWgmmaRows))),
            x.mul(warpInWg, x.idx(16)));
        auto col0 = [&](int n) {
          return L.splitColumns ? x.mul(wg, x.idx(n)) : x.idx(0);
        };
        ValueRange results = stepLoop;
        k.storeKeyTiles(
            x, unflatten(results.take_front(dvRegs), 1, L.dvN / kMmaTileN),
            firstKey, col0(L.dvN), keyRows, group, inGroup, dv, shares * L.dvN,
            a.dV, a.dVBS, a.dVHS, a.dVRS, Value());
        k.storeKeyTiles(
            x, unflatten(results.slice(dvRegs, dkRegs), 1, L.dkN / kMmaTileN),
            firstKey, col0(L.dkN), keyRows, group, inGroup, dqk, shares * L.dkN,
            a.dK, a.dKBS, a.dKHS, a.dKRS, a.scale);
        scf::YieldOp::create(nb, nl, ValueRange{x.add(stepBase, steps)});
      });
  // The dQ adds have completed (the conversion kernel reads them).
  sm90::waitBulk(e, /*readsOnly=*/false);
  k.finish();
}

} // namespace

LogicalResult buildBackwardSm90(OpBuilder &builder, gpu::GPUModuleOp module,
                                StringRef name, const AttentionSpec &spec,
                                const TileConfig &cfg) {
  buildBackwardModule(builder, module, name, spec, cfg,
                      [&](const std::string &main) {
                        buildMain(builder, module, main, spec, cfg);
                      });
  return success();
}

} // namespace flashjit
