//===- TileDialect.cpp - flashjit tile dialect: attributes, op, verifiers --===//
#include "flashjit/Dialect/Tile/TileDialect.h"

#include "mlir/IR/DialectImplementation.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cstdint>
#include <limits>

using namespace mlir;
using namespace flashjit;
using namespace flashjit::tile;

#include "flashjit/Dialect/Tile/TileDialect.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "flashjit/Dialect/Tile/TileAttrs.cpp.inc"

#define GET_OP_CLASSES
#include "flashjit/Dialect/Tile/TileOps.cpp.inc"

void TileDialect::initialize() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "flashjit/Dialect/Tile/TileAttrs.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "flashjit/Dialect/Tile/TileOps.cpp.inc"
      >();
}

namespace {
/// The spec attribute's fields (as SpecAttr::verify receives them).
struct SpecFields {
  StringRef dtype;
  int64_t headDimQK, headDimV;
  StringRef mask;
  int64_t gqaGroup;
  bool lse;
  int64_t align;
  StringRef bias;
  bool softcap, varlen, keyLengths, pagedKV, splitKV;
  StringRef direction;
  bool deterministic, biasGrad;
};

std::string_view view(StringRef s) { return {s.data(), s.size()}; }

/// The 64-bit attribute fields narrow to the 32-bit ints of AttentionSpec
/// and TileConfig: a value that does not fit is an error, not a truncation
/// (head_dim_qk = 2^32 + 64 is not 64).
Status fitsInt(std::string_view name, int64_t value) {
  if (value >= std::numeric_limits<int32_t>::min() &&
      value <= std::numeric_limits<int32_t>::max())
    return Status::ok();
  return Status::error(std::string(name) + " must fit in 32 bits, got " +
                       std::to_string(value));
}

/// The spec attribute's fields as the plain struct, or the reason why not.
Expected<AttentionSpec> toSpec(const SpecFields &f) {
  AttentionSpec spec;
  auto d = parseDType(view(f.dtype));
  if (!d)
    return Status::error("dtype must be one of " + dtypeChoices() + ", got '" +
                         f.dtype.str() + "'");
  auto m = parseMaskMode(view(f.mask));
  if (!m)
    return Status::error("mask must be one of " + maskChoices() + ", got '" +
                         f.mask.str() + "'");
  auto b = parseBiasMode(view(f.bias));
  if (!b)
    return Status::error("bias must be one of " + biasChoices() + ", got '" +
                         f.bias.str() + "'");
  auto dir = parseDirection(view(f.direction));
  if (!dir)
    return Status::error("direction must be one of " + directionChoices() +
                         ", got '" + f.direction.str() + "'");
  spec.direction = *dir;
  spec.deterministic = f.deterministic;
  spec.biasGrad = f.biasGrad;
  for (auto [name, value] : {std::pair{"head_dim_qk", f.headDimQK},
                             std::pair{"head_dim_v", f.headDimV},
                             std::pair{"gqa_group", f.gqaGroup},
                             std::pair{"align", f.align}})
    if (Status s = fitsInt(name, value); !s)
      return s;
  spec.dtype = *d;
  spec.mask = *m;
  spec.bias = *b;
  spec.headDimQK = static_cast<int>(f.headDimQK);
  spec.headDimV = static_cast<int>(f.headDimV);
  spec.gqaGroup = static_cast<int>(f.gqaGroup);
  spec.writeLse = f.lse;
  spec.globalAlignElems = static_cast<int>(f.align);
  spec.softcap = f.softcap;
  spec.varlen = f.varlen;
  spec.keyLengths = f.keyLengths;
  spec.pagedKV = f.pagedKV;
  spec.splitKV = f.splitKV;
  if (Status s = validate(spec); !s)
    return s;
  return spec;
}
} // namespace

LogicalResult SpecAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                               StringRef dtype, int64_t headDimQK,
                               int64_t headDimV, StringRef mask,
                               int64_t gqaGroup, bool lse, int64_t align,
                               StringRef bias, bool softcap, bool varlen,
                               bool keyLengths, bool pagedKV, bool splitKV,
                               StringRef direction, bool deterministic,
                               bool biasGrad) {
  auto spec = toSpec({dtype, headDimQK, headDimV, mask, gqaGroup, lse, align,
                      bias, softcap, varlen, keyLengths, pagedKV, splitKV,
                      direction, deterministic, biasGrad});
  if (!spec)
    return emitError() << spec.message();
  return success();
}

LogicalResult
TileConfigAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                       int64_t blockM, int64_t blockN, int64_t warps,
                       int64_t stages, bool packGqa, bool quick,
                       StringRef family, bool pingpong, bool overlap,
                       bool scalar) {
  // The rest (ranges, shared memory) needs the spec and arch: the op checks.
  for (auto [name, value] :
       {std::pair{"block_m", blockM}, std::pair{"block_n", blockN},
        std::pair{"warps", warps}, std::pair{"stages", stages}})
    if (Status s = fitsInt(name, value); !s)
      return emitError() << s.message();
  if (!parseFamily(family.str()))
    return emitError() << "family must be one of " << familyChoices()
                       << ", got '" << family << "'";
  return success();
}

AttentionSpec AttentionFwdOp::getAttentionSpec() {
  SpecAttr a = getSpec();
  return *toSpec({a.getDtype(), a.getHeadDimQk(), a.getHeadDimV(), a.getMask(),
                  a.getGqaGroup(), a.getLse(), a.getAlign(),
                  a.getBias(),
                  a.getSoftcap(), a.getVarlen(), a.getKeyLengths(),
                  a.getPagedKv(), a.getSplitKv(), a.getDirection(),
                  a.getDeterministic(), a.getBiasGrad()});
}

LogicalResult AttentionFwdOp::verify() {
  auto arch = parseArch(getArch().str());
  if (!arch)
    return emitOpError() << "arch must be one of " << archChoices() << ", got '"
                         << getArch() << "'";
  if (auto config = getConfig())
    if (Status s = validate(fromAttr(*config), getAttentionSpec(), *arch); !s)
      return emitOpError() << s.message();
  return success();
}

namespace flashjit::tile {
SpecAttr toAttr(MLIRContext *ctx, const AttentionSpec &s) {
  auto str = [](std::string_view v) { return StringRef(v.data(), v.size()); };
  return SpecAttr::get(ctx, str(toString(s.dtype)), s.headDimQK, s.headDimV,
                       str(toString(s.mask)), s.gqaGroup, s.writeLse,
                       s.globalAlignElems,
                       str(toString(s.bias)), s.softcap,
                       s.varlen, s.keyLengths, s.pagedKV, s.splitKV,
                       str(toString(s.direction)), s.deterministic,
                       s.biasGrad);
}
TileConfigAttr toAttr(MLIRContext *ctx, const TileConfig &c) {
  std::string_view family = toString(c.family);
  return TileConfigAttr::get(ctx, c.blockM, c.blockN, c.warps, c.stages,
                             c.packGqa, c.quick,
                             StringRef(family.data(), family.size()),
                             c.pingpong, c.overlap, c.scalar);
}
TileConfig fromAttr(TileConfigAttr a) {
  TileConfig c;
  c.blockM = static_cast<int>(a.getBlockM());
  c.blockN = static_cast<int>(a.getBlockN());
  c.warps = static_cast<int>(a.getWarps());
  c.stages = static_cast<int>(a.getStages());
  c.packGqa = a.getPackGqa();
  c.quick = a.getQuick();
  c.family = parseFamily(a.getFamily().str()).value_or(Family::Sm80);
  c.pingpong = a.getPingpong();
  c.overlap = a.getOverlap();
  c.scalar = a.getScalar();
  return c;
}
} // namespace flashjit::tile
