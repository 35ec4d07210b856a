//===- test_golden_ptx.cpp - Refactors leave the generated PTX unchanged ---===//
//
// Pins the PTX (and the launch facts) of about 40 (spec, config, arch)
// triples by hash, so that structural moves of the generators (shared
// pieces, one-way dependencies, new families beside old ones) are proven
// behaviour-neutral. An intended codegen change updates the table in the
// same commit as the codegen revision bump (Pipeline.h):
//
//   FLASHJIT_UPDATE_GOLDEN=1 build/bin/flashjit-unit-tests
//       --gtest_filter='GoldenPtx.*'
//
// prints the new table. The kernel's name is replaced by a placeholder
// before hashing: a name is not code. The hashes hold for the LLVM release
// they were taken with (kGoldenLlvm): another release may print different
// PTX for the same IR, and the test then skips, saying so; so does a clang
// build (the generators' op order depends on the host compiler).
//
//===----------------------------------------------------------------------===//
#include "flashjit/compiler/AttentionSpec.h"
#include "flashjit/compiler/Pipeline.h"
#include "flashjit/kernels/Decode.h"
#include "flashjit/kernels/Forward.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

using namespace flashjit;

namespace {

/// The LLVM release whose NVPTX backend printed the pinned PTX.
constexpr const char *kGoldenLlvm = "22.1.8";

struct GoldenCase {
  const char *name;
  AttentionSpec spec;
  std::optional<TileConfig> config; ///< the arch's default when empty
  Arch arch;
  const char *hash; ///< 16 hex digits; see the file comment
};

AttentionSpec spec(int dqk, int dv, DType dtype, MaskMode mask, int align = 8) {
  AttentionSpec s;
  s.headDimQK = dqk;
  s.headDimV = dv;
  s.dtype = dtype;
  s.mask = mask;
  s.globalAlignElems = align;
  return s;
}
template <typename F> AttentionSpec with(AttentionSpec s, F edit) {
  edit(s);
  return s;
}
AttentionSpec backward(AttentionSpec s) {
  s.direction = Direction::Backward;
  s.writeLse = true;
  return s;
}
TileConfig sm90Of(const AttentionSpec &s) {
  return defaultTileConfig(s, Arch::Sm90a, Family::Sm90);
}
/// The decode table's config of `s` at `tileRows` rows (seqlen_q x group).
TileConfig decodeOf(const AttentionSpec &s, Arch arch, int64_t tileRows) {
  return *decodeTileConfig(s, arch, tileRows);
}
TileConfig quickOf(const AttentionSpec &s, Arch arch) {
  TileConfig c = defaultTileConfig(s, arch, Family::Sm80);
  c.quick = true;
  return c;
}

constexpr DType bf16 = DType::BF16, f16 = DType::F16;
constexpr MaskMode none = MaskMode::None, causal = MaskMode::Causal,
                   window = MaskMode::Window;
constexpr Arch sm80 = Arch::Sm80, sm86 = Arch::Sm86, sm90a = Arch::Sm90a;

std::vector<GoldenCase> cases() {
  const auto d128c = spec(128, 128, bf16, causal);
  const auto d80c = spec(80, 80, bf16, causal);
  const auto pagedDecode = with(spec(128, 128, bf16, none), [](auto &s) {
    s.gqaGroup = 8; s.keyLengths = s.pagedKV = s.splitKV = true;
  });
  // 64-key tiles, as the table gave paged caches when the hash was taken
  // (it gives 32 now: a config, not codegen).
  TileConfig pagedTile = decodeOf(pagedDecode, sm90a, 8);
  pagedTile.blockN = 64;
  const auto splitDecode = with(spec(80, 80, f16, window), [](auto &s) {
    s.gqaGroup = 4; s.keyLengths = s.splitKV = true; s.softcap = true;
    s.bias = BiasMode::Alibi;
  });
  return {
      // Head dims of the default grid, both masks, both dtypes, two archs.
      {"d1_bf16_none_sm80", spec(1, 1, bf16, none, 1), {}, sm80, "31b0153f5cca9dec"},
      {"d16_f16_causal_sm90a", spec(16, 16, f16, causal), {}, sm90a, "d41ac7cbb065645c"},
      {"d33_bf16_causal_a1_sm80", spec(33, 33, bf16, causal, 1), {}, sm80, "06354fe80b9ec4a7"},
      {"d64_bf16_none_sm90a", spec(64, 64, bf16, none), {}, sm90a, "e289dd14f03b0e48"},
      {"d64_f16_causal_sm80", spec(64, 64, f16, causal), {}, sm80, "6559835f9809bf8a"},
      {"d72_bf16_causal_sm90a", spec(72, 72, bf16, causal), {}, sm90a, "c95a344b6e70bff1"},
      {"d80_bf16_none_sm90a", spec(80, 80, bf16, none), {}, sm90a, "3a7707f440c074b7"},
      {"d80_bf16_causal_sm90a", d80c, {}, sm90a, "dcc5e6a56107ae44"},
      {"d96_f16_none_sm80", spec(96, 96, f16, none), {}, sm80, "a286fd2b6d62efb6"},
      {"d100_bf16_none_a4_sm90a", spec(100, 100, bf16, none, 4), {}, sm90a, "189de03a33c276f5"},
      {"d100_bf16_causal_a4_sm80", spec(100, 100, bf16, causal, 4), {}, sm80, "313889485637273d"},
      {"d128_bf16_none_sm90a", spec(128, 128, bf16, none), {}, sm90a, "7505ecc0806beffd"},
      {"d128_bf16_causal_sm90a", d128c, {}, sm90a, "de505a628dc4c1b8"},
      {"d128_bf16_causal_sm80", d128c, {}, sm80, "a422c6023965450e"},
      {"d160_f16_none_sm90a", spec(160, 160, f16, none), {}, sm90a, "267ce01dabffe4b3"},
      {"d192_bf16_causal_sm90a", spec(192, 192, bf16, causal), {}, sm90a, "ea14cd3c8c854fa8"},
      {"d256_bf16_none_sm90a", spec(256, 256, bf16, none), {}, sm90a, "d10a199d4b7c412b"},
      {"d256_f16_causal_sm86", spec(256, 256, f16, causal), {}, sm86, "b5fc61e91b6edd2f"},
      {"d50_bf16_none_a2_sm80", spec(50, 50, bf16, none, 2), {}, sm80, "d6a632c4ea3988ec"},
      {"d129_bf16_none_a1_sm90a", spec(129, 129, bf16, none, 1), {}, sm90a, "5a1f698c01e6b407"},
      {"d216_bf16_none_sm80", spec(216, 216, bf16, none), {}, sm80, "aa8cf33604ab8d56"},
      // Features.
      {"dqk192_dv128_causal_sm90a", spec(192, 128, bf16, causal), {}, sm90a, "bdaa565eb4861ffd"},
      {"d64_gqa4_packed_nolse_sm90a",
       with(spec(64, 64, bf16, none), [](auto &s) { s.gqaGroup = 4; s.writeLse = false; }),
       {}, sm90a, "6ff81ed9ca095dc0"},
      {"d128_gqa8_unpacked_causal_sm90a",
       with(d128c, [](auto &s) { s.gqaGroup = 8; }), TileConfig{128, 64, 4, 1, false}, sm90a,
       "a3eb317b65b9ffbb"},
      {"d80_window_sm90a", spec(80, 80, bf16, window), {}, sm90a, "d02d76929dec2063"},
      {"d128_bias_tensor_sm90a",
       with(spec(128, 128, f16, none), [](auto &s) { s.bias = BiasMode::Tensor; }),
       {}, sm90a, "c03b6bab5e8fab66"},
      {"d80_alibi_causal_sm80",
       with(d80c, [](auto &s) { s.bias = BiasMode::Alibi; }), {}, sm80, "3f223a3f7763ab5b"},
      {"d128_softcap_sm90a",
       with(spec(128, 128, bf16, none), [](auto &s) { s.softcap = true; }), {}, sm90a,
       "1b9ca753b1410d36"},
      {"d128_varlen_causal_sm90a",
       with(d128c, [](auto &s) { s.varlen = true; }), {}, sm90a, "0a7c8a36f06fe0f9"},
      {"d64_keylengths_sm80",
       with(spec(64, 64, bf16, none), [](auto &s) { s.keyLengths = true; }), {}, sm80,
       "d5bb4572cf4ba316"},
      {"d72_everything_sm90a",
       with(spec(72, 72, f16, window), [](auto &s) {
         s.bias = BiasMode::Alibi; s.softcap = true; s.varlen = true;
         s.keyLengths = true; s.gqaGroup = 2;
       }),
       {}, sm90a, "ce343e41ab506f58"},
      // Explicit configs: stages, warps, tile shapes off the default table.
      {"d128_128x128_w8_s2_sm90a", spec(128, 128, bf16, none), TileConfig{128, 128, 8, 2},
       sm90a, "763b7d35de42be7b"},
      {"d64_64x32_w4_s1_causal_sm80", spec(64, 64, bf16, causal), TileConfig{64, 32, 4, 1},
       sm80, "27d3a8b123eb4921"},
      {"d96_128x64_w4_s3_sm90a", spec(96, 96, bf16, none), TileConfig{128, 64, 4, 3}, sm90a,
       "fca9296b57648174"},
      // Quick forms.
      {"d128_causal_quick_sm90a", d128c, quickOf(d128c, sm90a), sm90a, "2a68cb6c1a5ebb7e"},
      {"d80_causal_quick_sm80", d80c, quickOf(d80c, sm80), sm80, "98f375dbe197ed8b"},
      {"d256_none_quick_sm90a", spec(256, 256, bf16, none),
       quickOf(spec(256, 256, bf16, none), sm90a), sm90a, "4e340b9ad64892d8"},
      {"d33_f16_quick_a1_sm80", spec(33, 33, f16, none, 1),
       quickOf(spec(33, 33, f16, none, 1), sm80), sm80, "f487199c555a3dec"},
      // Decode: split-KV over a paged cache (the forward, combine and
      // append kernels of one module), and split with the score features.
      {"d128_paged_split_gqa8_decode_sm90a", pagedDecode, pagedTile,
       sm90a, "e84d9923024faf73"},
      {"d80_split_window_softcap_alibi_decode_sm80", splitDecode,
       decodeOf(splitDecode, sm80, 4), sm80, "1df635ae7ac021d4"},
      // The sm90 family: its defaults (three consumers to d = 64; two past
      // it, pingpong; overlap from d = 80 with 160-, 96- and 80-key tiles),
      // features, and both variants.
      {"d64_bf16_none_f90", spec(64, 64, bf16, none),
       [] {
         TileConfig c{128, 128, 8, 2};
         c.family = Family::Sm90;
         return c;
       }(),
       sm90a, "8dca5fcb90048da3"},
      {"d64_bf16_none_default_f90", spec(64, 64, bf16, none),
       sm90Of(spec(64, 64, bf16, none)), sm90a, "78234377ca221432"},
      {"d128_bf16_causal_f90", d128c, sm90Of(d128c), sm90a, "2081ea89f7398fdb"},
      {"d192_bf16_causal_f90", spec(192, 192, bf16, causal),
       sm90Of(spec(192, 192, bf16, causal)), sm90a, "0359964fff653969"},
      {"d256_f16_none_f90", spec(256, 256, f16, none), sm90Of(spec(256, 256, f16, none)),
       sm90a, "706e81b4817f3c97"},
      {"d80_everything_f90",
       with(spec(80, 80, bf16, window), [](auto &s) {
         s.bias = BiasMode::Alibi; s.softcap = true; s.varlen = true;
         s.keyLengths = true; s.gqaGroup = 2;
       }),
       sm90Of(with(spec(80, 80, bf16, window), [](auto &s) {
         s.bias = BiasMode::Alibi; s.softcap = true; s.varlen = true;
         s.keyLengths = true; s.gqaGroup = 2;
       })),
       sm90a, "fc15ddc69b8954df"},
      {"d64_pingpong_overlap_f90", spec(64, 64, f16, none),
       [] {
         TileConfig c{128, 128, 8, 2};
         c.family = Family::Sm90;
         c.pingpong = c.overlap = true;
         return c;
       }(),
       sm90a, "f4e22c29e43eb19f"},
      // The backward's modules (preprocess, main, conversion): the mma.sync
      // main kernel's defaults, its features, the scalar one.
      {"bwd_d64_bf16_causal_sm80", backward(spec(64, 64, bf16, causal)), {},
       sm80, "a46abb749e25dc31"},
      {"bwd_d128_f16_none_gqa4_det_sm90a",
       backward(with(spec(128, 128, f16, none), [](auto &s) {
         s.gqaGroup = 4; s.deterministic = true;
       })),
       {}, sm90a, "73eaa5727f25288a"},
      {"bwd_d72_everything_sm90a",
       backward(with(spec(72, 72, bf16, window, 4), [](auto &s) {
         s.bias = BiasMode::Tensor; s.biasGrad = true; s.softcap = true;
         s.varlen = true; s.keyLengths = true;
       })),
       {}, sm90a, "281fd424a9f37d95"},
      {"bwd_d192_dv128_bf16_causal_sm90a",
       backward(spec(192, 128, bf16, causal)), {}, sm90a, "2c61429ed78f57f1"},
      {"bwd_d32_scalar_sm80", backward(spec(32, 32, bf16, causal)),
       [] {
         TileConfig c = defaultTileConfig(backward(spec(32, 32, bf16, causal)),
                                          Arch::Sm80, Family::Sm80);
         c.scalar = true;
         c.blockN = 64;
         c.stages = 1;
         return c;
       }(),
       sm80, "1c5f5fb730ea272e"},
      // The sm90 backward (wgmma): two 32-query sub-steps at d = 64.
      {"bwd_d64_bf16_causal_gqa2_f90",
       backward(with(spec(64, 64, bf16, causal), [](auto &s) { s.gqaGroup = 2; })),
       sm90Of(backward(
           with(spec(64, 64, bf16, causal), [](auto &s) { s.gqaGroup = 2; }))),
       sm90a, "1ba2ed7aff5ea565"},
      // At d = 128: 16-query sub-steps, dQ columns split by warpgroup.
      {"bwd_d128_bf16_causal_f90", backward(spec(128, 128, bf16, causal)),
       sm90Of(backward(spec(128, 128, bf16, causal))), sm90a, "10d8e175b6140a69"},
      // Past d = 128 the warpgroups share the keys and split the columns
      // (Q's and K's padding box zeroed once; dQ a box at a time).
      {"bwd_d192_dv128_bf16_causal_split_f90",
       backward(spec(192, 128, bf16, causal)),
       sm90Of(backward(spec(192, 128, bf16, causal))), sm90a,
       "0aa896bef1c4b45d"},
      // Rows TMA cannot address (heads 200 bytes apart): the producer
      // warpgroup's cp.async copies.
      {"d100_copies_causal_f90", spec(100, 100, bf16, causal, 4),
       [] {
         TileConfig c{128, 128, 8, 2};
         c.family = Family::Sm90;
         c.pingpong = true;
         return c;
       }(),
       sm90a, "15ca5ea83ac7626e"},
      {"d100_copies_overlap_f90", spec(100, 100, bf16, causal, 4),
       sm90Of(spec(100, 100, bf16, causal, 4)), sm90a, "76afadd49be8afb3"},
  };
}

/// The PTX with every occurrence of the kernel's name replaced, and the
/// launch facts appended, hashed.
std::string goldenHash(const Artifact &art) {
  std::string text = art.ptx;
  for (size_t at = text.find(art.kernelName); at != std::string::npos;
       at = text.find(art.kernelName, at))
    text.replace(at, art.kernelName.size(), "KERNEL");
  text += "\nthreads=" + std::to_string(art.launch.threadsPerBlock) +
          " smem=" + std::to_string(art.launch.sharedMemBytes) +
          " block_m=" + std::to_string(art.launch.blockM) +
          " ptxas_O=" + std::to_string(art.launch.ptxasOptLevel);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(
                    XXH3_64bits(text.data(), text.size())));
  return hex;
}

} // namespace

TEST(GoldenPtx, KernelsAreUnchanged) {
  if (llvmVersion() != kGoldenLlvm)
    GTEST_SKIP() << "the golden PTX hashes were taken with LLVM "
                 << kGoldenLlvm << "; this build has " << llvmVersion();
#ifdef __clang__
  // The generators nest builder calls as function arguments, whose order of
  // evaluation C++ leaves open: clang creates those ops in another order
  // than GCC, so the same IR prints with other SSA numbers and the PTX in
  // another instruction order. The table is GCC's (the release build's).
  GTEST_SKIP() << "the golden PTX hashes are those of a GCC build; this "
                  "one is clang's, whose generators emit ops in another order";
#endif
  const bool update = std::getenv("FLASHJIT_UPDATE_GOLDEN") != nullptr;
  int changed = 0;
  for (const GoldenCase &c : cases()) {
    SCOPED_TRACE(c.name);
    const TileConfig config =
        c.config ? *c.config : defaultTileConfig(c.spec, c.arch, Family::Sm80);
    Expected<Artifact> art = compile(c.spec, config, c.arch);
    ASSERT_TRUE(art.isOk()) << art.message();
    ASSERT_FALSE(art->ptx.empty());
    const std::string hash = goldenHash(*art);
    if (hash != c.hash) {
      ++changed;
      if (update)
        std::printf("%s %s\n", c.name, hash.c_str());
      else
        ADD_FAILURE() << c.name << ": PTX hash " << hash << ", pinned "
                      << c.hash << " (" << kernelName(c.spec, config, c.arch)
                      << "). An intended codegen change bumps "
                         "kCodegenRevision and updates this table "
                         "(FLASHJIT_UPDATE_GOLDEN=1).";
    }
  }
  if (update)
    std::printf("%d of %zu hashes changed\n", changed, cases().size());
}

/// The table pins distinct kernels: two cases with one hash would mean a
/// feature that changes nothing, or a copy-pasted row.
TEST(GoldenPtx, CasesAreDistinct) {
  std::vector<std::string> hashes, names;
  for (const GoldenCase &c : cases()) {
    for (const std::string &n : names)
      EXPECT_NE(n, c.name);
    for (const std::string &h : hashes)
      EXPECT_NE(h, c.hash) << c.name;
    hashes.push_back(c.hash);
    names.push_back(c.name);
  }
  EXPECT_GE(hashes.size(), 36u);
}
