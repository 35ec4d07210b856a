//===- Hardware.h - What every kernel family assumes of the GPU -----------===//
//
// Facts shared by the sm80 and sm90 families, the backward and decode: the
// register file, warps, how wide a copy of the caller's rows may be, and
// the rounding every layout does.
// Family-specific layouts (LayoutSm80.h, LayoutSm90.h) build on these.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_HARDWARE_H
#define FLASHJIT_KERNELS_HARDWARE_H

#include "flashjit/compiler/AttentionSpec.h"

#include <algorithm>

namespace flashjit {

inline constexpr int kWarpSize = 32;
/// Registers a thread may hold (all NVIDIA archs since sm_35).
inline constexpr int kMaxRegistersPerThread = 255;
/// 32-bit registers of one SM, shared by the threads of resident CTAs
/// (sm_80 .. sm_90).
inline constexpr int kRegisterFileSize = 65536;

inline constexpr int ceilDiv(int v, int m) { return (v + m - 1) / m; }
inline constexpr int roundUp(int v, int m) { return ceilDiv(v, m) * m; }

/// The registers a CTA of `threads` holds when ptxas sizes every thread by
/// .maxntid (the file over threads in multiples of 8: 168 at 384).
/// setmaxnreg only moves them between warpgroups, and .inc waits, forever
/// if need be, until released ones cover it.
inline constexpr int registersAtLaunch(int threads) {
  return kRegisterFileSize / threads / 8 * 8 * threads;
}

/// Elements per global -> shared copy of a row of `dim` elements: the widest
/// power of two up to 8 (16 bytes) that the alignment allows and that
/// divides `dim` (a copy never crosses the end of a row).
inline int copyElems(const AttentionSpec &spec, int dim) {
  int vec = std::clamp(spec.globalAlignElems, 1, 8);
  while (dim % vec != 0)
    vec /= 2;
  return vec;
}

} // namespace flashjit

#endif // FLASHJIT_KERNELS_HARDWARE_H
