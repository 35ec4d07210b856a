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
///
/// `laneRowOffsets`, when given, replaces rowOffset (which may then be
/// null): in every warp, lane l's
/// laneRowOffsets[j] is rowOffset(rowStart + l + 32 j) (one value per 32
/// rows), and a copying lane takes its row's offset by a shuffle. A lookup
/// per row per warp instead of one per copied chunk, and none of them on a
/// copy's critical path (a paged cache's block table). These copies are
/// run-time loops of several rounds wherever they are.
void copyTile(Emitter &e, const TileCopier &k, Value tid, Value src,
              Value base, RowOffsetFn rowOffset, Value rowStart, Value rowLimit,
              int rows, int dim, int paddedDim, int swizzleBits, Value dst,
              ArrayRef<Value> prefix, bool inLoop, Value rowStride = Value(),
              ArrayRef<Value> laneRowOffsets = {});

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

// ---- ldmatrix addressing of swizzled tiles ----------------------------------
// ldmatrix: lane i gives the address of row i % 8 of matrix i / 8, at chunk
// c (0 or 1) of its fragment's 32-byte pair of 16-byte chunks. A fragment
// starting at chunk 2p has this lane's chunk (2p + c) ^ s, s =
// rowSwizzle(row) < 2^bits, which is 2p - lo + ((lo ^ (s & ~1)) + (c ^ (s &
// 1))) for lo = 2p mod 2^bits. So an operand's fragments are read through
// one view per lo (at most 4), each starting at this lane's offset for that
// lo and indexed by constants only; row offsets are multiples of 8 rows,
// which keep s.

/// Elements of a fragment's pair of 16-byte chunks.
inline constexpr int kFragmentPairElems = 16;

/// One operand's lane addressing (fragmentLanes).
struct FragmentLanes {
  Value base;    ///< elements: row * pitch + (c ^ (s & 1)) * 8
  Value pairSwz; ///< elements: (s & ~1) * 8; null below 2 swizzle bits
  int bits = 0;
};
/// The lane addressing of an operand whose lane row is `row` (lane % 8 plus
/// a multiple of 8) and chunk `chunk` (0 or 1), in rows of `pitch` elements
/// swizzled by `bits`.
FragmentLanes fragmentLanes(Emitter &e, Value lane, Value row, Value chunk,
                            int pitch, int bits);

/// The views of one operand (fragmentViews).
struct FragmentViews {
  SmallVector<Value> views; ///< view j: fragments with lo = 2j
  int groupElems = 0;       ///< elements of a swizzle group (at least a pair)
  /// The view and the constant column of a fragment starting at `col`.
  std::pair<Value, int64_t> at(int col) const {
    const int loElems = col % groupElems;
    return {views[loElems / kFragmentPairElems], col - loElems};
  }
};
/// The views (of `shape`, in `dtype`) of one operand whose fragments start
/// at element columns below `cols`, in the dynamic shared memory `dynSmem`
/// from `offsetBytes`. `inLoop`: the starts are opaque (Emitter::opaque).
/// `colOffset` (null: none), a run-time multiple of 16 elements, moves every
/// fragment right (a warp's columns): view j's lo becomes (colOffset + 16 j)
/// mod the swizzle group, folded into its start.
FragmentViews fragmentViews(Emitter &x, DType dtype, Value dynSmem,
                            ArrayRef<int64_t> shape, int offsetBytes,
                            const FragmentLanes &f, int cols, bool inLoop,
                            Value colOffset = Value());

} // namespace flashjit

#endif // FLASHJIT_KERNELS_COMMON_SM80OPS_H
