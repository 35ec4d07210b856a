//===- LayoutBackwardSm80.cpp - The sm80 backward's tiles and configs -----===//
#include "flashjit/kernels/Backward.h"
#include "flashjit/kernels/LayoutSm80.h"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

namespace flashjit {
namespace {
bool oneOf(int v, std::initializer_list<int> allowed) {
  return std::find(allowed.begin(), allowed.end(), v) != allowed.end();
}

/// Whether the mma.sync kernel is the default (defaultBackwardConfigSm80):
/// it passed the GPU tests beside the scalar kernel and runs 120-150x
/// faster (bench/results/2026-12-04-h200-backward-decode-assembler.md); the
/// scalar kernel stays as the check on it (--scalar on).
constexpr bool kMmaByDefault = true;

/// Head dims are padded (in shared memory) to pairs of 16 columns, so that
/// two warps can split dK, dV and dQ over them: with an odd count of 16
/// columns only one warp per 16 rows took a product (padding costs less),
/// and its accumulators spilled past d=128.
constexpr int kBackwardHeadDimGranule = 2 * kMmaK;

/// 32-bit registers per thread beside the accumulators: addresses, row
/// bounds, LSE and D of the thread's rows, loop state.
constexpr int kOverheadRegs = 48;

/// The warp grid of a rows x cols product for `warps` warps: m16 tiles of
/// rows and pairs of n8 tiles of columns per warp. Of the grids of the most
/// warps that fit (all of them where the product allows; fewer, leaving the
/// rest idle in it, where its padded head dim has an odd count of 16
/// columns or is small), the one that reads the fewest fragments per MMA
/// (rows / 16 A fragments and cols / 16 B fragments per k-step); on a tie
/// more warps over the rows (FlashAttention-2's choices at d = 64 and 128).
WarpGrid warpGrid(int warps, int rows, int cols) {
  for (int active = warps; active >= 1; active /= 2) {
    std::optional<WarpGrid> best;
    int bestCost = 0;
    for (int wm = 1; wm <= active; wm *= 2) {
      const int wn = active / wm;
      if (rows % (kMmaM * wm) != 0 || cols % (2 * kMmaN * wn) != 0)
        continue;
      const int cost = rows / wm / kMmaM + cols / wn / (2 * kMmaN);
      if (!best || cost <= bestCost) {
        best = WarpGrid{wm, wn, rows / wm, cols / wn};
        bestCost = cost;
      }
    }
    if (best)
      return *best;
  }
  return WarpGrid{};
}

BackwardLayout scalarLayout(const AttentionSpec &spec, const TileConfig &c) {
  BackwardLayout l;
  l.threads = c.warps * kWarpSize;
  const int elem = elementBytes(spec.dtype);
  int at = 0;
  auto take = [&](int bytes) {
    const int offset = at;
    at += roundUp(bytes, 16);
    return offset;
  };
  l.kOffset = take(c.blockN * spec.headDimQK * elem);
  l.vOffset = take(c.blockN * spec.headDimV * elem);
  l.qOffset = take(c.blockM * spec.headDimQK * elem);
  l.dOOffset = take(c.blockM * spec.headDimV * elem);
  l.dKOffset = take(c.blockN * spec.headDimQK * 4);
  l.dVOffset = take(c.blockN * spec.headDimV * 4);
  l.pOffset = take(c.blockM * c.blockN * 4);
  l.dSOffset = take(c.blockM * c.blockN * 4);
  l.lseOffset = take(c.blockM * 4);
  l.dSumOffset = take(c.blockM * 4);
  l.sharedMemBytes = at;
  return l;
}

BackwardLayout mmaLayout(const AttentionSpec &spec, const TileConfig &c) {
  BackwardLayout l;
  l.threads = c.warps * kWarpSize;
  const int elem = elementBytes(spec.dtype);
  l.paddedHeadDimQK = roundUp(spec.headDimQK, kBackwardHeadDimGranule);
  l.paddedHeadDimV = roundUp(spec.headDimV, kBackwardHeadDimGranule);
  l.swizzleBitsQK = swizzleBitsOfRow(l.paddedHeadDimQK / kSmemChunkElems);
  l.swizzleBitsV = swizzleBitsOfRow(l.paddedHeadDimV / kSmemChunkElems);
  l.pitchPdS = c.blockN + kSmemChunkElems;
  l.qStageBytes = c.blockM * l.paddedHeadDimQK * elem;
  l.dOStageBytes = c.blockM * l.paddedHeadDimV * elem;
  int at = 0;
  auto take = [&](int bytes) {
    const int offset = at;
    at += roundUp(bytes, 16);
    return offset;
  };
  l.kOffset = take(c.blockN * l.paddedHeadDimQK * elem);
  l.vOffset = take(c.blockN * l.paddedHeadDimV * elem);
  l.qOffset = take(c.stages * l.qStageBytes);
  l.dOOffset = take(c.stages * l.dOStageBytes);
  l.pOffset = take(c.blockM * l.pitchPdS * elem);
  l.dSOffset = take(c.blockM * l.pitchPdS * elem);
  // Steps of 16 or 32 query rows copy them a step ahead instead of two
  // global loads on the step's critical path: on an H200 1.02-1.04x at
  // d = 64-128 without a mask, 0.98-0.99x causal, but 32 x 128 tiles at
  // d = 112-128 assemble without spills only so.
  // Longer steps keep the loads (64 x 64 at d = 160-192 spills with the
  // copies). bench/results/2026-12-04-h200-backward-row-values.md
  // One float block [2][stages][block_m], LSE' then D: the kernel views
  // it whole.
  l.stagedRowValues = c.blockM <= 32;
  if (l.stagedRowValues) {
    l.lseOffset = take(2 * c.stages * c.blockM * 4);
    l.dSumOffset = l.lseOffset + c.stages * c.blockM * 4;
  }
  l.sharedMemBytes = at;
  // Grids that do not fit stay empty (warpsM == 0): validate names them.
  l.sdp = warpGrid(c.warps, c.blockM, c.blockN);
  l.dv = warpGrid(c.warps, c.blockN, l.paddedHeadDimV);
  l.dk = warpGrid(c.warps, c.blockN, l.paddedHeadDimQK);
  l.dq = warpGrid(c.warps, c.blockM, l.paddedHeadDimQK);
  auto perThread = [](const WarpGrid &g) { return g.rows * g.cols / kWarpSize; };
  const int dkv = perThread(l.dv) + perThread(l.dk);
  const int scores = perThread(l.sdp);
  const int dq = perThread(l.dq);
  l.estimatedRegisters =
      dkv + std::max(scores * (spec.softcap ? 3 : 2), dq) + kOverheadRegs;
  return l;
}

/// The mma.sync kernel's default: THE table, measured tiles first, the
/// first that fits the arch's shared memory and the register estimate. 8
/// warps as FlashAttention-2 (flash_bwd_launch_template.h); 128 keys a CTA
/// to d=128 (at d=128, 64 x 128 tiles spill 68 bytes on sm_90a; 32 x 128
/// tiles fit with LSE' and D staged), 64 to d=192, 32 past it (64 spill on
/// sm_90a); Q and dO double-buffered where shared memory holds two copies.
/// ptxas 13 assembles every entry without a spill (tests/ptxas).
TileConfig defaultMmaConfig(const AttentionSpec &spec, Arch arch) {
  const int d = std::max(spec.headDimQK, spec.headDimV);
  // Per-score work (softcap's tanh kept for dS, bias loads, dBias stores)
  // keeps more values live next to S and dP: smaller tiles past d=64.
  const bool heavy = spec.softcap || spec.bias != BiasMode::None;
  // Without per-score work, short steps of query rows against 128 keys
  // first (on an H200, no spills): 16 rows to d=64, 1.08-1.10x 64 x 128
  // (bench/results/2026-12-04-h200-backward-tiles.md); 32 rows past it,
  // 1.11-1.32x 16 x 128 and 64 x 64 at d = 96-128
  // (bench/results/2026-12-04-h200-backward-row-values.md). To d=32 a
  // 16-row step leaves dQ's warps idle: 64 x 128 there, not measured
  // against it.
  std::vector<TileConfig> preferred;
  if (!heavy && d > 64 && d <= 128)
    preferred.push_back({32, 128, 8, 2});
  if (!heavy && d > 32 && d <= 128)
    preferred.push_back({16, 128, d <= 64 ? 4 : 8, 2});
  if (d <= 64)
    preferred.insert(preferred.end(),
                     {{64, heavy ? 64 : 128, 8, 2}, {64, 64, 8, 1}});
  else if (d <= 128 || (d <= 192 && !heavy))
    preferred.insert(preferred.end(),
                     {{64, 64, 8, 2}, {64, 64, 8, 1}, {64, 32, 8, 1}});
  else if (d <= 192 || !heavy)
    preferred = {{64, 32, 8, 1}};
  // Where shared memory holds none of those (sm_86, sm_89: 99 KB), and
  // past d=192 with per-score work: 32 x 32 tiles, which leave half the
  // warps idle in S and dP (a warp's block is 16 x 16).
  preferred.push_back({32, 32, 8, 1});
  for (TileConfig c : preferred) {
    c.family = Family::Sm80;
    const BackwardLayout l = mmaLayout(spec, c);
    // A dK or dV grid that leaves warps idle (an odd count of 16 columns)
    // doubles the others' accumulators for the whole loop: one stage there
    // (with two, ptxas spilled 4 bytes on sm_90a at d = 100..112). dQ's
    // accumulators live for one product: 32 x 128 tiles at d = 65-96 leave
    // half the warps out of it and run 1.28-1.32x 64 x 64 (d = 96).
    const bool idleWarps = l.dv.warps() < c.warps || l.dk.warps() < c.warps;
    if (c.stages > 1 && idleWarps)
      continue;
    if (l.sharedMemBytes <= maxSharedMemoryPerBlock(arch) &&
        l.estimatedRegisters <= kMaxRegistersPerThread)
      return c;
  }
  TileConfig last = preferred.back();
  last.family = Family::Sm80;
  return last;
}

TileConfig defaultScalarConfig(const AttentionSpec &spec) {
  TileConfig c;
  c.family = Family::Sm80;
  c.scalar = true;
  // 16 keys above head dim 128, so that sm_86's 99 KB hold the tiles.
  c.blockM = 16;
  c.blockN = std::max(spec.headDimQK, spec.headDimV) > 128 ? 16 : 32;
  c.warps = 4;
  c.stages = 1;
  return c;
}

std::string tileText(const TileConfig &c) {
  return "block_m=" + std::to_string(c.blockM) +
         " block_n=" + std::to_string(c.blockN) +
         " warps=" + std::to_string(c.warps);
}
} // namespace

BackwardLayout backwardLayoutSm80(const AttentionSpec &spec,
                                  const TileConfig &c) {
  return c.scalar ? scalarLayout(spec, c) : mmaLayout(spec, c);
}

TileConfig defaultBackwardConfigSm80(const AttentionSpec &spec, Arch arch,
                                     std::optional<bool> scalar) {
  return scalar.value_or(!kMmaByDefault) ? defaultScalarConfig(spec)
                                         : defaultMmaConfig(spec, arch);
}

Status validateBackwardSm80(const TileConfig &c, const AttentionSpec &spec,
                            Arch arch) {
  const bool scalar = c.scalar;
  auto tileOk = [&](int v) {
    return scalar ? oneOf(v, {16, 32, 64}) : oneOf(v, {16, 32, 64, 128});
  };
  const char *tileChoices = scalar ? "16, 32, 64 (scalar kernel)"
                                   : "16, 32, 64, 128";
  if (!tileOk(c.blockM))
    return Status::error("backward block_m must be one of " +
                         std::string(tileChoices) + ", got " +
                         std::to_string(c.blockM));
  if (!tileOk(c.blockN))
    return Status::error("backward block_n must be one of " +
                         std::string(tileChoices) + ", got " +
                         std::to_string(c.blockN));
  if (!oneOf(c.warps, {1, 2, 4, 8}))
    return Status::error("backward warps must be one of 1, 2, 4, 8, got " +
                         std::to_string(c.warps));
  if (scalar && c.stages != 1)
    return Status::error("backward stages must be 1 for the scalar kernel "
                         "(its tiles are not pipelined), got " +
                         std::to_string(c.stages));
  if (!scalar && !oneOf(c.stages, {1, 2}))
    return Status::error("backward stages must be 1 or 2 (copies of Q and "
                         "dO), got " +
                         std::to_string(c.stages));
  if (c.packGqa || c.quick || c.pingpong || c.overlap)
    return Status::error("the sm80 backward has no pack_gqa, quick, "
                         "pingpong or overlap form");
  const BackwardLayout l = backwardLayoutSm80(spec, c);
  if (!scalar) {
    if (l.estimatedRegisters > kMaxRegistersPerThread)
      return Status::error(
          "backward " + tileText(c) + " needs about " +
          std::to_string(l.estimatedRegisters) +
          " registers per thread for its accumulators; at most " +
          std::to_string(kMaxRegistersPerThread) +
          " (use more warps or a smaller block_n)");
  }
  if (l.sharedMemBytes > maxSharedMemoryPerBlock(arch))
    return Status::error(
        "backward tiles need " + std::to_string(l.sharedMemBytes) +
        " bytes of shared memory; " + std::string(toString(arch)) +
        " allows " + std::to_string(maxSharedMemoryPerBlock(arch)) +
        " (use a smaller block_m or block_n" +
        (scalar ? "" : ", or stages 1") + ")");
  return Status::ok();
}

} // namespace flashjit
