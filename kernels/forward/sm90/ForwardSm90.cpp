//===- ForwardSm90.cpp - FlashAttention-3 forward for sm_90a --------------===//
//
// Builds one gpu.func per spec/config: a producer warpgroup and 1-3
// consumer warpgroups of 64 query rows each (after FlashAttention-3's
// hopper/mainloop_fwd_sm90_tma_gmma_ws.hpp):
//
//   producer (setmaxnreg.dec): 128-byte swizzled 64-column boxes completing
//     on mbarriers: Q once, then per K/V tile (last to first) K into stage s
//     after kEmpty[s], V after vEmpty[s]. One thread issues them as TMA
//     loads where rows start 16-byte aligned; otherwise (D = 100 with its
//     heads 200 bytes apart: TMA refuses a box that starts off 16 bytes)
//     every producer thread copies its chunks by cp.async and arrives once
//     they land, and consumers fence before their wgmma reads them
//   consumers (setmaxnreg.inc), per K/V tile:
//     S  = Q K^T        wgmma m64nBNk16 from shared memory (hand-advanced
//                       K-major descriptors), then kEmpty[s]
//     S  = mask(mods(S)), online softmax (kernels/common, the sm80 family's)
//     O += P V          wgmma with P from registers (inline PTX: nvgpu and
//                       nvvm have no register-A form), then vEmpty[s]
//   epilogue: O / l, LSE, stores of exactly head_dim_v columns (common)
//
// What MLIR 22 lowers and what needs inline PTX, and the traps found on an
// H200, are in docs/HOPPER.md. Tensor maps are __grid_constant__ parameters
// after ForwardKernelArgs: the gpu.func takes them as !llvm.ptr and
// flashjit-attach-grid-constants marks them byval after the conversion.
//
//===----------------------------------------------------------------------===//
#include "forward/sm90/ForwardSm90.h"

#include "common/ForwardKernel.h"
#include "common/Sm90Ops.h"
#include "flashjit/kernels/Forward.h"
#include "flashjit/kernels/LayoutSm90.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"

#include <string>

using namespace mlir;

namespace flashjit {
namespace {

/// Named barrier of all consumer threads (0 is the CTA's).
constexpr int kConsumersBarrier = 1;

struct Sm90Builder {
  ForwardKernel &fk;
  const Sm90Layout &L;
  OpBuilder &builder;
  Location loc;
  Emitter &e;
  MLIRContext *ctx;
  const sm90::Window &smem;
  Value qMap, kMap, vMap;
  /// memref<1x1xRx64xelem, 3>; a packed Q: memref<1 x R/H x H x 64 x elem, 3>
  Type tmaTileQ, tmaTileKV;

  // Barrier ids in the group.
  Value qFull() { return e.idx(0); }
  Value kFull(Emitter &x, Value s) { return x.add(s, x.idx(1)); }
  Value kEmpty(Emitter &x, Value s) {
    return x.add(s, x.idx(1 + fk.cfg.stages));
  }
  Value vFull(Emitter &x, Value s) {
    return x.add(s, x.idx(1 + 2 * fk.cfg.stages));
  }
  Value vEmpty(Emitter &x, Value s) {
    return x.add(s, x.idx(1 + 3 * fk.cfg.stages));
  }

  /// Issues S = Q K^T of one K/V tile (one commit group): qkSteps wgmma
  /// m64nBNk16 from shared memory, Q's and K's k16 step ks in box ks / 4,
  /// 32 bytes further per step in it. The result is not ready before a
  /// wait (sm90::retire).
  Value issueScores(Emitter &x, Value qDesc, Value kDesc) {
    auto inBox = [](int boxBytes) {
      return [boxBytes](int ks) -> int64_t {
        return (ks / 4) * boxBytes + (ks % 4) * 32;
      };
    };
    return sm90::mmaFromShared(x, fk.spec.dtype, fk.cfg.blockN, L.qkSteps,
                               qDesc, kDesc, inBox(L.qBoxBytes),
                               inBox(L.kBoxBytes));
  }

  /// Issues O += P V (one commit group): blockN / 16 wgmma m64nNk16 with A
  /// (P) from registers and V MN-major (trans-b 1) in shared memory, a k16
  /// step 16 rows (2048 bytes) further, 64-column boxes kBoxBytes apart
  /// (LBO).
  Value issuePv(Emitter &x, ValueRange o, ArrayRef<Value> p, Value vDesc) {
    return sm90::mmaFromRegisters(x, fk.spec.dtype, o, p, vDesc,
                                  kWgmmaK * kTmaBoxRowBytes);
  }

  /// P as the i32 registers of issuePv: k-step kk in 4 kk .. 4 kk + 3.
  SmallVector<Value> pRegisters(Emitter &x, ArrayRef<Registers> pFrag) {
    SmallVector<Value> regs;
    for (const Registers &step : pFrag)
      for (Value r : step)
        regs.push_back(sm90::asI32(x, r));
    return regs;
  }

  /// TMA loads of one K or V tile into stage `slot` once the consumers
  /// have released it (`empty` at `emptyParity`): its 64-column boxes,
  /// completing on `barrier`.
  void loadKV(Emitter &x, Value map, int offset, int boxes, Value slot,
              Value row, Value head, Value batch, Value barrier, Value empty,
              Value emptyParity) {
    smem.waitParity(x, empty, emptyParity);
    nvgpu::MBarrierArriveExpectTxOp::create(x.b, x.loc, smem.barriers,
                                            x.idx(boxes * L.kBoxBytes),
                                            barrier, Value());
    for (int b = 0; b < boxes; ++b) {
      Value at = x.add(x.mul(slot, x.idx(boxes * L.kBoxBytes)),
                       x.idx(offset + b * L.kBoxBytes));
      nvgpu::TmaAsyncLoadOp::create(
          x.b, x.loc, smem.view(x, tmaTileKV, at), smem.barriers, map,
          ValueRange{x.idx(b * kTmaBoxCols), row, head, batch}, barrier,
          /*multicastMask=*/Value(), /*predicate=*/Value());
    }
  }
};

} // namespace

LogicalResult buildForwardSm90(OpBuilder &builder, gpu::GPUModuleOp module,
                               StringRef name, const AttentionSpec &spec,
                               const TileConfig &cfg) {
  OpBuilder::InsertionGuard guard(builder);
  MLIRContext *ctx = builder.getContext();
  const Sm90Layout L = sm90Layout(spec, cfg);
  // With TMA: Q's, K's and V's tensor maps after the forward's arguments,
  // __grid_constant__.
  Type ptrTy = LLVM::LLVMPointerType::get(ctx);
  ForwardKernel fk(builder, module, name, spec, cfg, L.threads,
                   SmallVector<Type>(L.tma ? 3 : 0, ptrTy));
  if (L.tma)
    fk.func->setAttr("flashjit.grid_constant_args",
                     builder.getDenseI32ArrayAttr(
                         {kForwardKernelArgCount, kForwardKernelArgCount + 1,
                          kForwardKernelArgCount + 2}));
  Emitter &e = fk.e;
  Location loc = fk.loc;

  // ---- shared memory: one extern window (sm90::Window) of the tiles and
  // barriers.
  const sm90::Window smem = sm90::Window::create(
      builder, loc, module, L.sharedMemBytes, L.barrierOffset, L.barrierCount);
  Value barriers = smem.barriers;

  auto tileType = [&](int rows, int heads = 1) {
    return sm90::tmaBoxType(ctx, fk.elemTy, rows, heads);
  };
  const int qHeads = cfg.packGqa ? spec.gqaGroup : 1;
  auto mapOf = [&](int arg, int rows, int heads = 1) {
    return L.tma ? sm90::tensorMap(e, fk.extraArg(arg), tileType(rows, heads))
                 : Value();
  };
  Sm90Builder sb{fk,
                 L,
                 builder,
                 loc,
                 e,
                 ctx,
                 smem,
                 mapOf(0, kWgmmaRows, qHeads),
                 mapOf(1, cfg.blockN),
                 mapOf(2, cfg.blockN),
                 tileType(kWgmmaRows, qHeads),
                 tileType(cfg.blockN)};

  // ---- the barriers: thread 0 initialises them, the async proxy (TMA)
  // sees them after the fence. A full barrier waits for the TMA thread's
  // expect_tx, or for every copying producer thread.
  Value tid = gpu::ThreadIdOp::create(builder, loc, gpu::Dimension::x);
  const int consumerThreads = L.consumers * kWarpgroupThreads;
  Value fullArrivals = e.idx(L.tma ? 1 : kWarpgroupThreads);
  e.ifThen(e.cmp(arith::CmpIPredicate::eq, tid, e.idx(0)), [&] {
    nvgpu::MBarrierInitOp::create(builder, loc, barriers, fullArrivals,
                                  sb.qFull(), Value());
    for (int s = 0; s < cfg.stages; ++s) {
      Value slot = e.idx(s);
      nvgpu::MBarrierInitOp::create(builder, loc, barriers, fullArrivals,
                                    sb.kFull(e, slot), Value());
      nvgpu::MBarrierInitOp::create(builder, loc, barriers,
                                    e.idx(consumerThreads), sb.kEmpty(e, slot),
                                    Value());
      nvgpu::MBarrierInitOp::create(builder, loc, barriers, fullArrivals,
                                    sb.vFull(e, slot), Value());
      nvgpu::MBarrierInitOp::create(builder, loc, barriers,
                                    e.idx(consumerThreads), sb.vEmpty(e, slot),
                                    Value());
    }
    sm90::fenceAsyncShared(e);
  });
  gpu::BarrierOp::create(builder, loc);

  // ---- what both roles need: rows, sequence, K/V tile range
  fk.locateRows();
  fk.blockRange();
  Value nBlocks = fk.nBlocks;
  // Varlen tensors are one batch of packed rows: TMA addresses the rows.
  Value batchCoord = spec.varlen ? e.idx(0) : fk.batch;
  Value warpgroup = e.div(tid, kWarpgroupThreads);
  auto parityOf = [&](Emitter &x, Value it) {
    return sm90::parity(x, x.div(it, cfg.stages));
  };

  auto roles = scf::IfOp::create(
      builder, loc, e.cmp(arith::CmpIPredicate::eq, warpgroup, e.idx(0)),
      /*withElse=*/true);
  // ---- producer warpgroup -----------------------------------------------------
  {
    OpBuilder::InsertionGuard g(builder);
    builder.setInsertionPointToStart(&roles.getThenRegion().front());
    NVVM::SetMaxRegisterOp::create(builder, loc, L.producerRegisters,
                                   NVVM::SetMaxRegisterAction::decrease);
    // The empty barriers' parity at iteration it: the producer waits for
    // the consumers to release what the stage held stages tiles ago.
    auto emptyParityOf = [&](Emitter &x, Value it) -> Value {
      return arith::XOrIOp::create(
          x.b, x.loc, parityOf(x, it),
          arith::ConstantIntOp::create(x.b, x.loc, 1, 1));
    };
    if (L.tma) {
      e.ifThen(e.cmp(arith::CmpIPredicate::eq, tid, e.idx(0)), [&] {
        // Packed: the block's rows are (query, head) pairs from query
        // mStart / group, its heads the K/V head's group.
        Value qRow = e.add(fk.startQ, qHeads > 1 ? e.div(fk.mStart, qHeads)
                                                  : fk.mStart);
        nvgpu::MBarrierArriveExpectTxOp::create(
            builder, loc, barriers,
            e.idx(L.consumers * L.boxesQK * L.qBoxBytes), sb.qFull(), Value());
        for (int c = 0; c < L.consumers; ++c)
          for (int b = 0; b < L.boxesQK; ++b) {
            Value row = e.add(qRow, e.idx(c * kWgmmaRows / qHeads));
            SmallVector<Value> at = {e.idx(b * kTmaBoxCols), row, fk.yBlock,
                                     batchCoord};
            if (qHeads > 1)
              at = {e.idx(b * kTmaBoxCols), e.mul(fk.kvHead, e.idx(qHeads)),
                    row, batchCoord};
            nvgpu::TmaAsyncLoadOp::create(
                builder, loc,
                smem.view(e, sb.tmaTileQ,
                          e.idx(L.qOffset + (c * L.boxesQK + b) * L.qBoxBytes)),
                barriers, sb.qMap, at, sb.qFull(), Value(), Value());
          }
        e.runtimeLoop(e.idx(0), nBlocks, 1, [&](Emitter &x, Value it) {
          Value slot = x.rem(it, cfg.stages);
          Value emptyParity = emptyParityOf(x, it);
          Value row = x.add(fk.startK, x.mul(fk.tileOfIteration(x, it),
                                             x.idx(cfg.blockN)));
          sb.loadKV(x, sb.kMap, L.kOffset, L.boxesQK, slot, row, fk.kvHead,
                    batchCoord, sb.kFull(x, slot), sb.kEmpty(x, slot),
                    emptyParity);
          sb.loadKV(x, sb.vMap, L.vOffset, L.boxesV, slot, row, fk.kvHead,
                    batchCoord, sb.vFull(x, slot), sb.vEmpty(x, slot),
                    emptyParity);
        });
      });
    } else {
      // Copies: every producer thread takes its chunks of each tile's
      // 64-column boxes (rows past the sequence and columns past the head
      // dim as zeros: the pads wgmma reads and the V rows P zeroes), then
      // arrives on the tile's full barrier once they land.
      const TileCopier copier{spec, kWarpgroupThreads, /*quick=*/false};
      auto smemSpace = gpu::AddressSpaceAttr::get(
          ctx, gpu::GPUDialect::getWorkgroupAddressSpace());
      auto boxes = [&](int count, int rows, int offset) {
        return smem.view(e,
                         MemRefType::get({count, rows, kTmaBoxCols}, fk.elemTy,
                                         AffineMap(), smemSpace),
                         e.idx(offset));
      };
      Value qS = boxes(L.consumers * L.boxesQK, kWgmmaRows, L.qOffset);
      Value kS = boxes(cfg.stages * L.boxesQK, cfg.blockN, L.kOffset);
      Value vS = boxes(cfg.stages * L.boxesV, cfg.blockN, L.vOffset);
      // Rows [first, first + rows) (row r at element base + rowOffset(r)),
      // columns [0, dim), into boxes firstBox, firstBox + 1, ... of dst.
      // Rows at or past `limit` read as zeros; without one (rows known in
      // range, of stride `rowStride`) the copies are unrolled, each source
      // the previous one's plus a constant: a quarter of the instructions.
      auto copyBoxes = [&](Emitter &x, Value src, Value base,
                           RowOffsetFn rowOffset, Value rowStride, Value first,
                           Value limit, int rows, int dim, Value dst,
                           Value firstBox) {
        sm90::copyBoxes(x, copier, tid, src, base, rowOffset, first, limit,
                        rows, dim, dst, {}, firstBox, /*inLoop=*/!limit,
                        limit ? Value() : rowStride);
      };
      auto qRowOffset = [&](Emitter &x, Value r) { return fk.qRowOffset(x, r); };
      for (int c = 0; c < L.consumers; ++c)
        copyBoxes(e, fk.q, fk.qSeqBase, qRowOffset, Value(),
                  e.add(fk.mStart, e.idx(c * kWgmmaRows)), fk.rowLimit,
                  kWgmmaRows, spec.headDimQK, qS, e.idx(c * L.boxesQK));
      smem.arriveOnCopies(e, sb.qFull());
      auto kRowOffset = [&](Emitter &x, Value r) { return x.mul(r, fk.kRS); };
      auto vRowOffset = [&](Emitter &x, Value r) { return x.mul(r, fk.vRS); };
      // K and V of iteration `it`; only the first tile visited (the last
      // of the range) may cross seqlen_k.
      auto copyTileKV = [&](Emitter &x, Value it, bool first) {
        Value slot = x.rem(it, cfg.stages);
        Value emptyParity = emptyParityOf(x, it);
        Value row = x.mul(fk.tileOfIteration(x, it), x.idx(cfg.blockN));
        Value limit = first ? fk.seqK : Value();
        smem.waitParity(x, sb.kEmpty(x, slot), emptyParity);
        copyBoxes(x, fk.kT, fk.kBase, kRowOffset, fk.kRS, row, limit,
                  cfg.blockN, spec.headDimQK, kS,
                  x.mul(slot, x.idx(L.boxesQK)));
        smem.arriveOnCopies(x, sb.kFull(x, slot));
        smem.waitParity(x, sb.vEmpty(x, slot), emptyParity);
        copyBoxes(x, fk.v, fk.vBase, vRowOffset, fk.vRS, row, limit,
                  cfg.blockN, spec.headDimV, vS, x.mul(slot, x.idx(L.boxesV)));
        smem.arriveOnCopies(x, sb.vFull(x, slot));
      };
      e.ifThen(e.gt(nBlocks, e.idx(0)),
               [&] { copyTileKV(e, e.idx(0), /*first=*/true); });
      e.runtimeLoop(e.idx(1), nBlocks, 1, [&](Emitter &x, Value it) {
        copyTileKV(x, it, /*first=*/false);
      });
      // The copying threads stay until the consumers have released every
      // stage (the waits the next loads would make), as CUTLASS's
      // producer_tail does: no thread exits while copies it issued may
      // still land. (The copies' hang was setmaxnreg: docs/MLIR-NOTES.md.)
      for (int s = 0; s < cfg.stages; ++s) {
        Value it = e.add(nBlocks, e.idx(s));
        Value slot = e.rem(it, cfg.stages);
        smem.waitParity(e, sb.kEmpty(e, slot), emptyParityOf(e, it));
        smem.waitParity(e, sb.vEmpty(e, slot), emptyParityOf(e, it));
      }
    }
  }
  // ---- consumer warpgroups ------------------------------------------------------
  OpBuilder::InsertionGuard g(builder);
  builder.setInsertionPointToStart(&roles.getElseRegion().front());
  NVVM::SetMaxRegisterOp::create(builder, loc, L.consumerRegisters,
                                 NVVM::SetMaxRegisterAction::increase);
  Value consumer = e.sub(warpgroup, e.idx(1));
  Value wgThread = e.rem(tid, kWarpgroupThreads);
  Value lane = e.rem(tid, kThreadsPerWarp);
  fk.group = e.div(lane, 4);
  fk.inGroup = e.rem(lane, 4);
  fk.warpRow0 = e.add(e.mul(consumer, e.idx(kWgmmaRows)),
                      e.mul(e.div(wgThread, kThreadsPerWarp), e.idx(16)));
  fk.prepareScoreMods(1);
  SmallVector<Value> init = fk.softmaxInit(1, L.dTilesV);
  const int mOffset = 4 * L.dTilesV, lOffset = mOffset + 2;
  // Waits for a full barrier's phase. Copies land through the generic
  // proxy and wgmma reads through the async one: the waiter fences first.
  auto landed = [&](Emitter &x, Value barrier, Value parity) {
    smem.waitParity(x, barrier, parity);
    if (!L.tma)
      sm90::fenceAsyncShared(x);
  };
  // Q (this warpgroup's 64 rows) lands once.
  landed(e, sb.qFull(), arith::ConstantIntOp::create(builder, loc, 0, 1));
  Value qDesc = smem.descriptor(
      e, e.add(e.idx(L.qOffset), e.mul(consumer, e.idx(L.boxesQK * L.qBoxBytes))),
      L.qBoxBytes);
  const bool zeroVTail = L.tma && (spec.varlen || spec.keyLengths);

  // ---- pingpong: the two consumer warpgroups take turns issuing their
  // GEMMs (named barriers 2 and 3, 256 threads: a warpgroup waits on its own,
  // the other arrives on it after its issue), so that one's softmax runs
  // under the other's GEMMs. The second starts by arriving on the first's.
  Value myTurn, otherTurn, turnThreads, isSecond;
  if (cfg.pingpong) {
    Value c32 =
        arith::IndexCastOp::create(builder, loc, builder.getI32Type(), consumer);
    myTurn = arith::AddIOp::create(builder, loc, c32, e.i32(2));
    otherTurn = arith::SubIOp::create(builder, loc, e.i32(3), c32);
    turnThreads = e.i32(2 * kWarpgroupThreads);
    isSecond = e.cmp(arith::CmpIPredicate::eq, consumer, e.idx(1));
    e.ifThen(e.andI(isSecond, e.gt(nBlocks, e.idx(0))), [&] {
      NVVM::BarrierArriveOp::create(builder, loc, otherTurn, turnThreads);
    });
  }
  auto takeTurn = [&](Emitter &x) {
    if (cfg.pingpong)
      NVVM::BarrierOp::create(x.b, x.loc, Type(), myTurn, turnThreads,
                              NVVM::BarrierReductionAttr(), Value());
  };
  // `last` (null: no): this warpgroup's last turn. The first warpgroup
  // waits as often as the second, which arrived once before its first turn:
  // the second's last turn hands nothing on.
  auto passTurn = [&](Emitter &x, Value last) {
    if (!cfg.pingpong)
      return;
    Value skip = last ? x.andI(last, isSecond) : Value();
    Value pass = skip ? x.xorI(skip, arith::ConstantIntOp::create(
                                         x.b, x.loc, 1, 1))
                      : Value();
    x.ifThen(pass, [&] {
      NVVM::BarrierArriveOp::create(x.b, x.loc, otherTurn, turnThreads);
    });
  };

  // ---- the steps of one K/V tile ----
  auto slotOf = [&](Emitter &x, Value it) { return x.rem(it, cfg.stages); };
  /// Waits for K of iteration `it`; its descriptor.
  auto readyK = [&](Emitter &x, Value it) {
    Value slot = slotOf(x, it);
    landed(x, sb.kFull(x, slot), parityOf(x, it));
    return smem.descriptor(
        x, x.add(x.idx(L.kOffset), x.mul(slot, x.idx(L.boxesQK * L.kBoxBytes))),
        L.kBoxBytes);
  };
  /// Waits for V of iteration `it`; its descriptor. TMA's rows past this
  /// sequence's keys hold the next sequence's (or padding) values: P is 0
  /// there, but 0 * inf is NaN. They are zeroed, once per CTA (only the
  /// first tile visited crosses seqlen_k), by every consumer thread, before
  /// any warpgroup's turn (a barrier inside one would deadlock pingpong).
  /// Copies zero them as they land.
  auto readyV = [&](Emitter &x, Value it) {
    Value slot = slotOf(x, it);
    landed(x, sb.vFull(x, slot), parityOf(x, it));
    Value vAt = x.add(x.idx(L.vOffset),
                      x.mul(slot, x.idx(L.boxesV * L.kBoxBytes)));
    if (zeroVTail) {
      Value tileStart = x.mul(fk.tileOfIteration(x, it), x.idx(cfg.blockN));
      Value tail = x.maxS(x.sub(fk.seqK, tileStart), x.idx(0));
      x.ifThen(x.lt(tail, x.idx(cfg.blockN)), [&] {
        // 16-byte chunks of the tail rows of every V box.
        constexpr int kChunks = kTmaBoxRowBytes / 16;
        Value rows = x.sub(x.idx(cfg.blockN), tail);
        Value count = x.mul(rows, x.idx(kChunks * L.boxesV));
        Value consumerThread = x.sub(tid, x.idx(kWarpgroupThreads));
        auto chunkType = VectorType::get({16}, x.b.getI8Type());
        Value zeros = arith::ConstantOp::create(
            x.b, x.loc,
            DenseElementsAttr::get(chunkType, x.b.getI8IntegerAttr(0)));
        x.runtimeLoop(consumerThread, count, consumerThreads,
                      [&](Emitter &y, Value chunk) {
                        Value row = y.add(tail, y.div(chunk, kChunks * L.boxesV));
                        Value rest = y.rem(chunk, kChunks * L.boxesV);
                        Value at = y.add(
                            y.add(vAt, y.mul(y.div(rest, kChunks),
                                             y.idx(L.kBoxBytes))),
                            y.add(y.mul(row, y.idx(kTmaBoxRowBytes)),
                                  y.mul(y.rem(rest, kChunks), y.idx(16))));
                        vector::StoreOp::create(
                            y.b, y.loc, zeros, smem.window, ValueRange{at},
                            /*nontemporal=*/false, llvm::MaybeAlign(16));
                      });
        sm90::fenceAsyncShared(x);
        NVVM::BarrierOp::create(x.b, x.loc, Type(), x.i32(kConsumersBarrier),
                                x.i32(consumerThreads),
                                NVVM::BarrierReductionAttr(), Value());
      });
    }
    return smem.descriptor(x, vAt, L.kBoxBytes);
  };
  /// Mods, mask and the online softmax of iteration it's scores `s` against
  /// the state `carried` (O, m, l): m and l into `next`, and O rescaled
  /// there too when `rescale`. Returns P's registers; `alphas` gets the
  /// rescale factors.
  auto softmax = [&](Emitter &x, Value it, ArrayRef<Value> s,
                     ValueRange carried, MutableArrayRef<Value> next,
                     bool rescale, SmallVector<Value> &alphas) {
    Value nBlock = fk.tileOfIteration(x, it);
    Scores sAcc = unflatten(s, 1, cfg.blockN / 8);
    fk.transform(x, nBlock, Value(), sAcc);
    Value tileStart;
    Value needsMask = fk.tileNeedsMask(x, nBlock, tileStart);
    sAcc = fk.applyMask(x, needsMask, tileStart, Value(), sAcc);
    ForwardKernel::SoftmaxStep sm(fk, x, carried, next, 1, L.dTilesV,
                                  /*rescaleOnNewMax=*/false);
    SmallVector<SmallVector<Registers>> pFrag = sm.softmaxTile(sAcc, rescale);
    alphas = sm.alphas[0];
    return sb.pRegisters(x, pFrag[0]);
  };
  auto releaseK = [&](Emitter &x, Value it) {
    smem.arrive(x, sb.kEmpty(x, slotOf(x, it)));
  };
  auto releaseV = [&](Emitter &x, Value it) {
    smem.arrive(x, sb.vEmpty(x, slotOf(x, it)));
  };
  auto isLastIteration = [&](Emitter &x, Value it) {
    return x.cmp(arith::CmpIPredicate::eq, it, x.sub(nBlocks, x.idx(1)));
  };

  SmallVector<Value> results;
  if (!cfg.overlap) {
    // S, softmax, P V, one tile after the other.
    auto loop = scf::ForOp::create(
        builder, loc, e.idx(0), nBlocks, e.idx(1), init,
        [&](OpBuilder &b, Location l, Value it, ValueRange carried) {
          Emitter le{b, l};
          Value kDesc = readyK(le, it);
          takeTurn(le);
          Value sIssued = sb.issueScores(le, qDesc, kDesc);
          passTurn(le, Value());
          SmallVector<Value> s = sm90::retire(le, 0, sIssued);
          releaseK(le, it);
          SmallVector<Value> next(carried.begin(), carried.end());
          SmallVector<Value> alphas;
          SmallVector<Value> p =
              softmax(le, it, s, carried, next, /*rescale=*/true, alphas);
          Value vDesc = readyV(le, it);
          takeTurn(le);
          Value oIssued = sb.issuePv(
              le, ValueRange(next).take_front(mOffset), p, vDesc);
          passTurn(le, isLastIteration(le, it));
          SmallVector<Value> o = sm90::retire(le, 0, oIssued);
          releaseV(le, it);
          std::copy(o.begin(), o.end(), next.begin());
          scf::YieldOp::create(b, l, next);
        });
    results.assign(loop.getResults().begin(), loop.getResults().end());
  } else {
    // FlashAttention-3's intra-warpgroup overlap: the next tile's S = Q K^T
    // and this tile's O += P V are issued together, and the softmax of the
    // next tile runs while P V does; O is rescaled once P V has retired.
    // The same operations in the same order on O as without the overlap.
    SmallVector<Type> stateTypes(init.size(), builder.getF32Type());
    auto some = scf::IfOp::create(builder, loc, stateTypes,
                                  e.gt(nBlocks, e.idx(0)), /*withElse=*/true);
    {
      OpBuilder::InsertionGuard ifGuard(builder);
      builder.setInsertionPointToStart(&some.getElseRegion().front());
      scf::YieldOp::create(builder, loc, init);
      builder.setInsertionPointToStart(&some.getThenRegion().front());
      // Prologue: the first tile's scores and P.
      Value first = e.idx(0);
      Value kDesc = readyK(e, first);
      takeTurn(e);
      Value sIssued = sb.issueScores(e, qDesc, kDesc);
      passTurn(e, Value());
      SmallVector<Value> s = sm90::retire(e, 0, sIssued);
      releaseK(e, first);
      SmallVector<Value> state(init.begin(), init.end());
      SmallVector<Value> alphas;
      SmallVector<Value> p =
          softmax(e, first, s, init, state, /*rescale=*/false, alphas);
      // Carried: O, m, l, P of the previous tile.
      SmallVector<Value> loopInit = state;
      loopInit.append(p.begin(), p.end());
      auto loop = scf::ForOp::create(
          builder, loc, e.idx(1), nBlocks, e.idx(1), loopInit,
          [&](OpBuilder &b, Location l, Value it, ValueRange carried) {
            Emitter le{b, l};
            Value prev = le.sub(it, le.idx(1));
            Value vDesc = readyV(le, prev);
            Value kDescIt = readyK(le, it);
            takeTurn(le);
            Value sNext = sb.issueScores(le, qDesc, kDescIt);
            Value oIssued = sb.issuePv(le, carried.take_front(mOffset),
                                       SmallVector<Value>(carried.drop_front(
                                           lOffset + 2)),
                                       vDesc);
            passTurn(le, Value());
            SmallVector<Value> sIt = sm90::retire(le, 1, sNext);
            releaseK(le, it);
            ValueRange stateIn = carried.take_front(lOffset + 2);
            SmallVector<Value> next(stateIn.begin(), stateIn.end());
            SmallVector<Value> alphasIt;
            SmallVector<Value> pIt = softmax(le, it, sIt, stateIn, next,
                                             /*rescale=*/false, alphasIt);
            SmallVector<Value> o = sm90::retire(le, 0, oIssued);
            // The previous P is the in-flight P V's A operand until this
            // wait: kept live to it, so that this tile's P (built under
            // P V) gets its own registers. Sharing them, ptxas serialises
            // every wgmma (C7513).
            sm90::fence(le, carried.drop_front(lOffset + 2));
            releaseV(le, prev);
            for (int dt = 0; dt < L.dTilesV; ++dt)
              setTile(next, dt,
                      ForwardKernel::scaleRows(le, tileAt(o, dt), alphasIt));
            next.append(pIt.begin(), pIt.end());
            scf::YieldOp::create(b, l, next);
          });
      // Epilogue: the last tile's P V.
      ValueRange out = loop.getResults();
      Value last = e.sub(nBlocks, e.idx(1));
      Value vDesc = readyV(e, last);
      takeTurn(e);
      Value oIssued = sb.issuePv(
          e, out.take_front(mOffset),
          SmallVector<Value>(out.drop_front(lOffset + 2)), vDesc);
      passTurn(e, arith::ConstantIntOp::create(builder, loc, 1, 1));
      SmallVector<Value> o = sm90::retire(e, 0, oIssued);
      releaseV(e, last);
      SmallVector<Value> finalState(out.take_front(lOffset + 2));
      std::copy(o.begin(), o.end(), finalState.begin());
      scf::YieldOp::create(builder, loc, finalState);
    }
    results.assign(some.getResults().begin(), some.getResults().end());
  }

  // ---- epilogue: O / l, LSE; exactly head_dim_v columns ----
  for (int half = 0; half < 2; ++half) {
    const ForwardKernel::FinalRow row =
        fk.finishRow(results[lOffset + half], results[mOffset + half]);
    Value query = fk.rowQuery(e, 0, half), head = fk.rowHead(e, 0, half);
    auto inRange = scf::IfOp::create(
        builder, loc, e.lt(fk.rowIndex(e, 0, half), fk.rowLimit), false);
    OpBuilder::InsertionGuard rowGuard(builder);
    builder.setInsertionPointToStart(&inRange.getThenRegion().front());
    Value rowBase = fk.oRowBase(e, query, head);
    fk.storeRowDirect(results, 0, half, (spec.headDimV + 7) / 8, rowBase,
                      row.inv);
    fk.storeLse(row, query, head);
  }
  builder.setInsertionPointToEnd(&fk.func.getBody().front());
  gpu::ReturnOp::create(builder, loc);
  return success();
}

} // namespace flashjit
