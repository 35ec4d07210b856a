//===- Reference.h - CPU oracle for the attention kernels -----------------===//
//
// The float64 reference forward pass, a plain float32-accumulate forward pass
// (the yardstick of the "2x" correctness rule FlashAttention's own tests
// use), host fp16/bf16 conversions, random inputs and the comparison that
// decides PASS/FAIL. Host arrays hold fp16/bf16 as raw 16-bit patterns and
// follow the strides of an AttentionParams.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_REFERENCE_H
#define FLASHJIT_KERNELS_REFERENCE_H

#include "flashjit/kernels/AttentionParams.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace flashjit {

// ---- host 16-bit floats (round to nearest even) ----------------------------
uint16_t floatToHalf(float f);
float halfToFloat(uint16_t h);
uint16_t floatToBf16(float f);
float bf16ToFloat(uint16_t b);
uint16_t toBits(float f, DType dtype);
float fromBits(uint16_t bits, DType dtype);
/// `f` rounded to the nearest value representable in `dtype`.
inline float roundTo(float f, DType dtype) {
  return fromBits(toBits(f, dtype), dtype);
}

/// The pattern written into outputs before a run: a NaN no kernel produces
/// (the sign bit set, unlike the canonical 0x7fff), so that an element still
/// holding it was never written.
inline constexpr uint16_t kPoison16 = 0xffff;
inline constexpr uint32_t kPoison32 = 0xffffffffu;

/// Fills `n` elements with standard normal samples rounded to `dtype`. The
/// values depend only on (seed, index): reproducible and thread-count free.
void fillNormal(uint16_t *bits, int64_t n, DType dtype, uint64_t seed);

// ---- reference forward ------------------------------------------------------
/// Host inputs as 16-bit patterns laid out by the params' strides.
struct HostInputs {
  const uint16_t *q = nullptr;
  const uint16_t *k = nullptr;
  const uint16_t *v = nullptr;
  /// BiasMode::Tensor: 16-bit patterns of the params' dtype, element (b, h,
  /// i, j) at params.biasOffset(b, h, i, j).
  const uint16_t *bias = nullptr;
  /// BiasMode::Alibi: slope of (b, h) at b * params.alibiBatchStride + h.
  const float *alibiSlopes = nullptr;
};

enum class RefPrecision {
  /// Everything in double: the oracle.
  Float64,
  /// Scores, softmax and P@V accumulate in float; P and the output are
  /// rounded to the input dtype, as the GPU kernels do.
  Float32,
};

/// One (batch, query head) slice of the forward output.
struct SliceOutput {
  std::vector<double> o;   ///< [seqlenQOf(b)][headDimV]
  std::vector<double> lse; ///< [seqlenQOf(b)], natural log; -inf if masked
};

/// Computes the slice (b, h) of the forward pass with the semantics of
/// AttentionParams: scores scale * q.k, capped, biased (tensor or ALiBi) and
/// masked (window/causal on the sequence's own lengths, keys j <
/// seqlenKOf(b) only), softmax, times V. A row with no finite score gives 0
/// and an LSE of -inf. Query head h reads K/V head h / params.gqaGroup().
SliceOutput referenceForward(const AttentionParams &params,
                             const HostInputs &inputs, int64_t b, int64_t h,
                             RefPrecision precision);

/// Whether query row i of slice (b, h) has no finite score: it sees no key,
/// or the bias tensor is -inf on every key it sees (its output is then 0 and
/// its LSE -inf). Cheap: usually settled by the first visible key.
bool isFullyMaskedRow(const AttentionParams &params, const HostInputs &inputs,
                      int64_t b, int64_t h, int64_t i);

// ---- comparison -------------------------------------------------------------
/// Error of one output against the float64 reference.
struct ErrorStats {
  double maxAbs = 0;   ///< max |got - ref| over finite pairs
  double sumSqErr = 0; ///< sum (got - ref)^2
  double sumSqRef = 0; ///< sum ref^2
  double maxRef =
      0; ///< max |ref|, or more (Gradients::termScale): scales the slack
  int64_t count = 0;
  int64_t nonFinite = 0; ///< got is NaN/inf where ref is not (or differs)
  int64_t unwritten = 0; ///< got still holds the poison pattern

  /// ||got - ref|| / ||ref|| (0 when ref is all zero and so is the error).
  double relative() const;
  void add(double got, double ref, bool poisoned);
};

/// Outcome of checking a kernel's output by the 2x rule: the kernel's max
/// error vs float64 must not exceed twice that of the float32 implementation
/// plus kSlackFraction * max|ref|, and every element must be written and
/// finite. LSE is held to the same rule when present.
struct CheckResult {
  static constexpr double kSlackFraction = 1e-5;
  ErrorStats out, outBaseline;
  ErrorStats lse, lseBaseline;
  bool checkedLse = false;
  int64_t slices = 0; ///< (batch, head) slices compared with the references
  bool pass = false;
  /// One line per quantity with the verdict, for logs and the CLI.
  std::string summary() const;
};

/// Compares a kernel's output `o` (16-bit patterns at params.oOffset) and
/// optional `lse` (float at params.lseOffset; nullptr skips it) with the
/// references on the (batch, head) `slices` (empty: all of them), and scans
/// every other slice for unwritten and non-finite elements. Only the rows
/// of each sequence are read (seqlenQOf(b) under varlen).
CheckResult
checkForward(const AttentionParams &params, const HostInputs &inputs,
             const uint16_t *o, const float *lse,
             const std::vector<std::pair<int64_t, int64_t>> &slices = {});

/// Up to `maxSlices` distinct (batch, head) pairs, always including the
/// first and the last, the rest drawn with `seed`; all of them when there
/// are no more than maxSlices. Slices of empty (varlen) sequences are left
/// out.
std::vector<std::pair<int64_t, int64_t>>
sampleSlices(const AttentionParams &params, int maxSlices, uint64_t seed);

} // namespace flashjit

#endif // FLASHJIT_KERNELS_REFERENCE_H
