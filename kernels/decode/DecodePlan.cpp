//===- DecodePlan.cpp - Decode tile table, splits, workspace, page divisor -===//
#include "flashjit/kernels/Decode.h"
#include "flashjit/kernels/LayoutSm80.h"

#include <algorithm>
#include <cmath>
#include <iterator>

namespace flashjit {

std::string combineKernelName(const std::string &forwardName) {
  return forwardName + "_combine";
}
std::string appendKernelName(const std::string &forwardName) {
  return forwardName + "_append";
}

PageDivisor pageDivisor(int64_t divisor) {
  PageDivisor d;
  int log2Ceil = 0;
  while ((int64_t(1) << log2Ceil) < divisor)
    ++log2Ceil;
  d.shift = 31 + log2Ceil;
  const uint64_t power = uint64_t(1) << d.shift;
  d.mul = static_cast<uint32_t>((power + uint64_t(divisor) - 1) /
                                uint64_t(divisor));
  return d;
}

std::optional<TileConfig> decodeTileConfig(const AttentionSpec &spec,
                                           Arch arch, int64_t tileRows) {
  if (tileRows < 1 || tileRows > kDecodeMaxTileRows)
    return std::nullopt;
  const int copyBytes =
      std::min(copyElems(spec, spec.headDimQK), copyElems(spec, spec.headDimV)) *
      elementBytes(spec.dtype);
  const int d = std::max(spec.headDimQK, spec.headDimV);
  // Narrow copies keep an address per 2 or 4 bytes live. Of 4 bytes past
  // d = 128 every decode tile spills (ptxas 13.0: 12-2680 bytes up to four
  // warps); the family's default config serves them (sm80: eight warps).
  if (copyBytes == 4 && d > 128)
    return std::nullopt;
  // One warp per 16 rows, a power of two of them (33..48 rows: 4 warps,
  // not 3, which no CTA shape takes). At least two past d = 128 or with
  // copies under 8 bytes: one warp copying every tile alone spilled 4-2200
  // bytes there (tests/ptxas's decode cases of a few rows).
  int warps = d > 128 || copyBytes < 8 ? 2 : 1;
  while (warps * kMmaM < tileRows)
    warps *= 2;
  const int blockM = warps * kMmaM;
  // Two stages keep a K/V tile in flight while one is used; synchronous
  // loads (copies under 4 bytes) overlap nothing. Above d = 128 the second
  // stage's addresses cost the registers that the score features need (d =
  // 192 split with window, softcap and ALiBi spilled 8 bytes): one stage,
  // and the SM's other CTAs keep loads in flight.
  const int stages = copyBytes >= 4 && d <= 128 ? 2 : 1;
  // 8-32 KB of K and V per tile: enough bytes per barrier, small enough
  // that several CTAs share an SM (several warps to issue the copies of
  // one-warp CTAs), and a score tile of one warp's registers (128 keys
  // spilled with the score features at d = 64).
  // Copies under 8 bytes are unrolled per thread: 16 keys keep two warps'
  // share of them what four warps have at the default (64 keys of 4-byte
  // copies spilled 1940 bytes at d = 80).
  // Above d = 128 one warp's registers hold 16 keys: 32 spilled 120-360
  // bytes at d = 160-208 (ptxas 13.0, tests/ptxas's decode cases).
  // A paged cache: 32 keys (bench/results/2026-12-04-h200-decode-paged.md:
  // the autotuner's tiles of 16 or 32 keys read pages of 16 and 256 rows
  // 6-16% faster than 64, within 1% of each other; contiguous, 64 is
  // within 3% of the best).
  const int blockN = copyBytes < 8 || d > 128 ? 16 : spec.pagedKV ? 32 : 64;
  const TileConfig candidates[] = {
      {blockM, blockN, warps, stages},
      {blockM, blockN, warps, 1},
      {blockM, std::min(blockN, 32), warps, stages},
      {blockM, 16, warps, 1},
  };
  for (TileConfig c : candidates) {
    c.packGqa = spec.gqaGroup > 1;
    if (validateSm80(c, spec, arch))
      return c;
  }
  return std::nullopt;
}

namespace {
/// Threads and CTAs one SM holds (the CUDA programming guide's table).
struct SmLimits {
  int threads, ctas;
};
SmLimits smLimits(Arch arch) {
  switch (arch) {
  case Arch::Sm86:
  case Arch::Sm120: return {1536, 16};
  case Arch::Sm89: return {1536, 24};
  default: return {2048, 32};
  }
}
/// Shared memory the driver reserves per CTA (sm_80 and later).
constexpr int kReservedSharedPerCta = 1024;
} // namespace

int ctasPerSm(const LaunchFacts &facts, Arch arch) {
  const SmLimits limits = smLimits(arch);
  int perSm = limits.ctas;
  if (facts.threadsPerBlock > 0)
    perSm = std::min(perSm, limits.threads / facts.threadsPerBlock);
  // The per-block opt-in maximum is the SM's shared memory less the
  // reservation of one CTA.
  const int smemPerSm = maxSharedMemoryPerBlock(arch) + kReservedSharedPerCta;
  perSm = std::min(perSm, smemPerSm / (facts.sharedMemBytes +
                                       kReservedSharedPerCta));
  return std::max(perSm, 1);
}

int chooseSplits(int64_t ctas, int64_t keyBlocks, int64_t batch, int smCount,
                 int perSm) {
  const int64_t slots = int64_t(std::max(smCount, 1)) * std::max(perSm, 1);
  if (ctas < 1 || keyBlocks < 2 || ctas >= 2 * slots)
    return 1;
  const int64_t maxSplits =
      std::min({int64_t(kMaxSplits), keyBlocks, kMaxGridZ / std::max<int64_t>(
                                                                batch, 1)});
  if (maxSplits < 2)
    return 1;
  // Efficiency of s splits: the share of slots the last wave fills. Split
  // counts that give every split as many blocks as one fewer would do
  // nothing but add partials.
  auto efficiency = [&](int64_t s) {
    const double waves = double(ctas * s) / double(slots);
    return waves / std::ceil(waves);
  };
  auto blocksPer = [&](int64_t s) { return (keyBlocks + s - 1) / s; };
  double best = 0;
  for (int64_t s = 1; s <= maxSplits; ++s)
    if (s == 1 || blocksPer(s) != blocksPer(s - 1))
      best = std::max(best, efficiency(s));
  for (int64_t s = 1; s <= maxSplits; ++s)
    if ((s == 1 || blocksPer(s) != blocksPer(s - 1)) &&
        efficiency(s) >= 0.85 * best)
      return static_cast<int>(s);
  return 1;
}

PartialLayout partialLayout(int64_t rows, int64_t headsQ, int64_t headDimV,
                            int numSplits) {
  constexpr size_t kAlign = 256;
  auto aligned = [&](size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; };
  PartialLayout l;
  l.entries = rows * headsQ;
  l.pitch = partialPitch(headDimV);
  const size_t perSplit = static_cast<size_t>(l.entries);
  l.oBytes = aligned(size_t(numSplits) * perSplit * size_t(l.pitch) *
                     sizeof(float));
  l.bytes = l.oBytes + aligned(size_t(numSplits) * perSplit * sizeof(float));
  return l;
}

} // namespace flashjit
