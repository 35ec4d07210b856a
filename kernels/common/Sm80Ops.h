//===- Sm80Ops.h - The sm80 family's copies and MMAs ------------*- C++ -*-===//
//
// Internal to kernels/ (pulls in MLIR): what the sm80 family's forward and
// backward kernels both build with: cp.async tile copies into (swizzled or
// padded) shared memory, their commit groups, ldmatrix and mma.sync
// m16n8k16 on 32-bit registers.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_COMMON_SM80OPS_H
#define FLASHJIT_KERNELS_COMMON_SM80OPS_H

#include "common/Emitter.h"

#include "flashjit/compiler/AttentionSpec.h"

namespace flashjit {

/// What copyTile needs of its kernel.
struct TileCopier {
  const AttentionSpec &spec;
  int threads;   ///< threads of the CTA, all of which copy
  bool quick;    ///< the quick form (rounds are run-time loops everywhere)
};

/// rowSwizzle (LayoutSm80.h) of tile row `row` in a layout of `bits`
/// swizzle bits, in 16-byte chunks.
Value rowSwizzleOf(Emitter &e, Value row, int bits);
/// Where element column `col` of tile row `row` sits in a shared-memory row
/// swizzled by `bits` (0: not swizzled).
Value swizzledCol(Emitter &e, int bits, Value row, Value col);

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
void copyTile(Emitter &e, const TileCopier &k, Value tid, Value src,
              Value base, RowOffsetFn rowOffset, Value rowStart, Value rowLimit,
              int rows, int dim, int paddedDim, int swizzleBits, Value dst,
              ArrayRef<Value> prefix, bool inLoop, Value rowStride = Value());

/// Closes the current cp.async group (an empty group when nothing was
/// issued, so that group counting stays uniform across iterations).
void commitGroup(Emitter &e);
/// Waits until at most `pending` of the most recent groups are in flight.
void waitGroups(Emitter &e, int pending);

/// The 32-bit register of a pair of 16-bit elements as the MMAs take it:
/// i32 for bf16, vector<2xf16> for f16.
Value pairRegister(OpBuilder &b, Location loc, DType dtype, Value pair);
/// An ldmatrix (.trans when `transpose`) of `tiles` 8x8 matrices of
/// `elemTy` at this lane's `indices` of `view`: one register each.
Registers ldmatrix(Emitter &x, DType dtype, Value view, ValueRange indices,
                   bool transpose, int tiles);
/// D = A B + C, mma.sync.m16n8k16 (row.col) with float32 accumulators.
AccTile mmaSync(OpBuilder &b, Location loc, DType dtype, ArrayRef<Value> a,
                ArrayRef<Value> bRegs, const AccTile &c);

} // namespace flashjit

#endif // FLASHJIT_KERNELS_COMMON_SM80OPS_H
