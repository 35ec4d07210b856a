//===- test_spec.cpp - AttentionSpec / TileConfig: validation and identity -===//
//
// Plain C++, no MLIR, no GPU: the range checks and their messages, the
// canonical text that feeds the cache key, kernel names, the string
// round trips, alignmentElems, and the per-arch default tile table together
// with the shared-memory layout it implies.
//
//===----------------------------------------------------------------------===//
#include "flashjit/compiler/AttentionSpec.h"
#include "flashjit/compiler/Pipeline.h"
#include "flashjit/kernels/Forward.h"

#include <gtest/gtest.h>

#include <cctype>
#include <iterator>
#include <set>
#include <string>
#include <tuple>
#include <vector>

using namespace flashjit;

namespace {

constexpr DType kAllDTypes[] = {DType::F16, DType::BF16};
constexpr MaskMode kAllMasks[] = {MaskMode::None, MaskMode::Causal,
                                  MaskMode::Window};
constexpr BiasMode kAllBiases[] = {BiasMode::None, BiasMode::Tensor,
                                   BiasMode::Alibi};
constexpr Arch kAllArchs[] = {Arch::Sm80,  Arch::Sm86, Arch::Sm87,
                              Arch::Sm89,  Arch::Sm90, Arch::Sm90a,
                              Arch::Sm100, Arch::Sm120};

bool contains(const std::string &s, const std::string &part) {
  return s.find(part) != std::string::npos;
}

AttentionSpec specWithHeadDim(int d) {
  AttentionSpec s;
  s.headDimQK = d;
  s.headDimV = d;
  return s;
}

/// A config that passes every shape check; only the field under test is
/// then made invalid.
TileConfig goodConfig() { return TileConfig{128, 64, 4, 2}; }

AttentionSpec smallSpec() {
  AttentionSpec s;
  s.headDimQK = 64;
  s.headDimV = 64;
  return s;
}

} // namespace

// ---- AttentionSpec validation -------------------------------------------------

TEST(SpecValidate, DefaultSpecIsValid) {
  Status s = validate(AttentionSpec{});
  EXPECT_TRUE(s.isOk()) << s.message();
}

TEST(SpecValidate, HeadDimQKOutOfRangeNamesArgumentAndRange) {
  for (int d : {0, -1, 257, 300, 1 << 20}) {
    AttentionSpec spec;
    spec.headDimQK = d;
    Status s = validate(spec);
    ASSERT_FALSE(s.isOk()) << "head_dim_qk=" << d << " accepted";
    EXPECT_TRUE(contains(s.message(), "head_dim_qk")) << s.message();
    EXPECT_TRUE(contains(s.message(), "[1, 256]")) << s.message();
    EXPECT_TRUE(contains(s.message(), std::to_string(d))) << s.message();
  }
}

TEST(SpecValidate, HeadDimVOutOfRangeNamesArgumentAndRange) {
  for (int d : {0, -3, 257, 300}) {
    AttentionSpec spec;
    spec.headDimV = d;
    Status s = validate(spec);
    ASSERT_FALSE(s.isOk()) << "head_dim_v=" << d << " accepted";
    EXPECT_TRUE(contains(s.message(), "head_dim_v")) << s.message();
    EXPECT_TRUE(contains(s.message(), "[1, 256]")) << s.message();
    EXPECT_TRUE(contains(s.message(), std::to_string(d))) << s.message();
  }
}

TEST(SpecValidate, EveryHeadDimInRangeIsAccepted) {
  EXPECT_EQ(kMinHeadDim, 1);
  EXPECT_EQ(kMaxHeadDim, 256);
  for (int d = kMinHeadDim; d <= kMaxHeadDim; ++d) {
    AttentionSpec spec;
    spec.headDimQK = d;
    Status qk = validate(spec);
    EXPECT_TRUE(qk.isOk()) << "head_dim_qk=" << d << ": " << qk.message();
    spec = AttentionSpec{};
    spec.headDimV = d;
    Status v = validate(spec);
    EXPECT_TRUE(v.isOk()) << "head_dim_v=" << d << ": " << v.message();
    Status both = validate(specWithHeadDim(d));
    EXPECT_TRUE(both.isOk()) << "head_dim=" << d << ": " << both.message();
  }
}

TEST(SpecValidate, DifferentQKAndVHeadDimsAreAccepted) {
  AttentionSpec spec;
  spec.headDimQK = 192;
  spec.headDimV = 128;
  EXPECT_TRUE(validate(spec).isOk());
  spec.headDimQK = 1;
  spec.headDimV = 256;
  EXPECT_TRUE(validate(spec).isOk());
}

TEST(SpecValidate, GqaGroup) {
  for (int g : {1, 2, 4, 7, 8, 16, 64}) {
    AttentionSpec spec;
    spec.gqaGroup = g;
    Status s = validate(spec);
    EXPECT_TRUE(s.isOk()) << "gqa_group=" << g << ": " << s.message();
  }
  for (int g : {0, -1, -8}) {
    AttentionSpec spec;
    spec.gqaGroup = g;
    Status s = validate(spec);
    ASSERT_FALSE(s.isOk()) << "gqa_group=" << g << " accepted";
    EXPECT_TRUE(contains(s.message(), "gqa_group")) << s.message();
    EXPECT_TRUE(contains(s.message(), std::to_string(g))) << s.message();
  }
}

TEST(SpecValidate, AlignValues) {
  for (int a : {1, 2, 4, 8}) {
    AttentionSpec spec;
    spec.globalAlignElems = a;
    Status s = validate(spec);
    EXPECT_TRUE(s.isOk()) << "align=" << a << ": " << s.message();
  }
  for (int a : {0, -8, 3, 5, 6, 7, 16, 32}) {
    AttentionSpec spec;
    spec.globalAlignElems = a;
    Status s = validate(spec);
    ASSERT_FALSE(s.isOk()) << "align=" << a << " accepted";
    EXPECT_TRUE(contains(s.message(), "align")) << s.message();
    EXPECT_TRUE(contains(s.message(), "1, 2, 4, 8")) << s.message();
    EXPECT_TRUE(contains(s.message(), std::to_string(a))) << s.message();
  }
}

// ---- TileConfig validation --------------------------------------------------------

TEST(TileValidate, GoodConfigIsValid) {
  for (Arch arch : kAllArchs) {
    Status s = validate(goodConfig(), smallSpec(), arch);
    EXPECT_TRUE(s.isOk()) << toString(arch) << ": " << s.message();
  }
}

TEST(TileValidate, InvalidSpecIsReportedFirst) {
  AttentionSpec spec;
  spec.headDimQK = 300;
  Status s = validate(goodConfig(), spec, Arch::Sm90a);
  ASSERT_FALSE(s.isOk());
  EXPECT_TRUE(contains(s.message(), "head_dim_qk")) << s.message();
  EXPECT_TRUE(contains(s.message(), "[1, 256]")) << s.message();
}

TEST(TileValidate, BlockMMustBeMultipleOf16TimesWarps) {
  struct Case {
    int blockM, warps;
  };
  for (Case c : {Case{96, 4}, Case{48, 4}, Case{32, 4}, Case{64, 8},
                 Case{8, 1}, Case{0, 1}, Case{24, 1}, Case{192, 8}}) {
    TileConfig config = goodConfig();
    config.blockM = c.blockM;
    config.warps = c.warps;
    Status s = validate(config, smallSpec(), Arch::Sm90a);
    ASSERT_FALSE(s.isOk()) << "block_m=" << c.blockM << " warps=" << c.warps;
    EXPECT_TRUE(contains(s.message(), "block_m")) << s.message();
    EXPECT_TRUE(contains(s.message(), std::to_string(16 * c.warps)))
        << s.message();
    EXPECT_TRUE(contains(s.message(), std::to_string(c.blockM))) << s.message();
  }
  // The multiples themselves are fine.
  for (Case c : {Case{64, 4}, Case{128, 4}, Case{128, 8}, Case{16, 1},
                 Case{48, 1}, Case{64, 2}}) {
    TileConfig config = goodConfig();
    config.blockM = c.blockM;
    config.warps = c.warps;
    Status s = validate(config, smallSpec(), Arch::Sm90a);
    EXPECT_TRUE(s.isOk()) << "block_m=" << c.blockM << " warps=" << c.warps
                          << ": " << s.message();
  }
}

TEST(TileValidate, BlockNMustBeMultipleOf16) {
  for (int n : {0, 8, 24, 40, 100}) {
    TileConfig config = goodConfig();
    config.blockN = n;
    Status s = validate(config, smallSpec(), Arch::Sm90a);
    ASSERT_FALSE(s.isOk()) << "block_n=" << n << " accepted";
    EXPECT_TRUE(contains(s.message(), "block_n")) << s.message();
    EXPECT_TRUE(contains(s.message(), "16")) << s.message();
    EXPECT_TRUE(contains(s.message(), std::to_string(n))) << s.message();
  }
  for (int n : {16, 32, 48, 64, 128}) {
    TileConfig config = goodConfig();
    config.blockN = n;
    Status s = validate(config, smallSpec(), Arch::Sm90a);
    EXPECT_TRUE(s.isOk()) << "block_n=" << n << ": " << s.message();
  }
}

TEST(TileValidate, StagesMustBeIn1To4) {
  for (int st : {0, 5, -1, 8}) {
    TileConfig config = goodConfig();
    config.stages = st;
    Status s = validate(config, smallSpec(), Arch::Sm90a);
    ASSERT_FALSE(s.isOk()) << "stages=" << st << " accepted";
    EXPECT_TRUE(contains(s.message(), "stages")) << s.message();
    EXPECT_TRUE(contains(s.message(), "[1, 4]")) << s.message();
  }
  for (int st = 1; st <= 4; ++st) {
    TileConfig config = goodConfig();
    config.stages = st;
    Status s = validate(config, smallSpec(), Arch::Sm90a);
    EXPECT_TRUE(s.isOk()) << "stages=" << st << ": " << s.message();
  }
}

TEST(TileValidate, WarpsMustBePowerOfTwo) {
  for (int w : {3, 0, -4, 5, 6, 12, 32}) {
    TileConfig config = goodConfig();
    config.warps = w;
    Status s = validate(config, smallSpec(), Arch::Sm90a);
    ASSERT_FALSE(s.isOk()) << "warps=" << w << " accepted";
    EXPECT_TRUE(contains(s.message(), "warps")) << s.message();
    EXPECT_TRUE(contains(s.message(), std::to_string(w))) << s.message();
  }
}

TEST(TileValidate, SharedMemoryOverTheArchLimitNamesTheLimit) {
  // 256-wide head, 256 x 256 tiles, 4 stages: far over every part's limit.
  AttentionSpec spec = specWithHeadDim(256);
  TileConfig config{256, 256, 16, 4};
  for (Arch arch : kAllArchs) {
    ASSERT_GT(forwardLayout(spec, config).sharedMemBytes,
              maxSharedMemoryPerBlock(arch));
    Status s = validate(config, spec, arch);
    ASSERT_FALSE(s.isOk()) << toString(arch);
    EXPECT_TRUE(contains(s.message(), "shared memory")) << s.message();
    EXPECT_TRUE(contains(s.message(),
                         std::to_string(maxSharedMemoryPerBlock(arch))))
        << s.message();
    EXPECT_TRUE(contains(s.message(), std::string(toString(arch))))
        << s.message();
  }
}

// The sm90 family's register estimate under overlap, against what ptxas
// 13.0 did with each kernel (bench/results/2026-12-05-cpu-sm90-overlap-registers.md):
// those that assembled without a spill are admitted, those that spilled
// are refused for registers.
TEST(TileValidate, Sm90OverlapAdmitsWhatAssembledWithoutSpills) {
  struct Case {
    int d, warps, blockN;
    bool spilled;
  };
  for (const Case &k : {Case{128, 8, 176, false}, Case{128, 4, 176, false},
                        Case{192, 8, 112, false}, Case{256, 8, 80, false},
                        Case{64, 8, 208, false}, Case{128, 8, 192, true},
                        Case{128, 4, 192, true}, Case{256, 4, 96, true}}) {
    AttentionSpec spec = specWithHeadDim(k.d);
    TileConfig c{16 * k.warps, k.blockN, k.warps, 2};
    c.family = Family::Sm90;
    c.overlap = true;
    const Status s = validate(c, spec, Arch::Sm90a);
    const std::string where = "d=" + std::to_string(k.d) + " " +
                              canonicalText(c) + ": " + s.message();
    EXPECT_EQ(s.isOk(), !k.spilled) << where;
    if (k.spilled)
      EXPECT_NE(s.message().find("registers per consumer thread"),
                std::string::npos)
          << where;
  }
}

TEST(TileValidate, Sm86HasLessSharedMemoryThanSm90a) {
  EXPECT_LT(maxSharedMemoryPerBlock(Arch::Sm86),
            maxSharedMemoryPerBlock(Arch::Sm90a));
  EXPECT_LT(maxSharedMemoryPerBlock(Arch::Sm86),
            maxSharedMemoryPerBlock(Arch::Sm80));
  EXPECT_LE(maxSharedMemoryPerBlock(Arch::Sm80),
            maxSharedMemoryPerBlock(Arch::Sm90a));
  EXPECT_EQ(maxSharedMemoryPerBlock(Arch::Sm90),
            maxSharedMemoryPerBlock(Arch::Sm90a));
  EXPECT_EQ(maxSharedMemoryPerBlock(Arch::Sm86),
            maxSharedMemoryPerBlock(Arch::Sm89));

  // A config that fits an H100 but not an RTX 30xx.
  AttentionSpec spec = specWithHeadDim(128);
  TileConfig config{128, 64, 8, 4};
  const int bytes = forwardLayout(spec, config).sharedMemBytes;
  ASSERT_GT(bytes, maxSharedMemoryPerBlock(Arch::Sm86));
  ASSERT_LE(bytes, maxSharedMemoryPerBlock(Arch::Sm90a));
  Status h100 = validate(config, spec, Arch::Sm90a);
  EXPECT_TRUE(h100.isOk()) << h100.message();
  Status rtx = validate(config, spec, Arch::Sm86);
  ASSERT_FALSE(rtx.isOk());
  EXPECT_TRUE(contains(rtx.message(), "shared memory")) << rtx.message();
  EXPECT_TRUE(contains(rtx.message(),
                       std::to_string(maxSharedMemoryPerBlock(Arch::Sm86))))
      << rtx.message();
  EXPECT_TRUE(contains(rtx.message(), std::to_string(bytes))) << rtx.message();
}

// ---- identity: canonical text and kernel names ----------------------------------

namespace {
/// The default spec and one variant per field, each differing from the
/// default in exactly that field.
std::vector<std::pair<std::string, AttentionSpec>> specVariants() {
  std::vector<std::pair<std::string, AttentionSpec>> out;
  auto add = [&](std::string what, auto change) {
    AttentionSpec s;
    change(s);
    out.emplace_back(std::move(what), s);
  };
  add("default", [](AttentionSpec &) {});
  add("dtype", [](AttentionSpec &s) { s.dtype = DType::F16; });
  add("head_dim_qk", [](AttentionSpec &s) { s.headDimQK = 80; });
  add("head_dim_v", [](AttentionSpec &s) { s.headDimV = 80; });
  add("both dims", [](AttentionSpec &s) { s.headDimQK = s.headDimV = 80; });
  add("dims 64/80", [](AttentionSpec &s) {
    s.headDimQK = 64;
    s.headDimV = 80;
  });
  add("dims 80/64", [](AttentionSpec &s) {
    s.headDimQK = 80;
    s.headDimV = 64;
  });
  add("mask", [](AttentionSpec &s) { s.mask = MaskMode::Causal; });
  add("gqa_group", [](AttentionSpec &s) { s.gqaGroup = 4; });
  add("gqa_group 8", [](AttentionSpec &s) { s.gqaGroup = 8; });
  add("lse", [](AttentionSpec &s) { s.writeLse = false; });
  add("align 4", [](AttentionSpec &s) { s.globalAlignElems = 4; });
  add("align 2", [](AttentionSpec &s) { s.globalAlignElems = 2; });
  add("align 1", [](AttentionSpec &s) { s.globalAlignElems = 1; });
  // Head dims that could collide if digits were concatenated ambiguously.
  add("dims 1/28", [](AttentionSpec &s) {
    s.headDimQK = 1;
    s.headDimV = 28;
  });
  add("dims 12/8", [](AttentionSpec &s) {
    s.headDimQK = 12;
    s.headDimV = 8;
  });
  add("window", [](AttentionSpec &s) { s.mask = MaskMode::Window; });
  add("bias tensor", [](AttentionSpec &s) { s.bias = BiasMode::Tensor; });
  add("alibi", [](AttentionSpec &s) { s.bias = BiasMode::Alibi; });
  add("softcap", [](AttentionSpec &s) { s.softcap = true; });
  add("varlen", [](AttentionSpec &s) { s.varlen = true; });
  add("key lengths", [](AttentionSpec &s) { s.keyLengths = true; });
  // The decode features and the backward's fields.
  add("paged kv", [](AttentionSpec &s) { s.keyLengths = s.pagedKV = true; });
  add("split kv", [](AttentionSpec &s) { s.splitKV = true; });
  add("paged split kv", [](AttentionSpec &s) {
    s.keyLengths = s.pagedKV = s.splitKV = true;
  });
  add("backward", [](AttentionSpec &s) { s.direction = Direction::Backward; });
  add("backward deterministic", [](AttentionSpec &s) {
    s.direction = Direction::Backward;
    s.deterministic = true;
  });
  add("backward bias_grad", [](AttentionSpec &s) {
    s.direction = Direction::Backward;
    s.bias = BiasMode::Tensor;
    s.biasGrad = true;
  });
  add("backward bias tensor", [](AttentionSpec &s) {
    s.direction = Direction::Backward;
    s.bias = BiasMode::Tensor;
  });
  return out;
}

std::vector<std::pair<std::string, TileConfig>> configVariants() {
  return {{"default", TileConfig{}},
          {"block_m", TileConfig{64, 64, 4, 2}},
          {"block_n", TileConfig{128, 32, 4, 2}},
          {"warps", TileConfig{128, 64, 8, 2}},
          {"stages", TileConfig{128, 64, 4, 3}},
          {"block_m/n swapped", TileConfig{64, 128, 4, 2}},
          {"pack_gqa", TileConfig{128, 64, 4, 2, true}},
          {"quick", TileConfig{128, 64, 4, 2, false, true}}};
}
} // namespace

TEST(SpecIdentity, CanonicalTextIsStable) {
  // The cache key is built from this text: changing it silently invalidates
  // every user's disk cache, so the format is pinned here.
  EXPECT_EQ(canonicalText(AttentionSpec{}),
            "kind=fwd;dtype=bf16;head_dim_qk=128;head_dim_v=128;mask=none;"
            "gqa_group=1;lse=1;align=8;bias=none;softcap=0;varlen=0;"
            "key_lengths=0");
  EXPECT_EQ(canonicalText(TileConfig{}),
            "block_m=128;block_n=64;warps=4;stages=2;pack_gqa=0;quick=0;"
            "family=sm80;pingpong=0;overlap=0");
  // A copy, and a spec built field by field, give the same (pinned) text.
  AttentionSpec c;
  c.dtype = DType::F16;
  c.headDimQK = 72;
  c.headDimV = 72;
  c.mask = MaskMode::Causal;
  c.gqaGroup = 8;
  c.writeLse = false;
  c.globalAlignElems = 4;
  AttentionSpec d = c;
  EXPECT_EQ(canonicalText(c),
            "kind=fwd;dtype=fp16;head_dim_qk=72;head_dim_v=72;mask=causal;"
            "gqa_group=8;lse=0;align=4;bias=none;softcap=0;varlen=0;"
            "key_lengths=0");
  EXPECT_EQ(canonicalText(c), canonicalText(d));
  EXPECT_EQ(c, d);
}

/// Every variant has its own canonical text, and == holds only for itself.
template <typename Variants> void expectAllDistinct(const Variants &variants) {
  std::set<std::string> texts;
  for (const auto &[what, value] : variants) {
    const std::string text = canonicalText(value);
    EXPECT_TRUE(texts.insert(text).second)
        << "'" << what << "' collides: " << text;
  }
  for (size_t i = 0; i < variants.size(); ++i)
    for (size_t j = 0; j < variants.size(); ++j)
      EXPECT_EQ(variants[i].second == variants[j].second, i == j)
          << variants[i].first << " vs " << variants[j].first;
}

TEST(SpecIdentity, CanonicalTextDiffersForEveryFieldChange) {
  expectAllDistinct(specVariants());
}

TEST(SpecIdentity, CanonicalConfigTextDiffersForEveryFieldChange) {
  expectAllDistinct(configVariants());
}

TEST(SpecIdentity, KernelNameIsReadable) {
  AttentionSpec spec;
  spec.headDimQK = spec.headDimV = 80;
  spec.mask = MaskMode::Causal;
  TileConfig config{128, 64, 4, 2};
  // The example documented in AttentionSpec.h.
  EXPECT_EQ(kernelName(spec, config, Arch::Sm90a),
            "fwd_bf16_hqk80_hv80_causal_g1_lse_a8_bm128_bn64_w4_s2_sm90a");
  spec.writeLse = false;
  spec.dtype = DType::F16;
  spec.gqaGroup = 4;
  spec.globalAlignElems = 2;
  spec.headDimV = 64;
  EXPECT_EQ(kernelName(spec, TileConfig{64, 32, 4, 1}, Arch::Sm80),
            "fwd_fp16_hqk80_hv64_causal_g4_a2_bm64_bn32_w4_s1_sm80");
  // Features appear only when on.
  spec.mask = MaskMode::Window;
  spec.bias = BiasMode::Alibi;
  spec.softcap = spec.varlen = spec.keyLengths = true;
  EXPECT_EQ(kernelName(spec, TileConfig{64, 32, 4, 1, true}, Arch::Sm80),
            "fwd_fp16_hqk80_hv64_window_g4_a2_alibi_softcap_varlen_klen_bm64_"
            "bn32_w4_s1_pg_sm80");
  EXPECT_EQ(kernelName(spec, TileConfig{64, 32, 4, 1, true, true}, Arch::Sm80),
            "fwd_fp16_hqk80_hv64_window_g4_a2_alibi_softcap_varlen_klen_bm64_"
            "bn32_w4_s1_pg_quick_sm80");
}

TEST(SpecIdentity, KernelNameIsAnIdentifierAndDistinct) {
  std::set<std::string> names;
  for (const auto &[specWhat, spec] : specVariants())
    for (const auto &[configWhat, config] : configVariants())
      for (Arch arch : kAllArchs) {
        const std::string name = kernelName(spec, config, arch);
        ASSERT_FALSE(name.empty());
        EXPECT_FALSE(std::isdigit(static_cast<unsigned char>(name[0]))) << name;
        for (char ch : name)
          EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(ch)) || ch == '_')
              << "'" << ch << "' in " << name;
        EXPECT_LT(name.size(), 128u) << name;
        EXPECT_TRUE(names.insert(name).second)
            << "collision: " << name << " (" << specWhat << ", " << configWhat
            << ", " << toString(arch) << ")";
      }
}

// ---- names: parse / toString ----------------------------------------------------

TEST(SpecNames, DTypeRoundTrip) {
  for (DType d : kAllDTypes) {
    auto parsed = parseDType(toString(d));
    ASSERT_TRUE(parsed.has_value()) << toString(d);
    EXPECT_EQ(*parsed, d);
    EXPECT_TRUE(contains(dtypeChoices(), std::string(toString(d))));
    EXPECT_EQ(elementBytes(d), 2);
  }
  EXPECT_EQ(toString(DType::F16), "fp16");
  EXPECT_EQ(toString(DType::BF16), "bf16");
  EXPECT_EQ(dtypeChoices(), "fp16|bf16");
  EXPECT_EQ(parseDType("f16"), DType::F16);
  EXPECT_EQ(parseDType("half"), DType::F16);
  EXPECT_EQ(parseDType("float16"), DType::F16);
  EXPECT_EQ(parseDType("bfloat16"), DType::BF16);
  for (const char *bad : {"", "fp8", "fp32", "float32", "int8", "bf", "fp16 ",
                          " bf16", "bf16x", "e4m3"})
    EXPECT_FALSE(parseDType(bad).has_value()) << "'" << bad << "'";
}

TEST(SpecNames, MaskRoundTrip) {
  for (MaskMode m : kAllMasks) {
    auto parsed = parseMaskMode(toString(m));
    ASSERT_TRUE(parsed.has_value()) << toString(m);
    EXPECT_EQ(*parsed, m);
    EXPECT_TRUE(contains(maskChoices(), std::string(toString(m))));
  }
  EXPECT_EQ(toString(MaskMode::None), "none");
  EXPECT_EQ(toString(MaskMode::Causal), "causal");
  EXPECT_EQ(toString(MaskMode::Window), "window");
  EXPECT_EQ(maskChoices(), "none|causal|window");
  for (const char *bad : {"", "sliding", "bias", "causal ", "casual", "full"})
    EXPECT_FALSE(parseMaskMode(bad).has_value()) << "'" << bad << "'";
}

TEST(SpecNames, BiasRoundTrip) {
  for (BiasMode b : kAllBiases) {
    auto parsed = parseBiasMode(toString(b));
    ASSERT_TRUE(parsed.has_value()) << toString(b);
    EXPECT_EQ(*parsed, b);
  }
  EXPECT_EQ(biasChoices(), "none|tensor|alibi");
  for (const char *bad : {"", "relative", "Alibi", "tensor "})
    EXPECT_FALSE(parseBiasMode(bad).has_value()) << "'" << bad << "'";
}

TEST(SpecValidate, PackGqaNeedsAGroup) {
  AttentionSpec spec;
  TileConfig packed{128, 64, 4, 2, true};
  Status s = validate(packed, spec, Arch::Sm90a);
  ASSERT_FALSE(s.isOk());
  EXPECT_TRUE(contains(s.message(), "pack_gqa")) << s.message();
  spec.gqaGroup = 4;
  EXPECT_TRUE(validate(packed, spec, Arch::Sm90a).isOk());
  // The default packs a group and never a single head.
  EXPECT_TRUE(defaultTileConfig(spec, Arch::Sm90a, Family::Sm80).packGqa);
  spec.gqaGroup = 1;
  EXPECT_FALSE(defaultTileConfig(spec, Arch::Sm90a, Family::Sm80).packGqa);
}

TEST(SpecNames, ArchRoundTrip) {
  for (Arch a : kAllArchs) {
    const std::string name(toString(a));
    auto parsed = parseArch(name);
    ASSERT_TRUE(parsed.has_value()) << name;
    EXPECT_EQ(*parsed, a);
    EXPECT_TRUE(contains(archChoices(), name)) << archChoices();
  }
  EXPECT_EQ(toString(Arch::Sm80), "sm_80");
  EXPECT_EQ(toString(Arch::Sm90a), "sm_90a");
  EXPECT_EQ(archChoices(),
            "sm_80|sm_86|sm_87|sm_89|sm_90|sm_90a|sm_100|sm_120");
  for (const char *bad : {"", "sm", "sm_", "sm_75", "sm75", "sm_70", "sm_103",
                          "sm_100a", "sm_121", "sm_90b", "sm__80", "sm_80 ",
                          "compute_80", "80", "smx", "sm_8"})
    EXPECT_FALSE(parseArch(bad).has_value()) << "'" << bad << "'";
}

TEST(SpecNames, ArchCompactSpellingIsAccepted) {
  // parseArch maps the underscore-free spelling nvcc users type ("sm80",
  // "sm90a") to sm_80 / sm_90a (AttentionSpec.cpp: "sm80 -> sm_80").
  for (Arch a : kAllArchs) {
    const std::string name(toString(a));
    const std::string compact = "sm" + name.substr(3);
    auto parsed = parseArch(compact);
    ASSERT_TRUE(parsed.has_value())
        << "parseArch(\"" << compact << "\") is refused; expected "
        << name;
    EXPECT_EQ(*parsed, a) << compact;
  }
}

TEST(SpecNames, ArchFacts) {
  EXPECT_EQ(computeCapability(Arch::Sm80), 80);
  EXPECT_EQ(computeCapability(Arch::Sm86), 86);
  EXPECT_EQ(computeCapability(Arch::Sm89), 89);
  EXPECT_EQ(computeCapability(Arch::Sm90), 90);
  EXPECT_EQ(computeCapability(Arch::Sm90a), 90);
  EXPECT_EQ(computeCapability(Arch::Sm87), 87);
  EXPECT_EQ(computeCapability(Arch::Sm100), 100);
  EXPECT_EQ(computeCapability(Arch::Sm120), 120);
  // Only sm_90a has wgmma/setmaxnreg: 10.x and 12.x run the sm_80 family.
  for (Arch a : kAllArchs)
    EXPECT_EQ(hasArchSpecificFeatures(a), a == Arch::Sm90a) << toString(a);
  // The per-block opt-in maxima of the CUDA programming guide.
  EXPECT_EQ(maxSharedMemoryPerBlock(Arch::Sm87), 163 * 1024);
  EXPECT_EQ(maxSharedMemoryPerBlock(Arch::Sm100), 227 * 1024);
  EXPECT_EQ(maxSharedMemoryPerBlock(Arch::Sm120), 99 * 1024);
  // The first PTX ISA that knows each target.
  EXPECT_EQ(ptxIsaVersion(Arch::Sm87), 74);
  EXPECT_EQ(ptxIsaVersion(Arch::Sm100), 86);
  EXPECT_EQ(ptxIsaVersion(Arch::Sm120), 87);
  for (Arch a : kAllArchs) {
    EXPECT_GE(ptxIsaVersion(a), 70) << toString(a);
    EXPECT_GE(maxSharedMemoryPerBlock(a), 48 * 1024) << toString(a);
  }
  // sm_90a needs PTX ISA 8.0; sm_90 7.8; sm_80 7.0.
  EXPECT_GE(ptxIsaVersion(Arch::Sm90a), 80);
  EXPECT_GE(ptxIsaVersion(Arch::Sm90), 78);
}

TEST(SpecNames, StageRoundTrip) {
  const char *names[] = {"tile", "gpu", "nvvm", "llvm", "ptx"};
  const char *files[] = {"kernel.tile.mlir", "kernel.gpu.mlir",
                         "kernel.nvvm.mlir", "kernel.ll", "kernel.ptx"};
  size_t i = 0;
  for (Stage st : kAllStages) {
    ASSERT_LT(i, std::size(names));
    EXPECT_EQ(toString(st), names[i]);
    EXPECT_EQ(stageFileName(st), files[i]);
    EXPECT_EQ(parseStage(toString(st)), st);
    ++i;
  }
  EXPECT_EQ(i, std::size(names));
  EXPECT_EQ(stageChoices(), "tile|gpu|nvvm|llvm|ptx");
  for (const char *bad : {"", "sass", "cubin", "PTX", "mlir", "ll"})
    EXPECT_FALSE(parseStage(bad).has_value()) << "'" << bad << "'";
}

// ---- alignmentElems --------------------------------------------------------------

TEST(AlignmentElems, WidestCommonPowerOfTwoUpTo8) {
  EXPECT_EQ(alignmentElems({}), 8);
  EXPECT_EQ(alignmentElems({8}), 8);
  EXPECT_EQ(alignmentElems({16, 64, 4096}), 8);
  EXPECT_EQ(alignmentElems({0}), 8);
  EXPECT_EQ(alignmentElems({12}), 4);
  EXPECT_EQ(alignmentElems({100}), 4);
  EXPECT_EQ(alignmentElems({6}), 2);
  EXPECT_EQ(alignmentElems({2}), 2);
  EXPECT_EQ(alignmentElems({1}), 1);
  EXPECT_EQ(alignmentElems({33}), 1);
  EXPECT_EQ(alignmentElems({80, 100}), 4);
  EXPECT_EQ(alignmentElems({128, 64, 6}), 2);
  EXPECT_EQ(alignmentElems({128, 64, 6, 3}), 1);
  EXPECT_EQ(alignmentElems({int64_t(1) << 40}), 8);
  EXPECT_EQ(alignmentElems({(int64_t(1) << 40) + 4}), 4);
  // Each head dim: the result divides it, and twice the result (if <= 8)
  // does not.
  for (int d = 1; d <= 256; ++d) {
    const int a = alignmentElems({d});
    EXPECT_TRUE(a == 1 || a == 2 || a == 4 || a == 8) << d;
    EXPECT_EQ(d % a, 0) << d;
    if (a < 8) {
      EXPECT_NE(d % (2 * a), 0) << d;
    }
    AttentionSpec spec = specWithHeadDim(d);
    spec.globalAlignElems = a;
    EXPECT_TRUE(validate(spec).isOk()) << d;
  }
}

// ---- the default tile table and the layout it implies -----------------------------

TEST(DefaultTileConfig, ValidForEveryHeadDimDtypeMaskArchAndAlign) {
  int checked = 0;
  for (int d = kMinHeadDim; d <= kMaxHeadDim; ++d)
    for (DType dtype : kAllDTypes)
      for (MaskMode mask : kAllMasks)
        for (Arch arch : kAllArchs)
          for (int align : {alignmentElems({d}), 8, 1}) {
            AttentionSpec spec = specWithHeadDim(d);
            spec.dtype = dtype;
            spec.mask = mask;
            spec.globalAlignElems = align;
            const TileConfig c = defaultTileConfig(spec, arch);
            Status s = validate(c, spec, arch);
            ASSERT_TRUE(s.isOk())
                << "d=" << d << " " << toString(dtype) << " "
                << toString(mask) << " " << toString(arch) << " a" << align
                << ": " << canonicalText(c) << ": " << s.message();

            const ForwardLayout l = forwardLayout(spec, c);
            const std::string where = "d=" + std::to_string(d) + " " +
                                      std::string(toString(arch)) + " " +
                                      canonicalText(c);
            ASSERT_EQ(l.paddedHeadDimQK % kMmaK, 0) << where;
            ASSERT_EQ(l.paddedHeadDimV % kMmaK, 0) << where;
            ASSERT_GE(l.paddedHeadDimQK, d) << where;
            ASSERT_LT(l.paddedHeadDimQK, d + kMmaK) << where;
            ASSERT_GE(l.paddedHeadDimV, d) << where;
            ASSERT_LT(l.paddedHeadDimV, d + kMmaK) << where;
            ASSERT_GE(l.pitchQK, l.paddedHeadDimQK) << where;
            ASSERT_GE(l.pitchV, l.paddedHeadDimV) << where;
            ASSERT_EQ(l.threads, c.warps * kWarpSize) << where;
            ASSERT_EQ(l.rowsPerWarp * c.warps, c.blockM) << where;
            ASSERT_GE(l.mTilesPerWarp, 1) << where;
            ASSERT_EQ(l.mTilesPerWarp * kMmaM, l.rowsPerWarp) << where;
            ASSERT_GT(l.sharedMemBytes, 0) << where;
            ASSERT_LE(l.sharedMemBytes, maxSharedMemoryPerBlock(arch)) << where;
            ASSERT_LE(l.estimatedRegisters, 255) << where;
            ASSERT_LE(l.threads, 1024) << where;
            ++checked;
          }
  EXPECT_EQ(checked, 256 * 2 * int(std::size(kAllMasks)) *
                         int(std::size(kAllArchs)) * 3);
}

// Rows are swizzled except in 4-warp 32-row tiles from d=96 where registers
// are short (a mask, or more than 200 by the estimate, whole rows of 128
// excepted): there the swizzle's registers make ptxas spill.
TEST(ForwardLayout, SwizzlesRowsWhereRegistersAllow) {
  auto layoutOf = [](int d, TileConfig c, MaskMode mask = MaskMode::None) {
    AttentionSpec spec = specWithHeadDim(d);
    spec.mask = mask;
    return forwardLayout(spec, c);
  };
  EXPECT_TRUE(layoutOf(256, {64, 64, 4, 1}).swizzledRows());
  EXPECT_TRUE(layoutOf(192, {128, 64, 8, 1}, MaskMode::Causal).swizzledRows());
  EXPECT_TRUE(layoutOf(64, {128, 64, 4, 2}, MaskMode::Causal).swizzledRows());
  EXPECT_TRUE(layoutOf(80, {128, 64, 4, 2}, MaskMode::Window).swizzledRows());
  EXPECT_TRUE(layoutOf(96, {128, 64, 4, 3}).swizzledRows());
  EXPECT_TRUE(layoutOf(128, {128, 64, 4, 1}).swizzledRows());
  EXPECT_TRUE(layoutOf(100, {128, 48, 4, 1}).swizzledRows());
  EXPECT_FALSE(layoutOf(112, {128, 64, 4, 2}).swizzledRows());
  EXPECT_FALSE(layoutOf(120, {128, 64, 4, 1}).swizzledRows());
  EXPECT_FALSE(layoutOf(96, {128, 64, 4, 3}, MaskMode::Causal).swizzledRows());
  EXPECT_FALSE(layoutOf(128, {128, 64, 4, 1}, MaskMode::Window).swizzledRows());
  // Swizzled rows are the padded head dim; padded rows one chunk more.
  EXPECT_EQ(layoutOf(192, {64, 64, 4, 1}).pitchQK, 192);
  EXPECT_EQ(layoutOf(192, {64, 64, 4, 1}).swizzleBitsQK, 3);
  EXPECT_EQ(layoutOf(80, {128, 64, 4, 2}).pitchQK, 80);
  EXPECT_EQ(layoutOf(80, {128, 64, 4, 2}).swizzleBitsQK, 1);
  EXPECT_EQ(layoutOf(160, {64, 64, 4, 2}).swizzleBitsV, 2);
  EXPECT_EQ(layoutOf(128, {128, 64, 4, 1}, MaskMode::Causal).pitchQK, 136);
  EXPECT_EQ(layoutOf(128, {128, 64, 4, 1}, MaskMode::Causal).swizzleBitsQK, 0);
}

// Q K^T runs as a loop of 4 k-steps only where a warp has two m16 tiles, Q
// comes from shared memory, rows are padded and the loop turns at least
// twice; the rest of the k-steps stay unrolled after it.
TEST(ForwardLayout, RollsQKWhereTwoTileWarpsReadQFromPaddedRows) {
  auto layoutOf = [](int d, TileConfig c, MaskMode mask) {
    AttentionSpec spec = specWithHeadDim(d);
    spec.mask = mask;
    return forwardLayout(spec, c);
  };
  const ForwardLayout causal128 = layoutOf(128, {128, 64, 4, 1}, MaskMode::Causal);
  // All 8 k-steps in the loop: 2 iterations of 4.
  EXPECT_EQ(causal128.qkRolledIterations, 2);
  EXPECT_EQ(causal128.qkRolledIterations * kQkStepsPerRolledIteration,
            causal128.paddedHeadDimQK / kMmaK);
  EXPECT_EQ(layoutOf(128, {128, 32, 4, 2}, MaskMode::Window).qkRolledIterations, 2);
  // Swizzled rows, one m16 tile per warp, or too few k-steps: unrolled.
  EXPECT_EQ(layoutOf(128, {128, 64, 4, 2}, MaskMode::None).qkRolledIterations, 0);
  EXPECT_EQ(layoutOf(256, {64, 64, 4, 1}, MaskMode::Causal).qkRolledIterations, 0);
  EXPECT_EQ(layoutOf(112, {128, 64, 4, 2}, MaskMode::Causal).qkRolledIterations, 0);
  EXPECT_EQ(layoutOf(96, {128, 64, 4, 2}, MaskMode::Causal).qkRolledIterations, 0);
}

// The quick form gives each warp one m16 tile of the same CTA rows (a row's
// operations do not depend on its warp) while every thread may still use
// 255 registers, and rolls Q K^T by whole swizzle groups.
TEST(ForwardLayout, QuickFormTakesOneRowTilePerWarp) {
  // By hand, for the sm_90a defaults: 16-row warps (128 rows: 8 warps, 256
  // threads; d=256's 64 rows: 4), swizzle bits of the padded row's chunk
  // count (2, 6 and 14 chunks: 1; 8, 16, 24, 32: 3), a k-step an iteration
  // at one bit and 4 (a 64-element group) at three, over all padded k-steps.
  const struct {
    int d, threads, swizzleBits, stepsPerIteration, iterations;
  } expected[] = {{1, 256, 1, 1, 1},   {33, 256, 1, 1, 3},  {64, 256, 3, 4, 1},
                  {100, 256, 1, 1, 7}, {128, 256, 3, 4, 2}, {192, 256, 3, 4, 3},
                  {256, 128, 3, 4, 4}};
  for (const auto &want : expected)
    for (MaskMode mask : {MaskMode::None, MaskMode::Causal}) {
      AttentionSpec spec = specWithHeadDim(want.d);
      spec.mask = mask;
      TileConfig config = defaultTileConfig(spec, Arch::Sm90a, Family::Sm80);
      const ForwardLayout full = forwardLayout(spec, config);
      config.quick = true;
      const ForwardLayout quick = forwardLayout(spec, config);
      SCOPED_TRACE("d=" + std::to_string(want.d));
      EXPECT_EQ(quick.mTilesPerWarp, 1);
      EXPECT_EQ(quick.threads, want.threads);
      EXPECT_LE(quick.threads * kMaxRegistersPerThread, kRegisterFileSize);
      EXPECT_LE(quick.sharedMemBytes, full.sharedMemBytes);
      EXPECT_FALSE(quick.qInRegisters);
      EXPECT_EQ(quick.swizzleBitsQK, want.swizzleBits);
      EXPECT_EQ(quick.qkStepsPerRolledIteration, want.stepsPerIteration);
      EXPECT_EQ(quick.qkRolledIterations, want.iterations);
      // A rolled iteration moves the fragment views by whole swizzle groups
      // (2^bits chunks of 8 elements).
      EXPECT_EQ(quick.qkStepsPerRolledIteration * 16 % ((1 << want.swizzleBits) * 8),
                0);
      EXPECT_LT(quick.estimatedRegisters, full.estimatedRegisters);
    }
  // 256 rows in 16 warps would leave 128 registers a thread: the config's
  // warps stay.
  AttentionSpec spec = specWithHeadDim(64);
  TileConfig wide{256, 32, 8, 2};
  wide.quick = true;
  EXPECT_EQ(forwardLayout(spec, wide).threads, 8 * kWarpSize);
}

// The quick form is assembled at a lower ptxas level (it is there to be
// ready soon); the full kernel at ptxas's default.
TEST(Compile, QuickFormTakesTheLowerPtxasLevel) {
  AttentionSpec spec = specWithHeadDim(64);
  TileConfig config = defaultTileConfig(spec, Arch::Sm90a, Family::Sm80);
  auto full = compile(spec, config, Arch::Sm90a);
  ASSERT_TRUE(full) << full.message();
  EXPECT_EQ(full->launch.ptxasOptLevel, 3);
  config.quick = true;
  auto quick = compile(spec, config, Arch::Sm90a);
  ASSERT_TRUE(quick) << quick.message();
  EXPECT_EQ(quick->launch.ptxasOptLevel, kQuickPtxasOptLevel);
  EXPECT_LT(kQuickPtxasOptLevel, kPtxasOptLevel);
}

// The swizzle's two promises, on a model of shared memory (32 banks of 4
// bytes, 16-byte chunks): the 8 rows one ldmatrix matrix reads, at the same
// logical chunk, sit in 8 different bank groups; and the 8 consecutive
// chunks a quarter warp copies (rows laid end to end) fill exactly one
// 128-byte line.
TEST(ForwardLayout, SwizzleSpreadsLdmatrixRowsAndKeepsCopyLines) {
  for (int chunks = 2; chunks <= 40; chunks += 2) {
    const int bits = swizzleBitsOfRow(chunks);
    ASSERT_GE(bits, 1) << chunks;
    ASSERT_LE(bits, 3) << chunks;
    auto smemChunk = [&](int row, int chunk) {
      return row * chunks + (chunk ^ rowSwizzle(row, bits));
    };
    for (int row0 = 0; row0 < 16; row0 += 8)
      for (int c = 0; c < chunks; ++c) {
        std::set<int> groups;
        for (int r = row0; r < row0 + 8; ++r) {
          ASSERT_LT(c ^ rowSwizzle(r, bits), chunks) << chunks;
          groups.insert(smemChunk(r, c) % kSmemLineChunks);
        }
        EXPECT_EQ(groups.size(), 8u) << "chunks=" << chunks << " c=" << c;
      }
    for (int first = 0; first < 4 * chunks; first += kSmemLineChunks) {
      std::set<int> lines;
      for (int i = first; i < first + kSmemLineChunks; ++i)
        lines.insert(smemChunk(i / chunks, i % chunks) / kSmemLineChunks);
      EXPECT_EQ(lines.size(), 1u) << "chunks=" << chunks << " at " << first;
    }
  }
}

TEST(DefaultTileConfig, LayoutIsConsistent) {
  for (int d : {1, 16, 33, 64, 80, 100, 128, 160, 256})
    for (DType dtype : kAllDTypes)
      for (Arch arch : {Arch::Sm80, Arch::Sm86, Arch::Sm90a}) {
        AttentionSpec spec = specWithHeadDim(d);
        spec.dtype = dtype;
        const TileConfig c = defaultTileConfig(spec, arch);
        const ForwardLayout l = forwardLayout(spec, c);
        const int eb = elementBytes(dtype);
        const std::string where = "d=" + std::to_string(d) + " " +
                                  std::string(toString(arch)) + " " +
                                  canonicalText(c);
        // Q, then the K stages, then the V stages, without overlap (the
        // sizes themselves: SharedMemoryOfKnownKernels).
        EXPECT_GE(l.kOffsetBytes, l.qTileBytes) << where;
        EXPECT_GE(l.vOffsetBytes, l.kOffsetBytes + c.stages * l.kTileBytes)
            << where;
        EXPECT_GE(l.sharedMemBytes, l.vOffsetBytes + c.stages * l.vTileBytes)
            << where;
        // 16-byte cp.async / ldmatrix rows need 16-byte aligned buffers and
        // pitches.
        EXPECT_EQ(l.kOffsetBytes % 16, 0) << where;
        EXPECT_EQ(l.vOffsetBytes % 16, 0) << where;
        EXPECT_EQ(l.pitchQK * eb % 16, 0) << where;
        EXPECT_EQ(l.pitchV * eb % 16, 0) << where;
        // Swizzled rows are exactly the padded head dim, with the swizzle
        // bits of their width; padded rows are an odd number of chunks.
        // Either way an ldmatrix's 8 rows fall into 8 bank groups.
        for (auto [pitch, padded, bits] :
             {std::tuple{l.pitchQK, l.paddedHeadDimQK, l.swizzleBitsQK},
              std::tuple{l.pitchV, l.paddedHeadDimV, l.swizzleBitsV}}) {
          const int chunks = pitch * eb / 16;
          if (l.swizzledRows()) {
            EXPECT_EQ(pitch, padded) << where;
            EXPECT_EQ(bits, swizzleBitsOfRow(chunks)) << where;
          } else {
            EXPECT_EQ(chunks % 2, 1) << where;
            EXPECT_EQ(bits, 0) << where;
          }
        }
      }
}

// sm80 tile sizes computed by hand: rows of the padded head dim (swizzled)
// or of one 16-byte chunk more (padded rows, 8 elements), times 2 bytes.
TEST(DefaultTileConfig, SharedMemoryOfKnownKernels) {
  const struct {
    int dqk, dv;
    MaskMode mask;
    Arch arch;
    TileConfig config;
    int q, k, v, total;
  } kernels[] = {
      // 128 x 128 rows of Q, 64 x 128 of K and of V, two stages.
      {128, 128, MaskMode::None, Arch::Sm90a, {128, 64, 4, 2},
       32768, 16384, 16384, 32768 + 2 * (16384 + 16384)},
      // Padded rows of 128 + 8, one stage.
      {128, 128, MaskMode::Causal, Arch::Sm90a, {128, 64, 4, 1},
       128 * 136 * 2, 64 * 136 * 2, 64 * 136 * 2, 34816 + 17408 + 17408},
      // d=100: rows of 112, 48-key tiles, one stage.
      {100, 100, MaskMode::None, Arch::Sm90a, {128, 48, 4, 1},
       128 * 112 * 2, 48 * 112 * 2, 48 * 112 * 2, 28672 + 2 * 10752},
      // sm_86: d=160 in 64 x 32 tiles, two stages, under 99 KiB.
      {160, 160, MaskMode::None, Arch::Sm86, {64, 32, 4, 2},
       64 * 160 * 2, 32 * 160 * 2, 32 * 160 * 2, 20480 + 2 * (10240 + 10240)},
      // Q/K rows of 192, V rows of 128.
      {192, 128, MaskMode::None, Arch::Sm80, {128, 128, 8, 1},
       128 * 192 * 2, 128 * 192 * 2, 128 * 128 * 2, 49152 + 49152 + 32768},
  };
  for (const auto &want : kernels) {
    AttentionSpec spec = specWithHeadDim(want.dqk);
    spec.headDimV = want.dv;
    spec.mask = want.mask;
    SCOPED_TRACE("d=" + std::to_string(want.dqk) + "/" +
                 std::to_string(want.dv) + " " +
                 std::string(toString(want.arch)));
    const TileConfig config = defaultTileConfig(spec, want.arch, Family::Sm80);
    ASSERT_EQ(config, want.config) << canonicalText(config);
    const ForwardLayout l = forwardLayout(spec, want.config);
    EXPECT_EQ(l.qTileBytes, want.q);
    EXPECT_EQ(l.kTileBytes, want.k);
    EXPECT_EQ(l.vTileBytes, want.v);
    EXPECT_EQ(l.sharedMemBytes, want.total);
  }
}

TEST(DefaultTileConfig, SmallerPartsGetSmallerTiles) {
  // Whatever the table picks for an RTX 30xx must fit its 99 KiB, and never
  // need more shared memory than the H100 choice.
  for (int d : {64, 128, 192, 256}) {
    AttentionSpec spec = specWithHeadDim(d);
    const TileConfig big = defaultTileConfig(spec, Arch::Sm90a);
    const TileConfig small = defaultTileConfig(spec, Arch::Sm86);
    EXPECT_LE(forwardLayout(spec, small).sharedMemBytes,
              forwardLayout(spec, big).sharedMemBytes)
        << "d=" << d;
    EXPECT_LE(forwardLayout(spec, small).sharedMemBytes,
              maxSharedMemoryPerBlock(Arch::Sm86))
        << "d=" << d;
  }
}

TEST(ForwardLayout, HeadDimsArePaddedTo16InSharedMemoryOnly) {
  TileConfig c{64, 32, 4, 1};
  for (int d = 1; d <= 256; ++d) {
    AttentionSpec spec = specWithHeadDim(d);
    const ForwardLayout l = forwardLayout(spec, c);
    EXPECT_EQ(l.paddedHeadDimQK, (d + 15) / 16 * 16) << d;
    EXPECT_EQ(l.paddedHeadDimV, (d + 15) / 16 * 16) << d;
  }
  AttentionSpec spec;
  spec.headDimQK = 33;
  spec.headDimV = 100;
  const ForwardLayout l = forwardLayout(spec, c);
  EXPECT_EQ(l.paddedHeadDimQK, 48);
  EXPECT_EQ(l.paddedHeadDimV, 112);
}
