//===- Internal.h - What the CPU references share -------------------------===//
//
// Internal to kernels/reference: the forward and the backward references
// compute a row's scores with one function, so that both see the same
// scale, softcap, bias, ALiBi and mask; and spread slices over threads.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_REFERENCE_INTERNAL_H
#define FLASHJIT_KERNELS_REFERENCE_INTERNAL_H

#include "flashjit/kernels/AttentionParams.h"
#include "flashjit/kernels/Reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <ostream>
#include <thread>
#include <utility>
#include <vector>

namespace flashjit::reference {

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

/// At most `maxSlices` of `slices` (all when they fit): the first and the
/// last, which catch edge-of-tensor addressing bugs, and the rest drawn
/// by `seed`.
std::vector<std::pair<int64_t, int64_t>>
pickSlices(std::vector<std::pair<int64_t, int64_t>> slices, int maxSlices,
           uint64_t seed);

/// Scores x_j of query row i (of a sequence with sq queries and sk keys)
/// for the keys j it sees, into s[j - first]: scale * q.k, capped (when
/// `tanhOut` is given it receives tanh(scale * q.k / softcap) at the same
/// index), plus bias(j) (a callable giving the bias tensor's element, in T)
/// or -slope * |i + sk - sq - j| (ALiBi). `k` holds rows of dim
/// headDimQK. Returns the visible key range; `rowMax` gets the largest
/// score (-inf when none).
template <typename T, typename BiasAt>
KeyRange scoreRow(const AttentionParams &p, int64_t i, int64_t sq, int64_t sk,
                  const T *qRow, const T *k, BiasAt biasAt, T slope, T *s,
                  T *tanhOut, T &rowMax) {
  const int64_t dqk = p.headDimQK;
  const KeyRange r =
      visibleKeys(p.mask, p.windowLeft, p.windowRight, i, sq, sk);
  const T scale = static_cast<T>(p.scale());
  const T cap = static_cast<T>(p.softcap);
  rowMax = -std::numeric_limits<T>::infinity();
  for (int64_t j = r.first; j <= r.last; ++j) {
    const T *kRow = &k[j * dqk];
    T dot = 0;
    for (int64_t d = 0; d < dqk; ++d)
      dot += qRow[d] * kRow[d];
    T x = dot * scale;
    if (p.softcap > 0) {
      const T t = std::tanh(x / cap);
      if (tanhOut)
        tanhOut[j - r.first] = t;
      x = cap * t;
    }
    if (p.bias == BiasMode::Tensor)
      x += biasAt(j);
    else if (p.bias == BiasMode::Alibi)
      x -= slope * static_cast<T>(std::abs(i + sk - sq - j));
    s[j - r.first] = x;
    rowMax = std::max(rowMax, x);
  }
  return r;
}

/// The 2x rule (CheckResult): `got`'s max error within twice `base`'s plus
/// the slack, every element written and finite.
double bound(const ErrorStats &base, const ErrorStats &got);
bool within(const ErrorStats &got, const ErrorStats &base);
/// One line: the errors of `got` and `base`, the bound and the verdict.
void describe(std::ostream &os, const char *name, const ErrorStats &got,
              const ErrorStats &base);

} // namespace flashjit::reference

#endif // FLASHJIT_KERNELS_REFERENCE_INTERNAL_H
