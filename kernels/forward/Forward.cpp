//===- Forward.cpp - Layout, resources and defaults of the forward family --===//
#include "flashjit/kernels/Forward.h"

#include <algorithm>

namespace flashjit {

namespace {
int roundUp(int v, int m) { return (v + m - 1) / m * m; }
/// Each smem row gets one extra 16-byte chunk so that the 8 rows an ldmatrix
/// reads fall into 8 different bank groups (the padded pitch is an odd
/// number of 16-byte chunks).
constexpr int kRowPadElems = 8;
} // namespace

ForwardLayout forwardLayout(const AttentionSpec &spec, const TileConfig &c) {
  ForwardLayout l;
  const int eb = elementBytes(spec.dtype);
  l.paddedHeadDimQK = roundUp(spec.headDimQK, kMmaK);
  l.paddedHeadDimV = roundUp(spec.headDimV, kMmaK);
  l.pitchQK = l.paddedHeadDimQK + kRowPadElems;
  l.pitchV = l.paddedHeadDimV + kRowPadElems;
  l.threads = c.warps * kWarpSize;
  l.rowsPerWarp = c.warps > 0 ? c.blockM / c.warps : 0;
  l.mTilesPerWarp = l.rowsPerWarp / kMmaM;
  l.qTileBytes = c.blockM * l.pitchQK * eb;
  l.kTileBytes = c.blockN * l.pitchQK * eb;
  l.vTileBytes = c.blockN * l.pitchV * eb;
  l.kOffsetBytes = l.qTileBytes;
  l.vOffsetBytes = l.kOffsetBytes + c.stages * l.kTileBytes;
  l.sharedMemBytes = l.vOffsetBytes + c.stages * l.vTileBytes;
  // 32-bit registers: O accumulators (4 per m16n8 tile), scores, Q fragments
  // (4 per m16k16 tile), plus the softmax state and addressing.
  const int oRegs = l.mTilesPerWarp * (l.paddedHeadDimV / kMmaN) * 4;
  const int sRegs = l.mTilesPerWarp * (c.blockN / kMmaN) * 4;
  const int qRegs = l.mTilesPerWarp * (l.paddedHeadDimQK / kMmaK) * 4;
  constexpr int kOverheadRegs = 40;
  // Past this, keeping Q in registers makes ptxas spill (seen at d=256).
  constexpr int kQInRegistersBudget = 200;
  l.qInRegisters = oRegs + sRegs + qRegs + kOverheadRegs <= kQInRegistersBudget;
  l.estimatedRegisters =
      oRegs + sRegs + (l.qInRegisters ? qRegs : 0) + kOverheadRegs;
  return l;
}

TileConfig defaultTileConfig(const AttentionSpec &spec, Arch arch) {
  // THE default table. One warp owns 16 query rows; the K/V tile shrinks as
  // the head grows so that accumulators and Q fragments stay in registers.
  const int d = std::max(spec.headDimQK, spec.headDimV);
  TileConfig c;
  if (d <= 64)
    c = {/*blockM=*/128, /*blockN=*/64, /*warps=*/8, /*stages=*/2};
  else if (d <= 128)
    c = {128, 64, 8, 2};
  else if (d <= 192)
    c = {128, 32, 8, 2};
  else
    c = {64, 32, 4, 2};
  // Smaller shared memory on consumer parts: fall back to fewer stages.
  while (c.stages > 1 &&
         forwardLayout(spec, c).sharedMemBytes > maxSharedMemoryPerBlock(arch))
    --c.stages;
  return c;
}

} // namespace flashjit
