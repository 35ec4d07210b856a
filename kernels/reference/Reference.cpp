//===- Reference.cpp - CPU float64 oracle and float32 yardstick -----------===//
#include "flashjit/kernels/Reference.h"
#include "reference/Internal.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

namespace flashjit {
using reference::parallelFor;

// ---- host 16-bit floats -----------------------------------------------------
namespace {
uint32_t bitsOf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  return x;
}
float floatOf(uint32_t x) {
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}
/// `q` plus one if the dropped bits `rem` (of which `half` is the midpoint)
/// round it up to nearest, ties to even.
uint32_t roundNearestEven(uint32_t q, uint32_t rem, uint32_t half) {
  return q + ((rem > half || (rem == half && (q & 1))) ? 1 : 0);
}
} // namespace

uint16_t floatToHalf(float f) {
  const uint32_t x = bitsOf(f);
  const uint32_t sign = (x >> 16) & 0x8000;
  const uint32_t abs = x & 0x7fffffff;
  if (abs > 0x7f800000) // NaN: keep it quiet and keep the top payload bits
    return sign | 0x7e00 | ((abs >> 13) & 0x3ff);
  if (abs >= 0x477ff000) // >= 65520 rounds past 65504: infinity
    return sign | 0x7c00;
  if (abs >= 0x38800000) { // normal half (>= 2^-14): rebias 127 -> 15
    const uint32_t r = abs - 0x38000000;
    return sign | roundNearestEven(r >> 13, r & 0x1fff, 0x1000);
  }
  // Subnormal half: count units of 2^-24. A carry into 0x400 gives the
  // smallest normal, which is the right encoding.
  const int exp = abs >> 23;
  const int shift = 126 - exp;
  if (shift > 24)
    return sign;
  const uint32_t mant = (abs & 0x7fffff) | 0x800000;
  return sign | roundNearestEven(mant >> shift, mant & ((1u << shift) - 1),
                                 1u << (shift - 1));
}

float halfToFloat(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  if (exp == 0x1f)
    return floatOf(sign | 0x7f800000 | (mant << 13));
  if (exp != 0)
    return floatOf(sign | ((exp + 112) << 23) | (mant << 13));
  // Zero or subnormal: exact in float.
  const float magnitude = std::ldexp(static_cast<float>(mant), -24);
  return sign ? -magnitude : magnitude;
}

uint16_t floatToBf16(float f) {
  const uint32_t x = bitsOf(f);
  if ((x & 0x7fffffff) > 0x7f800000)
    return static_cast<uint16_t>((x >> 16) | 0x40);
  return static_cast<uint16_t>(roundNearestEven(x >> 16, x & 0xffff, 0x8000));
}

float bf16ToFloat(uint16_t b) { return floatOf(uint32_t(b) << 16); }

uint16_t toBits(float f, DType dtype) {
  return dtype == DType::F16 ? floatToHalf(f) : floatToBf16(f);
}
float fromBits(uint16_t bits, DType dtype) {
  return dtype == DType::F16 ? halfToFloat(bits) : bf16ToFloat(bits);
}

// ---- random inputs ----------------------------------------------------------
namespace {
uint64_t splitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
} // namespace

void fillNormal(uint16_t *bits, int64_t n, DType dtype, uint64_t seed) {
  const uint64_t stream = splitMix64(seed);
  parallelFor(n, 1 << 16, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      // Box-Muller on two 32-bit uniforms of one hash; u1 in (0, 1].
      const uint64_t r = splitMix64(stream ^ static_cast<uint64_t>(i));
      const double u1 = (double(r >> 32) + 1.0) / 4294967296.0;
      const double u2 = double(r & 0xffffffffu) / 4294967296.0;
      const double z =
          std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
      bits[i] = toBits(static_cast<float>(z), dtype);
    }
  });
}

// ---- reference forward ------------------------------------------------------
namespace {
/// Row-major copy of rows [0, rows) of one head of a strided 16-bit tensor;
/// `offset(r)` is the element offset of row r.
template <typename T, typename Offset>
std::vector<T> loadRows(const uint16_t *src, int64_t rows, int64_t dim,
                        DType dtype, Offset offset) {
  std::vector<T> out(rows * dim);
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t *row = src + offset(r);
    for (int64_t d = 0; d < dim; ++d)
      out[r * dim + d] = fromBits(row[d], dtype);
  }
  return out;
}

/// One (batch, query head) slice in precision T: the inputs in row-major
/// copies and the per-sequence sizes.
template <typename T> struct Slice {
  const AttentionParams &p;
  const HostInputs &in;
  int64_t b, h, sq, sk;
  std::vector<T> q, k, v;
  T slope = 0; ///< ALiBi slope of (b, h)
  bool roundLikeGpu;

  /// softmax(x) V for query row i, where x are the scaled, capped, biased
  /// and masked scores. In float, P is rounded to the input dtype before
  /// P@V and the output at the end, as the GPU kernels do. `s` is scratch.
  void row(int64_t i, std::vector<T> &s, double *oRow, double *lse) const {
    const int64_t dv = p.headDimV;
    T rowMax;
    const KeyRange r = reference::scoreRow<T>(
        p, i, sq, sk, &q[i * p.headDimQK], k.data(),
        [&](int64_t j) {
          return static_cast<T>(
              fromBits(in.bias[p.biasOffset(b, h, i, j)], p.dtype));
        },
        slope, s.data(), /*tanhOut=*/nullptr, rowMax);
    // No visible key, or a bias of -inf on every one: nothing to average.
    if (r.first > r.last || rowMax == -std::numeric_limits<T>::infinity()) {
      std::fill(oRow, oRow + dv, 0.0);
      *lse = -std::numeric_limits<double>::infinity();
      return;
    }
    std::vector<T> acc(dv, T(0));
    T sum = 0;
    for (int64_t j = r.first; j <= r.last; ++j) {
      T e = std::exp(s[j - r.first] - rowMax);
      sum += e;
      if (roundLikeGpu)
        e = roundTo(static_cast<float>(e), p.dtype);
      const T *vRow = &v[j * dv];
      for (int64_t d = 0; d < dv; ++d)
        acc[d] += e * vRow[d];
    }
    for (int64_t d = 0; d < dv; ++d) {
      T out = acc[d] / sum;
      oRow[d] = roundLikeGpu ? roundTo(static_cast<float>(out), p.dtype) : out;
    }
    *lse = static_cast<double>(rowMax + std::log(sum));
  }
};

template <typename T>
SliceOutput forwardSlice(const AttentionParams &p, const HostInputs &in,
                         int64_t b, int64_t h, bool roundLikeGpu) {
  const int64_t hkv = h / p.gqaGroup();
  const int64_t sq = p.seqlenQOf(b), sk = p.seqlenKOf(b);
  Slice<T> sl{p, in, b, h, sq, sk, {}, {}, {}, 0, roundLikeGpu};
  sl.q = loadRows<T>(in.q, sq, p.headDimQK, p.dtype,
                     [&](int64_t r) { return p.qOffset(b, h, r); });
  sl.k = loadRows<T>(in.k, sk, p.headDimQK, p.dtype,
                     [&](int64_t r) { return p.kOffset(b, hkv, r); });
  sl.v = loadRows<T>(in.v, sk, p.headDimV, p.dtype,
                     [&](int64_t r) { return p.vOffset(b, hkv, r); });
  if (p.bias == BiasMode::Alibi)
    sl.slope = static_cast<T>(in.alibiSlopes[b * p.alibiBatchStride + h]);
  SliceOutput out;
  out.o.resize(sq * p.headDimV);
  out.lse.resize(sq);
  // Rows are independent; a few per thread amortise the thread start.
  const int64_t work = std::max<int64_t>(1, sk * (p.headDimQK + p.headDimV));
  parallelFor(sq, std::max<int64_t>(1, (1 << 20) / work),
              [&](int64_t lo, int64_t hi) {
                std::vector<T> scratch(std::max<int64_t>(1, sk));
                for (int64_t i = lo; i < hi; ++i)
                  sl.row(i, scratch, &out.o[i * p.headDimV], &out.lse[i]);
              });
  return out;
}
} // namespace

SliceOutput referenceForward(const AttentionParams &params,
                             const HostInputs &inputs, int64_t b, int64_t h,
                             RefPrecision precision) {
  if (precision == RefPrecision::Float64)
    return forwardSlice<double>(params, inputs, b, h, /*roundLikeGpu=*/false);
  return forwardSlice<float>(params, inputs, b, h, /*roundLikeGpu=*/true);
}

bool isFullyMaskedRow(const AttentionParams &p, const HostInputs &inputs,
                      int64_t b, int64_t h, int64_t i) {
  const int64_t sq = p.seqlenQOf(b), sk = p.seqlenKOf(b);
  const KeyRange r =
      visibleKeys(p.mask, p.windowLeft, p.windowRight, i, sq, sk);
  if (r.first > r.last)
    return true;
  if (p.bias != BiasMode::Tensor)
    return false; // finite inputs give finite scores
  // Usually the first visible key settles it.
  for (int64_t j = r.first; j <= r.last; ++j)
    if (fromBits(inputs.bias[p.biasOffset(b, h, i, j)], p.dtype) !=
        -std::numeric_limits<float>::infinity())
      return false;
  return true;
}

// ---- comparison -------------------------------------------------------------
double ErrorStats::relative() const {
  if (sumSqRef == 0)
    return sumSqErr == 0 ? 0 : std::numeric_limits<double>::infinity();
  return std::sqrt(sumSqErr / sumSqRef);
}

void ErrorStats::add(double got, double ref, bool poisoned) {
  ++count;
  if (std::isfinite(ref))
    maxRef = std::max(maxRef, std::abs(ref));
  if (poisoned) {
    ++unwritten;
    return;
  }
  if (!std::isfinite(got) || !std::isfinite(ref)) {
    if (got != ref) // equal infinities (a masked row's -inf LSE) are exact
      ++nonFinite;
    return;
  }
  const double err = std::abs(got - ref);
  maxAbs = std::max(maxAbs, err);
  sumSqErr += err * err;
  sumSqRef += ref * ref;
}

namespace reference {
double bound(const ErrorStats &base, const ErrorStats &got) {
  return 2 * base.maxAbs + CheckResult::kSlackFraction * got.maxRef;
}
bool within(const ErrorStats &got, const ErrorStats &base) {
  return got.unwritten == 0 && got.nonFinite == 0 && base.nonFinite == 0 &&
         got.maxAbs <= bound(base, got);
}
void describe(std::ostream &os, const char *name, const ErrorStats &got,
              const ErrorStats &base) {
  os.precision(3);
  os << std::scientific << name << ": max_abs=" << got.maxAbs
     << " rel=" << got.relative() << " | fp32 impl: max_abs=" << base.maxAbs
     << " rel=" << base.relative() << " | bound=" << bound(base, got);
  if (got.unwritten)
    os << " | UNWRITTEN=" << got.unwritten;
  if (got.nonFinite)
    os << " | NON-FINITE=" << got.nonFinite;
  os << (within(got, base) ? " ok" : " FAIL") << " (" << got.count
     << " elements)\n";
}
} // namespace reference
using reference::describe;
using reference::within;

std::string CheckResult::summary() const {
  std::ostringstream os;
  describe(os, "out", out, outBaseline);
  if (checkedLse)
    describe(os, "lse", lse, lseBaseline);
  os << (pass ? "PASS" : "FAIL") << " (2x rule vs fp64 reference, " << slices
     << " slice" << (slices == 1 ? "" : "s") << ")";
  return os.str();
}

CheckResult
checkForward(const AttentionParams &p, const HostInputs &inputs,
             const uint16_t *o, const float *lse,
             const std::vector<std::pair<int64_t, int64_t>> &requested) {
  const auto slices = requested.empty()
                          ? sampleSlices(p, std::numeric_limits<int>::max(), 0)
                          : requested;
  const std::set<std::pair<int64_t, int64_t>> compared(slices.begin(),
                                                       slices.end());
  auto isPoison = [](float x) {
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    return bits == kPoison32;
  };
  CheckResult r;
  r.checkedLse = lse != nullptr;
  r.slices = static_cast<int64_t>(compared.size());
  for (auto [b, h] : compared) {
    const SliceOutput ref =
        referenceForward(p, inputs, b, h, RefPrecision::Float64);
    const SliceOutput f32 =
        referenceForward(p, inputs, b, h, RefPrecision::Float32);
    for (int64_t i = 0; i < p.seqlenQOf(b); ++i) {
      const uint16_t *oRow = o + p.oOffset(b, h, i);
      for (int64_t d = 0; d < p.headDimV; ++d) {
        const size_t at = i * p.headDimV + d;
        r.out.add(fromBits(oRow[d], p.dtype), ref.o[at], oRow[d] == kPoison16);
        r.outBaseline.add(f32.o[at], ref.o[at], false);
      }
      if (lse) {
        const float got = lse[p.lseOffset(b, h, i)];
        r.lse.add(got, ref.lse[i], isPoison(got));
        r.lseBaseline.add(f32.lse[i], ref.lse[i], false);
      }
    }
  }
  // Every other slice is too costly to recompute but cheap to scan: each
  // element must be written and finite, and an LSE is -inf exactly on the
  // fully masked rows.
  std::vector<std::pair<int64_t, int64_t>> rest;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.headsQ; ++h)
      if (!compared.count({b, h}))
        rest.push_back({b, h});
  std::mutex merge;
  parallelFor(static_cast<int64_t>(rest.size()), 1,
              [&](int64_t lo, int64_t hi) {
                ErrorStats out, lseStats;
                for (int64_t s = lo; s < hi; ++s) {
                  const auto [b, h] = rest[s];
                  for (int64_t i = 0; i < p.seqlenQOf(b); ++i) {
                    const uint16_t *oRow = o + p.oOffset(b, h, i);
                    for (int64_t d = 0; d < p.headDimV; ++d) {
                      if (oRow[d] == kPoison16)
                        ++out.unwritten;
                      else if (!std::isfinite(fromBits(oRow[d], p.dtype)))
                        ++out.nonFinite;
                    }
                    if (!lse)
                      continue;
                    const float got = lse[p.lseOffset(b, h, i)];
                    if (isPoison(got))
                      ++lseStats.unwritten;
                    else if (got == -std::numeric_limits<float>::infinity()
                                 ? !isFullyMaskedRow(p, inputs, b, h, i)
                                 : !std::isfinite(got) ||
                                       isFullyMaskedRow(p, inputs, b, h, i))
                      ++lseStats.nonFinite;
                  }
                }
                std::lock_guard<std::mutex> lock(merge);
                r.out.unwritten += out.unwritten;
                r.out.nonFinite += out.nonFinite;
                r.lse.unwritten += lseStats.unwritten;
                r.lse.nonFinite += lseStats.nonFinite;
              });
  r.pass = within(r.out, r.outBaseline) &&
           (!r.checkedLse || within(r.lse, r.lseBaseline));
  return r;
}

std::vector<std::pair<int64_t, int64_t>>
sampleSlices(const AttentionParams &p, int maxSlices, uint64_t seed) {
  // Slices of empty sequences (varlen) have nothing to compare.
  std::vector<std::pair<int64_t, int64_t>> candidates;
  for (int64_t b = 0; b < p.batch; ++b)
    if (p.seqlenQOf(b) > 0)
      for (int64_t h = 0; h < p.headsQ; ++h)
        candidates.push_back({b, h});
  return reference::pickSlices(std::move(candidates), maxSlices, seed);
}

namespace reference {
std::vector<std::pair<int64_t, int64_t>>
pickSlices(std::vector<std::pair<int64_t, int64_t>> slices, int maxSlices,
           uint64_t seed) {
  const int64_t total = static_cast<int64_t>(slices.size());
  if (total <= maxSlices)
    return slices;
  std::set<int64_t> picked = {0, total - 1};
  std::mt19937_64 rng(seed);
  while (static_cast<int64_t>(picked.size()) < std::max(2, maxSlices))
    picked.insert(static_cast<int64_t>(rng() % static_cast<uint64_t>(total)));
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t idx : picked)
    out.push_back(slices[idx]);
  return out;
}
} // namespace reference

} // namespace flashjit
