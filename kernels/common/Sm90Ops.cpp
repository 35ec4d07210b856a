//===- Sm90Ops.cpp - The sm90 family's wgmma, mbarrier and shared memory --===//
#include "common/Sm90Ops.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"

#include <string>

using namespace mlir;

namespace flashjit::sm90 {
namespace {
/// wgmma descriptor fields (PTX ISA, "Matrix Descriptor Format"): 128-byte
/// swizzle in bits 62-63, SBO (8-row groups, 1024 bytes) in bits 32-45, LBO
/// in bits 16-29, the shared address in bits 0-13, each in 16-byte units.
constexpr uint64_t kDescSwizzle128 = uint64_t(1) << 62;
constexpr uint64_t descField(int64_t bytes, int shift) {
  return uint64_t(bytes >> 4) << shift;
}
const char *const kWindowName = "__flashjit_smem";

Value i64(Emitter &x, int64_t v) {
  return arith::ConstantIntOp::create(x.b, x.loc, v, 64);
}
Type accumulatorType(MLIRContext *ctx, int n) {
  return LLVM::LLVMStructType::getLiteral(
      ctx, SmallVector<Type>(n, Float32Type::get(ctx)));
}
NVVM::WGMMATypes wgmmaType(DType dtype) {
  return dtype == DType::BF16 ? NVVM::WGMMATypes::bf16 : NVVM::WGMMATypes::f16;
}
} // namespace

Window Window::create(OpBuilder &b, Location loc, gpu::GPUModuleOp module,
                      int bytes, int barrierOffset, int count) {
  MLIRContext *ctx = b.getContext();
  auto smemSpace = gpu::AddressSpaceAttr::get(
      ctx, gpu::GPUDialect::getWorkgroupAddressSpace());
  auto empty = MemRefType::get({0}, b.getI8Type(), AffineMap(), smemSpace);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(module.getBody());
    memref::GlobalOp::create(b, loc, kWindowName, b.getStringAttr("public"),
                             empty, Attribute(), /*constant=*/false,
                             b.getI64IntegerAttr(kSwizzleAtomBytes));
  }
  Value global = memref::GetGlobalOp::create(b, loc, empty, kWindowName);
  Window w;
  w.window = memref::ReinterpretCastOp::create(
      b, loc, MemRefType::get({bytes}, b.getI8Type(), AffineMap(), smemSpace),
      global, /*offset=*/0, /*sizes=*/ArrayRef<int64_t>{bytes},
      /*strides=*/ArrayRef<int64_t>{1});
  Emitter e{b, loc};
  if (count > 0) {
    auto barrierView = memref::ViewOp::create(
        b, loc,
        MemRefType::get({count}, b.getI64Type(), AffineMap(), smemSpace),
        w.window, e.idx(barrierOffset), ValueRange{});
    w.barriers =
        UnrealizedConversionCastOp::create(
            b, loc, nvgpu::MBarrierGroupType::get(ctx, smemSpace, count),
            ValueRange{barrierView})
            .getResult(0);
  }
  w.barrierOffset = barrierOffset;
  w.address = arith::IndexCastOp::create(
      b, loc, b.getI64Type(),
      memref::ExtractAlignedPointerAsIndexOp::create(b, loc, w.window));
  return w;
}

Value Window::view(Emitter &x, Type type, Value offsetBytes) const {
  return memref::ViewOp::create(x.b, x.loc, cast<MemRefType>(type), window,
                                offsetBytes, ValueRange{});
}

void Window::waitParity(Emitter &x, Value barrier, Value parity) const {
  nvgpu::MBarrierTryWaitParityOp::create(x.b, x.loc, barriers, parity,
                                         x.idx(kWaitTicks), barrier);
}

void Window::arrive(Emitter &x, Value barrier) const {
  nvgpu::MBarrierArriveOp::create(
      x.b, x.loc, nvgpu::MBarrierTokenType::get(x.b.getContext()), barriers,
      barrier);
}

void Window::arriveOnCopies(Emitter &x, Value barrier) const {
  Value at = arith::AddIOp::create(
      x.b, x.loc, address,
      arith::IndexCastOp::create(
          x.b, x.loc, x.b.getI64Type(),
          x.add(x.idx(barrierOffset), x.mul(barrier, x.idx(8)))));
  Value ptr = LLVM::IntToPtrOp::create(
      x.b, x.loc,
      LLVM::LLVMPointerType::get(x.b.getContext(),
                                 static_cast<unsigned>(NVVM::NVVMMemorySpace::Shared)),
      at);
  NVVM::CpAsyncMBarrierArriveOp::create(x.b, x.loc, ptr, /*noinc=*/true);
}

void copyBoxes(Emitter &x, const TileCopier &copier, Value tid, Value src,
               Value base, RowOffsetFn rowOffset, Value first, Value limit,
               int rows, int dim, Value dst, ArrayRef<Value> prefix,
               Value firstBox, bool inLoop, Value rowStride) {
  for (int box = 0; box * kTmaBoxCols < dim; ++box) {
    SmallVector<Value> at(prefix.begin(), prefix.end());
    at.push_back(firstBox ? x.add(firstBox, x.idx(box)) : x.idx(box));
    copyTile(x, copier, tid, src, x.add(base, x.idx(box * kTmaBoxCols)),
             rowOffset, first, limit, rows,
             std::min(kTmaBoxCols, dim - box * kTmaBoxCols), kTmaBoxCols,
             kBoxSwizzleBits, dst, at, inLoop, rowStride);
  }
}

Value Window::descriptor(Emitter &x, Value offsetBytes, int64_t lbo) const {
  Value addr = arith::AddIOp::create(
      x.b, x.loc, address,
      arith::IndexCastOp::create(x.b, x.loc, x.b.getI64Type(), offsetBytes));
  Value start = arith::AndIOp::create(
      x.b, x.loc, arith::ShRUIOp::create(x.b, x.loc, addr, i64(x, 4)),
      i64(x, 0x3FFF));
  const uint64_t fields = kDescSwizzle128 | descField(kSwizzleAtomBytes, 32) |
                          descField(lbo, 16);
  return arith::OrIOp::create(x.b, x.loc, start,
                              i64(x, static_cast<int64_t>(fields)));
}

Type tmaBoxType(MLIRContext *ctx, Type elem, int rows, int heads) {
  auto smemSpace = gpu::AddressSpaceAttr::get(
      ctx, gpu::GPUDialect::getWorkgroupAddressSpace());
  SmallVector<int64_t> shape = {1, 1, rows, kTmaBoxCols};
  if (heads > 1)
    shape = {1, rows / heads, heads, kTmaBoxCols};
  return MemRefType::get(shape, elem, AffineMap(), smemSpace);
}

Value tensorMap(Emitter &x, Value arg, Type box) {
  auto type = nvgpu::TensorMapDescriptorType::get(
      x.b.getContext(), cast<MemRefType>(box),
      nvgpu::TensorMapSwizzleKind::SWIZZLE_128B,
      nvgpu::TensorMapL2PromoKind::L2PROMO_128B,
      nvgpu::TensorMapOOBKind::OOB_ZERO,
      nvgpu::TensorMapInterleaveKind::INTERLEAVE_NONE);
  return UnrealizedConversionCastOp::create(x.b, x.loc, type, ValueRange{arg})
      .getResult(0);
}

Value parity(Emitter &x, Value completions) {
  return arith::TruncIOp::create(
      x.b, x.loc, x.b.getI1Type(),
      arith::IndexCastOp::create(x.b, x.loc, x.b.getI32Type(),
                                 x.rem(completions, 2)));
}

void reduceAddBulk(Emitter &x, Value gmemAddr, Value smemAddr, Value bytes) {
  LLVM::InlineAsmOp::create(
      x.b, x.loc, TypeRange{}, ValueRange{gmemAddr, smemAddr, bytes},
      "cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [$0], "
      "[$1], $2;\n\tcp.async.bulk.commit_group;",
      "l,r,r,~{memory}", /*has_side_effects=*/true, /*is_align_stack=*/false,
      LLVM::tailcallkind::TailCallKind::None, /*asm_dialect=*/nullptr,
      /*operand_attrs=*/nullptr);
}

void waitBulk(Emitter &x, bool readsOnly) {
  NVVM::CpAsyncBulkWaitGroupOp::create(
      x.b, x.loc, 0, readsOnly ? x.b.getUnitAttr() : UnitAttr());
}

Value advance(Emitter &x, Value desc, int64_t bytes) {
  const int64_t units = bytes >> 4;
  return units == 0 ? desc
                    : arith::AddIOp::create(x.b, x.loc, desc, i64(x, units));
}

void fenceAsyncShared(Emitter &x) {
  NVVM::FenceProxyOp::create(
      x.b, x.loc, NVVM::ProxyKind::async_shared,
      NVVM::SharedSpaceAttr::get(x.b.getContext(),
                                 NVVM::SharedSpace::shared_cta));
}

SmallVector<Value> extractAll(Emitter &x, Value structVal, int n) {
  SmallVector<Value> vals;
  for (int i = 0; i < n; ++i)
    vals.push_back(LLVM::ExtractValueOp::create(x.b, x.loc, structVal, i));
  return vals;
}

SmallVector<Value> fence(Emitter &x, ValueRange vals) {
  if (vals.empty())
    return {};
  const int n = vals.size();
  std::string constraints;
  SmallVector<Type> types;
  for (Value v : vals) {
    constraints += v.getType().isF32() ? "=f," : "=r,";
    types.push_back(v.getType());
  }
  for (int i = 0; i < n; ++i)
    constraints += std::to_string(i) + (i + 1 < n ? "," : "");
  Type structTy = LLVM::LLVMStructType::getLiteral(x.b.getContext(), types);
  Value out = LLVM::InlineAsmOp::create(
                  x.b, x.loc, structTy, vals, "", constraints,
                  /*has_side_effects=*/true, /*is_align_stack=*/false,
                  LLVM::tailcallkind::TailCallKind::None,
                  /*asm_dialect=*/nullptr, /*operand_attrs=*/nullptr)
                  .getResult(0);
  return extractAll(x, out, n);
}

Value asI32(Emitter &x, Value reg) {
  if (reg.getType().isInteger(32))
    return reg;
  Value packed = vector::BitCastOp::create(
      x.b, x.loc, VectorType::get({1}, x.b.getI32Type()), reg);
  return vector::ExtractOp::create(x.b, x.loc, packed, ArrayRef<int64_t>{0});
}

Value mmaFromShared(Emitter &x, DType dtype, int n, int steps, Value aDesc,
                    Value bDesc, function_ref<int64_t(int)> aOffset,
                    function_ref<int64_t(int)> bOffset, bool transB) {
  MLIRContext *ctx = x.b.getContext();
  Type structTy = accumulatorType(ctx, n / 2);
  const NVVM::WGMMATypes type = wgmmaType(dtype);
  NVVM::WgmmaFenceAlignedOp::create(x.b, x.loc);
  Value acc = LLVM::PoisonOp::create(x.b, x.loc, structTy);
  for (int ks = 0; ks < steps; ++ks) {
    Value a = advance(x, aDesc, aOffset(ks));
    Value b = advance(x, bDesc, bOffset(ks));
    acc = NVVM::WgmmaMmaAsyncOp::create(
        x.b, x.loc, structTy, acc, a, b,
        NVVM::MMAShapeAttr::get(ctx, 64, n, kWgmmaK), type, type,
        NVVM::WGMMATypes::f32,
        ks == 0 ? NVVM::WGMMAScaleOut::zero : NVVM::WGMMAScaleOut::one,
        NVVM::WGMMAScaleIn::one, NVVM::WGMMAScaleIn::one,
        NVVM::MMALayout::row,
        transB ? NVVM::MMALayout::row : NVVM::MMALayout::col,
        /*satfinite=*/nullptr);
  }
  NVVM::WgmmaGroupSyncAlignedOp::create(x.b, x.loc);
  return acc;
}

Value mmaFromRegisters(Emitter &x, DType dtype, ValueRange acc,
                       ArrayRef<Value> a, Value bDesc, int64_t bStepBytes) {
  MLIRContext *ctx = x.b.getContext();
  const int n = acc.size();
  const int steps = a.size() / 4;
  const char *type = dtype == DType::BF16 ? "bf16" : "f16";
  std::string regs;
  for (int i = 0; i < n; ++i)
    regs += (i ? ", $" : "$") + std::to_string(i);
  std::string text = "{ .reg .pred p; setp.ne.b32 p, 1, 0; ";
  SmallVector<Value> operands(acc.begin(), acc.end());
  std::string constraints;
  for (int i = 0; i < n; ++i)
    constraints += "=f,";
  for (int i = 0; i < n; ++i)
    constraints += std::to_string(i) + ",";
  const int aBase = 2 * n, dBase = aBase + 4 * steps;
  for (int kk = 0; kk < steps; ++kk) {
    text += "wgmma.mma_async.sync.aligned.m64n" + std::to_string(2 * n) +
            "k16.f32." + type + "." + type + " {" + regs + "}, {";
    for (int r = 0; r < 4; ++r) {
      text += "$" + std::to_string(aBase + 4 * kk + r) + (r < 3 ? ", " : "");
      operands.push_back(a[4 * kk + r]);
      constraints += "r,";
    }
    text += "}, $" + std::to_string(dBase + kk) + ", p, 1, 1, 1; ";
  }
  for (int kk = 0; kk < steps; ++kk) {
    operands.push_back(advance(x, bDesc, kk * bStepBytes));
    constraints += kk + 1 < steps ? "l," : "l";
  }
  text += "}";
  NVVM::WgmmaFenceAlignedOp::create(x.b, x.loc);
  Value out = LLVM::InlineAsmOp::create(
                  x.b, x.loc, accumulatorType(ctx, n), operands, text,
                  constraints,
                  /*has_side_effects=*/true, /*is_align_stack=*/false,
                  LLVM::tailcallkind::TailCallKind::None,
                  LLVM::AsmDialectAttr::get(ctx, LLVM::AsmDialect::AD_ATT),
                  /*operand_attrs=*/nullptr)
                  .getResult(0);
  NVVM::WgmmaGroupSyncAlignedOp::create(x.b, x.loc);
  return out;
}

SmallVector<Value> retire(Emitter &x, int pending, Value acc) {
  NVVM::WgmmaWaitGroupSyncOp::create(x.b, x.loc, pending);
  auto type = cast<LLVM::LLVMStructType>(acc.getType());
  return fence(x, extractAll(x, acc, type.getBody().size()));
}

} // namespace flashjit::sm90
