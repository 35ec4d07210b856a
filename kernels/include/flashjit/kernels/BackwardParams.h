//===- BackwardParams.h - The math problem of one attention backward call -===//
//
// Plain C++ shared by the runtime (which launches it), the CPU reference
// (which recomputes it) and the tests and CLI (which build it). A backward
// call is its forward call (AttentionParams: Q, K, V, the forward's O and
// its LSE, which the backward requires) plus dO and the layouts of the
// gradients dQ, dK, dV and, for a full bias tensor, dBias.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_BACKWARDPARAMS_H
#define FLASHJIT_KERNELS_BACKWARDPARAMS_H

#include "flashjit/kernels/AttentionParams.h"

namespace flashjit {

/// The gradients of loss L with respect to Q, K, V (and the bias) given dO
/// = dL/dO. dO and dQ/dK/dV have the extents of O and Q/K/V, each with its
/// own strides (last dimension contiguous); under varlen they are packed
/// like their tensors. dK and dV of a K/V head sum the query heads of its
/// GQA group. Key rows past keyLengths[b] (padding) get zero gradients.
struct BackwardParams : AttentionParams {
  Strides dOStrides, dQStrides, dKStrides, dVStrides;
  /// BiasMode::Tensor with a full [batch, headsQ, seqlenQ, seqlenK] bias
  /// (no broadcast dimension): also write dBias = dL/dbias, dtype of Q,
  /// element (b, h, i, j) at dBiasOffset, columns contiguous. Elements that
  /// no (query, key) pair of a sequence reaches are written as 0.
  bool biasGrad = false;
  Strides dBiasStrides;
  /// dQ accumulated without float atomics: the same bits on every run (the
  /// default accumulates with atomics, in whatever order CTAs finish).
  bool deterministic = false;

  int64_t dOOffset(int64_t b, int64_t h, int64_t r) const {
    return rowOffset(dOStrides, b, h, r, /*isQuery=*/true);
  }
  int64_t dQOffset(int64_t b, int64_t h, int64_t r) const {
    return rowOffset(dQStrides, b, h, r, /*isQuery=*/true);
  }
  int64_t dKOffset(int64_t b, int64_t h, int64_t r) const {
    return rowOffset(dKStrides, b, h, r, /*isQuery=*/false);
  }
  int64_t dVOffset(int64_t b, int64_t h, int64_t r) const {
    return rowOffset(dVStrides, b, h, r, /*isQuery=*/false);
  }
  int64_t dBiasOffset(int64_t b, int64_t h, int64_t i, int64_t j) const {
    return b * dBiasStrides.batch + h * dBiasStrides.head +
           i * dBiasStrides.row + j;
  }
  /// Rows of sequence b's keys in K, V, dK and dV (its key padding
  /// included): what dK and dV write for it.
  int64_t keyRowsOf(int64_t b) const {
    return varlen ? varlen->cuSeqlensK[b + 1] - varlen->cuSeqlensK[b]
                  : seqlenK;
  }

  /// Every stride dense BSHD (AttentionParams::setDenseBSHD), the gradients
  /// like their tensors, dBias dense [batch, headsQ, seqlenQ, seqlenK].
  void setDenseBSHD() {
    AttentionParams::setDenseBSHD();
    dOStrides = oStrides;
    dQStrides = qStrides;
    dKStrides = kStrides;
    dVStrides = vStrides;
    dBiasStrides = {headsQ * seqlenQ * seqlenK, seqlenQ * seqlenK, seqlenK};
  }

  /// Elements spanned by each tensor (largest offset + 1), for allocation.
  int64_t dOElements() const { return span(dOStrides, headsQ, rowsQ(), headDimV); }
  int64_t dQElements() const { return span(dQStrides, headsQ, rowsQ(), headDimQK); }
  int64_t dKElements() const { return span(dKStrides, headsKV, rowsK(), headDimQK); }
  int64_t dVElements() const { return span(dVStrides, headsKV, rowsK(), headDimV); }
  int64_t dBiasElements() const {
    return dBiasOffset(batch - 1, headsQ - 1, seqlenQ - 1, seqlenK - 1) + 1;
  }
};

/// validateParams (LSE required: the backward reads it) plus the
/// gradients: strides >= 0, gradient rows that do not overlap, and dBias
/// only for a full bias tensor. The message names the argument and the
/// accepted range.
Status validateBackwardParams(const BackwardParams &params,
                              bool trustMissingLengths = false);

/// The float32 workspace of a backward call (allocated by the runtime or
/// the caller): per query row its LSE in the log2 domain and D = rowsum(dO
/// * O), then `dqSplits` partial dQ sums of head_dim_qk columns. Rows are
/// numbered as LSE rows of a dense [batch, headsQ, seqlenQ] (varlen:
/// [headsQ, totalQ]) tensor.
struct BackwardWorkspace {
  int64_t rowBatchStride = 0; ///< 0 under varlen
  int64_t rowHeadStride = 0;
  int64_t rows = 0;           ///< rows of one array
  int64_t dqRowStride = 0;    ///< floats per dQ row (head_dim_qk rounded up to 4)
  int64_t dqSplits = 1;
  int64_t lseOffset = 0;      ///< in floats from the workspace's start
  int64_t dOutSumOffset = 0;  ///< D
  int64_t dqAccumOffset = 0;
  int64_t dqSplitStride = 0;  ///< floats between two splits' dQ sums
  int64_t floats = 0;         ///< total size
  int64_t bytes() const { return floats * 4; }
};
/// The workspace layout for `params` with `dqSplits` dQ partial sums (1 in
/// the default mode, where CTAs add to one sum with atomics).
BackwardWorkspace backwardWorkspace(const BackwardParams &params,
                                    int64_t dqSplits);

} // namespace flashjit

#endif // FLASHJIT_KERNELS_BACKWARDPARAMS_H
