//===- test_decode.cpp - Decode planning and paged-cache validation -------===//
//
// No GPU: the page-size divisor the kernels use, the split count and the
// partials' workspace, the decode tile table, and the checks that reject a
// bad block table or cache length before any launch.
//
//===----------------------------------------------------------------------===//
#include "flashjit/kernels/AttentionParams.h"
#include "flashjit/kernels/Decode.h"
#include "flashjit/kernels/LayoutSm80.h"

#include <gtest/gtest.h>

#include <initializer_list>
#include <numeric>
#include <string>

using namespace flashjit;

namespace {
/// Batch 3, 8 query heads over 2 K/V heads, one query, a paged cache of 16
/// pages of 16 rows, 4 pages per sequence, cache lengths 5, 0, 64, each
/// sequence on its own pages in reverse order.
AttentionParams paged() {
  AttentionParams p;
  p.batch = 3;
  p.headsQ = 8;
  p.headsKV = 2;
  p.seqlenQ = 1;
  p.seqlenK = 64;
  p.headDimQK = p.headDimV = 64;
  PagedKV pg;
  pg.numPages = 16;
  pg.pageSize = 16;
  pg.maxPagesPerSeq = 4;
  for (int32_t b = 0; b < 3; ++b)
    for (int32_t i = 0; i < 4; ++i)
      pg.blockTable.push_back(15 - (b * 4 + i));
  p.paged = pg;
  p.keyLengths = {5, 0, 64};
  p.setDenseBSHD();
  return p;
}

void expectError(const AttentionParams &p,
                 std::initializer_list<std::string> fragments) {
  const Status s = validateParams(p);
  ASSERT_FALSE(s) << "accepted, expected: " << *fragments.begin();
  for (const std::string &f : fragments)
    EXPECT_NE(s.message().find(f), std::string::npos)
        << "message: " << s.message() << "\nmissing: " << f;
}
} // namespace

TEST(Decode, PageDivisorDividesEveryIndex) {
  for (int64_t d : {int64_t(1), int64_t(2), int64_t(3), int64_t(7),
                    int64_t(16), int64_t(17), int64_t(100), int64_t(128),
                    int64_t(255), int64_t(256), int64_t(1000), int64_t(4096),
                    int64_t(65537), kMaxPageSize - 1, kMaxPageSize}) {
    const PageDivisor div = pageDivisor(d);
    SCOPED_TRACE("divisor " + std::to_string(d));
    // Near multiples of d (where rounding errors show) across the range of
    // key indices, and the top of it.
    for (int64_t q : {int64_t(0), int64_t(1), int64_t(2), int64_t(1000),
                      int64_t(123457), (int64_t(1) << 31) / d - 1,
                      (int64_t(1) << 31) / d})
      for (int64_t r : {int64_t(-1), int64_t(0), int64_t(1), d - 1}) {
        const int64_t n = q * d + r;
        if (n < 0 || n >= (int64_t(1) << 31))
          continue;
        ASSERT_EQ(div.divide(n), n / d) << "n = " << n;
      }
    ASSERT_EQ(div.divide((int64_t(1) << 31) - 1), ((int64_t(1) << 31) - 1) / d);
  }
}

TEST(Decode, ChooseSplitsFillsTheGpuOnlyWhenItIsIdle) {
  // 8 x 8 K/V groups on 132 SMs of 8 CTAs: far under a wave, many blocks.
  const int s = chooseSplits(64, 512, 8, 132, 8);
  EXPECT_GT(s, 1);
  EXPECT_LE(s, kMaxSplits);
  EXPECT_EQ(s, chooseSplits(64, 512, 8, 132, 8)) << "not deterministic";
  // Two waves or more, or a single K/V tile: no split.
  EXPECT_EQ(chooseSplits(2 * 132 * 8, 512, 64, 132, 8), 1);
  EXPECT_EQ(chooseSplits(64, 1, 8, 132, 8), 1);
  EXPECT_EQ(chooseSplits(0, 512, 8, 132, 8), 1);
  // Never more splits than K/V tiles, nor past grid z.
  EXPECT_LE(chooseSplits(1, 3, 1, 132, 8), 3);
  EXPECT_LE(chooseSplits(4, 4096, 65535, 132, 8), 1);
  for (int64_t ctas : {1, 7, 64, 300, 1000})
    for (int64_t blocks : {2, 5, 64, 2048}) {
      const int n = chooseSplits(ctas, blocks, 4, 108, 4);
      EXPECT_GE(n, 1);
      EXPECT_LE(n, std::min<int64_t>(blocks, kMaxSplits));
    }
}

TEST(Decode, PartialLayoutAlignsAndSizesThePartials) {
  const PartialLayout l = partialLayout(3, 5, 33, 7);
  EXPECT_EQ(l.entries, 15);
  EXPECT_EQ(l.pitch, 36);
  EXPECT_EQ(l.oBytes % 256, 0u);
  EXPECT_GE(l.oBytes, size_t(7 * 15 * 36 * 4));
  EXPECT_GE(l.bytes - l.oBytes, size_t(7 * 15 * 4));
  EXPECT_EQ(l.bytes % 256, 0u);
}

TEST(Decode, TileTableCoversDecodeShapesOnly) {
  for (int d : {1, 33, 64, 100, 128, 256})
    for (int group : {1, 8, 32, 33, 48, 49, 64}) {
      AttentionSpec spec;
      spec.headDimQK = spec.headDimV = d;
      spec.gqaGroup = group;
      spec.globalAlignElems = d % 8 == 0 ? 8 : 1;
      spec.pagedKV = spec.keyLengths = spec.splitKV = true;
      for (Arch arch : {Arch::Sm80, Arch::Sm90a}) {
        auto c = decodeTileConfig(spec, arch, group);
        ASSERT_TRUE(c) << "d=" << d << " group=" << group;
        EXPECT_EQ(c->family, Family::Sm80);
        EXPECT_EQ(c->blockM % kMmaM, 0);
        EXPECT_GE(c->blockM, group);
        EXPECT_EQ(c->packGqa, group > 1);
        EXPECT_TRUE(validate(*c, spec, arch)) << validate(*c, spec, arch).message();
      }
    }
  AttentionSpec spec;
  spec.headDimQK = spec.headDimV = 64;
  EXPECT_FALSE(decodeTileConfig(spec, Arch::Sm80, kDecodeMaxTileRows + 1));
  EXPECT_FALSE(decodeTileConfig(spec, Arch::Sm80, 0));
}

// Narrow copies and wide heads: a warp alone spills their copies' addresses
// (tests/ptxas's decode cases), so the table gives them two warps of 16-key
// tiles, and leaves 4-byte copies past d = 128 to the default config.
TEST(Decode, TileTableGivesNarrowCopiesAndWideHeadsTwoWarps) {
  struct Case {
    int d, align;
    int warps, blockN; // 0: no table config
  } cases[] = {{64, 8, 1, 64},  {128, 8, 1, 64}, {100, 4, 1, 64},
               {33, 1, 2, 16},  {127, 1, 2, 16}, {80, 2, 2, 16},
               {128, 2, 2, 16}, {160, 8, 2, 16}, {256, 8, 2, 16},
               {255, 1, 2, 16}, {160, 2, 0, 0},  {256, 2, 0, 0}};
  for (const Case &k : cases) {
    AttentionSpec spec;
    spec.headDimQK = spec.headDimV = k.d;
    spec.globalAlignElems = k.align;
    auto c = decodeTileConfig(spec, Arch::Sm90a, 1);
    ASSERT_EQ(c.has_value(), k.warps > 0) << "d=" << k.d << " align=" << k.align;
    if (!c)
      continue;
    EXPECT_EQ(c->warps, k.warps) << "d=" << k.d << " align=" << k.align;
    EXPECT_EQ(c->blockM, 16 * k.warps);
    EXPECT_EQ(c->blockN, k.blockN) << "d=" << k.d << " align=" << k.align;
  }
}

TEST(Decode, SpecFeaturesKeyTheCacheAndName) {
  AttentionSpec a;
  a.keyLengths = true;
  AttentionSpec b = a;
  b.pagedKV = true;
  AttentionSpec c = a;
  c.splitKV = true;
  EXPECT_NE(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(canonicalText(a), canonicalText(b));
  EXPECT_NE(canonicalText(b), canonicalText(c));
  // Older keys stay valid: the decode fields print only when on.
  EXPECT_EQ(canonicalText(a).find("paged"), std::string::npos);
  EXPECT_NE(canonicalText(b).find("paged_kv=1"), std::string::npos);
  const TileConfig cfg = defaultTileConfig(b, Arch::Sm80, Family::Sm80);
  EXPECT_NE(kernelName(b, cfg, Arch::Sm80).find("_paged"), std::string::npos);
  EXPECT_NE(kernelName(c, cfg, Arch::Sm80).find("_split"), std::string::npos);
  // A paged cache's keys are its cache lengths.
  AttentionSpec noLengths;
  noLengths.pagedKV = true;
  EXPECT_FALSE(validate(noLengths));
}

// ---- paged-cache validation: before any launch --------------------------------
TEST(DecodeParams, ValidPagedProblemsPass) {
  EXPECT_TRUE(validateParams(paged())) << validateParams(paged()).message();
  // Prefill with a cached prefix: 4 new queries over cached keys.
  AttentionParams prefill = paged();
  prefill.seqlenQ = 4;
  prefill.mask = MaskMode::Causal;
  prefill.setDenseBSHD();
  EXPECT_TRUE(validateParams(prefill)) << validateParams(prefill).message();
  // Entries past a sequence's last page are never read: anything goes.
  AttentionParams tail = paged();
  tail.paged->blockTable[0 * 4 + 1] = -7;
  tail.paged->blockTable[1 * 4 + 0] = 1 << 30;
  EXPECT_TRUE(validateParams(tail)) << validateParams(tail).message();
  // Page sizes need not divide anything.
  AttentionParams odd = paged();
  odd.paged->pageSize = 17;
  odd.setDenseBSHD();
  EXPECT_TRUE(validateParams(odd)) << validateParams(odd).message();
}

TEST(DecodeParams, BadBlockTablesAreClearErrors) {
  AttentionParams p = paged();
  p.paged->blockTable[2 * 4 + 3] = 16; // sequence 2 uses all 4 pages
  expectError(p, {"block_table[2][3] = 16", "[0, num_pages = 16)"});

  p = paged();
  p.paged->blockTable[0] = -1;
  expectError(p, {"block_table[0][0] = -1"});

  p = paged();
  p.paged->blockTable.pop_back();
  expectError(p, {"block_table must have batch x max_pages_per_seq = 12",
                  "got 11"});

  p = paged();
  p.paged->blockTable.clear();
  expectError(p, {"block_table_host"});
}

TEST(DecodeParams, BadCacheLengthsAreClearErrors) {
  AttentionParams p = paged();
  p.keyLengths[1] = -1;
  expectError(p, {"key_lengths[1]", "got -1"});

  p = paged();
  p.keyLengths[2] = 65;
  expectError(p, {"key_lengths[2]", "[0, 64]", "got 65"});

  p = paged();
  p.keyLengths.clear();
  expectError(p, {"a paged KV cache needs key_lengths"});

  p = paged();
  p.keyLengths.pop_back();
  expectError(p, {"key_lengths must have batch = 3"});
}

TEST(DecodeParams, BadPageSizesAreClearErrors) {
  AttentionParams p = paged();
  p.paged->pageSize = 0;
  expectError(p, {"page_size", "got 0"});

  p = paged();
  p.paged->pageSize = kMaxPageSize + 1;
  expectError(p, {"page_size"});

  p = paged();
  p.paged->numPages = 0;
  expectError(p, {"num_pages"});

  p = paged();
  p.seqlenK = 65; // 4 pages of 16 rows hold 64 keys
  expectError(p, {"seqlen_k (65) must be at most max_pages_per_seq x "
                  "page_size (4 x 16 = 64)"});
}

TEST(DecodeParams, AppendChecks) {
  AttentionParams p = paged();
  p.newKeys = 1;
  p.keyLengths = {5, 0, 63};
  p.setDenseBSHD();
  EXPECT_TRUE(validateParams(p)) << validateParams(p).message();

  // The appended key must fit: cache length + new keys <= seqlen_k.
  p.keyLengths = {5, 0, 64};
  expectError(p, {"key_lengths[2]", "seqlen_k - new_keys"});

  // Two sequences appending to one cache row would race.
  p = paged();
  p.newKeys = 1;
  p.keyLengths = {0, 0, 0};
  p.paged->blockTable[1 * 4 + 0] = p.paged->blockTable[0];
  p.setDenseBSHD();
  expectError(p, {"same cache row", "would race"});

  // Appends need a paged cache.
  AttentionParams dense;
  dense.batch = 1;
  dense.headsQ = dense.headsKV = 1;
  dense.seqlenQ = 1;
  dense.seqlenK = 8;
  dense.headDimQK = dense.headDimV = 64;
  dense.newKeys = 2;
  dense.setDenseBSHD();
  expectError(dense, {"new_keys (2) needs a paged KV cache"});
}
