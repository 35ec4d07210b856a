//===- ForwardKernel.h - What every forward family's kernel shares -*- C++
//-*-===//
//
// Internal to kernels/ (pulls in MLIR). The forward families differ in how
// they copy tiles and multiply them (cp.async + mma.sync; TMA + wgmma);
// everything else is built here once, after FlashAttention-3's split
// (mask.h, softmax.h, block.h, seqlen.h, pack_gqa.h, tile_scheduler.hpp,
// epilogue_fwd.hpp); the backward kernels reuse the arguments, sequence
// bounds, score mods and masks:
//
//   signature and arguments  ForwardKernelArgs, then the family's own
//   CTA order                causal CTAs longest first (ctaCoordinates)
//   sequence                 varlen starts and lengths, key lengths
//   rows                     query rows, or packed GQA (query, head) rows
//   K/V block range          the tiles a row block sees under its mask
//   score mods               scale, softcap, bias tensor, ALiBi
//   masks                    seqlen_k, causal and window bounds
//   online softmax           row maxima, exp2, row sums, O rescale
//   epilogue                 O / l, LSE, stores of exactly head_dim_v
//
// A thread's scores and outputs are AccTiles (Emitter.h): 4 values per m16
// rows x n8 columns, the layout of mma.sync's accumulators and of a warp's
// slice of a wgmma accumulator, so both families hand the same tiles here.
// Each piece creates its ops in the order the sm80 family always did (the
// golden-PTX test pins it).
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_COMMON_FORWARDKERNEL_H
#define FLASHJIT_KERNELS_COMMON_FORWARDKERNEL_H

#include "common/Emitter.h"

#include "flashjit/compiler/AttentionSpec.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"

namespace flashjit {

/// Global tensors are passed as bare pointers (one kernel parameter each).
/// MLIR's bare-pointer convention needs a static shape, so the memrefs carry
/// this placeholder extent; bounds come from the run-time sequence lengths.
inline constexpr int64_t kGlobalExtent = int64_t(1) << 40;
inline constexpr int kGlobalSpace = 1;
inline constexpr double kLn2 = 0.6931471805599453;

/// Score tiles of a thread: [m16 tile][n8 key tile].
using Scores = SmallVector<SmallVector<AccTile>>;
/// Scores as 4 values per tile (loop-carried and branch results), and back.
SmallVector<Value> flatten(const Scores &tiles);
Scores unflatten(ValueRange flat, int mTiles, int nTiles);
/// Row half `half` of one m16 row of tiles: this thread's scores.
SmallVector<Value> rowScores(ArrayRef<AccTile> tiles, int half);
/// The page of key index `key` (index, below 2^31): key / page_size as the
/// host's PageDivisor computes it, (key * mul) >> shift with i32 `mul` and
/// `shift`, one 32 x 32 -> 64-bit multiply instead of a division.
Value pageOfKey(Emitter &x, Value key, Value mul, Value shift);

class ForwardKernel {
public:
  /// Declares the kernel `name` at the end of `module`: a gpu.func taking
  /// ForwardKernelArgs followed by `extraArgs`, `threads` threads per CTA;
  /// decodes the arguments and leaves the builder at the entry block.
  ForwardKernel(OpBuilder &builder, mlir::gpu::GPUModuleOp module,
                StringRef name, const AttentionSpec &spec,
                const TileConfig &cfg, int threads,
                ArrayRef<Type> extraArgs = {});

  OpBuilder &builder;
  Location loc;
  Emitter e;
  const AttentionSpec &spec;
  const TileConfig &cfg;
  Type elemTy, f32;
  mlir::gpu::GPUFuncOp func;
  const bool causal, window, packed;
  const int gqa;

  // ---- arguments (ForwardKernelArgs), strides as indices --------------------
  Value q, kT, v, o, lse, bias, alibiSlopes, cuSeqlensQ, cuSeqlensK, keyLengths;
  Value qBS, qHS, qRS, kBS, kHS, kRS, vBS, vHS, vRS, oBS, oHS, oRS;
  Value lseBS, lseHS, biasBS, biasHS, biasRS, alibiBS;
  /// seqK becomes the sequence's own length in locateRows (varlen, key
  /// lengths); seqKArg stays the argument (the causal CTA order sizes
  /// chunks by it).
  Value seqKArg, seqQ, seqK, windowLeft, windowRight, scaleLog2, softcap;
  /// The family's own parameters after ForwardKernelArgs (and
  /// DecodeKernelArgs).
  Value extraArg(int i);

  // ---- decode (Decode.h): DecodeKernelArgs, when the spec has pagedKV or
  //      splitKV ------------------------------------------------------------
  const bool decodeArgs;
  Value blockTable, partialO, partialLse, blockTableStride, partialEntries,
      pageSize, pageDivMul, pageDivShift, numSplits, headsQArg, newKeys;
  /// seqlen_q as passed (seqQ becomes the sequence's own under varlen).
  Value seqQArg;
  /// splitKV: this CTA's split (grid z is batch x numSplits + split).
  Value split;
  /// pagedKV: where key `key` of this sequence lives: the page id from the
  /// block table and its row in that page. Keys are clamped into [0, seqK)
  /// first, so that padding rows read a table entry the caller filled
  /// (their copies read nothing).
  struct PagedRow {
    Value page, slot;
  };
  PagedRow pagedRow(Emitter &x, Value key);
  /// The element offset of `row` from the head's base (kBase, vBase): the
  /// page id times `pageStride` plus the slot times `rowStride` (K and V
  /// share the lookup, each has its strides).
  static Value pagedOffset(Emitter &x, const PagedRow &row, Value pageStride,
                           Value rowStride);

  // ---- the thread's MMA coordinates (set by the family) -------------------
  /// Row within an 8-row half, column pair (lane / 4, lane % 4), and the
  /// first tile row of this warp's m16 tiles.
  Value group, inGroup, warpRow0;

  /// The CTA's row block, its query head (with packed GQA its K/V head) and
  /// its batch; causal CTAs longest first. `fresh`: read the special
  /// registers again (a value kept across the main loop costs a register).
  std::array<Value, 3> ctaCoordinates(bool fresh);

  // ---- this CTA's rows (locateRows) ----------------------------------------
  Value mBlock, yBlock, batch, kvHead, startQ, startK, rowLimit, qSeqBase,
      oSeqBase, kBase, vBase, mStart;
  /// pagedKV: this sequence's first block-table entry.
  Value blockTableRow;
  /// The CTA coordinates, this sequence's starts and lengths, the row bases.
  void locateRows();
  /// This sequence's starts and lengths (startQ, startK, seqQ, seqK) for
  /// `batch`: the part of locateRows that kernels with other CTA
  /// coordinates (the backward's) share.
  void locateSequence();
  /// Tile row -> query, -> head (packed GQA: row r is query r / group of
  /// head r % group); the element offset of a Q row from qSeqBase.
  Value queryOf(Emitter &x, Value row);
  Value headOf(Emitter &x, Value row);
  Value qRowOffset(Emitter &x, Value row);

  // ---- K/V tiles [loBlock, hiBlock), visited last to first (blockRange) ----
  Value diag, active, hiBlock, loBlock, nBlocks;
  void blockRange();
  /// The block's first and last query (rebuilt where used).
  Value firstQueryOf(Emitter &x);
  Value lastQueryOf(Emitter &x);
  /// Iteration it visits tile hiBlock - 1 - it.
  Value tileOfIteration(Emitter &x, Value it);
  /// The backward's view of the masks: the row blocks [lo, hi) of
  /// cfg.blockM queries that see some key of K/V tile `nBlock` (of
  /// cfg.blockN keys); empty (hi == lo) when none does. Needs seqQ, seqK,
  /// diag and the window.
  std::pair<Value, Value> queryBlockRange(Emitter &x, Value nBlock);

  // ---- the thread's rows: row (mt, half) is tile row warpRow0 + 16 mt +
  //      8 half + group. Rebuilt where used: values kept across the main loop
  //      cost registers the accumulators need.
  Value rowIndex(Emitter &x, int mt, int half);
  Value rowQuery(Emitter &x, int mt, int half);
  Value rowHead(Emitter &x, int mt, int half);

  // ---- score mods (prepareScoreMods) --------------------------------------
  /// Plain kernels keep raw scores and fold the scale into the softmax
  /// (softmaxScale = scaleLog2); with a softcap or bias, scores move into the
  /// log2 domain first (softmaxScale = 1).
  bool transformScores = false;
  Value softmaxScale;
  void prepareScoreMods(int mTiles);
  /// Key of score element (nt, el) of key tile `nBlock`, from tile row
  /// `keyRow0` (null: 0).
  Value keyOf(Emitter &x, Value nBlock, Value keyRow0, int nt, int el);
  /// Scores into the log2 domain: scale, softcap, bias (when
  /// transformScores). `tanhOut` (the backward's softcap derivative)
  /// receives tanh(scale * s / softcap) of each score.
  void transform(Emitter &x, Value nBlock, Value keyRow0, Scores &acc,
                 Scores *tanhOut = nullptr);
  Value scoreToLog2(Emitter &x, Value s, Value *tanhOut = nullptr);
  /// tanh(scale * s / softcap).
  Value softcapTanh(Emitter &x, Value s);
  Value addBias(Emitter &x, Value score, int mt, int half, Value key);
  /// The same for any score: (head, query, key) within the sequence (the
  /// backward's transposed tiles), `slopeLog2` ALiBi's slope * log2(e) of
  /// the head (null without ALiBi).
  Value addBiasAt(Emitter &x, Value score, Value head, Value query, Value key,
                  Value slopeLog2);
  Value capLog2, capInner; ///< softcap * log2(e); scale / softcap
  /// ALiBi slope * log2(e) of rows (mt, half).
  SmallVector<SmallVector<Value>> alibiLog2;

  // ---- masks
  // -----------------------------------------------------------------
  /// Whether key tile `nBlock` crosses seqlen_k or a mask boundary of this
  /// row block; `tileStart` receives its first key.
  Value tileNeedsMask(Emitter &x, Value nBlock, Value &tileStart);
  /// `acc` (key tiles from tile row keyRow0 of the tile at tileStart) with
  /// the keys each row may not see set to -inf, when needsMask.
  Scores applyMask(Emitter &x, Value needsMask, Value tileStart, Value keyRow0,
                   const Scores &acc);

  // ---- online softmax
  // --------------------------------------------------------
  Value negInfF, zeroF;
  /// One K/V tile's softmax update of rows (mt, half): the new maxima, the
  /// exp2 rescale factors, P and its row sums. `carried` holds the loop
  /// state (O tiles, then m, then l); `next` receives it.
  struct SoftmaxStep {
    ForwardKernel &k;
    Emitter &le;
    ValueRange carried;
    MutableArrayRef<Value> next;
    int mTiles, dTiles;
    bool rescaleOnNewMax;
    /// exp2(m_old - m_new), and the m that exp2 subtracts, per m-tile and
    /// row half.
    SmallVector<SmallVector<Value>> alphas, mUses;
    Value maxMoved; ///< some row of this thread has a new maximum

    SoftmaxStep(ForwardKernel &k, Emitter &le, ValueRange carried,
                MutableArrayRef<Value> next, int mTiles, int dTiles,
                bool rescaleOnNewMax);
    int mOffset() const { return 4 * mTiles * dTiles; }
    int lOffset() const { return mOffset() + 2 * mTiles; }
    /// The row's new maximum from this thread's part of it.
    void updateMax(int mt, int half, Value threadMax);
    /// P = exp2(S * scale - m') of m-tile mt's score tiles, into rowTerms
    /// (per row half) and pRows[tile][half] (row half of P's tile rounded
    /// into one register right after its exps).
    void exponentials(Emitter &x, int mt, ArrayRef<AccTile> tiles,
                      SmallVector<SmallVector<Value>> &rowTerms,
                      SmallVector<std::array<Value, 2>> &pRows);
    /// O tiles of m-tile mt with row half h times alpha[mt][h], `from` -> `to`.
    void rescaleO(Emitter &x, int mt, ValueRange from,
                  MutableArrayRef<Value> to);
    /// O *= alpha only when some row of the warp has a new maximum.
    void rescaleWhereMaxMoved(OpBuilder &b, Location l);
    /// The whole update for one K/V tile's scores `s` (all key tiles): new
    /// maxima, P, l (row sums of 16-key slices in order), O rescaled into
    /// `next` (unless `rescale` is false: the caller rescales O itself, once
    /// an MMA still accumulating into it has retired). Returns P as MMA A
    /// operands: [m-tile][16-key k-step].
    SmallVector<SmallVector<Registers>> softmaxTile(const Scores &s,
                                                    bool rescale = true);
  };
  /// The loop's initial state: O = 0, m = -inf, l = 0.
  SmallVector<Value> softmaxInit(int mTiles, int dTiles);
  /// This thread's part of a row sum over one 16-key slice.
  static Value sliceSum(Emitter &x, ArrayRef<Value> terms);
  /// P's A operand of one 16-key slice: register r is row half r % 2 of its
  /// score tile r / 2.
  static Registers sliceOperand(ArrayRef<std::array<Value, 2>> pRows);
  /// Two f32 values rounded to a pair of elements, and into one register.
  Value roundPair(Emitter &x, Value lo, Value hi);
  Value packPair(Emitter &x, Value lo, Value hi);
  Value toRegister(OpBuilder &b, Value pair);
  /// An accumulator tile with row half h multiplied by factor[h].
  static AccTile scaleRows(Emitter &x, AccTile acc, ArrayRef<Value> factor);

  // ---- epilogue ------------------------------------------------------------
  /// A finished row: l (summed over the quad), m, whether every key was
  /// masked, and 1 / l (0 for such a row).
  struct FinalRow {
    Value lSum, m, empty, inv;
  };
  FinalRow finishRow(Value lPartial, Value m);
  /// This thread's two columns of O tile dt, and the start of O's row.
  Value fragmentCol(int dt);
  Value oRowBase(Emitter &x, Value query, Value head);
  /// Stores row half `half` of this thread's O tiles of m-tile mt (times
  /// inv) at rowBase: exactly head_dim_v columns.
  void storeRowDirect(ValueRange results, int mt, int half, int dTiles,
                      Value rowBase, Value inv);
  /// The row's LSE (natural log) when the spec writes it.
  void storeLse(const FinalRow &row, Value query, Value head);
  /// splitKV: row half `half` of this thread's O tiles of m-tile mt, times
  /// inv, and the row's LSE, as float32 partials of this split (Decode.h's
  /// PartialLayout): exactly head_dim_v columns.
  void storePartialRow(ValueRange results, int mt, int half, int dTiles,
                       const FinalRow &row, Value query, Value head);
};

} // namespace flashjit

#endif // FLASHJIT_KERNELS_COMMON_FORWARDKERNEL_H
