//===- ReferenceBackward.cpp - CPU float64 backward and float32 yardstick -===//
#include "flashjit/kernels/ReferenceBackward.h"
#include "reference/Internal.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <random>
#include <set>
#include <sstream>

namespace flashjit {
using reference::parallelFor;

BackwardSlice loadBackwardSlice(const BackwardParams &p,
                                const HostInputs &in, const uint16_t *dO,
                                int64_t b, int64_t hkv) {
  BackwardSlice s;
  s.batch = b;
  s.kvHead = hkv;
  s.group = p.gqaGroup();
  s.seqQ = p.seqlenQOf(b);
  s.seqK = p.seqlenKOf(b);
  s.keyRows = p.keyRowsOf(b);
  const int64_t dqk = p.headDimQK, dv = p.headDimV;
  auto val = [&](const uint16_t *t, int64_t at) {
    return double(fromBits(t[at], p.dtype));
  };
  s.q.resize(s.group * s.seqQ * dqk);
  s.dO.resize(s.group * s.seqQ * dv);
  if (p.bias == BiasMode::Tensor)
    s.bias.resize(s.group * s.seqQ * s.seqK);
  for (int64_t g = 0; g < s.group; ++g) {
    const int64_t h = hkv * s.group + g;
    for (int64_t i = 0; i < s.seqQ; ++i) {
      const int64_t row = g * s.seqQ + i;
      for (int64_t d = 0; d < dqk; ++d)
        s.q[row * dqk + d] = val(in.q, p.qOffset(b, h, i) + d);
      for (int64_t d = 0; d < dv; ++d)
        s.dO[row * dv + d] = val(dO, p.dOOffset(b, h, i) + d);
      if (p.bias == BiasMode::Tensor)
        for (int64_t j = 0; j < s.seqK; ++j)
          s.bias[row * s.seqK + j] = val(in.bias, p.biasOffset(b, h, i, j));
    }
    if (p.bias == BiasMode::Alibi)
      s.slopes.push_back(in.alibiSlopes[b * p.alibiBatchStride + h]);
  }
  s.k.resize(s.seqK * dqk);
  s.v.resize(s.seqK * dv);
  for (int64_t j = 0; j < s.seqK; ++j) {
    for (int64_t d = 0; d < dqk; ++d)
      s.k[j * dqk + d] = val(in.k, p.kOffset(b, hkv, j) + d);
    for (int64_t d = 0; d < dv; ++d)
      s.v[j * dv + d] = val(in.v, p.vOffset(b, hkv, j) + d);
  }
  return s;
}

namespace {
template <typename T> std::vector<T> as(const std::vector<double> &v) {
  return std::vector<T>(v.begin(), v.end());
}

/// One slice's forward rows and gradients in precision T. `gpuLike`: round
/// P for P V, O, P and dS for the gradient products, and the gradients, to
/// the dtype (the float32 yardstick).
template <typename T> struct BackwardRows {
  const AttentionParams &p;
  const BackwardSlice &sl;
  bool gpuLike;
  std::vector<T> q, dO, k, v, bias;
  int64_t dqk, dv;

  BackwardRows(const AttentionParams &params, const BackwardSlice &slice,
               bool gpuLike)
      : p(params), sl(slice), gpuLike(gpuLike), q(as<T>(slice.q)),
        dO(as<T>(slice.dO)), k(as<T>(slice.k)), v(as<T>(slice.v)),
        bias(as<T>(slice.bias)), dqk(params.headDimQK), dv(params.headDimV) {}

  T round(T x) const {
    return gpuLike ? roundTo(static_cast<float>(x), p.dtype) : x;
  }

  /// Scores of row `row` (group g, query i) into s (tanh into t); the
  /// visible keys, or an empty range when the row has no finite score.
  KeyRange scores(int64_t row, std::vector<T> &s, std::vector<T> &t,
                  T &rowMax) const {
    const int64_t g = row / sl.seqQ, i = row % sl.seqQ;
    const T slope = p.bias == BiasMode::Alibi ? T(sl.slopes[g]) : T(0);
    KeyRange r = reference::scoreRow<T>(
        p, i, sl.seqQ, sl.seqK, &q[row * dqk], k.data(),
        [&](int64_t j) { return bias[row * sl.seqK + j]; }, slope, s.data(),
        t.data(), rowMax);
    if (rowMax == -std::numeric_limits<T>::infinity())
      r = {0, -1};
    return r;
  }

  /// O of the row (the forward's, rounded when gpuLike) and its LSE.
  T forward(const KeyRange &r, const std::vector<T> &s, T rowMax,
            std::vector<T> &o) const {
    std::fill(o.begin(), o.end(), T(0));
    T sum = 0;
    for (int64_t j = r.first; j <= r.last; ++j) {
      const T e = std::exp(s[j - r.first] - rowMax);
      sum += e;
      const T pe = round(e);
      for (int64_t d = 0; d < dv; ++d)
        o[d] += pe * v[j * dv + d];
    }
    for (int64_t d = 0; d < dv; ++d)
      o[d] = round(o[d] / sum);
    return rowMax + std::log(sum);
  }

  /// Term magnitudes of rows [lo, hi) (see Gradients::termScale): the
  /// largest row sum and dS term, and per key the column sums of P and of
  /// P (|dP| + |D|).
  struct Terms {
    double rowMax = 0, dSMax = 0;
    std::vector<double> colP, colDS;
  };

  /// Rows [lo, hi): dQ rows and dBias into `out`, dK and dV sums (unscaled,
  /// unrounded) into dK / dV, term magnitudes into `terms`.
  void backward(int64_t lo, int64_t hi, Gradients &out, std::vector<T> &dK,
                std::vector<T> &dV, Terms &terms) const {
    const T scale = static_cast<T>(p.scale());
    std::vector<T> s(std::max<int64_t>(1, sl.seqK)), t(s.size()), o(dv),
        dQRow(dqk);
    for (int64_t row = lo; row < hi; ++row) {
      T rowMax;
      const KeyRange r = scores(row, s, t, rowMax);
      if (r.first > r.last)
        continue; // no finite score: O = 0 whatever Q, K, V are
      const T lse = forward(r, s, rowMax, o);
      const T *dORow = &dO[row * dv];
      const T *qRow = &q[row * dqk];
      T dSum = 0; // D = rowsum(dO * O)
      for (int64_t d = 0; d < dv; ++d)
        dSum += dORow[d] * o[d];
      std::fill(dQRow.begin(), dQRow.end(), T(0));
      double rowTerms = 0;
      for (int64_t j = r.first; j <= r.last; ++j) {
        const T pj = std::exp(s[j - r.first] - lse);
        T dP = 0;
        for (int64_t d = 0; d < dv; ++d)
          dP += dORow[d] * v[j * dv + d];
        const T dX = pj * (dP - dSum); // dL/d(score after cap and bias)
        const double term =
            double(pj) * (std::abs(double(dP)) + std::abs(double(dSum)));
        rowTerms += term;
        terms.dSMax = std::max(terms.dSMax, term);
        terms.colP[j] += double(pj);
        terms.colDS[j] += term;
        if (p.bias == BiasMode::Tensor)
          out.dBias[row * sl.seqK + j] = round(dX);
        T dS = dX;
        if (p.softcap > 0) {
          const T tj = t[j - r.first];
          dS *= T(1) - tj * tj;
        }
        const T pr = round(pj), dSr = round(dS);
        for (int64_t d = 0; d < dv; ++d)
          dV[j * dv + d] += pr * dORow[d];
        for (int64_t d = 0; d < dqk; ++d) {
          dK[j * dqk + d] += dSr * qRow[d];
          dQRow[d] += dSr * k[j * dqk + d];
        }
      }
      for (int64_t d = 0; d < dqk; ++d)
        out.dQ[row * dqk + d] = round(scale * dQRow[d]);
      terms.rowMax = std::max(terms.rowMax, rowTerms);
    }
  }
};

template <typename T>
Gradients backwardSlice(const AttentionParams &p, const BackwardSlice &sl,
                        bool gpuLike) {
  const BackwardRows<T> rows(p, sl, gpuLike);
  const int64_t dqk = p.headDimQK, dv = p.headDimV;
  Gradients out;
  out.dQ.assign(sl.group * sl.seqQ * dqk, 0.0);
  out.dK.assign(sl.keyRows * dqk, 0.0);
  out.dV.assign(sl.keyRows * dv, 0.0);
  if (p.bias == BiasMode::Tensor)
    out.dBias.assign(sl.group * sl.seqQ * sl.seqK, 0.0);
  // Rows in fixed chunks, each with its own dK / dV sums, added in chunk
  // order: the same result on every machine.
  const int64_t nRows = sl.group * sl.seqQ;
  const int64_t chunkRows = 16;
  const int64_t chunks = (nRows + chunkRows - 1) / chunkRows;
  std::vector<std::vector<T>> dK(chunks), dV(chunks);
  std::vector<typename BackwardRows<T>::Terms> terms(chunks);
  const int64_t work = std::max<int64_t>(1, sl.seqK * (3 * dqk + 2 * dv));
  parallelFor(chunks, std::max<int64_t>(1, (1 << 22) / (work * chunkRows)),
              [&](int64_t lo, int64_t hi) {
                for (int64_t c = lo; c < hi; ++c) {
                  dK[c].assign(sl.seqK * dqk, T(0));
                  dV[c].assign(sl.seqK * dv, T(0));
                  terms[c].colP.assign(sl.seqK, 0.0);
                  terms[c].colDS.assign(sl.seqK, 0.0);
                  rows.backward(c * chunkRows,
                                std::min(nRows, (c + 1) * chunkRows), out,
                                dK[c], dV[c], terms[c]);
                }
              });
  const T scale = static_cast<T>(p.scale());
  for (int64_t j = 0; j < sl.seqK; ++j) {
    for (int64_t d = 0; d < dqk; ++d) {
      T sum = 0;
      for (int64_t c = 0; c < chunks; ++c)
        sum += dK[c][j * dqk + d];
      out.dK[j * dqk + d] = rows.round(scale * sum);
    }
    for (int64_t d = 0; d < dv; ++d) {
      T sum = 0;
      for (int64_t c = 0; c < chunks; ++c)
        sum += dV[c][j * dv + d];
      out.dV[j * dv + d] = rows.round(sum);
    }
  }
  auto maxAbs = [](const std::vector<T> &x) {
    double m = 0;
    for (T e : x)
      m = std::max(m, std::abs(double(e)));
    return m;
  };
  double rowMax = 0, dSMax = 0, colPMax = 0, colDSMax = 0;
  for (int64_t j = 0; j < sl.seqK; ++j) {
    double colP = 0, colDS = 0;
    for (const auto &t : terms) {
      colP += t.colP[j];
      colDS += t.colDS[j];
    }
    colPMax = std::max(colPMax, colP);
    colDSMax = std::max(colDSMax, colDS);
  }
  for (const auto &t : terms) {
    rowMax = std::max(rowMax, t.rowMax);
    dSMax = std::max(dSMax, t.dSMax);
  }
  out.termScale[0] = p.scale() * rowMax * maxAbs(rows.k);
  out.termScale[1] = p.scale() * colDSMax * maxAbs(rows.q);
  out.termScale[2] = colPMax * maxAbs(rows.dO);
  out.termScale[3] = dSMax;
  return out;
}
} // namespace

Gradients referenceBackward(const AttentionParams &params,
                            const BackwardSlice &slice,
                            RefPrecision precision) {
  if (precision == RefPrecision::Float64)
    return backwardSlice<double>(params, slice, /*gpuLike=*/false);
  return backwardSlice<float>(params, slice, /*gpuLike=*/true);
}

double referenceLoss(const AttentionParams &params,
                     const BackwardSlice &slice) {
  const BackwardRows<double> rows(params, slice, /*gpuLike=*/false);
  const int64_t dv = params.headDimV;
  std::vector<double> s(std::max<int64_t>(1, slice.seqK)), t(s.size()),
      o(dv);
  double loss = 0;
  for (int64_t row = 0; row < slice.group * slice.seqQ; ++row) {
    double rowMax;
    const KeyRange r = rows.scores(row, s, t, rowMax);
    if (r.first > r.last)
      continue;
    rows.forward(r, s, rowMax, o);
    for (int64_t d = 0; d < dv; ++d)
      loss += slice.dO[row * dv + d] * o[d];
  }
  return loss;
}

// ---- comparison -------------------------------------------------------------
std::string BackwardCheckResult::summary() const {
  std::ostringstream os;
  reference::describe(os, "dq", dQ, dQBaseline);
  reference::describe(os, "dk", dK, dKBaseline);
  reference::describe(os, "dv", dV, dVBaseline);
  if (checkedDBias)
    reference::describe(os, "dbias", dBias, dBiasBaseline);
  os << (pass ? "PASS" : "FAIL") << " (2x rule vs fp64 reference, " << slices
     << " (batch, kv head) slice" << (slices == 1 ? "" : "s") << ")";
  return os.str();
}

namespace {
/// Every element of the gradients of (b, hkv) that a check reads, with its
/// place in the references' slice arrays (-1: the reference is 0 there).
template <typename F>
void forEachGradient(const BackwardParams &p, int64_t b, int64_t hkv,
                     bool withDBias, F &&f) {
  const int64_t group = p.gqaGroup();
  const int64_t sq = p.seqlenQOf(b), sk = p.seqlenKOf(b);
  const int64_t dqk = p.headDimQK, dv = p.headDimV;
  for (int64_t g = 0; g < group; ++g) {
    const int64_t h = hkv * group + g;
    for (int64_t i = 0; i < sq; ++i)
      for (int64_t d = 0; d < dqk; ++d)
        f(0, p.dQOffset(b, h, i) + d, (g * sq + i) * dqk + d);
    if (withDBias)
      for (int64_t i = 0; i < p.seqlenQ; ++i)
        for (int64_t j = 0; j < p.seqlenK; ++j)
          f(3, p.dBiasOffset(b, h, i, j),
            i < sq && j < sk ? (g * sq + i) * sk + j : -1);
  }
  for (int64_t j = 0; j < p.keyRowsOf(b); ++j) {
    for (int64_t d = 0; d < dqk; ++d)
      f(1, p.dKOffset(b, hkv, j) + d, j < sk ? j * dqk + d : -1);
    for (int64_t d = 0; d < dv; ++d)
      f(2, p.dVOffset(b, hkv, j) + d, j < sk ? j * dv + d : -1);
  }
}
} // namespace

BackwardCheckResult
checkBackward(const BackwardParams &p, const HostInputs &inputs,
              const uint16_t *dO, const uint16_t *dQ, const uint16_t *dK,
              const uint16_t *dV, const uint16_t *dBias,
              const std::vector<std::pair<int64_t, int64_t>> &requested) {
  const auto slices =
      requested.empty()
          ? sampleBackwardSlices(p, std::numeric_limits<int>::max(), 0)
          : requested;
  const std::set<std::pair<int64_t, int64_t>> compared(slices.begin(),
                                                       slices.end());
  const bool withDBias = dBias && p.bias == BiasMode::Tensor && p.biasGrad;
  const uint16_t *got[] = {dQ, dK, dV, dBias};
  BackwardCheckResult r;
  r.checkedDBias = withDBias;
  r.slices = static_cast<int64_t>(compared.size());
  ErrorStats *stats[] = {&r.dQ, &r.dK, &r.dV, &r.dBias};
  ErrorStats *base[] = {&r.dQBaseline, &r.dKBaseline, &r.dVBaseline,
                        &r.dBiasBaseline};
  for (auto [b, hkv] : compared) {
    const BackwardSlice slice = loadBackwardSlice(p, inputs, dO, b, hkv);
    const Gradients ref = referenceBackward(p, slice, RefPrecision::Float64);
    const Gradients f32 = referenceBackward(p, slice, RefPrecision::Float32);
    const std::vector<double> *refs[] = {&ref.dQ, &ref.dK, &ref.dV,
                                         &ref.dBias};
    const std::vector<double> *f32s[] = {&f32.dQ, &f32.dK, &f32.dV,
                                         &f32.dBias};
    forEachGradient(p, b, hkv, withDBias,
                    [&](int which, int64_t at, int64_t refAt) {
                      const uint16_t bits = got[which][at];
                      const double want = refAt < 0 ? 0 : (*refs[which])[refAt];
                      const double yard = refAt < 0 ? 0 : (*f32s[which])[refAt];
                      stats[which]->add(fromBits(bits, p.dtype), want,
                                        bits == kPoison16);
                      base[which]->add(yard, want, false);
                    });
    for (int which = 0; which < 4; ++which)
      stats[which]->maxRef =
          std::max(stats[which]->maxRef, ref.termScale[which]);
  }
  // The other slices: every element written and finite.
  std::vector<std::pair<int64_t, int64_t>> rest;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t hkv = 0; hkv < p.headsKV; ++hkv)
      if (!compared.count({b, hkv}))
        rest.push_back({b, hkv});
  std::mutex merge;
  parallelFor(static_cast<int64_t>(rest.size()), 1,
              [&](int64_t lo, int64_t hi) {
                ErrorStats local[4];
                for (int64_t s = lo; s < hi; ++s)
                  forEachGradient(
                      p, rest[s].first, rest[s].second, withDBias,
                      [&](int which, int64_t at, int64_t) {
                        const uint16_t bits = got[which][at];
                        if (bits == kPoison16)
                          ++local[which].unwritten;
                        else if (!std::isfinite(fromBits(bits, p.dtype)))
                          ++local[which].nonFinite;
                      });
                std::lock_guard<std::mutex> lock(merge);
                for (int w = 0; w < 4; ++w) {
                  stats[w]->unwritten += local[w].unwritten;
                  stats[w]->nonFinite += local[w].nonFinite;
                }
              });
  r.pass = reference::within(r.dQ, r.dQBaseline) &&
           reference::within(r.dK, r.dKBaseline) &&
           reference::within(r.dV, r.dVBaseline) &&
           (!withDBias || reference::within(r.dBias, r.dBiasBaseline));
  return r;
}

std::vector<std::pair<int64_t, int64_t>>
sampleBackwardSlices(const BackwardParams &p, int maxSlices, uint64_t seed) {
  std::vector<std::pair<int64_t, int64_t>> candidates;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t hkv = 0; hkv < p.headsKV; ++hkv)
      candidates.push_back({b, hkv});
  return reference::pickSlices(std::move(candidates), maxSlices, seed);
}

} // namespace flashjit
