//===- Reference.cpp - CPU float64 oracle and float32 yardstick -----------===//
#include "flashjit/kernels/Reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <sstream>
#include <thread>

namespace flashjit {

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

// ---- parallel helpers -------------------------------------------------------
namespace {
/// Runs f(begin, end) over [0, n) on up to hardware_concurrency threads,
/// each taking at least `minChunk` items.
template <typename F> void parallelFor(int64_t n, int64_t minChunk, F &&f) {
  const int64_t hw = std::max(1u, std::thread::hardware_concurrency());
  const int64_t chunks = std::min<int64_t>(
      hw, (n + minChunk - 1) / std::max<int64_t>(1, minChunk));
  if (chunks <= 1) {
    f(int64_t(0), n);
    return;
  }
  const int64_t per = (n + chunks - 1) / chunks;
  std::vector<std::thread> threads;
  for (int64_t lo = 0; lo < n; lo += per)
    threads.emplace_back([&f, lo, hi = std::min(n, lo + per)] { f(lo, hi); });
  for (auto &t : threads)
    t.join();
}

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
/// Row-major copy of one [rows, dim] head of a strided 16-bit tensor.
template <typename T>
std::vector<T> loadHead(const uint16_t *src, const Strides &s, int64_t b,
                        int64_t h, int64_t rows, int64_t dim, DType dtype) {
  std::vector<T> out(rows * dim);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < dim; ++d)
      out[r * dim + d] = fromBits(src[s.offset(b, h, r) + d], dtype);
  return out;
}

/// softmax(scale * q K^T) V for one query row in precision T. In float,
/// P is rounded to the input dtype before P@V and the output at the end.
template <typename T>
void forwardRow(const AttentionParams &p, const std::vector<T> &q, int64_t i,
                const std::vector<T> &k, const std::vector<T> &v,
                bool roundLikeGpu, double *oRow, double *lse) {
  const int64_t dqk = p.headDimQK, dv = p.headDimV;
  const T scale = static_cast<T>(p.scale());
  std::vector<T> s(p.seqlenK);
  T rowMax = -std::numeric_limits<T>::infinity();
  int64_t visible = 0;
  for (int64_t j = 0; j < p.seqlenK; ++j) {
    if (!isVisible(p.mask, i, j, p.seqlenQ, p.seqlenK))
      continue;
    T dot = 0;
    for (int64_t d = 0; d < dqk; ++d)
      dot += q[i * dqk + d] * k[j * dqk + d];
    s[j] = dot * scale;
    rowMax = std::max(rowMax, s[j]);
    ++visible;
  }
  if (visible == 0) {
    std::fill(oRow, oRow + dv, 0.0);
    *lse = -std::numeric_limits<double>::infinity();
    return;
  }
  std::vector<T> acc(dv, T(0));
  T sum = 0;
  for (int64_t j = 0; j < p.seqlenK; ++j) {
    if (!isVisible(p.mask, i, j, p.seqlenQ, p.seqlenK))
      continue;
    T e = std::exp(s[j] - rowMax);
    sum += e;
    if (roundLikeGpu)
      e = roundTo(static_cast<float>(e), p.dtype);
    for (int64_t d = 0; d < dv; ++d)
      acc[d] += e * v[j * dv + d];
  }
  for (int64_t d = 0; d < dv; ++d) {
    T out = acc[d] / sum;
    oRow[d] = roundLikeGpu ? roundTo(static_cast<float>(out), p.dtype) : out;
  }
  *lse = static_cast<double>(rowMax + std::log(sum));
}

template <typename T>
SliceOutput forwardSlice(const AttentionParams &p, const HostInputs &in,
                         int64_t b, int64_t h, bool roundLikeGpu) {
  const int64_t hkv = h / p.gqaGroup();
  const auto q =
      loadHead<T>(in.q, p.qStrides, b, h, p.seqlenQ, p.headDimQK, p.dtype);
  const auto k =
      loadHead<T>(in.k, p.kStrides, b, hkv, p.seqlenK, p.headDimQK, p.dtype);
  const auto v =
      loadHead<T>(in.v, p.vStrides, b, hkv, p.seqlenK, p.headDimV, p.dtype);
  SliceOutput out;
  out.o.resize(p.seqlenQ * p.headDimV);
  out.lse.resize(p.seqlenQ);
  // Rows are independent; a few per thread amortise the thread start.
  const int64_t work =
      std::max<int64_t>(1, p.seqlenK * (p.headDimQK + p.headDimV));
  parallelFor(p.seqlenQ, std::max<int64_t>(1, (1 << 20) / work),
              [&](int64_t lo, int64_t hi) {
                for (int64_t i = lo; i < hi; ++i)
                  forwardRow<T>(p, q, i, k, v, roundLikeGpu,
                                &out.o[i * p.headDimV], &out.lse[i]);
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

namespace {
double bound(const ErrorStats &base, const ErrorStats &got) {
  return 2 * base.maxAbs + CheckResult::kSlackFraction * got.maxRef;
}
bool within(const ErrorStats &got, const ErrorStats &base) {
  return got.unwritten == 0 && got.nonFinite == 0 && base.nonFinite == 0 &&
         got.maxAbs <= bound(base, got);
}
void describe(std::ostringstream &os, const char *name, const ErrorStats &got,
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
} // namespace

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
  auto lseAt = [&](int64_t b, int64_t h, int64_t i) {
    return lse + b * p.lseBatchStride + h * p.lseHeadStride + i;
  };
  auto isPoison = [](const float *x) {
    uint32_t bits;
    std::memcpy(&bits, x, sizeof bits);
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
    for (int64_t i = 0; i < p.seqlenQ; ++i) {
      for (int64_t d = 0; d < p.headDimV; ++d) {
        const uint16_t bits = o[p.oStrides.offset(b, h, i) + d];
        const size_t at = i * p.headDimV + d;
        r.out.add(fromBits(bits, p.dtype), ref.o[at], bits == kPoison16);
        r.outBaseline.add(f32.o[at], ref.o[at], false);
      }
      if (lse) {
        r.lse.add(*lseAt(b, h, i), ref.lse[i], isPoison(lseAt(b, h, i)));
        r.lseBaseline.add(f32.lse[i], ref.lse[i], false);
      }
    }
  }
  // Every other slice is too costly to recompute but cheap to scan: each
  // element must be written and finite, and an LSE is -inf exactly on the
  // rows that see no key.
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.headsQ; ++h) {
      if (compared.count({b, h}))
        continue;
      for (int64_t i = 0; i < p.seqlenQ; ++i) {
        for (int64_t d = 0; d < p.headDimV; ++d) {
          const uint16_t bits = o[p.oStrides.offset(b, h, i) + d];
          if (bits == kPoison16)
            ++r.out.unwritten;
          else if (!std::isfinite(fromBits(bits, p.dtype)))
            ++r.out.nonFinite;
        }
        if (!lse)
          continue;
        const bool masked = !isVisible(p.mask, i, 0, p.seqlenQ, p.seqlenK);
        const float got = *lseAt(b, h, i);
        if (isPoison(lseAt(b, h, i)))
          ++r.lse.unwritten;
        else if (masked ? got != -std::numeric_limits<float>::infinity()
                        : !std::isfinite(got))
          ++r.lse.nonFinite;
      }
    }
  r.pass = within(r.out, r.outBaseline) &&
           (!r.checkedLse || within(r.lse, r.lseBaseline));
  return r;
}

std::vector<std::pair<int64_t, int64_t>>
sampleSlices(const AttentionParams &p, int maxSlices, uint64_t seed) {
  const int64_t total = p.batch * p.headsQ;
  std::vector<std::pair<int64_t, int64_t>> out;
  auto slice = [&](int64_t idx) {
    return std::make_pair(idx / p.headsQ, idx % p.headsQ);
  };
  if (total <= maxSlices) {
    for (int64_t idx = 0; idx < total; ++idx)
      out.push_back(slice(idx));
    return out;
  }
  // First and last catch edge-of-tensor addressing bugs; the rest at random.
  std::set<int64_t> picked = {0, total - 1};
  std::mt19937_64 rng(seed);
  while (static_cast<int64_t>(picked.size()) < std::max(2, maxSlices))
    picked.insert(static_cast<int64_t>(rng() % static_cast<uint64_t>(total)));
  for (int64_t idx : picked)
    out.push_back(slice(idx));
  return out;
}

} // namespace flashjit
