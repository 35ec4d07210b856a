//===- AttentionSpec.cpp - Names, validation and identity of a spec --------===//
#include "flashjit/compiler/AttentionSpec.h"
#include "flashjit/compiler/KernelFamily.h"

#include <algorithm>
#include <sstream>

namespace flashjit {

bool AttentionSpec::operator==(const AttentionSpec &o) const {
  return dtype == o.dtype && headDimQK == o.headDimQK &&
         headDimV == o.headDimV && mask == o.mask && gqaGroup == o.gqaGroup &&
         writeLse == o.writeLse && globalAlignElems == o.globalAlignElems &&
         bias == o.bias && softcap == o.softcap && varlen == o.varlen &&
         keyLengths == o.keyLengths && pagedKV == o.pagedKV &&
         splitKV == o.splitKV && direction == o.direction &&
         deterministic == o.deterministic && biasGrad == o.biasGrad;
}
bool TileConfig::operator==(const TileConfig &o) const {
  return blockM == o.blockM && blockN == o.blockN && warps == o.warps &&
         stages == o.stages && packGqa == o.packGqa && quick == o.quick &&
         family == o.family && pingpong == o.pingpong && overlap == o.overlap &&
         scalar == o.scalar;
}

// ---- names -----------------------------------------------------------------
namespace {
template <typename E> struct Named {
  E value;
  std::string_view name;
};
constexpr Named<DType> kDTypes[] = {{DType::F16, "fp16"}, {DType::BF16, "bf16"}};
constexpr Named<MaskMode> kMasks[] = {{MaskMode::None, "none"},
                                      {MaskMode::Causal, "causal"},
                                      {MaskMode::Window, "window"}};
constexpr Named<BiasMode> kBiases[] = {{BiasMode::None, "none"},
                                       {BiasMode::Tensor, "tensor"},
                                       {BiasMode::Alibi, "alibi"}};
constexpr Named<Arch> kArchs[] = {
    {Arch::Sm80, "sm_80"},   {Arch::Sm86, "sm_86"},  {Arch::Sm87, "sm_87"},
    {Arch::Sm89, "sm_89"},   {Arch::Sm90, "sm_90"},  {Arch::Sm90a, "sm_90a"},
    {Arch::Sm100, "sm_100"}, {Arch::Sm120, "sm_120"}};
constexpr Named<Family> kFamilyNames[] = {{Family::Sm80, "sm80"},
                                          {Family::Sm90, "sm90"}};
constexpr Named<Direction> kDirections[] = {{Direction::Forward, "forward"},
                                            {Direction::Backward, "backward"}};

template <typename E, size_t N>
std::string_view nameOf(const Named<E> (&table)[N], E v) {
  for (const auto &e : table)
    if (e.value == v)
      return e.name;
  return "?";
}
template <typename E, size_t N>
std::optional<E> parse(const Named<E> (&table)[N], std::string_view s) {
  for (const auto &e : table)
    if (e.name == s)
      return e.value;
  return std::nullopt;
}
template <typename E, size_t N> std::string choices(const Named<E> (&table)[N]) {
  std::string out;
  for (const auto &e : table)
    out += (out.empty() ? "" : "|") + std::string(e.name);
  return out;
}
} // namespace

std::string_view toString(DType d) { return nameOf(kDTypes, d); }
std::string_view toString(MaskMode m) { return nameOf(kMasks, m); }
std::string_view toString(BiasMode b) { return nameOf(kBiases, b); }
std::string_view toString(Arch a) { return nameOf(kArchs, a); }
std::string_view toString(Family f) { return nameOf(kFamilyNames, f); }
std::optional<Family> parseFamily(std::string_view s) {
  return parse(kFamilyNames, s);
}
std::string familyChoices() { return choices(kFamilyNames); }
std::string_view toString(Direction d) { return nameOf(kDirections, d); }
std::optional<Direction> parseDirection(std::string_view s) {
  if (s == "fwd")
    return Direction::Forward;
  if (s == "bwd")
    return Direction::Backward;
  return parse(kDirections, s);
}
std::string directionChoices() { return choices(kDirections); }
std::optional<DType> parseDType(std::string_view s) {
  if (s == "f16" || s == "half" || s == "float16")
    return DType::F16;
  if (s == "bfloat16")
    return DType::BF16;
  return parse(kDTypes, s);
}
std::optional<MaskMode> parseMaskMode(std::string_view s) {
  return parse(kMasks, s);
}
std::optional<BiasMode> parseBiasMode(std::string_view s) {
  return parse(kBiases, s);
}
std::optional<Arch> parseArch(std::string_view s) {
  if (s.size() > 2 && s.substr(0, 2) == "sm" && s[2] != '_') // sm80 -> sm_80
    return parseArch("sm_" + std::string(s.substr(2)));
  return parse(kArchs, s);
}
std::string dtypeChoices() { return choices(kDTypes); }
std::string maskChoices() { return choices(kMasks); }
std::string biasChoices() { return choices(kBiases); }
std::string archChoices() { return choices(kArchs); }

int elementBytes(DType) { return 2; }

bool rowsTmaAligned(const AttentionSpec &spec) {
  return spec.globalAlignElems * elementBytes(spec.dtype) >= 16;
}

int computeCapability(Arch a) {
  switch (a) {
  case Arch::Sm80: return 80;
  case Arch::Sm86: return 86;
  case Arch::Sm87: return 87;
  case Arch::Sm89: return 89;
  case Arch::Sm90:
  case Arch::Sm90a: return 90;
  case Arch::Sm100: return 100;
  case Arch::Sm120: return 120;
  }
  return 0;
}
bool hasArchSpecificFeatures(Arch a) { return a == Arch::Sm90a; }

int maxSharedMemoryPerBlock(Arch a) {
  // The CUDA programming guide's per-block opt-in maxima.
  switch (a) {
  case Arch::Sm80:
  case Arch::Sm87: return 163 * 1024;
  case Arch::Sm86:
  case Arch::Sm89:
  case Arch::Sm120: return 99 * 1024;
  case Arch::Sm90:
  case Arch::Sm90a:
  case Arch::Sm100: return 227 * 1024;
  }
  return 48 * 1024;
}

int ptxIsaVersion(Arch a) {
  // The oldest ISA that knows the target: older drivers can still JIT it.
  switch (a) {
  case Arch::Sm80: return 70;
  case Arch::Sm86: return 71;
  case Arch::Sm87: return 74;
  case Arch::Sm89:
  case Arch::Sm90: return 78;
  case Arch::Sm90a: return 80;
  case Arch::Sm100: return 86;
  case Arch::Sm120: return 87;
  }
  return 80;
}

std::string ptxFeature(Arch a) {
  return "+ptx" + std::to_string(ptxIsaVersion(a));
}

int alignmentElems(const std::vector<int64_t> &values) {
  int align = 8;
  for (int64_t v : values)
    while (align > 1 && v % align != 0)
      align /= 2;
  return align;
}

// ---- validation --------------------------------------------------------------
namespace {
std::string rangeError(std::string_view name, int lo, int hi, int64_t got) {
  std::ostringstream os;
  os << name << " must be in [" << lo << ", " << hi << "], got " << got;
  return os.str();
}
} // namespace

Status validate(const AttentionSpec &spec) {
  if (spec.headDimQK < kMinHeadDim || spec.headDimQK > kMaxHeadDim)
    return Status::error(
        rangeError("head_dim_qk", kMinHeadDim, kMaxHeadDim, spec.headDimQK));
  if (spec.headDimV < kMinHeadDim || spec.headDimV > kMaxHeadDim)
    return Status::error(
        rangeError("head_dim_v", kMinHeadDim, kMaxHeadDim, spec.headDimV));
  if (spec.gqaGroup < 1 || spec.gqaGroup > 1024)
    return Status::error(rangeError("gqa_group (heads_q / heads_kv)", 1, 1024,
                                    spec.gqaGroup));
  if (spec.globalAlignElems != 1 && spec.globalAlignElems != 2 &&
      spec.globalAlignElems != 4 && spec.globalAlignElems != 8)
    return Status::error("align must be one of 1, 2, 4, 8 (elements), got " +
                         std::to_string(spec.globalAlignElems));
  if (spec.pagedKV && !spec.keyLengths)
    return Status::error("paged_kv needs key_lengths (a paged cache's keys "
                         "are its per-sequence cache lengths)");
  if (spec.direction == Direction::Forward &&
      (spec.deterministic || spec.biasGrad))
    return Status::error("deterministic and bias_grad are facts of backward "
                         "kernels; the spec's direction is forward");
  if (spec.direction == Direction::Backward && (spec.pagedKV || spec.splitKV))
    return Status::error("paged_kv and split_kv are facts of forward (decode) "
                         "kernels; the spec's direction is backward");
  if (spec.direction == Direction::Backward && !spec.writeLse)
    return Status::error("a backward spec reads the forward's LSE: lse must "
                         "be on");
  if (spec.biasGrad && spec.bias != BiasMode::Tensor)
    return Status::error("bias_grad needs bias = tensor, got bias = " +
                         std::string(toString(spec.bias)));
  return Status::ok();
}

Status validate(const TileConfig &c, const AttentionSpec &spec, Arch arch) {
  if (Status s = validate(spec); !s)
    return s;
  auto family = familyOf(c.family);
  if (!family)
    return family.status();
  if (c.scalar && spec.direction != Direction::Backward)
    return Status::error("scalar (the backward's float32 FMA kernel) applies "
                         "to backward specs only");
  if (spec.direction == Direction::Backward && !(*family)->buildsBackward())
    return Status::error("the " + std::string(toString(c.family)) +
                         " family builds no backward kernels (families "
                         "that do: sm80)");
  if (Status s = (*family)->supports(spec, arch); !s)
    return s;
  return (*family)->validate(c, spec, arch);
}

std::optional<TileLimit> exceededLimit(const TileConfig &c,
                                       const AttentionSpec &spec, Arch arch) {
  if (const KernelFamily *family = findFamily(c.family))
    return family->exceededLimit(c, spec, arch);
  return TileLimit::Shape;
}

// ---- identity
// ------------------------------------------------------------------
std::string canonicalText(const AttentionSpec &s) {
  std::ostringstream os;
  const bool backward = s.direction == Direction::Backward;
  os << "kind=" << (backward ? "bwd" : "fwd") << ";dtype=" << toString(s.dtype) << ";head_dim_qk=" << s.headDimQK
     << ";head_dim_v=" << s.headDimV << ";mask=" << toString(s.mask)
     << ";gqa_group=" << s.gqaGroup << ";lse=" << (s.writeLse ? 1 : 0)
     << ";align=" << s.globalAlignElems << ";bias=" << toString(s.bias)
     << ";softcap=" << (s.softcap ? 1 : 0) << ";varlen=" << (s.varlen ? 1 : 0)
     << ";key_lengths=" << (s.keyLengths ? 1 : 0);
  // Fields added after the first keys appear only when they apply, so that
  // older keys stay valid: the decode features when on, the backward's
  // fields in backward texts.
  if (s.pagedKV)
    os << ";paged_kv=1";
  if (s.splitKV)
    os << ";split_kv=1";
  if (backward)
    os << ";deterministic=" << (s.deterministic ? 1 : 0)
       << ";bias_grad=" << (s.biasGrad ? 1 : 0);
  return os.str();
}

std::string canonicalText(const TileConfig &c) {
  std::ostringstream os;
  os << "block_m=" << c.blockM << ";block_n=" << c.blockN
     << ";warps=" << c.warps << ";stages=" << c.stages
     << ";pack_gqa=" << (c.packGqa ? 1 : 0) << ";quick=" << (c.quick ? 1 : 0)
     << ";family=" << toString(c.family) << ";pingpong=" << (c.pingpong ? 1 : 0)
     << ";overlap=" << (c.overlap ? 1 : 0);
  // Texts (and so cache keys) of other kernels predate the field.
  if (c.scalar)
    os << ";scalar=1";
  return os.str();
}

std::string kernelName(const AttentionSpec &s, const TileConfig &c, Arch arch) {
  std::ostringstream os;
  std::string archName(toString(arch));
  archName.erase(std::remove(archName.begin(), archName.end(), '_'),
                 archName.end());
  const bool backward = s.direction == Direction::Backward;
  os << (backward ? "bwd_" : "fwd_") << toString(s.dtype) << "_hqk" << s.headDimQK << "_hv"
     << s.headDimV << "_" << toString(s.mask) << "_g" << s.gqaGroup
     << (s.writeLse ? "_lse" : "") << "_a" << s.globalAlignElems;
  if (s.bias != BiasMode::None)
    os << "_" << toString(s.bias);
  os << (s.softcap ? "_softcap" : "") << (s.varlen ? "_varlen" : "")
     << (s.keyLengths ? "_klen" : "") << (s.pagedKV ? "_paged" : "")
     << (s.splitKV ? "_split" : "") << (s.deterministic ? "_det" : "")
     << (s.biasGrad ? "_dbias" : "") << "_bm" << c.blockM << "_bn" << c.blockN
     << "_w" << c.warps << "_s" << c.stages << (c.packGqa ? "_pg" : "")
     << (c.quick ? "_quick" : "") << (c.scalar ? "_scalar" : "");
  // sm80 names carry no family tag (they predate families).
  if (c.family != Family::Sm80)
    os << "_f" << toString(c.family).substr(2) << (c.pingpong ? "_pp" : "")
       << (c.overlap ? "_ov" : "");
  os << "_" << archName;
  return os.str();
}

} // namespace flashjit
