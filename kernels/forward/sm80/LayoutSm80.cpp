//===- LayoutSm80.cpp - Layout, resources and defaults of the sm80 family -===//
#include "flashjit/kernels/LayoutSm80.h"

#include <algorithm>
#include <iterator>
#include <sstream>
#include <string>

namespace flashjit {

namespace {
/// Unswizzled rows get one extra 16-byte chunk (an odd pitch in chunks), so
/// that an ldmatrix's 8 rows fall into 8 bank groups; but then a quarter
/// warp's 8 copied chunks straddle two 128-byte lines (Nsight Compute at
/// d=192 with 32-byte aligned rows: 2.1x FA2's shared-memory wavefronts
/// per cp.async; 1-byte padding is worse).
int paddedPitch(int paddedDim) { return paddedDim + kSmemChunkElems; }
} // namespace

ForwardLayout forwardLayout(const AttentionSpec &spec, const TileConfig &c) {
  ForwardLayout l;
  const int eb = elementBytes(spec.dtype);
  l.paddedHeadDimQK = roundUp(spec.headDimQK, kMmaK);
  l.paddedHeadDimV = roundUp(spec.headDimV, kMmaK);
  // 32-bit registers: O accumulators (4 per m16n8 tile), scores, Q fragments
  // (4 per m16k16 tile), plus the softmax state and addressing.
  constexpr int kOverheadRegs = 40;
  // The quick form gives each warp one m16 tile of the CTA's rows, as long
  // as every thread can still have all 255 registers: half the
  // accumulators per thread at 2 tiles, which ptxas allocates in less time.
  // A row's operations do not depend on which warp computes it.
  const int oneTileWarps = c.blockM / kMmaM;
  const int warps = c.quick && oneTileWarps * kWarpSize *
                                       kMaxRegistersPerThread <=
                                   kRegisterFileSize
                        ? oneTileWarps
                        : c.warps;
  l.threads = warps * kWarpSize;
  l.rowsPerWarp = warps > 0 ? c.blockM / warps : 0;
  l.mTilesPerWarp = l.rowsPerWarp / kMmaM;
  const int oRegs = l.mTilesPerWarp * (l.paddedHeadDimV / kMmaN) * 4;
  const int sRegs = l.mTilesPerWarp * (c.blockN / kMmaN) * 4;
  const int qRegs = l.mTilesPerWarp * (l.paddedHeadDimQK / kMmaK) * 4;
  // Past this, keeping Q in registers makes ptxas spill (seen at d=256).
  // Narrow copies keep more addresses live (one per 2- or 4-byte chunk), so
  // they leave less room for Q (budgets from the ptxas sweep of d=1..256).
  const int copyBytes = spec.globalAlignElems * eb;
  const int qInRegistersBudget = copyBytes >= 8 ? 200 : copyBytes == 4 ? 170 : 140;
  l.qInRegisters = oRegs + sRegs + qRegs + kOverheadRegs <= qInRegistersBudget;
  l.estimatedRegisters =
      oRegs + sRegs + (l.qInRegisters ? qRegs : 0) + kOverheadRegs;
  // Past this estimate the interleaved rescale spills (ptxas 13 at d=100,
  // 128x64 w4: 216); at or below it the branch only costs (d=96, 128x64 w4
  // and d=256, 128x64 w8: 200, 6-13% slower with it).
  constexpr int kInterleavedRescaleRegs = 200;
  l.rescaleOnNewMax = l.estimatedRegisters > kInterleavedRescaleRegs;
  // Unpadded swizzled rows: 1.02-1.04x at d = 96-256 (H200,
  // bench/results/2026-12-02-h200-xor-swizzle-default-tiles.md, against
  // padded rows at d = 96 / 128 and the one-bit swizzle of 32-byte aligned
  // rows of 2026-12-02-h200-causal-order-swizzled-rows.md elsewhere; 0.99x
  // at d=64). Their
  // fragment views cost registers, so the 4-warp 32-row tiles from d=96
  // keep padded rows where registers are short: with a mask (ptxas spills
  // at d = 96 and 100, d=128 ran 0.95x) or past kInterleavedRescaleRegs
  // (spills at d = 112-124), except whole rows of 128 without a mask
  // (d=128: 1.03x, spill-free).
  const bool twoTileWarpsFrom96 =
      l.mTilesPerWarp >= 2 &&
      std::max(l.paddedHeadDimQK, l.paddedHeadDimV) >= 96;
  const bool wholeRowsOf128 = spec.headDimQK == 128 && spec.headDimV == 128;
  const bool swizzle =
      !twoTileWarpsFrom96 ||
      (spec.mask == MaskMode::None &&
       (l.estimatedRegisters <= kInterleavedRescaleRegs || wholeRowsOf128));
  if (swizzle) {
    l.pitchQK = l.paddedHeadDimQK;
    l.pitchV = l.paddedHeadDimV;
    l.swizzleBitsQK = swizzleBitsOfRow(l.pitchQK / kSmemChunkElems);
    l.swizzleBitsV = swizzleBitsOfRow(l.pitchV / kSmemChunkElems);
  } else {
    l.pitchQK = paddedPitch(l.paddedHeadDimQK);
    l.pitchV = paddedPitch(l.paddedHeadDimV);
  }
  // Q K^T as a run-time loop of 4 unrolled k-steps where a warp has two
  // m16 tiles, Q is read from shared memory and rows are padded: d=128
  // causal ran 1.05x faster so (H200, 350-352 against 334-335 TFLOP/s:
  // bench/results/2026-12-02-h200-cold-compile-under-300ms.md) and its PTX is 8% cheaper for ptxas. With one m16 tile
  // the loop cost 2-6% (d = 160-256); swizzled d=128 rows spill in it.
  const int kStepsQK = l.paddedHeadDimQK / kMmaK;
  if (l.mTilesPerWarp >= 2 && !l.qInRegisters && !l.swizzledRows() &&
      kStepsQK >= 2 * kQkStepsPerRolledIteration)
    l.qkRolledIterations = kStepsQK / kQkStepsPerRolledIteration;
  if (c.quick) {
    // The quick form holds scores of one 16-key slice and reads Q from
    // shared memory in a run-time loop: the least code for ptxas. An
    // iteration advances by whole swizzle groups (the fragment views stay;
    // only their column moves): one k-step at up to one swizzle bit, 4 at
    // three.
    l.qInRegisters = false;
    l.qkStepsPerRolledIteration = std::max(
        1, (1 << l.swizzleBitsQK) * kSmemChunkElems / kMmaK);
    l.qkRolledIterations = kStepsQK / l.qkStepsPerRolledIteration;
    l.estimatedRegisters =
        oRegs + l.mTilesPerWarp * (kQuickSliceKeys / kMmaN) * 4 + kOverheadRegs;
  }
  l.qTileBytes = c.blockM * l.pitchQK * eb;
  l.kTileBytes = c.blockN * l.pitchQK * eb;
  l.vTileBytes = c.blockN * l.pitchV * eb;
  l.kOffsetBytes = l.qTileBytes;
  l.vOffsetBytes = l.kOffsetBytes + c.stages * l.kTileBytes;
  l.sharedMemBytes = l.vOffsetBytes + c.stages * l.vTileBytes;
  return l;
}

TileConfig defaultTileConfigSm80(const AttentionSpec &spec, Arch arch) {
  // THE default table, from the H200 autotune runs in bench/results
  // (2026-12-02), restricted to configs that ptxas assembles without spills
  // for sm_80 and sm_90a (tests/ptxas): 4 warps of 32 query rows (two m16
  // tiles each) halve the shared-memory reads of K/V per MMA against 8
  // warps of 16 rows; past d=128 their accumulators no longer fit in
  // registers.
  const int d = std::max(spec.headDimQK, spec.headDimV);
  // Bytes per copy: 16 or 8 need one address a row chunk (lane-row copies);
  // 4 need twice as many and take 8 warps and a shorter K/V tile; narrower
  // copies are synchronous loads, for which a second stage overlaps nothing
  // and costs registers.
  const int copyBytes =
      std::min(copyElems(spec, spec.headDimQK), copyElems(spec, spec.headDimV)) *
      elementBytes(spec.dtype);
  // Two stages where cp.async overlaps them with compute, one for loads.
  const int pipelinedStages = copyBytes < 4 ? 1 : 2;
  TileConfig preferred;
  if (copyBytes <= 4)
    preferred = {/*blockM=*/128, /*blockN=*/d <= 64 ? 32 : 16, /*warps=*/8,
                 pipelinedStages};
  else if (spec.splitKV && d > 88 && d <= 112)
    // Split-KV's float32 partials take the registers of the tiles below:
    // ptxas 13.0 spilled 4-24 bytes at d = 96 and 100 (tests/ptxas).
    preferred = {128, 32, 4, 2};
  else if (d > 96 && d <= 112 && copyBytes == 8)
    // 48-key tiles leave the registers that 8-byte copies need: d=100,
    // 1.01x of 128x64 with two stages, either mask (autotune in
    // 2026-12-02-h200-xor-swizzle-default-tiles.md);
    // with 16-byte copies (d=112) 0.98-0.99x.
    preferred = {128, 48, 4, 1};
  else if (d <= 112)
    // A third stage pays where 16-byte copies leave it the registers: at
    // d=96 without a mask, 1.02-1.03x of two (H200 autotune,
    // 2026-12-02-h200-causal-order-swizzled-rows.md); at d=89 ptxas spills.
    // With causal, two stages are 1.06x of three since codegen revision 9
    // (2026-12-02-h200-cold-compile-run-time-loops.md).
    preferred = {128, 64, 4,
                 copyBytes == 16 && d == 96 && spec.mask == MaskMode::None
                     ? 3
                     : 2};
  else if (d > 120 && d <= 128 && spec.mask != MaskMode::None &&
           arch < Arch::Sm90)
    // For sm_80 ptxas spills 8 bytes of the 64-key tile below with a mask
    // (codegen revision 9); 32-key tiles take 244 registers.
    preferred = {128, 32, 4, 2};
  else if (d <= 128)
    // One stage: half the K/V shared memory of two and, with V loaded
    // behind Q K^T and K behind the softmax, no less overlap. Without a
    // mask and with whole 16-byte rows (no zero-filled columns, whose
    // addresses spill at d=120) two stages are 1.04x
    // (2026-12-02-h200-xor-swizzle-default-tiles.md).
    preferred = {128, 64, 4,
                 copyBytes == 16 && d == 128 && spec.mask == MaskMode::None
                     ? 2
                     : 1};
  else if (copyBytes == 16 && d <= 160)
    // One m16 tile per warp and 128-key tiles: 1.20-1.23x of 128x32 with 8
    // warps at d = 144 / 160, either mask (unpadded swizzled rows,
    // 2026-12-02-h200-xor-swizzle-default-tiles.md); 8-byte copies spill
    // (d=132).
    preferred = {64, 128, 4, 1};
  else if (copyBytes == 16 && d > 176 && d <= 192)
    // 1.04-1.05x of 64x64 with 4 warps, either mask
    // (2026-12-02-h200-xor-swizzle-default-tiles.md).
    preferred = {128, 128, 8, 1};
  else if (copyBytes == 16 && d > 240)
    // 4 warps of 16 rows, Q re-read from smem, one stage: two CTAs per SM
    // (FlashAttention-2's choice at d=256 on the H100). Up to d=176 the
    // layout keeps Q in registers, and 8-byte copies need more addresses:
    // both spill.
    preferred = {64, 64, 4, 1};
  else if (d <= 240)
    preferred = {128, 32, 8, 2};
  else
    preferred = {128, 64, 8, 2};
  // Per-score work (bias, softcap), per-sequence bounds (windows, varlen,
  // key lengths) and packed GQA rows keep more values live next to the
  // scores: a 32-row K/V tile leaves them room (ptxas spills at 64, tests/
  // ptxas).
  const bool extraLiveValues =
      spec.bias != BiasMode::None || spec.softcap ||
      spec.mask == MaskMode::Window || spec.varlen || spec.keyLengths ||
      spec.gqaGroup > 1;
  if (extraLiveValues) {
    preferred.blockN = std::min(preferred.blockN, 32);
    if (d > 64) // two m16 tiles per warp no longer fit: 8 warps of one
      // each, two stages for asynchronous copies (the one-stage rows above
      // were tuned without these values)
      preferred = {128, preferred.blockN, 8, pipelinedStages};
  }
  // Parts with less shared memory (sm_86/89, sm_80 at d=256) take the first
  // smaller tile that fits: fewer stages, then a shorter K/V tile, then
  // fewer query rows.
  const TileConfig fallbacks[] = {
      preferred,
      {preferred.blockM, preferred.blockN, preferred.warps,
       std::min(preferred.stages, 2)},
      {preferred.blockM, preferred.blockN, preferred.warps, 1},
      {preferred.blockM, 32, preferred.warps, 2},
      {preferred.blockM, 32, preferred.warps, 1},
      {64, 32, 4, 2},
      {64, 32, 4, 1},
      {64, 16, 4, 1},
  };
  for (size_t i = 0; i < std::size(fallbacks); ++i) {
    TileConfig c = fallbacks[i];
    if (i > 0 && c == fallbacks[i - 1])
      continue; // already refused
    // GQA reads each K/V tile once for the whole group of query heads.
    c.packGqa = spec.gqaGroup > 1;
    if (validateSm80(c, spec, arch))
      return c;
  }
  TileConfig last = fallbacks[std::size(fallbacks) - 1];
  last.packGqa = spec.gqaGroup > 1;
  return last;
}

namespace {
std::string rangeError(std::string_view name, int lo, int hi, int64_t got) {
  std::ostringstream os;
  os << name << " must be in [" << lo << ", " << hi << "], got " << got;
  return os.str();
}
bool isPowerOfTwo(int v) { return v > 0 && (v & (v - 1)) == 0; }
} // namespace

Status validateSm80(const TileConfig &c, const AttentionSpec &spec, Arch arch) {
  if (c.warps < 1 || c.warps > 16 || !isPowerOfTwo(c.warps))
    return Status::error("warps must be a power of two in [1, 16], got " +
                         std::to_string(c.warps));
  auto blockMError = [&] {
    return Status::error("block_m must be a multiple of 16 * warps (" +
                         std::to_string(kMmaM * c.warps) +
                         ") in [16, 256], got " + std::to_string(c.blockM));
  };
  if (c.blockM < kMmaM || c.blockM > 256 || c.blockM % (kMmaM * c.warps) != 0)
    return blockMError();
  if (c.blockN < kMmaK || c.blockN > 256 || c.blockN % kMmaK != 0)
    return Status::error(
        "block_n must be a multiple of 16 in [16, 256], got " +
        std::to_string(c.blockN));
  if (c.stages < 1 || c.stages > 4)
    return Status::error(rangeError("stages", 1, 4, c.stages));
  if (c.packGqa && spec.gqaGroup == 1)
    return Status::error("pack_gqa needs a GQA group > 1 (heads_q / heads_kv), "
                         "got 1");
  if (c.pingpong || c.overlap)
    return Status::error("pingpong and overlap are knobs of the sm90 family; "
                         "the sm80 family has neither");
  const std::optional<TileLimit> limit = exceededLimitSm80(c, spec, arch);
  if (!limit)
    return Status::ok();
  const ForwardLayout layout = forwardLayout(spec, c);
  std::ostringstream os;
  switch (*limit) {
  case TileLimit::Shape: // the block_m check above reports it first
    return blockMError();
  case TileLimit::SharedMemory:
    os << "tile config block_m=" << c.blockM << " block_n=" << c.blockN
       << " stages=" << c.stages << " needs " << layout.sharedMemBytes
       << " bytes of shared memory; " << toString(arch) << " allows at most "
       << maxSharedMemoryPerBlock(arch) << " per block";
    break;
  case TileLimit::Registers:
    os << "tile config block_m=" << c.blockM << " block_n=" << c.blockN
       << " warps=" << c.warps << " needs about " << layout.estimatedRegisters
       << " registers per thread for head_dim " << spec.headDimQK << "/"
       << spec.headDimV << "; at most " << kMaxRegistersPerThread
       << " exist (use more warps, a smaller block_m or block_n)";
    break;
  case TileLimit::RegisterFile:
    os << "tile config warps=" << c.warps << " needs about "
       << layout.estimatedRegisters << " registers for each of its "
       << layout.threads << " threads; an SM's register file holds "
       << kRegisterFileSize << " (use fewer warps)";
    break;
  }
  return Status::error(os.str());
}

std::optional<TileLimit> exceededLimitSm80(const TileConfig &c,
                                           const AttentionSpec &spec,
                                           Arch arch) {
  if (c.warps < 1 || c.blockM % (kMmaM * c.warps) != 0)
    return TileLimit::Shape;
  const ForwardLayout layout = forwardLayout(spec, c);
  if (layout.sharedMemBytes > maxSharedMemoryPerBlock(arch))
    return TileLimit::SharedMemory;
  if (layout.estimatedRegisters > kMaxRegistersPerThread)
    return TileLimit::Registers;
  if (layout.estimatedRegisters * layout.threads > kRegisterFileSize)
    return TileLimit::RegisterFile;
  return std::nullopt;
}

} // namespace flashjit
