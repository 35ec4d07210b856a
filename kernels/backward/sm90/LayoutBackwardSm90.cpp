//===- LayoutBackwardSm90.cpp - Layout and checks of the sm90 backward ----===//
#include "flashjit/kernels/LayoutSm90.h"

#include <algorithm>
#include <string>

namespace flashjit {

namespace {
/// Registers beside the accumulators: addresses, loop state, row values.
constexpr int kOverheadRegisters = 32;
/// dK + dV columns past which a step's scores come in two sub-steps
/// (tests/ptxas: 64-query sub-steps spill at d = 64 with windows or varlen),
/// and in four (32-query sub-steps spill 4-8 bytes at d = 128 causal).
constexpr int kSubStepAccumulators = 64;
constexpr int kQuarterStepAccumulators = 192;

/// Two warpgroups past d = 128 share their 64 keys (splitColumns).
bool sharesKeys(const AttentionSpec &spec, const TileConfig &c) {
  return c.warps == 8 &&
         std::max(spec.headDimQK, spec.headDimV) > kBackwardSm90MaxHeadDim;
}
} // namespace

BackwardSm90Layout backwardLayoutSm90(const AttentionSpec &spec,
                                      const TileConfig &c) {
  BackwardSm90Layout l;
  l.warpgroups = std::max(c.warps / 4, 1);
  l.threads = l.warpgroups * kWarpgroupThreads;
  l.qkSteps = ceilDiv(spec.headDimQK, kWgmmaK);
  l.vSteps = ceilDiv(spec.headDimV, kWgmmaK);
  l.boxesQK = ceilDiv(spec.headDimQK, kTmaBoxCols);
  l.boxesV = ceilDiv(spec.headDimV, kTmaBoxCols);
  l.splitColumns = sharesKeys(spec, c);
  if (l.splitColumns) {
    l.dkN = ceilDiv(l.boxesQK, 2) * kTmaBoxCols;
    l.dvN = ceilDiv(l.boxesV, 2) * kTmaBoxCols;
    l.storedBoxesQK = 2 * l.dkN / kTmaBoxCols;
    l.storedBoxesV = 2 * l.dvN / kTmaBoxCols;
  } else {
    l.dkN = roundUp(spec.headDimQK, 8);
    l.dvN = roundUp(spec.headDimV, 8);
    l.storedBoxesQK = l.boxesQK;
    l.storedBoxesV = l.boxesV;
  }
  l.kBoxBytes = c.blockN * kTmaBoxRowBytes;
  l.qBoxBytes = c.blockM * kTmaBoxRowBytes;
  l.kOffset = 0;
  l.vOffset = l.kOffset + l.storedBoxesQK * l.kBoxBytes;
  l.qStageBytes = l.storedBoxesQK * l.qBoxBytes;
  l.dOStageBytes = l.storedBoxesV * l.qBoxBytes;
  l.qOffset = l.vOffset + l.boxesV * l.kBoxBytes;
  l.dOOffset = l.qOffset + c.stages * l.qStageBytes;
  l.dSOffset = l.dOOffset + c.stages * l.dOStageBytes;
  l.rowValuesOffset = l.dSOffset + ceilDiv(c.blockN, kTmaBoxCols) * l.qBoxBytes;
  l.dqSplitsColumns = l.splitColumns || (l.warpgroups == 2 && l.boxesQK == 2);
  l.dqBuffers =
      l.warpgroups == 2 && !l.dqSplitsColumns && !spec.deterministic ? 2 : 1;
  // Split columns: the second warpgroup stores whole boxes.
  const int dqCols = l.splitColumns      ? 2 * l.dkN
                     : l.dqSplitsColumns ? 2 * kTmaBoxCols
                                         : l.dkN;
  l.dqRowFloats = roundUp(std::max(dqCols - 8, 0), 32) + 8;
  l.dQOffset = roundUp(l.rowValuesOffset + 2 * c.stages * c.blockM * 4, 16);
  l.sharedMemBytes =
      l.dQOffset + l.dqBuffers * c.blockM * l.dqRowFloats * 4;
  l.tma = rowsTmaAligned(spec);
  if (l.tma) {
    l.barrierOffset = roundUp(l.sharedMemBytes, 8);
    l.barrierCount = 1 + c.stages;
    l.sharedMemBytes = l.barrierOffset + 8 * l.barrierCount;
  }
  const int accumulators = l.dkN + l.dvN;
  l.subSteps = accumulators > kQuarterStepAccumulators ? 4
               : accumulators > kSubStepAccumulators   ? 2
                                                       : 1;
  // dK and dV stay live through a step; beside them a sub-step's S^T, P^T,
  // dP^T (block_m / subSteps / 2 each) until P and dS are packed.
  l.estimatedRegisters = l.dkN / 2 + l.dvN / 2 +
                         3 * c.blockM / l.subSteps / 2 + kOverheadRegisters;
  return l;
}

Status supportsBackwardSm90(const AttentionSpec &spec, Arch arch) {
  if (arch != Arch::Sm90a)
    return Status::error("the sm90 family needs sm_90a (wgmma), got " +
                         std::string(toString(arch)));
  const int d = std::max(spec.headDimQK, spec.headDimV);
  const bool tma = rowsTmaAligned(spec);
  // Every refusal names the head dims and the family that serves them.
  auto refuse = [&](const std::string &limit) {
    return Status::error("the sm90 backward takes head dims " + limit +
                         ", got " + std::to_string(spec.headDimQK) + "/" +
                         std::to_string(spec.headDimV) +
                         "; use the sm80 family");
  };
  const int maxD =
      tma ? kBackwardSm90MaxHeadDimSplit : kBackwardSm90MaxHeadDimCopied;
  if (d > maxD)
    return refuse("up to " + std::to_string(maxD) +
                  (tma ? ""
                       : " where rows are not 16-byte aligned (copied by "
                         "every thread, not TMA)"));
  if (std::min(spec.headDimQK, spec.headDimV) > kBackwardSm90MaxHeadDim &&
      d > kBackwardSm90MaxHeadDimSplitBoth)
    return refuse("past " + std::to_string(kBackwardSm90MaxHeadDimSplitBoth) +
                  " only where the other is at most " +
                  std::to_string(kBackwardSm90MaxHeadDim) +
                  " (dK and dV of 128 columns a warpgroup leave too few "
                  "registers)");
  const bool masked = spec.varlen || spec.mask == MaskMode::Window;
  if (d > kBackwardSm90MaxHeadDimMasked && masked)
    return refuse("up to " + std::to_string(kBackwardSm90MaxHeadDimMasked) +
                  " with varlen or a window mask (their bounds leave dK and "
                  "dV too few registers)");
  if (spec.biasGrad)
    return Status::error("the sm90 backward does not write dBias (its "
                         "per-score stores spill); use the sm80 family");
  const int maxModded = masked ? kBackwardSm90MaxHeadDimScoreModsMasked
                               : kBackwardSm90MaxHeadDimScoreMods;
  if ((spec.bias != BiasMode::None || spec.softcap) && d > maxModded)
    return refuse("up to " + std::to_string(maxModded) +
                  " with a bias or softcap" +
                  (masked ? " and varlen or a window" : "") +
                  " (their per-score values leave dK and dV too few "
                  "registers)");
  return Status::ok();
}

TileConfig defaultBackwardConfigSm90(const AttentionSpec &spec, Arch arch) {
  TileConfig c;
  c.family = Family::Sm90;
  c.blockM = kBackwardSm90BlockM;
  // Two warpgroups: 128 keys per CTA, as FlashAttention-3's at d <= 128;
  // past it 64 keys, each warpgroup half the columns.
  c.warps = 8;
  c.blockN = sharesKeys(spec, c) ? kWgmmaRows : 2 * kWgmmaRows;
  c.stages = 2;
  // Past d = 128 two copies of Q and dO do not fit beside K, V and dQ.
  if (backwardLayoutSm90(spec, c).sharedMemBytes >
      maxSharedMemoryPerBlock(arch))
    c.stages = 1;
  return c;
}

Status validateBackwardSm90(const TileConfig &c, const AttentionSpec &spec,
                            Arch arch) {
  auto error = [](const std::string &m) { return Status::error(m); };
  if (c.warps != 4 && c.warps != 8)
    return error("backward warps must be 4 or 8 in the sm90 family (a "
                 "warpgroup per 64 keys), got " + std::to_string(c.warps));
  if (sharesKeys(spec, c) && c.blockN != kWgmmaRows)
    return error("backward block_n must be 64 past head dim " +
                 std::to_string(kBackwardSm90MaxHeadDim) +
                 " in the sm90 family (two warpgroups share the keys, each "
                 "half the columns), got " +
                 std::to_string(c.blockN));
  if (!sharesKeys(spec, c) && c.blockN != kWgmmaRows * (c.warps / 4))
    return error("backward block_n must be 64 keys per warpgroup (" +
                 std::to_string(kWgmmaRows * (c.warps / 4)) + " for warps=" +
                 std::to_string(c.warps) + "), got " +
                 std::to_string(c.blockN));
  if (c.blockM != kBackwardSm90BlockM)
    return error("backward block_m must be " +
                 std::to_string(kBackwardSm90BlockM) +
                 " in the sm90 family, got " + std::to_string(c.blockM));
  if (c.stages != 1 && c.stages != 2)
    return error("backward stages must be 1 or 2 (copies of Q and dO), got " +
                 std::to_string(c.stages));
  if (c.packGqa || c.quick || c.pingpong || c.overlap || c.scalar)
    return error("the sm90 backward has no pack_gqa, quick, pingpong, "
                 "overlap or scalar form");
  const BackwardSm90Layout l = backwardLayoutSm90(spec, c);
  if (l.sharedMemBytes > maxSharedMemoryPerBlock(arch))
    return error("backward block_n=" + std::to_string(c.blockN) +
                 " stages=" + std::to_string(c.stages) + " needs " +
                 std::to_string(l.sharedMemBytes) +
                 " bytes of shared memory; " + std::string(toString(arch)) +
                 " allows at most " +
                 std::to_string(maxSharedMemoryPerBlock(arch)));
  if (l.estimatedRegisters > kMaxRegistersPerThread)
    return error("backward head dims " + std::to_string(spec.headDimQK) + "/" +
                 std::to_string(spec.headDimV) + " need about " +
                 std::to_string(l.estimatedRegisters) +
                 " registers per thread in the sm90 family; at most " +
                 std::to_string(kMaxRegistersPerThread));
  return Status::ok();
}

LaunchFacts backwardLaunchFactsSm90(const AttentionSpec &spec,
                                    const TileConfig &c) {
  const BackwardSm90Layout l = backwardLayoutSm90(spec, c);
  LaunchFacts f;
  f.threadsPerBlock = l.threads;
  f.sharedMemBytes = l.sharedMemBytes;
  f.blockM = c.blockM;
  f.ptxasOptLevel = 3;
  if (l.tma) {
    f.tmaQ = f.tmaDO = {c.blockM, kTmaBoxCols};
    f.tmaK = f.tmaV = {c.blockN, kTmaBoxCols};
  }
  return f;
}

} // namespace flashjit
