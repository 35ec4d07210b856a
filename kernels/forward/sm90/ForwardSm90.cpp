//===- ForwardSm90.cpp - FlashAttention-3 forward for sm_90a --------------===//
//
// Builds one gpu.func per spec/config: a producer warpgroup and 1-3
// consumer warpgroups of 64 query rows each (after FlashAttention-3's
// hopper/mainloop_fwd_sm90_tma_gmma_ws.hpp):
//
//   producer (setmaxnreg.dec): one thread issues every TMA load, 128-byte
//     swizzled 64-column boxes completing on mbarriers: Q once, then per K/V
//     tile (last to first) K into stage s after kEmpty[s], V after vEmpty[s]
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
#include "flashjit/kernels/Forward.h"
#include "flashjit/kernels/LayoutSm90.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"

#include <string>

using namespace mlir;

namespace flashjit {
namespace {

constexpr int kWgmmaK = 16;
/// wgmma descriptor fields (PTX ISA, "Matrix Descriptor Format"): 128-byte
/// swizzle in bits 62-63, SBO (8-row groups, 1024 bytes) in bits 32-45, LBO
/// in bits 16-29, the shared address in bits 0-13, each in 16-byte units.
constexpr uint64_t kDescSwizzle128 = uint64_t(1) << 62;
constexpr uint64_t descField(int64_t bytes, int shift) {
  return uint64_t(bytes >> 4) << shift;
}
/// Named barrier of all consumer threads (0 is the CTA's).
constexpr int kConsumersBarrier = 1;
/// mbarrier.try_wait's suspend-time hint.
constexpr int64_t kWaitTicks = 10000000;

struct Sm90Builder {
  ForwardKernel &fk;
  const Sm90Layout &L;
  OpBuilder &builder;
  Location loc;
  Emitter &e;
  MLIRContext *ctx;
  Value window;        ///< memref<sharedMemBytes x i8, 3>
  Value barriers;      ///< !nvgpu.mbarrier.group
  Value smemAddress;   ///< shared address of the window, i64
  Value qMap, kMap, vMap;
  Type tmaTileQ, tmaTileKV; ///< memref<1x1xRx64xelem, 3>

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

  Value view(Emitter &x, Type type, Value offsetBytes) {
    return memref::ViewOp::create(x.b, x.loc, cast<MemRefType>(type), window,
                                  offsetBytes, ValueRange{});
  }

  void waitParity(Emitter &x, Value barrier, Value parity) {
    nvgpu::MBarrierTryWaitParityOp::create(x.b, x.loc, barriers, parity,
                                           x.idx(kWaitTicks), barrier);
  }
  void arrive(Emitter &x, Value barrier) {
    nvgpu::MBarrierArriveOp::create(
        x.b, x.loc, nvgpu::MBarrierTokenType::get(ctx), barriers, barrier);
  }

  /// The wgmma descriptor of a 128-byte-swizzled tile at `offsetBytes` of
  /// the window (a multiple of 1024), with leading byte offset `lbo` (the
  /// distance between 64-column boxes; unused for K-major operands).
  Value descriptor(Emitter &x, Value offsetBytes, int64_t lbo) {
    Value addr = arith::AddIOp::create(
        x.b, x.loc, smemAddress,
        arith::IndexCastOp::create(x.b, x.loc, x.b.getI64Type(), offsetBytes));
    Value start = arith::AndIOp::create(
        x.b, x.loc, arith::ShRUIOp::create(x.b, x.loc, addr, i64(x, 4)),
        i64(x, 0x3FFF));
    const uint64_t fields = kDescSwizzle128 |
                            descField(kSwizzleAtomBytes, 32) |
                            descField(lbo, 16);
    return arith::OrIOp::create(x.b, x.loc, start,
                                i64(x, static_cast<int64_t>(fields)));
  }
  Value i64(Emitter &x, int64_t v) {
    return arith::ConstantIntOp::create(x.b, x.loc, v, 64);
  }
  Value addI64(Emitter &x, Value desc, int64_t units) {
    return units == 0 ? desc : arith::AddIOp::create(x.b, x.loc, desc, i64(x, units));
  }

  /// Values passed through an empty asm with side effects: the compiler
  /// neither moves their uses above it nor their definitions below it (a
  /// wgmma's registers are not ready before its wait).
  SmallVector<Value> fence(Emitter &x, ValueRange vals) {
    if (vals.empty())
      return {};
    const int n = vals.size();
    std::string constraints;
    for (int i = 0; i < n; ++i)
      constraints += "=f,";
    for (int i = 0; i < n; ++i)
      constraints += std::to_string(i) + (i + 1 < n ? "," : "");
    Type structTy = LLVM::LLVMStructType::getLiteral(
        ctx, SmallVector<Type>(n, x.b.getF32Type()));
    Value out = LLVM::InlineAsmOp::create(
                    x.b, x.loc, structTy, vals, "", constraints,
                    /*has_side_effects=*/true, /*is_align_stack=*/false,
                    LLVM::tailcallkind::TailCallKind::None,
                    /*asm_dialect=*/nullptr, /*operand_attrs=*/nullptr)
                    .getResult(0);
    return extractAll(x, out, n);
  }
  SmallVector<Value> extractAll(Emitter &x, Value structVal, int n) {
    SmallVector<Value> vals;
    for (int i = 0; i < n; ++i)
      vals.push_back(LLVM::ExtractValueOp::create(x.b, x.loc, structVal, i));
    return vals;
  }

  /// An A-operand register (two elements) as the i32 the asm takes.
  Value asI32(Emitter &x, Value reg) {
    if (reg.getType().isInteger(32))
      return reg;
    Value packed = vector::BitCastOp::create(
        x.b, x.loc, VectorType::get({1}, x.b.getI32Type()), reg);
    return vector::ExtractOp::create(x.b, x.loc, packed, ArrayRef<int64_t>{0});
  }

  /// S = Q K^T of one K/V tile: qkSteps wgmma m64nBNk16 from shared memory.
  /// Q's k16 step ks is in box ks / 4, 32 bytes further per step in it.
  SmallVector<Value> scores(Emitter &x, Value qDesc, Value kDesc) {
    const int n = fk.cfg.blockN / 2;
    Type structTy = LLVM::LLVMStructType::getLiteral(
        ctx, SmallVector<Type>(n, x.b.getF32Type()));
    const auto type = fk.spec.dtype == DType::BF16 ? NVVM::WGMMATypes::bf16
                                                   : NVVM::WGMMATypes::f16;
    NVVM::WgmmaFenceAlignedOp::create(x.b, x.loc);
    Value acc = LLVM::PoisonOp::create(x.b, x.loc, structTy);
    for (int ks = 0; ks < L.qkSteps; ++ks) {
      const int box = ks / 4, within = ks % 4;
      Value a = addI64(x, qDesc, (box * L.qBoxBytes + within * 32) >> 4);
      Value b = addI64(x, kDesc, (box * L.kBoxBytes + within * 32) >> 4);
      acc = NVVM::WgmmaMmaAsyncOp::create(
          x.b, x.loc, structTy, acc, a, b,
          NVVM::MMAShapeAttr::get(ctx, kWgmmaRows, fk.cfg.blockN, kWgmmaK),
          type, type, NVVM::WGMMATypes::f32,
          ks == 0 ? NVVM::WGMMAScaleOut::zero : NVVM::WGMMAScaleOut::one,
          NVVM::WGMMAScaleIn::one, NVVM::WGMMAScaleIn::one,
          NVVM::MMALayout::row, NVVM::MMALayout::col,
          /*satfinite=*/nullptr);
    }
    NVVM::WgmmaGroupSyncAlignedOp::create(x.b, x.loc);
    NVVM::WgmmaWaitGroupSyncOp::create(x.b, x.loc, 0);
    return fence(x, extractAll(x, acc, n));
  }

  /// O += P V: blockN / 16 wgmma m64nNk16 with A (P) from registers and V
  /// MN-major (trans-b 1) in shared memory, a k16 step 16 rows (2048
  /// bytes) further, 64-column boxes kBoxBytes apart (LBO). One asm block:
  /// nvvm.wgmma.mma_async takes A only as a descriptor.
  SmallVector<Value> accumulate(Emitter &x, ValueRange o,
                                ArrayRef<Registers> p, Value vDesc) {
    const int n = o.size();
    const int steps = p.size();
    const char *type = fk.spec.dtype == DType::BF16 ? "bf16" : "f16";
    std::string regs;
    for (int i = 0; i < n; ++i)
      regs += (i ? ", $" : "$") + std::to_string(i);
    std::string text = "{ .reg .pred p; setp.ne.b32 p, 1, 0; ";
    SmallVector<Value> operands(o.begin(), o.end());
    std::string constraints;
    for (int i = 0; i < n; ++i)
      constraints += "=f,";
    for (int i = 0; i < n; ++i)
      constraints += std::to_string(i) + ",";
    const int aBase = 2 * n, dBase = aBase + 4 * steps;
    for (int kk = 0; kk < steps; ++kk) {
      text += "wgmma.mma_async.sync.aligned.m64n" + std::to_string(L.pvN) +
              "k16.f32." + type + "." + type + " {" + regs + "}, {";
      for (int r = 0; r < 4; ++r) {
        text += "$" + std::to_string(aBase + 4 * kk + r) + (r < 3 ? ", " : "");
        operands.push_back(asI32(x, p[kk][r]));
        constraints += "r,";
      }
      text += "}, $" + std::to_string(dBase + kk) + ", p, 1, 1, 1; ";
    }
    for (int kk = 0; kk < steps; ++kk) {
      operands.push_back(addI64(x, vDesc, (kk * kWgmmaK * kTmaBoxRowBytes) >> 4));
      constraints += kk + 1 < steps ? "l," : "l";
    }
    text += "}";
    Type structTy = LLVM::LLVMStructType::getLiteral(
        ctx, SmallVector<Type>(n, x.b.getF32Type()));
    NVVM::WgmmaFenceAlignedOp::create(x.b, x.loc);
    Value out = LLVM::InlineAsmOp::create(
                    x.b, x.loc, structTy, operands, text, constraints,
                    /*has_side_effects=*/true, /*is_align_stack=*/false,
                    LLVM::tailcallkind::TailCallKind::None,
                    LLVM::AsmDialectAttr::get(ctx, LLVM::AsmDialect::AD_ATT),
                    /*operand_attrs=*/nullptr)
                    .getResult(0);
    NVVM::WgmmaGroupSyncAlignedOp::create(x.b, x.loc);
    NVVM::WgmmaWaitGroupSyncOp::create(x.b, x.loc, 0);
    return fence(x, extractAll(x, out, n));
  }

  /// TMA loads of one K or V tile into stage `slot`: its 64-column boxes.
  void loadKV(Emitter &x, Value map, int offset, int boxes, Value slot,
              Value row, Value head, Value batch, Value barrier) {
    for (int b = 0; b < boxes; ++b) {
      Value at = x.add(x.mul(slot, x.idx(boxes * L.kBoxBytes)),
                       x.idx(offset + b * L.kBoxBytes));
      nvgpu::TmaAsyncLoadOp::create(
          x.b, x.loc, view(x, tmaTileKV, at), barriers, map,
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
  Type ptrTy = LLVM::LLVMPointerType::get(ctx);
  ForwardKernel fk(builder, module, name, spec, cfg, L.threads,
                   {ptrTy, ptrTy, ptrTy});
  fk.func->setAttr("flashjit.grid_constant_args",
                   builder.getDenseI32ArrayAttr(
                       {kForwardKernelArgCount, kForwardKernelArgCount + 1,
                        kForwardKernelArgCount + 2}));
  Emitter &e = fk.e;
  Location loc = fk.loc;
  auto smemSpace = gpu::AddressSpaceAttr::get(
      ctx, gpu::GPUDialect::getWorkgroupAddressSpace());

  // ---- shared memory: one extern window, 1024-byte aligned (128-byte
  // swizzled tiles need it). Not gpu.dynamic_shared_memory: its view
  // overlaps other shared variables (docs/HOPPER.md).
  const std::string windowName = "__flashjit_smem";
  {
    OpBuilder::InsertionGuard g(builder);
    builder.setInsertionPointToStart(module.getBody());
    memref::GlobalOp::create(
        builder, loc, windowName, builder.getStringAttr("public"),
        MemRefType::get({0}, builder.getI8Type(), AffineMap(), smemSpace),
        Attribute(), /*constant=*/false, builder.getI64IntegerAttr(1024));
  }
  Value global = memref::GetGlobalOp::create(
      builder, loc,
      MemRefType::get({0}, builder.getI8Type(), AffineMap(), smemSpace),
      windowName);
  auto windowType = MemRefType::get({L.sharedMemBytes}, builder.getI8Type(),
                                    AffineMap(), smemSpace);
  Value window = memref::ReinterpretCastOp::create(
      builder, loc, windowType, global, /*offset=*/0,
      /*sizes=*/ArrayRef<int64_t>{L.sharedMemBytes},
      /*strides=*/ArrayRef<int64_t>{1});
  auto barrierView = memref::ViewOp::create(
      builder, loc,
      MemRefType::get({L.barrierCount}, builder.getI64Type(), AffineMap(),
                      smemSpace),
      window, e.idx(L.barrierOffset), ValueRange{});
  Value barriers =
      UnrealizedConversionCastOp::create(
          builder, loc,
          nvgpu::MBarrierGroupType::get(ctx, smemSpace, L.barrierCount),
          ValueRange{barrierView})
          .getResult(0);
  Value smemAddress = arith::IndexCastOp::create(
      builder, loc, builder.getI64Type(),
      memref::ExtractAlignedPointerAsIndexOp::create(builder, loc, window));

  auto tileType = [&](int rows) {
    return MemRefType::get({1, 1, rows, kTmaBoxCols}, fk.elemTy, AffineMap(),
                           smemSpace);
  };
  auto mapOf = [&](int arg, int rows) {
    auto type = nvgpu::TensorMapDescriptorType::get(
        ctx, tileType(rows), nvgpu::TensorMapSwizzleKind::SWIZZLE_128B,
        nvgpu::TensorMapL2PromoKind::L2PROMO_128B,
        nvgpu::TensorMapOOBKind::OOB_ZERO,
        nvgpu::TensorMapInterleaveKind::INTERLEAVE_NONE);
    return UnrealizedConversionCastOp::create(builder, loc, type,
                                              ValueRange{fk.extraArg(arg)})
        .getResult(0);
  };
  Sm90Builder sb{fk,        L,          builder,     loc,
                 e,         ctx,        window,      barriers,
                 smemAddress, mapOf(0, kWgmmaRows), mapOf(1, cfg.blockN),
                 mapOf(2, cfg.blockN), tileType(kWgmmaRows),
                 tileType(cfg.blockN)};

  // ---- the barriers: thread 0 initialises them, the async proxy (TMA)
  // sees them after the fence.
  Value tid = gpu::ThreadIdOp::create(builder, loc, gpu::Dimension::x);
  const int consumerThreads = L.consumers * kWarpgroupThreads;
  e.ifThen(e.cmp(arith::CmpIPredicate::eq, tid, e.idx(0)), [&] {
    nvgpu::MBarrierInitOp::create(builder, loc, barriers, e.idx(1), sb.qFull(),
                                  Value());
    for (int s = 0; s < cfg.stages; ++s) {
      Value slot = e.idx(s);
      nvgpu::MBarrierInitOp::create(builder, loc, barriers, e.idx(1),
                                    sb.kFull(e, slot), Value());
      nvgpu::MBarrierInitOp::create(builder, loc, barriers,
                                    e.idx(consumerThreads), sb.kEmpty(e, slot),
                                    Value());
      nvgpu::MBarrierInitOp::create(builder, loc, barriers, e.idx(1),
                                    sb.vFull(e, slot), Value());
      nvgpu::MBarrierInitOp::create(builder, loc, barriers,
                                    e.idx(consumerThreads), sb.vEmpty(e, slot),
                                    Value());
    }
    NVVM::FenceProxyOp::create(
        builder, loc, NVVM::ProxyKind::async_shared,
        NVVM::SharedSpaceAttr::get(ctx, NVVM::SharedSpace::shared_cta));
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
    Value round = x.div(it, cfg.stages);
    return arith::TruncIOp::create(
        x.b, x.loc, x.b.getI1Type(),
        arith::IndexCastOp::create(x.b, x.loc, x.b.getI32Type(),
                                   x.rem(round, 2)));
  };

  auto roles = scf::IfOp::create(
      builder, loc, e.cmp(arith::CmpIPredicate::eq, warpgroup, e.idx(0)),
      /*withElse=*/true);
  // ---- producer warpgroup -----------------------------------------------------
  {
    OpBuilder::InsertionGuard g(builder);
    builder.setInsertionPointToStart(&roles.getThenRegion().front());
    NVVM::SetMaxRegisterOp::create(builder, loc, kProducerRegisters,
                                   NVVM::SetMaxRegisterAction::decrease);
    e.ifThen(e.cmp(arith::CmpIPredicate::eq, tid, e.idx(0)), [&] {
      Value qRow = e.add(fk.startQ, fk.mStart);
      nvgpu::MBarrierArriveExpectTxOp::create(
          builder, loc, barriers,
          e.idx(L.consumers * L.boxesQK * L.qBoxBytes), sb.qFull(), Value());
      for (int c = 0; c < L.consumers; ++c)
        for (int b = 0; b < L.boxesQK; ++b)
          nvgpu::TmaAsyncLoadOp::create(
              builder, loc,
              sb.view(e, sb.tmaTileQ,
                      e.idx(L.qOffset + (c * L.boxesQK + b) * L.qBoxBytes)),
              barriers, sb.qMap,
              ValueRange{e.idx(b * kTmaBoxCols),
                         e.add(qRow, e.idx(c * kWgmmaRows)), fk.yBlock,
                         batchCoord},
              sb.qFull(), Value(), Value());
      e.runtimeLoop(e.idx(0), nBlocks, 1, [&](Emitter &x, Value it) {
        Value slot = x.rem(it, cfg.stages);
        Value emptyParity = arith::XOrIOp::create(
            x.b, x.loc, parityOf(x, it),
            arith::ConstantIntOp::create(x.b, x.loc, 1, 1));
        Value row = x.add(fk.startK, x.mul(fk.tileOfIteration(x, it),
                                           x.idx(cfg.blockN)));
        sb.waitParity(x, sb.kEmpty(x, slot), emptyParity);
        nvgpu::MBarrierArriveExpectTxOp::create(
            x.b, x.loc, barriers, x.idx(L.boxesQK * L.kBoxBytes),
            sb.kFull(x, slot), Value());
        sb.loadKV(x, sb.kMap, L.kOffset, L.boxesQK, slot, row, fk.kvHead,
                  batchCoord, sb.kFull(x, slot));
        sb.waitParity(x, sb.vEmpty(x, slot), emptyParity);
        nvgpu::MBarrierArriveExpectTxOp::create(
            x.b, x.loc, barriers, x.idx(L.boxesV * L.kBoxBytes),
            sb.vFull(x, slot), Value());
        sb.loadKV(x, sb.vMap, L.vOffset, L.boxesV, slot, row, fk.kvHead,
                  batchCoord, sb.vFull(x, slot));
      });
    });
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
  // Q (this warpgroup's 64 rows) lands once.
  sb.waitParity(e, sb.qFull(),
                arith::ConstantIntOp::create(builder, loc, 0, 1));
  Value qDesc = sb.descriptor(
      e, e.add(e.idx(L.qOffset), e.mul(consumer, e.idx(L.boxesQK * L.qBoxBytes))),
      L.qBoxBytes);
  const bool zeroVTail = spec.varlen || spec.keyLengths;

  auto loop = scf::ForOp::create(
      builder, loc, e.idx(0), nBlocks, e.idx(1), init,
      [&](OpBuilder &b, Location l, Value it, ValueRange carried) {
        Emitter le{b, l};
        Value slot = le.rem(it, cfg.stages);
        Value parity = parityOf(le, it);
        Value nBlock = fk.tileOfIteration(le, it);
        // ---- S = Q K^T ----
        sb.waitParity(le, sb.kFull(le, slot), parity);
        Value kDesc = sb.descriptor(
            le,
            le.add(le.idx(L.kOffset),
                   le.mul(slot, le.idx(L.boxesQK * L.kBoxBytes))),
            L.kBoxBytes);
        SmallVector<Value> s = sb.scores(le, qDesc, kDesc);
        sb.arrive(le, sb.kEmpty(le, slot));
        Scores sAcc = unflatten(s, 1, cfg.blockN / 8);
        // ---- mods, mask, online softmax ----
        fk.transform(le, nBlock, Value(), sAcc);
        Value tileStart;
        Value needsMask = fk.tileNeedsMask(le, nBlock, tileStart);
        sAcc = fk.applyMask(le, needsMask, tileStart, Value(), sAcc);
        SmallVector<Value> next(carried.begin(), carried.end());
        ForwardKernel::SoftmaxStep sm(fk, le, carried, next, 1, L.dTilesV,
                                      /*rescaleOnNewMax=*/false);
        SmallVector<SmallVector<Registers>> pFrag = sm.softmaxTile(sAcc);
        // ---- O += P V ----
        sb.waitParity(le, sb.vFull(le, slot), parity);
        Value vAt = le.add(le.idx(L.vOffset),
                           le.mul(slot, le.idx(L.boxesV * L.kBoxBytes)));
        if (zeroVTail) {
          // Rows past this sequence's keys hold the next sequence's (or
          // padding) values: P is 0 there, but 0 * inf is NaN. Zero them,
          // once per CTA (only the first tile visited crosses seqlen_k).
          Value tail = le.maxS(le.sub(fk.seqK, tileStart), le.idx(0));
          Value crosses = le.lt(tail, le.idx(cfg.blockN));
          le.ifThen(crosses, [&] {
            // 16-byte chunks of the tail rows of every V box.
            constexpr int kChunks = kTmaBoxRowBytes / 16;
            Value rows = le.sub(le.idx(cfg.blockN), tail);
            Value count = le.mul(rows, le.idx(kChunks * L.boxesV));
            Value consumerThread = le.sub(tid, le.idx(kWarpgroupThreads));
            Type chunkType = VectorType::get({16}, b.getI8Type());
            Value zeros = arith::ConstantOp::create(
                b, l, DenseElementsAttr::get(cast<ShapedType>(chunkType),
                                             b.getI8IntegerAttr(0)));
            le.runtimeLoop(consumerThread, count, consumerThreads,
                           [&](Emitter &x, Value chunk) {
                             Value row = x.add(
                                 tail, x.div(chunk, kChunks * L.boxesV));
                             Value rest = x.rem(chunk, kChunks * L.boxesV);
                             Value at = x.add(
                                 x.add(vAt, x.mul(x.div(rest, kChunks),
                                                  x.idx(L.kBoxBytes))),
                                 x.add(x.mul(row, x.idx(kTmaBoxRowBytes)),
                                       x.mul(x.rem(rest, kChunks),
                                             x.idx(16))));
                             vector::StoreOp::create(
                                 x.b, x.loc, zeros, window, ValueRange{at},
                                 /*nontemporal=*/false, llvm::MaybeAlign(16));
                           });
            NVVM::FenceProxyOp::create(
                b, l, NVVM::ProxyKind::async_shared,
                NVVM::SharedSpaceAttr::get(ctx, NVVM::SharedSpace::shared_cta));
            NVVM::BarrierOp::create(b, l, Type(), le.i32(kConsumersBarrier),
                                    le.i32(consumerThreads),
                                    NVVM::BarrierReductionAttr(), Value());
          });
        }
        Value vDesc = sb.descriptor(le, vAt, L.kBoxBytes);
        SmallVector<Value> o = sb.accumulate(
            le, ValueRange(next).take_front(mOffset), pFrag[0], vDesc);
        sb.arrive(le, sb.vEmpty(le, slot));
        std::copy(o.begin(), o.end(), next.begin());
        scf::YieldOp::create(b, l, next);
      });
  ValueRange results = loop.getResults();

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
