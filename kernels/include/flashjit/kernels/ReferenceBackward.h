//===- ReferenceBackward.h - CPU oracle for the attention backward --------===//
//
// The float64 backward pass (the oracle), a plain float32-accumulate one
// (the yardstick of the 2x rule: P and dS rounded to the input dtype before
// the products that take them, as the GPU kernels do) and the comparison
// that decides PASS/FAIL. A backward slice is one (batch, K/V head): the
// query heads of its GQA group and the keys they share, so that dK and dV
// are complete (summed over the group) within it.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_REFERENCEBACKWARD_H
#define FLASHJIT_KERNELS_REFERENCEBACKWARD_H

#include "flashjit/kernels/BackwardParams.h"
#include "flashjit/kernels/Reference.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace flashjit {

/// The inputs of one (batch, K/V head) slice, row-major in double. Query
/// head kvHead * group + g is g here; seqQ / seqK are the sequence's own
/// lengths (keyRows counts its key padding too: dK and dV cover it).
struct BackwardSlice {
  int64_t batch = 0, kvHead = 0, group = 1;
  int64_t seqQ = 0, seqK = 0, keyRows = 0;
  std::vector<double> q;      ///< [group][seqQ][headDimQK]
  std::vector<double> dO;     ///< [group][seqQ][headDimV]
  std::vector<double> k;      ///< [seqK][headDimQK]
  std::vector<double> v;      ///< [seqK][headDimV]
  std::vector<double> bias;   ///< [group][seqQ][seqK] (BiasMode::Tensor)
  std::vector<double> slopes; ///< [group] (BiasMode::Alibi)
};

/// Reads slice (b, hkv) from host arrays laid out by the params' strides.
BackwardSlice loadBackwardSlice(const BackwardParams &params,
                                const HostInputs &inputs, const uint16_t *dO,
                                int64_t b, int64_t hkv);

/// The gradients of one slice.
struct Gradients {
  std::vector<double> dQ;    ///< [group][seqQ][headDimQK]
  std::vector<double> dK;    ///< [keyRows][headDimQK], summed over the group
  std::vector<double> dV;    ///< [keyRows][headDimV]
  std::vector<double> dBias; ///< [group][seqQ][seqK] (BiasMode::Tensor)
  /// Per gradient (dQ, dK, dV, dBias): a bound on the magnitude of the
  /// terms its elements sum, |dS| taken as P (|dP| + |D|). Where the terms
  /// cancel (one visible key: dS = 0 exactly), float rounding is relative
  /// to this, not to the result, so the check's slack scales with it.
  double termScale[4] = {0, 0, 0, 0};
};

/// dL/dQ, dL/dK, dL/dV (and dL/dbias) of L = sum(dO * O) with O the
/// forward of AttentionParams (scale, softcap, bias, ALiBi, masks; a row
/// that sees no finite score has O = 0 and no gradient). Float64: exact
/// arithmetic in double. Float32: the forward as the float32 forward
/// reference computes it (O rounded to the dtype), D = rowsum(dO * O), P
/// and dS in float rounded to the dtype before dV = P^T dO, dK = dS^T Q and
/// dQ = dS K accumulate in float; gradients rounded to the dtype.
Gradients referenceBackward(const AttentionParams &params,
                            const BackwardSlice &slice,
                            RefPrecision precision);

/// sum(dO * O) over the slice with O from the float64 forward of the
/// slice's values: the loss that referenceBackward differentiates (for
/// finite-difference checks).
double referenceLoss(const AttentionParams &params, const BackwardSlice &slice);

/// Outcome of checking a backward call by the 2x rule, each gradient on its
/// own (CheckResult's rule and slack).
struct BackwardCheckResult {
  ErrorStats dQ, dQBaseline, dK, dKBaseline, dV, dVBaseline;
  ErrorStats dBias, dBiasBaseline;
  bool checkedDBias = false;
  int64_t slices = 0; ///< (batch, K/V head) slices compared
  bool pass = false;
  std::string summary() const;
};

/// Compares gradients (16-bit patterns at the params' dQ/dK/dV/dBias
/// offsets; dBias may be null) with the references on the (batch, K/V
/// head) `slices` (empty: all), and scans every other slice for unwritten
/// and non-finite elements. dK/dV rows of key padding must be 0.
BackwardCheckResult
checkBackward(const BackwardParams &params, const HostInputs &inputs,
              const uint16_t *dO, const uint16_t *dQ, const uint16_t *dK,
              const uint16_t *dV, const uint16_t *dBias,
              const std::vector<std::pair<int64_t, int64_t>> &slices = {});

/// Up to `maxSlices` distinct (batch, K/V head) pairs, first and last
/// always included, the rest drawn with `seed` (all when no more).
std::vector<std::pair<int64_t, int64_t>>
sampleBackwardSlices(const BackwardParams &params, int maxSlices,
                     uint64_t seed);

} // namespace flashjit

#endif // FLASHJIT_KERNELS_REFERENCEBACKWARD_H
