//===- BackwardParams.cpp - Checks on a backward call; its workspace ------===//
#include "flashjit/kernels/BackwardParams.h"

#include <string>

namespace flashjit {

namespace {
std::string str(int64_t v) { return std::to_string(v); }
int64_t roundUp(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
} // namespace

Status validateBackwardParams(const BackwardParams &p,
                              bool trustMissingLengths) {
  if (Status s = validateParams(p, /*writesLse=*/true, trustMissingLengths);
      !s)
    return s;
  if (p.paged || p.newKeys != 0)
    return Status::error("a paged KV cache (and its appended keys) is a "
                         "decode input: the backward takes contiguous K/V");
  const int64_t rowsQ = p.varlen ? p.varlen->totalQ : p.seqlenQ;
  const int64_t rowsK = p.varlen ? p.varlen->totalK : p.seqlenK;
  const struct {
    const char *name;
    const Strides &strides;
    int64_t rows, dim;
    bool written;
  } tensors[] = {{"do", p.dOStrides, rowsQ, p.headDimV, false},
                 {"dq", p.dQStrides, rowsQ, p.headDimQK, true},
                 {"dk", p.dKStrides, rowsK, p.headDimQK, true},
                 {"dv", p.dVStrides, rowsK, p.headDimV, true}};
  for (const auto &t : tensors) {
    const std::pair<const char *, int64_t> strides[] = {
        {"batch", p.varlen ? 0 : t.strides.batch}, // ignored under varlen
        {"head", t.strides.head},
        {"row", t.strides.row}};
    for (auto [dim, value] : strides)
      if (value < 0)
        return Status::error(std::string(t.name) + "_" + dim +
                             "_stride must be >= 0, got " + str(value));
    // Two rows writing one element race (dO is only read: a broadcast one,
    // as autograd makes for a sum, may have a row stride of 0).
    if (t.written && t.rows > 1 && t.strides.row < t.dim)
      return Status::error(std::string(t.name) + "_row_stride must be >= " +
                           str(t.dim) + " so rows do not overlap, got " +
                           str(t.strides.row));
  }
  if (p.biasGrad) {
    if (p.bias != BiasMode::Tensor)
      return Status::error("dbias needs an additive bias tensor (bias mode "
                           "tensor), got bias mode " +
                           std::string(toString(p.bias)));
    if (p.biasShape.batch != p.batch || p.biasShape.heads != p.headsQ)
      return Status::error(
          "dbias needs a full [batch, heads_q, seqlen_q, seqlen_k] bias; "
          "this one is [" +
          str(p.biasShape.batch) + ", " + str(p.biasShape.heads) +
          ", seqlen_q, seqlen_k] (broadcast dimensions have no gradient of "
          "their own: sum the full gradient over them)");
    const Strides &s = p.dBiasStrides;
    if (s.batch < 0 || s.head < 0 || s.row < 0)
      return Status::error("dbias strides must be >= 0, got {" + str(s.batch) +
                           ", " + str(s.head) + ", " + str(s.row) + "}");
    if (p.seqlenQ > 1 && s.row < p.seqlenK)
      return Status::error("dbias_row_stride must be >= seqlen_k (" +
                           str(p.seqlenK) + ") so rows do not overlap, got " +
                           str(s.row));
  }
  return Status::ok();
}

BackwardWorkspace backwardWorkspace(const BackwardParams &p,
                                    int64_t dqSplits) {
  BackwardWorkspace w;
  const int64_t rowsQ = p.varlen ? p.varlen->totalQ : p.seqlenQ;
  w.rowBatchStride = p.varlen ? 0 : p.headsQ * p.seqlenQ;
  w.rowHeadStride = rowsQ;
  w.rows = p.varlen ? p.headsQ * rowsQ : p.batch * p.headsQ * p.seqlenQ;
  // 16-byte aligned arrays and rows.
  w.dqRowStride = roundUp(p.headDimQK, 4);
  w.dqSplits = dqSplits;
  w.lseOffset = 0;
  w.dOutSumOffset = roundUp(w.rows, 4);
  w.dqAccumOffset = w.dOutSumOffset + roundUp(w.rows, 4);
  w.dqSplitStride = w.rows * w.dqRowStride;
  w.floats = w.dqAccumOffset + dqSplits * w.dqSplitStride;
  return w;
}

} // namespace flashjit
