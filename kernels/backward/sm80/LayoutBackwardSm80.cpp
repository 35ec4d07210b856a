//===- LayoutBackwardSm80.cpp - The sm80 backward's tiles and configs -----===//
#include "flashjit/kernels/Backward.h"
#include "flashjit/kernels/LayoutSm80.h"

#include <algorithm>
#include <string>

namespace flashjit {
namespace {
int roundUp16(int bytes) { return (bytes + 15) / 16 * 16; }
bool oneOf(int v, std::initializer_list<int> allowed) {
  return std::find(allowed.begin(), allowed.end(), v) != allowed.end();
}
} // namespace

BackwardLayout backwardLayoutSm80(const AttentionSpec &spec,
                                  const TileConfig &c) {
  BackwardLayout l;
  l.threads = c.warps * kWarpSize;
  const int elem = elementBytes(spec.dtype);
  int at = 0;
  auto take = [&](int bytes) {
    const int offset = at;
    at += roundUp16(bytes);
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

TileConfig defaultBackwardConfigSm80(const AttentionSpec &spec, Arch) {
  TileConfig c;
  c.family = Family::Sm80;
  c.blockM = 16;
  c.blockN = std::max(spec.headDimQK, spec.headDimV) > 128 ? 16 : 32;
  c.warps = 4;
  c.stages = 1;
  return c;
}

Status validateBackwardSm80(const TileConfig &c, const AttentionSpec &spec,
                            Arch arch) {
  if (!oneOf(c.blockM, {16, 32, 64}))
    return Status::error("backward block_m must be one of 16, 32, 64, got " +
                         std::to_string(c.blockM));
  if (!oneOf(c.blockN, {16, 32, 64}))
    return Status::error("backward block_n must be one of 16, 32, 64, got " +
                         std::to_string(c.blockN));
  if (!oneOf(c.warps, {1, 2, 4, 8}))
    return Status::error("backward warps must be one of 1, 2, 4, 8, got " +
                         std::to_string(c.warps));
  if (c.stages != 1)
    return Status::error("backward stages must be 1 (the tiles are not "
                         "pipelined), got " +
                         std::to_string(c.stages));
  if (c.packGqa || c.quick || c.pingpong || c.overlap)
    return Status::error("the sm80 backward has no pack_gqa, quick, "
                         "pingpong or overlap form");
  const int bytes = backwardLayoutSm80(spec, c).sharedMemBytes;
  if (bytes > maxSharedMemoryPerBlock(arch))
    return Status::error(
        "backward tiles need " + std::to_string(bytes) +
        " bytes of shared memory; " + std::string(toString(arch)) +
        " allows " + std::to_string(maxSharedMemoryPerBlock(arch)) +
        " (use a smaller block_m or block_n)");
  return Status::ok();
}

} // namespace flashjit
