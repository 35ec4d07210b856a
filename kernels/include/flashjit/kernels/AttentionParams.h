//===- AttentionParams.h - The math problem of one attention forward call -===//
//
// Plain C++ shared by the runtime (which launches it), the CPU reference
// (which recomputes it) and the tests and CLI (which build it). Sizes,
// strides, dtype, mask and scale: everything except where the data lives.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_ATTENTIONPARAMS_H
#define FLASHJIT_KERNELS_ATTENTIONPARAMS_H

#include "flashjit/compiler/AttentionSpec.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

namespace flashjit {

/// a * b, saturated at the int64 limits instead of overflowing: sizes built
/// from untrusted extents stay defined, and validateParams rejects them.
inline int64_t saturatingMul(int64_t a, int64_t b) {
  int64_t r;
  if (!__builtin_mul_overflow(a, b, &r))
    return r;
  return (a < 0) != (b < 0) ? INT64_MIN : INT64_MAX;
}
inline int64_t saturatingMul(int64_t a, int64_t b, int64_t c) {
  return saturatingMul(saturatingMul(a, b), c);
}

/// Strides in elements of a [batch, heads, seqlen, dim] tensor whose last
/// dimension is contiguous.
struct Strides {
  int64_t batch = 0;
  int64_t head = 0;
  int64_t row = 0;

  int64_t offset(int64_t b, int64_t h, int64_t r) const {
    return b * batch + h * head + r * row;
  }
};

/// Dense strides of a [batch, seqlen, heads, dim] tensor (BSHD, the layout
/// of FlashAttention and PyTorch SDPA inputs before transposition).
inline Strides bshdStrides(int64_t heads, int64_t seqlen, int64_t dim) {
  return {saturatingMul(seqlen, heads, dim), dim, saturatingMul(heads, dim)};
}
/// Dense strides of a [batch, heads, seqlen, dim] tensor (BHSD).
inline Strides bhsdStrides(int64_t heads, int64_t seqlen, int64_t dim) {
  return {saturatingMul(heads, seqlen, dim), saturatingMul(seqlen, dim), dim};
}

/// Sentinel for an unbounded side of a sliding window.
inline constexpr int64_t kUnboundedWindow = -1;

/// An additive bias tensor broadcastable to [batch, headsQ, seqlenQ,
/// seqlenK]: its batch and heads extents are either 1 or the full size
/// (size-1 dimensions are broadcast whatever their stride), its rows and
/// columns are seqlenQ and seqlenK (the maxima under varlen, indexed by the
/// positions within each sequence), columns contiguous, dtype of Q.
struct BiasShape {
  int64_t batch = 1;
  int64_t heads = 1;
  Strides strides; ///< batch, head and row strides in elements
};

/// Packed variable-length batches (FlashAttention's varlen API): sequence b
/// owns rows [cuSeqlensQ[b], cuSeqlensQ[b+1]) of Q/O and rows
/// [cuSeqlensK[b], cuSeqlensK[b+1]) of K/V. These are the host copies; the
/// runtime passes device copies to the kernel.
struct VarlenSeqs {
  std::vector<int32_t> cuSeqlensQ; ///< batch + 1 non-decreasing prefix sums
  std::vector<int32_t> cuSeqlensK; ///< batch + 1 non-decreasing prefix sums
  int64_t totalQ = 0;              ///< rows in the packed Q and O buffers
  int64_t totalK = 0;              ///< rows in the packed K and V buffers
};

/// A paged KV cache (vLLM, FlashInfer): K and V are pages of pageSize rows,
/// [numPages, pageSize, headsKV, dim] when dense (any strides: the K/V
/// batch strides are page strides). Key j of sequence b is row j % pageSize
/// of page blockTable[b * maxPagesPerSeq + j / pageSize]; the keys of
/// sequence b are keyLengths[b] (+ newKeys), so paged problems always have
/// key lengths. Only the entries of pages that hold keys are read (and
/// checked); the rest of a row may hold anything.
struct PagedKV {
  int64_t numPages = 0;
  int64_t pageSize = 0;
  int64_t maxPagesPerSeq = 0;
  /// Host copy, [batch, maxPagesPerSeq] int32 page ids (row-major); the
  /// runtime passes a device copy to the kernel. Empty: device-only values
  /// that the caller vouches for (trustDeviceLengths).
  std::vector<int32_t> blockTable;
};

/// Sizes, layout and numerics of one forward call. Q is [batch, headsQ,
/// seqlenQ, headDimQK], K [batch, headsKV, seqlenK, headDimQK], V [batch,
/// headsKV, seqlenK, headDimV], O like Q with headDimV, LSE float32 [batch,
/// headsQ, seqlenQ] with contiguous rows.
///
/// Under varlen, seqlenQ/seqlenK are the largest sequence lengths, the
/// tensors are packed [total, heads, dim] (batch strides are ignored: row r
/// of sequence b is row cuSeqlens[b] + r) and LSE is [headsQ, totalQ]
/// (lseBatchStride ignored).
///
/// Scores: x = scale * q.k; with softcap x = softcap * tanh(x / softcap);
/// then x += bias (tensor or ALiBi); then masked pairs are -inf. A row whose
/// every score is -inf writes O = 0 and LSE = -inf.
struct AttentionParams {
  DType dtype = DType::BF16;
  MaskMode mask = MaskMode::None;
  int64_t batch = 1;
  int64_t headsQ = 1;
  int64_t headsKV = 1;
  int64_t seqlenQ = 1;
  int64_t seqlenK = 1;
  int64_t headDimQK = 64;
  int64_t headDimV = 64;
  Strides qStrides, kStrides, vStrides, oStrides;
  int64_t lseBatchStride = 0;
  int64_t lseHeadStride = 0;
  /// Multiplies Q.K^T before the softmax; unset means 1/sqrt(headDimQK).
  std::optional<double> softmaxScale;
  /// MaskMode::Window: query i (of a sequence with sq queries and sk keys)
  /// sees keys j with i + sk - sq - windowLeft <= j <= i + sk - sq +
  /// windowRight; kUnboundedWindow drops that side.
  int64_t windowLeft = kUnboundedWindow;
  int64_t windowRight = kUnboundedWindow;
  /// > 0: cap the scores with softcap * tanh(x / softcap); 0: off.
  double softcap = 0;
  BiasMode bias = BiasMode::None;
  /// BiasMode::Tensor: the bias tensor's extents and strides.
  BiasShape biasShape;
  /// BiasMode::Alibi: slopes are float32 [headsQ], or [batch, headsQ] with
  /// this batch stride (0: shared by every batch).
  int64_t alibiBatchStride = 0;
  /// Set: packed variable-length sequences.
  std::optional<VarlenSeqs> varlen;
  /// Non-empty: [batch] key counts; keys at or past keyLengths[b] are
  /// padding (masked). The causal/window diagonal uses this length.
  std::vector<int32_t> keyLengths;
  /// Set: K and V are a paged cache (PagedKV).
  std::optional<PagedKV> paged;
  /// The append path of a paged cache: > 0 new rows per sequence, kNew and
  /// vNew of [batch, newKeys, headsKV, dim] (kNewStrides, vNewStrides), are
  /// written to cache rows keyLengths[b] .. keyLengths[b] + newKeys - 1
  /// before the attention, which then sees keyLengths[b] + newKeys keys
  /// (keyLengths are the cache lengths before the append, as
  /// FlashAttention's cache_seqlens).
  int64_t newKeys = 0;
  Strides kNewStrides, vNewStrides;

  double scale() const {
    return softmaxScale ? *softmaxScale
                        : 1.0 / std::sqrt(static_cast<double>(headDimQK));
  }
  /// Query heads sharing one K/V head (query head h reads K/V head h / group).
  int64_t gqaGroup() const { return headsKV > 0 ? headsQ / headsKV : 0; }

  // ---- per-sequence view (varlen and key lengths applied) ------------------
  /// Queries of sequence b.
  int64_t seqlenQOf(int64_t b) const {
    return varlen ? varlen->cuSeqlensQ[b + 1] - varlen->cuSeqlensQ[b]
                  : seqlenQ;
  }
  /// Real keys of sequence b (key padding removed, appended keys added).
  int64_t seqlenKOf(int64_t b) const {
    if (!keyLengths.empty())
      return keyLengths[b] + newKeys;
    return varlen ? varlen->cuSeqlensK[b + 1] - varlen->cuSeqlensK[b]
                  : seqlenK;
  }
  /// Element offsets of row `r` of sequence b, head h.
  int64_t qOffset(int64_t b, int64_t h, int64_t r) const {
    return rowOffset(qStrides, b, h, r, /*isQuery=*/true);
  }
  int64_t kOffset(int64_t b, int64_t h, int64_t r) const {
    return paged ? pagedOffset(kStrides, b, h, r)
                 : rowOffset(kStrides, b, h, r, /*isQuery=*/false);
  }
  int64_t vOffset(int64_t b, int64_t h, int64_t r) const {
    return paged ? pagedOffset(vStrides, b, h, r)
                 : rowOffset(vStrides, b, h, r, /*isQuery=*/false);
  }
  /// Element offsets of row r of head h of sequence b in kNew / vNew.
  int64_t kNewOffset(int64_t b, int64_t h, int64_t r) const {
    return kNewStrides.offset(b, h, r);
  }
  int64_t vNewOffset(int64_t b, int64_t h, int64_t r) const {
    return vNewStrides.offset(b, h, r);
  }
  int64_t oOffset(int64_t b, int64_t h, int64_t r) const {
    return rowOffset(oStrides, b, h, r, /*isQuery=*/true);
  }
  int64_t lseOffset(int64_t b, int64_t h, int64_t r) const {
    return varlen ? h * lseHeadStride + varlen->cuSeqlensQ[b] + r
                  : b * lseBatchStride + h * lseHeadStride + r;
  }
  /// Offset of bias element (query i, key j) of sequence b, query head h.
  int64_t biasOffset(int64_t b, int64_t h, int64_t i, int64_t j) const {
    const Strides &s = biasShape.strides;
    return (biasShape.batch == 1 ? 0 : b * s.batch) +
           (biasShape.heads == 1 ? 0 : h * s.head) + i * s.row + j;
  }

  /// Sets every stride for dense BSHD q, k, v, o and a dense LSE (packed
  /// [total, heads, dim] and LSE [heads, totalQ] under varlen; pages of
  /// [pageSize, heads, dim] and new K/V [batch, newKeys, heads, dim] when
  /// paged).
  void setDenseBSHD() {
    const int64_t rowsQ = varlen ? varlen->totalQ : seqlenQ;
    const int64_t rowsK =
        paged ? paged->pageSize : varlen ? varlen->totalK : seqlenK;
    qStrides = bshdStrides(headsQ, rowsQ, headDimQK);
    kStrides = bshdStrides(headsKV, rowsK, headDimQK);
    vStrides = bshdStrides(headsKV, rowsK, headDimV);
    kNewStrides = bshdStrides(headsKV, newKeys, headDimQK);
    vNewStrides = bshdStrides(headsKV, newKeys, headDimV);
    oStrides = bshdStrides(headsQ, rowsQ, headDimV);
    lseBatchStride = varlen ? 0 : saturatingMul(headsQ, seqlenQ);
    lseHeadStride = rowsQ;
  }
  /// Dense bias strides for the current biasShape extents.
  void setDenseBias() {
    biasShape.strides = {saturatingMul(biasShape.heads, seqlenQ, seqlenK),
                         saturatingMul(seqlenQ, seqlenK), seqlenK};
  }

  /// Elements spanned by each tensor (largest offset + 1), for allocation;
  /// validateParams has checked that they fit (in bytes) in int64.
  int64_t qElements() const {
    return span(qStrides, headsQ, rowsQ(), headDimQK);
  }
  int64_t kElements() const {
    return paged ? pagedSpan(kStrides, headDimQK)
                 : span(kStrides, headsKV, rowsK(), headDimQK);
  }
  int64_t vElements() const {
    return paged ? pagedSpan(vStrides, headDimV)
                 : span(vStrides, headsKV, rowsK(), headDimV);
  }
  int64_t kNewElements() const {
    return newKeys > 0 ? kNewStrides.offset(batch - 1, headsKV - 1,
                                            newKeys - 1) +
                             headDimQK
                       : 0;
  }
  int64_t vNewElements() const {
    return newKeys > 0 ? vNewStrides.offset(batch - 1, headsKV - 1,
                                            newKeys - 1) +
                             headDimV
                       : 0;
  }
  int64_t oElements() const {
    return span(oStrides, headsQ, rowsQ(), headDimV);
  }
  int64_t lseElements() const {
    return (varlen ? 0 : (batch - 1) * lseBatchStride) +
           (headsQ - 1) * lseHeadStride + rowsQ();
  }
  int64_t biasElements() const {
    return biasOffset(batch - 1, headsQ - 1, seqlenQ - 1, seqlenK - 1) + 1;
  }

protected: // BackwardParams addresses its gradients the same way
  int64_t rowsQ() const { return varlen ? varlen->totalQ : seqlenQ; }
  int64_t rowsK() const { return varlen ? varlen->totalK : seqlenK; }
  int64_t rowOffset(const Strides &s, int64_t b, int64_t h, int64_t r,
                    bool isQuery) const {
    if (!varlen)
      return s.offset(b, h, r);
    const auto &cu = isQuery ? varlen->cuSeqlensQ : varlen->cuSeqlensK;
    return h * s.head + (cu[b] + r) * s.row;
  }
  /// Key r of sequence b, head h, through the block table.
  int64_t pagedOffset(const Strides &s, int64_t b, int64_t h,
                      int64_t r) const {
    const int64_t page =
        paged->blockTable[b * paged->maxPagesPerSeq + r / paged->pageSize];
    return page * s.batch + h * s.head + (r % paged->pageSize) * s.row;
  }
  int64_t pagedSpan(const Strides &s, int64_t dim) const {
    return s.offset(paged->numPages - 1, headsKV - 1, paged->pageSize - 1) +
           dim;
  }
  int64_t span(const Strides &s, int64_t heads, int64_t rows,
               int64_t dim) const {
    const int64_t lastBatch = varlen ? 0 : batch - 1;
    return s.offset(lastBatch, heads - 1, rows - 1) + dim;
  }
};

/// Largest byte extent of one tensor: offsets are int64 in the kernels.
inline constexpr int64_t kMaxTensorBytes = INT64_MAX;

/// Checks the math problem: sizes, head dims, GQA divisibility, strides
/// (every tensor's extent fits kMaxTensorBytes; the outputs O and LSE do
/// not overlap themselves), the scale and softcap as the kernel sees them
/// (float32), the window, bias extents, varlen prefix sums and key lengths
/// (pointer-free; the runtime adds pointer checks). The message names the
/// argument and the accepted range. The LSE strides are checked only when
/// `writesLse` (a call without an LSE output may leave them 0).
/// `trustMissingLengths`: empty host copies of the varlen prefix sums stand
/// for device-only values that are not checked (the caller vouches that
/// seqlenQ / seqlenK bound every sequence and totalQ / totalK the packed
/// rows, as FlashAttention trusts max_seqlen); without it they are errors.
Status validateParams(const AttentionParams &params, bool writesLse = true,
                      bool trustMissingLengths = false);

/// The first step of validateParams: dtype, mask, bias kind, batch, heads,
/// sequence lengths and head dims in range. Holds before anything is sized
/// from the params (host copies of cu_seqlens have batch + 1 entries).
Status validateSizes(const AttentionParams &params);

/// The key range [first, last] query i of a sequence with sq queries and sk
/// keys may see; empty when first > last.
struct KeyRange {
  int64_t first, last;
};
inline KeyRange visibleKeys(MaskMode mask, int64_t windowLeft,
                            int64_t windowRight, int64_t i, int64_t sq,
                            int64_t sk) {
  const int64_t diag = i + sk - sq; // bottom-right aligned
  KeyRange r{0, sk - 1};
  if (mask == MaskMode::Causal)
    r.last = std::min(r.last, diag);
  if (mask == MaskMode::Window) {
    if (windowLeft != kUnboundedWindow)
      r.first = std::max<int64_t>(0, diag - windowLeft);
    if (windowRight != kUnboundedWindow)
      r.last = std::min(r.last, diag + windowRight);
  }
  return r;
}

/// Whether query row i may attend to key j (bottom-right aligned masks).
inline bool isVisible(const AttentionParams &p, int64_t i, int64_t j,
                      int64_t sq, int64_t sk) {
  const KeyRange r =
      visibleKeys(p.mask, p.windowLeft, p.windowRight, i, sq, sk);
  return j >= r.first && j <= r.last;
}

/// (query, key) pairs that survive the mask (not the bias) summed over the
/// batch, per head: the work a kernel must do, for FLOP counts.
inline int64_t visiblePairs(const AttentionParams &p) {
  int64_t pairs = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t sq = p.seqlenQOf(b), sk = p.seqlenKOf(b);
    for (int64_t i = 0; i < sq; ++i) {
      const KeyRange r =
          visibleKeys(p.mask, p.windowLeft, p.windowRight, i, sq, sk);
      pairs += std::max<int64_t>(0, r.last - r.first + 1);
    }
  }
  return pairs;
}

} // namespace flashjit

#endif // FLASHJIT_KERNELS_ATTENTIONPARAMS_H
