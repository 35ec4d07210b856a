//===- TensorMaps.cpp - TMA tensor maps of a kernel call ------------------===//
#include "TensorMaps.h"

#include <algorithm>
#include <cstring>

namespace flashjit {

namespace {
/// One operand: its base, columns (head dim) and strides in elements.
struct Operand {
  const char *name;
  const void *base;
  int64_t cols, rows, heads;
  const Strides &strides;
  TmaBox box;
};

/// A 4-d map (columns, rows, heads, batches).
Status encodeOne(const driver::Api &cu, const ForwardProblem &p,
                 const Operand &t, ForwardPlan::TensorMap &out) {
  const int64_t eb = elementBytes(p.dtype);
  const bool varlen = p.varlen.has_value();
  const int64_t batches = varlen ? 1 : p.batch;
  // A packed GQA group (box.heads > 1): heads before rows, so that a box of
  // (heads x rows / heads) lands as rows of (query, head) pairs.
  const bool headsFirst = t.box.heads > 1;
  cuuint64_t dims[4] = {cuuint64_t(t.cols),
                        cuuint64_t(headsFirst ? t.heads : t.rows),
                        cuuint64_t(headsFirst ? t.rows : t.heads),
                        cuuint64_t(batches)};
  int64_t strides[3] = {(headsFirst ? t.strides.head : t.strides.row) * eb,
                        (headsFirst ? t.strides.row : t.strides.head) * eb,
                        varlen ? 0 : t.strides.batch * eb};
  // A dimension of extent 1 is never stepped along: give it a stride TMA
  // accepts (a positive multiple of 16, at least every other stride)
  // whatever the caller's is.
  const int64_t any =
      (std::max({strides[0], strides[1], strides[2], int64_t(16)}) + 15) / 16 *
      16;
  for (int i = 0; i < 3; ++i)
    if (dims[i + 1] == 1)
      strides[i] = any;
  cuuint64_t byteStrides[3];
  for (int i = 0; i < 3; ++i)
    byteStrides[i] = cuuint64_t(strides[i]);
  cuuint32_t box[4] = {cuuint32_t(t.box.cols), cuuint32_t(t.box.rows), 1, 1};
  if (headsFirst)
    box[1] = cuuint32_t(t.box.heads), box[2] = cuuint32_t(t.box.rows / t.box.heads);
  cuuint32_t elementStrides[4] = {1, 1, 1, 1};
  auto *map = reinterpret_cast<CUtensorMap *>(out.bytes);
  return driver::check(
      cu.tensorMapEncodeTiled(
          map,
          p.dtype == DType::BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
          4, const_cast<void *>(t.base), dims, byteStrides, box,
          elementStrides, CU_TENSOR_MAP_INTERLEAVE_NONE,
          CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
          CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
      (std::string("cuTensorMapEncodeTiled(") + t.name + ")").c_str());
}
} // namespace

static_assert(sizeof(ForwardPlan::TensorMap) == sizeof(CUtensorMap) &&
                  alignof(ForwardPlan::TensorMap) >= 64,
              "ForwardPlan::TensorMap must hold a CUtensorMap");

Status encodeTensorMaps(const driver::Api &cu, const ForwardProblem &p,
                        const LaunchFacts &facts, ForwardPlan &plan,
                        const BackwardProblem *backward) {
  plan.tensorMapCount = 0;
  if (!facts.usesTma())
    return Status::ok();
  if (!cu.tensorMapEncodeTiled)
    return Status::error("this kernel loads with TMA, and the CUDA driver "
                         "lacks cuTensorMapEncodeTiled (CUDA 12.0 or newer)");
  // Without a backward, dO has no base and O's strides stand in (a
  // reference must bind): a kernel that asks for its map is refused below.
  const Operand operands[] = {
      {"q", p.q, p.headDimQK, (p.varlen ? p.varlen->totalQ : p.seqlenQ), p.headsQ, p.qStrides, facts.tmaQ},
      {"k", p.k, p.headDimQK, (p.varlen ? p.varlen->totalK : p.seqlenK), p.headsKV, p.kStrides, facts.tmaK},
      {"v", p.v, p.headDimV, (p.varlen ? p.varlen->totalK : p.seqlenK), p.headsKV, p.vStrides, facts.tmaV},
      {"do", backward ? backward->dO : nullptr, p.headDimV, (p.varlen ? p.varlen->totalQ : p.seqlenQ), p.headsQ, backward ? backward->dOStrides : p.oStrides, facts.tmaDO},
  };
  for (const Operand &t : operands) {
    if (t.box.rows == 0)
      continue;
    if (!t.base)
      return Status::error(std::string("this kernel loads ") + t.name +
                           " with TMA and the call has none");
    if (Status s = encodeOne(cu, p, t, plan.tensorMaps[plan.tensorMapCount]);
        !s)
      return s;
    ++plan.tensorMapCount;
  }
  return Status::ok();
}

} // namespace flashjit
