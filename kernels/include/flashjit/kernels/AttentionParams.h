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

#include <cmath>
#include <cstdint>
#include <optional>

namespace flashjit {

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
  return {seqlen * heads * dim, dim, heads * dim};
}
/// Dense strides of a [batch, heads, seqlen, dim] tensor (BHSD).
inline Strides bhsdStrides(int64_t heads, int64_t seqlen, int64_t dim) {
  return {heads * seqlen * dim, seqlen * dim, dim};
}

/// Sizes, layout and numerics of one forward call. Q is [batch, headsQ,
/// seqlenQ, headDimQK], K [batch, headsKV, seqlenK, headDimQK], V [batch,
/// headsKV, seqlenK, headDimV], O like Q with headDimV, LSE float32 [batch,
/// headsQ, seqlenQ] with contiguous rows.
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

  double scale() const {
    return softmaxScale ? *softmaxScale
                        : 1.0 / std::sqrt(static_cast<double>(headDimQK));
  }
  /// Query heads sharing one K/V head (query head h reads K/V head h / group).
  int64_t gqaGroup() const { return headsKV > 0 ? headsQ / headsKV : 0; }

  /// Sets every stride for dense BSHD q, k, v, o and a dense LSE.
  void setDenseBSHD() {
    qStrides = bshdStrides(headsQ, seqlenQ, headDimQK);
    kStrides = bshdStrides(headsKV, seqlenK, headDimQK);
    vStrides = bshdStrides(headsKV, seqlenK, headDimV);
    oStrides = bshdStrides(headsQ, seqlenQ, headDimV);
    lseBatchStride = headsQ * seqlenQ;
    lseHeadStride = seqlenQ;
  }

  /// Elements spanned by each tensor (largest offset + 1), for allocation.
  int64_t qElements() const {
    return span(qStrides, headsQ, seqlenQ, headDimQK);
  }
  int64_t kElements() const {
    return span(kStrides, headsKV, seqlenK, headDimQK);
  }
  int64_t vElements() const {
    return span(vStrides, headsKV, seqlenK, headDimV);
  }
  int64_t oElements() const {
    return span(oStrides, headsQ, seqlenQ, headDimV);
  }
  int64_t lseElements() const {
    return (batch - 1) * lseBatchStride + (headsQ - 1) * lseHeadStride +
           seqlenQ;
  }

private:
  int64_t span(const Strides &s, int64_t heads, int64_t rows,
               int64_t dim) const {
    return s.offset(batch - 1, heads - 1, rows - 1) + dim;
  }
};

/// Whether query row i may attend to key j under `mask`. Causal masks are
/// aligned to the bottom-right corner (FlashAttention 2.1+): the last query
/// sees every key, so i sees j iff j <= i + seqlenK - seqlenQ.
inline bool isVisible(MaskMode mask, int64_t i, int64_t j, int64_t seqlenQ,
                      int64_t seqlenK) {
  return mask == MaskMode::None || j <= i + seqlenK - seqlenQ;
}

/// (query, key) pairs that survive the mask in one (batch, head) slice: the
/// work a kernel must do, for FLOP counts.
inline int64_t visiblePairs(MaskMode mask, int64_t seqlenQ, int64_t seqlenK) {
  if (mask == MaskMode::None)
    return seqlenQ * seqlenK;
  int64_t pairs = 0;
  for (int64_t i = 0; i < seqlenQ; ++i) {
    const int64_t visible = i + seqlenK - seqlenQ + 1; // keys 0..i+Sk-Sq
    pairs += visible < 0 ? 0 : visible;
  }
  return pairs;
}

} // namespace flashjit

#endif // FLASHJIT_KERNELS_ATTENTIONPARAMS_H
