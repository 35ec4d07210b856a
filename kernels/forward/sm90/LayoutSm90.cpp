//===- LayoutSm90.cpp - Layout, resources and defaults of the sm90 family -===//
#include "flashjit/kernels/LayoutSm90.h"

#include <algorithm>
#include <sstream>
#include <string>

namespace flashjit {

namespace {
/// Registers beside the accumulators, scores and P: softmax state, row and
/// key indices, descriptors, loop state.
constexpr int kOverheadRegisters = 24;
/// What overlap adds: fitted to ptxas 13.0 over d = 64-256, 64-256 keys,
/// one and two consumers (bench/results/2026-12-05-cpu-sm90-overlap-registers.md).
/// Every kernel it admits assembles without a spill (the largest: d = 128
/// with 176 keys); it refuses those that spill (d = 128 with 192 keys,
/// d = 256 with 96 keys and one consumer) and, needlessly, d = 64 with 224
/// or 240 keys and d = 96 with 208.
constexpr int kOverlapRegisters = 20;
} // namespace

Sm90Layout sm90Layout(const AttentionSpec &spec, const TileConfig &c) {
  Sm90Layout l;
  l.tma = rowsTmaAligned(spec);
  l.consumers = std::max(c.warps / 4, 1);
  l.threads = (l.consumers + 1) * kWarpgroupThreads;
  l.qkSteps = ceilDiv(spec.headDimQK, kWgmmaK);
  l.pvN = roundUp(spec.headDimV, 8);
  l.dTilesV = l.pvN / 8;
  l.boxesQK = ceilDiv(spec.headDimQK, kTmaBoxCols);
  l.boxesV = ceilDiv(spec.headDimV, kTmaBoxCols);
  l.qBoxBytes = kWgmmaRows * kTmaBoxRowBytes;
  l.kBoxBytes = c.blockN * kTmaBoxRowBytes;
  l.qOffset = 0;
  l.kOffset = l.qOffset + l.consumers * l.boxesQK * l.qBoxBytes;
  l.vOffset = l.kOffset + c.stages * l.boxesQK * l.kBoxBytes;
  l.barrierOffset = l.vOffset + c.stages * l.boxesV * l.kBoxBytes;
  // Q full; K full, K empty, V full, V empty per stage.
  l.barrierCount = 1 + 4 * c.stages;
  l.sharedMemBytes = l.barrierOffset + 8 * l.barrierCount;
  // Producers give their registers to the consumers (setmaxnreg), which may
  // then hold the rest of what the CTA was launched with (not the file's
  // 65536), in multiples of 8, at most 240.
  l.producerRegisters = l.tma ? kProducerRegisters : kCopyingProducerRegisters;
  const int rest = registersAtLaunch(l.threads) -
                   kWarpgroupThreads * l.producerRegisters;
  l.consumerRegisters =
      std::min(240, rest / (kWarpgroupThreads * l.consumers) / 8 * 8);
  const int oRegs = l.pvN / 2, sRegs = c.blockN / 2, pRegs = c.blockN / 4;
  // With overlap the previous tile's P stays live (its P V in flight) while
  // the next tile's scores become P, each score freeing a register as it
  // packs: one P's worth at the peak, and the margin that ptxas 13.0 needs
  // beside it (kOverlapRegisters).
  l.estimatedRegisters = oRegs + sRegs + pRegs + kOverheadRegisters +
                         (c.overlap ? kOverlapRegisters : 0);
  return l;
}

Status supportsSm90(const AttentionSpec &spec, Arch arch) {
  if (arch != Arch::Sm90a)
    return Status::error("the sm90 family needs sm_90a (wgmma, setmaxnreg), "
                         "got " + std::string(toString(arch)));
  if (spec.pagedKV || spec.splitKV)
    return Status::error("the sm90 family has no paged KV cache or split-KV "
                         "yet; use the sm80 family (family=sm80) for decode");
  // Rows TMA cannot address are copied by cp.async, 4 bytes at least (a
  // narrower copy is a load and a store: the sm80 family's job).
  const int eb = elementBytes(spec.dtype);
  if (!rowsTmaAligned(spec) &&
      std::min(copyElems(spec, spec.headDimQK), copyElems(spec, spec.headDimV)) *
              eb < 4)
    return Status::error(
        "the sm90 family loads rows by TMA (16-byte aligned) or cp.async (4 "
        "bytes at a time); these tensors' pointers and strides allow align=" +
        std::to_string(spec.globalAlignElems) + " with head dims " +
        std::to_string(spec.headDimQK) + "/" +
        std::to_string(spec.headDimV) + ": use the sm80 family");
  return Status::ok();
}

TileConfig defaultTileConfigSm90(const AttentionSpec &spec, Arch arch) {
  const int d = std::max(spec.headDimQK, spec.headDimV);
  TileConfig c;
  c.family = Family::Sm90;
  c.stages = 2;
  // Measured on an H200 (bench/results/2026-12-03-h200-sm90-family.md,
  // 2026-12-04-h200-sm90-tiles.md; bf16, S=4096, either mask): two consumer
  // warpgroups of 64 rows everywhere; 128-key tiles up to d=112 and
  // (without overlap) 176 at d=128 (1.01-1.03x), pingpong from d=96 (1.03x
  // at d = 96-128, none below); 96-key tiles with pingpong to d=192
  // (1.06-1.12x 64); past that 80-key tiles without pingpong (1.36x one
  // consumer warpgroup at d=256).
  // Overlap (the next tile's Q K^T issued before this tile's softmax) pays
  // from d=80 once ptxas no longer serialises it: 1.09-1.14x at d = 128,
  // 192 and 256, where 160-key tiles edge out 176 at d=128; neutral at
  // d=64 with two consumers (bench/results/2026-12-05-h100-sm90-overlap.md);
  // 1.10-1.17x at d = 96, 112 and 160
  // (2026-12-05-h100-sm90-copies-split-ws.md); with three consumers at d=64.
  // Measured on plain kernels only: score modifiers and per-row bounds keep
  // it off, and so do the copies where their 232 consumer registers do not
  // hold it.
  // Per-score work (bias, softcap) and per-row bounds (windows, varlen, key
  // lengths) keep more values live beside the scores: past d=128, 64-key
  // tiles leave them room (ptxas spills ALiBi + causal at d=192 and 256
  // with longer tiles), to d=128 128-key tiles (ALiBi + causal spills with
  // 176 in fp16).
  const bool extraLiveValues =
      spec.bias != BiasMode::None || spec.softcap ||
      spec.mask == MaskMode::Window || spec.varlen || spec.keyLengths;
  c.blockM = 2 * kWgmmaRows, c.warps = 8;
  if (d <= 128) {
    c.blockN = d > 112 ? 176 : 128;
    c.pingpong = d > 80;
  } else if (d <= 192) {
    c.blockN = 96;
    c.pingpong = true;
  } else {
    c.blockN = 80;
  }
  if (extraLiveValues)
    c.blockN = d > 128 ? 64 : std::min(c.blockN, 128);
  else if (rowsTmaAligned(spec) && d <= 64) {
    // FlashAttention-3's small-head tile: three consumer warpgroups (192
    // rows), overlap over 112 keys: 1.18x / 1.11x at d = 64
    // (2026-12-05-h100-sm90-grid-quick-form.md).
    c.blockM = 3 * kWgmmaRows, c.warps = 12, c.blockN = 112;
    c.overlap = true;
  } else if (d >= 80 && (rowsTmaAligned(spec) || d <= 128)) {
    // Overlap from d = 80 (1.07x / 1.06x there with 160 keys; neutral at
    // d = 72, ibid.); the copies keep 128 keys (1.09x / 1.08x at d = 100)
    // and no overlap past d = 128 (ptxas 13.0 spills 8 bytes at d = 250).
    c.overlap = true;
    if (d <= 128 && rowsTmaAligned(spec))
      c.blockN = 160;
  }
  // ALiBi's per-score distances at d > 192: fp16 spills 8 bytes with 48- and
  // 64-key tiles (tests/ptxas).
  if (spec.bias == BiasMode::Alibi && d > 192)
    c.blockN = 32;
  // Copies leave two consumers 232 registers (the producer keeps 40): with
  // ALiBi past d = 112, 128-key tiles spill 8-24 bytes (ptxas 13.0).
  if (spec.bias == BiasMode::Alibi && !rowsTmaAligned(spec) && d > 112)
    c.blockN = std::min(c.blockN, 112);
  if (c.overlap && exceededLimitSm90(c, spec, arch))
    c.overlap = false;
  return c;
}

std::optional<TileLimit> exceededLimitSm90(const TileConfig &c,
                                           const AttentionSpec &spec,
                                           Arch arch) {
  if (c.warps % 4 != 0 || c.blockM != kWgmmaRows * (c.warps / 4))
    return TileLimit::Shape;
  const Sm90Layout l = sm90Layout(spec, c);
  if (l.sharedMemBytes > maxSharedMemoryPerBlock(arch))
    return TileLimit::SharedMemory;
  if (l.estimatedRegisters > l.consumerRegisters)
    return TileLimit::Registers;
  return std::nullopt;
}

Status validateSm90(const TileConfig &c, const AttentionSpec &spec, Arch arch) {
  auto error = [](const std::string &m) { return Status::error(m); };
  if (c.warps != 4 && c.warps != 8 && c.warps != 12)
    return error("warps must be 4, 8 or 12 in the sm90 family (4 per "
                 "consumer warpgroup of 64 rows), got " +
                 std::to_string(c.warps));
  if (c.blockM != kWgmmaRows * (c.warps / 4))
    return error("block_m must be 64 rows per consumer warpgroup (" +
                 std::to_string(kWgmmaRows * (c.warps / 4)) + " for warps=" +
                 std::to_string(c.warps) + "), got " +
                 std::to_string(c.blockM));
  if (c.blockN < 16 || c.blockN > 256 || c.blockN % 16 != 0)
    return error("block_n must be a multiple of 16 in [16, 256], got " +
                 std::to_string(c.blockN));
  if (c.stages < 1 || c.stages > 4)
    return error("stages must be in [1, 4], got " + std::to_string(c.stages));
  if (c.quick)
    return error("the sm90 family has no quick form (quick is an sm80 knob)");
  // A packed group's Q rows are one TMA box of (query, head) pairs per
  // consumer warpgroup: the group must divide its 64 rows.
  if (c.packGqa && (spec.gqaGroup < 2 || kWgmmaRows % spec.gqaGroup != 0))
    return error("pack_gqa in the sm90 family needs a GQA group that "
                 "divides 64 (2, 4, 8, 16, 32 or 64 query heads per K/V "
                 "head), got " +
                 std::to_string(spec.gqaGroup));
  if (c.pingpong && c.warps != 8)
    return error("pingpong needs two consumer warpgroups (warps=8), got "
                 "warps=" + std::to_string(c.warps));
  const std::optional<TileLimit> limit = exceededLimitSm90(c, spec, arch);
  if (!limit)
    return Status::ok();
  const Sm90Layout l = sm90Layout(spec, c);
  std::ostringstream os;
  switch (*limit) {
  case TileLimit::Shape:
    os << "block_m must be 64 rows per consumer warpgroup";
    break;
  case TileLimit::SharedMemory:
    os << "tile config block_m=" << c.blockM << " block_n=" << c.blockN
       << " stages=" << c.stages << " needs " << l.sharedMemBytes
       << " bytes of shared memory; " << toString(arch) << " allows at most "
       << maxSharedMemoryPerBlock(arch) << " per block";
    break;
  case TileLimit::Registers:
  case TileLimit::RegisterFile:
    os << "tile config block_n=" << c.blockN << (c.overlap ? " overlap" : "")
       << " needs about " << l.estimatedRegisters
       << " registers per consumer thread for head_dim " << spec.headDimQK
       << "/" << spec.headDimV << "; " << l.consumers
       << " consumer warpgroups get " << l.consumerRegisters
       << " (use a smaller block_n, or no overlap)";
    break;
  }
  return error(os.str());
}

LaunchFacts launchFactsSm90(const AttentionSpec &spec, const TileConfig &c) {
  const Sm90Layout l = sm90Layout(spec, c);
  LaunchFacts f;
  f.threadsPerBlock = l.threads;
  f.sharedMemBytes = l.sharedMemBytes;
  f.blockM = c.blockM;
  f.ptxasOptLevel = 3;
  if (l.tma) {
    f.tmaQ = {kWgmmaRows, kTmaBoxCols, c.packGqa ? spec.gqaGroup : 1};
    f.tmaK = {c.blockN, kTmaBoxCols};
    f.tmaV = {c.blockN, kTmaBoxCols};
  }
  return f;
}

} // namespace flashjit
