//===- Sm90Ops.h - The sm90 family's wgmma, mbarrier and shared memory -*-===//
//
// Internal to kernels/ (pulls in MLIR): what sm_90a kernels build with, one
// place for the traps docs/MLIR-NOTES.md and ../shared/HOPPER-MLIR.md
// record: one 1024-byte-aligned extern shared window holding tiles and
// mbarriers (not gpu.dynamic_shared_memory), wgmma descriptors of
// 128-byte-swizzled tiles advanced by hand, wgmma with A from registers as
// inline PTX, and accumulators fenced (CUTLASS's warpgroup_fence_operand).
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_COMMON_SM90OPS_H
#define FLASHJIT_KERNELS_COMMON_SM90OPS_H

#include "common/Emitter.h"
#include "common/Sm80Ops.h"

#include "flashjit/compiler/AttentionSpec.h"
#include "flashjit/kernels/LayoutSm90.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"

namespace flashjit::sm90 {

/// mbarrier.try_wait's suspend-time hint.
inline constexpr int64_t kWaitTicks = 10000000;

/// The shared memory of an sm_90a kernel: one extern window of `bytes`,
/// 1024-byte aligned (128-byte-swizzled tiles need it), its `count`
/// mbarriers (none: `barriers` is null) at byte `barrierOffset`.
struct Window {
  Value window;   ///< memref<bytes x i8, 3>
  Value barriers; ///< !nvgpu.mbarrier.group
  Value address;  ///< the window's shared address, i64
  int barrierOffset = 0;

  /// Builds them at the builder's point (the global at the start of
  /// `module`).
  static Window create(OpBuilder &b, Location loc, mlir::gpu::GPUModuleOp module,
                       int bytes, int barrierOffset, int count);
  /// A view of `type` (a memref in shared memory) at `offsetBytes`.
  Value view(Emitter &x, Type type, Value offsetBytes) const;

  /// Barrier `barrier` of the group: wait for phase `parity` (i1), arrive.
  void waitParity(Emitter &x, Value barrier, Value parity) const;
  void arrive(Emitter &x, Value barrier) const;
  /// Arrives on `barrier` once this thread's cp.async copies so far have
  /// landed (cp.async.mbarrier.arrive.noinc: one of the arrivals the
  /// barrier counts). A waiter sees the copies; wgmma reads them only after
  /// its fenceAsyncShared.
  void arriveOnCopies(Emitter &x, Value barrier) const;
  /// The wgmma descriptor of a 128-byte-swizzled tile at `offsetBytes` of
  /// the window (a multiple of 1024), with leading byte offset `lbo` (the
  /// distance between 64-column boxes of an MN-major operand; unused for a
  /// K-major one).
  Value descriptor(Emitter &x, Value offsetBytes, int64_t lbo) const;
};

/// memref<1x1x`rows`x64xelem> in shared memory: one TMA box of a 4-d map.
/// With `heads` > 1 the rows are (query, head) pairs of a packed GQA group
/// (TmaBox::heads): the same bytes, the map's dimensions in another order
/// (memref<1x`rows / heads`x`heads`x64xelem>).
Type tmaBoxType(mlir::MLIRContext *ctx, Type elem, int rows, int heads = 1);
/// Kernel argument `arg` (the address of a __grid_constant__ CUtensorMap)
/// as the tensor map of boxes `box` that the runtime encodes
/// (runtime/lib/TensorMaps.cpp: 128-byte swizzle, zeros out of bounds).
Value tensorMap(Emitter &x, Value arg, Type box);
/// Copies rows [first, first + rows) x columns [0, dim) of a tensor (row r
/// at element base + rowOffset(r)) into wgmma's 128-byte-swizzled boxes of
/// 64 columns by cp.async (copyTile: zeros past `dim` and from row `limit`):
/// box b into dst[prefix..., b], or dst[prefix..., firstBox + b].
void copyBoxes(Emitter &x, const TileCopier &copier, Value tid, Value src,
               Value base, RowOffsetFn rowOffset, Value first, Value limit,
               int rows, int dim, Value dst, ArrayRef<Value> prefix,
               Value firstBox, bool inLoop, Value rowStride);

/// An mbarrier's phase parity (i1) after `completions` completed phases.
Value parity(Emitter &x, Value completions);

/// Adds `bytes` (i32, a multiple of 16) of float32 from shared address
/// `smemAddr` (i32) to global address `gmemAddr` (i64), both 16-byte
/// aligned, as one bulk group of this thread (cp.reduce.async.bulk .add:
/// element-wise atomic, through the async proxy; inline PTX, MLIR 22 has
/// only the tensor form). Shared stores it reads need
/// fenceAsyncShared first.
void reduceAddBulk(Emitter &x, Value gmemAddr, Value smemAddr, Value bytes);
/// Waits until this thread's bulk groups have read their shared memory
/// (`readsOnly`) or completed.
void waitBulk(Emitter &x, bool readsOnly);

/// `desc` moved `bytes` (a multiple of 16) further in shared memory.
Value advance(Emitter &x, Value desc, int64_t bytes);

/// fence.proxy.async.shared::cta: this thread's shared-memory stores become
/// visible to the async proxy (TMA, wgmma).
void fenceAsyncShared(Emitter &x);

/// Values (f32 or i32) passed through an empty asm with side effects: the
/// compiler neither moves their uses above it nor their definitions below
/// it (a wgmma's registers are not ready before its wait), and keeps their
/// registers until it.
SmallVector<Value> fence(Emitter &x, ValueRange vals);
/// The n fields of an LLVM struct value.
SmallVector<Value> extractAll(Emitter &x, Value structVal, int n);
/// A register of two 16-bit elements as the i32 an asm operand takes.
Value asI32(Emitter &x, Value reg);

/// One commit group of wgmma m64nNk16 from shared memory, `steps` k16 steps:
/// step s reads A at aDesc + aOffset(s) and B at bDesc + bOffset(s) (bytes),
/// A K-major, B K-major (`transB` false) or MN-major. Returns the f32
/// accumulator struct (N / 2 per thread), not ready before retire().
Value mmaFromShared(Emitter &x, DType dtype, int n, int steps, Value aDesc,
                    Value bDesc, function_ref<int64_t(int)> aOffset,
                    function_ref<int64_t(int)> bOffset, bool transB = false);
/// One commit group of wgmma m64nNk16 with A from registers (4 i32 per k16
/// step, `a`), B MN-major (trans-b 1) at bDesc, step kk at `bStepBytes` * kk
/// further; accumulates into `acc` (N / 2 f32). One asm block: MLIR's wgmma
/// takes A only as a descriptor.
Value mmaFromRegisters(Emitter &x, DType dtype, ValueRange acc,
                       ArrayRef<Value> a, Value bDesc, int64_t bStepBytes);
/// Waits until at most `pending` commit groups are in flight, then reads
/// the accumulator `acc` of a retired one (fenced).
SmallVector<Value> retire(Emitter &x, int pending, Value acc);

} // namespace flashjit::sm90

#endif // FLASHJIT_KERNELS_COMMON_SM90OPS_H
