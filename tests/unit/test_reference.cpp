//===- test_reference.cpp - The CPU oracle, conversions and the 2x rule ---===//
#include "flashjit/kernels/Reference.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

using namespace flashjit;

namespace {
const double kInf = std::numeric_limits<double>::infinity();

/// Builds a problem over host arrays filled from float values.
struct HostProblem {
  AttentionParams p;
  std::vector<uint16_t> q, k, v;

  explicit HostProblem(AttentionParams params) : p(params) {
    q.assign(p.qElements(), 0);
    k.assign(p.kElements(), 0);
    v.assign(p.vElements(), 0);
  }
  HostInputs inputs() const { return {q.data(), k.data(), v.data()}; }
  void randomise(uint64_t seed) {
    fillNormal(q.data(), q.size(), p.dtype, seed);
    fillNormal(k.data(), k.size(), p.dtype, seed + 1);
    fillNormal(v.data(), v.size(), p.dtype, seed + 2);
  }
};

AttentionParams dense(int64_t b, int64_t hq, int64_t hkv, int64_t sq,
                      int64_t sk, int64_t d, MaskMode mask = MaskMode::None,
                      DType dtype = DType::BF16) {
  AttentionParams p;
  p.dtype = dtype;
  p.mask = mask;
  p.batch = b;
  p.headsQ = hq;
  p.headsKV = hkv;
  p.seqlenQ = sq;
  p.seqlenK = sk;
  p.headDimQK = p.headDimV = d;
  p.setDenseBSHD();
  return p;
}

/// Output of the fp64 reference as 16-bit patterns in the params' o layout.
std::vector<uint16_t> referenceOutput(const HostProblem &hp,
                                      std::vector<float> *lse) {
  const AttentionParams &p = hp.p;
  std::vector<uint16_t> o(p.oElements(), kPoison16);
  if (lse)
    lse->assign(p.lseElements(), 0);
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.headsQ; ++h) {
      SliceOutput s =
          referenceForward(p, hp.inputs(), b, h, RefPrecision::Float64);
      for (int64_t i = 0; i < p.seqlenQ; ++i) {
        for (int64_t d = 0; d < p.headDimV; ++d)
          o[p.oStrides.offset(b, h, i) + d] =
              toBits(float(s.o[i * p.headDimV + d]), p.dtype);
        if (lse)
          (*lse)[b * p.lseBatchStride + h * p.lseHeadStride + i] =
              float(s.lse[i]);
      }
    }
  return o;
}
} // namespace

// ---- conversions ------------------------------------------------------------
TEST(Reference, HalfConversionKnownValues) {
  EXPECT_EQ(floatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(floatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(floatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(floatToHalf(65519.0f), 0x7bff); // below the midpoint to 2^16
  EXPECT_EQ(floatToHalf(65520.0f), 0x7c00); // tie rounds to even: infinity
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -24)), 0x0001); // smallest subnormal
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -25)), 0x0000); // tie to even: 0
  EXPECT_EQ(floatToHalf(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(floatToHalf(std::ldexp(3.0f, -25)), 0x0002); // tie 1.5 -> 2
  EXPECT_EQ(floatToHalf(std::ldexp(1.0f, -14)), 0x0400); // smallest normal
  // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: even is 1.
  EXPECT_EQ(floatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(floatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_TRUE(std::isnan(halfToFloat(floatToHalf(std::nanf("")))));
  EXPECT_EQ(halfToFloat(0x7c00), std::numeric_limits<float>::infinity());
}

TEST(Reference, Bf16ConversionKnownValues) {
  EXPECT_EQ(floatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(floatToBf16(-1.0f), 0xbf80);
  EXPECT_EQ(floatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80); // tie -> even
  EXPECT_EQ(floatToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(floatToBf16(std::numeric_limits<float>::max()), 0x7f80); // inf
  EXPECT_TRUE(std::isnan(bf16ToFloat(floatToBf16(std::nanf("")))));
}

TEST(Reference, EveryHalfAndBf16PatternRoundTrips) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const auto b = static_cast<uint16_t>(bits);
    const float h = halfToFloat(b), f = bf16ToFloat(b);
    if (!std::isnan(h)) {
      ASSERT_EQ(floatToHalf(h), b) << std::hex << bits;
    }
    if (!std::isnan(f)) {
      ASSERT_EQ(floatToBf16(f), b) << std::hex << bits;
    }
  }
}

TEST(Reference, FillNormalIsReproducibleAndNormal) {
  std::vector<uint16_t> a(1 << 18), b(1 << 18), c(1 << 18);
  fillNormal(a.data(), a.size(), DType::F16, 7);
  fillNormal(b.data(), b.size(), DType::F16, 7);
  fillNormal(c.data(), c.size(), DType::F16, 8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  double sum = 0, sumSq = 0;
  for (uint16_t x : a) {
    const double v = halfToFloat(x);
    sum += v;
    sumSq += v * v;
  }
  const double mean = sum / a.size(), var = sumSq / a.size() - mean * mean;
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(var, 1.0, 0.02);
}

// ---- reference forward ------------------------------------------------------
TEST(Reference, TinyCaseByHand) {
  // q = [1], K = [[0], [1]], V = [[2], [4]], scale 1: scores [0, 1],
  // p = [1, e] / (1 + e), o = (2 + 4e) / (1 + e), lse = log(1 + e).
  HostProblem hp(dense(1, 1, 1, 1, 2, 1));
  hp.p.softmaxScale = 1.0;
  hp.q = {toBits(1, DType::BF16)};
  hp.k = {toBits(0, DType::BF16), toBits(1, DType::BF16)};
  hp.v = {toBits(2, DType::BF16), toBits(4, DType::BF16)};
  const double e = std::exp(1.0);
  SliceOutput s =
      referenceForward(hp.p, hp.inputs(), 0, 0, RefPrecision::Float64);
  EXPECT_NEAR(s.o[0], (2 + 4 * e) / (1 + e), 1e-14);
  EXPECT_NEAR(s.lse[0], std::log(1 + e), 1e-14);
  SliceOutput f =
      referenceForward(hp.p, hp.inputs(), 0, 0, RefPrecision::Float32);
  EXPECT_NEAR(f.o[0], s.o[0], 0.02); // P and O rounded to bf16
  EXPECT_NEAR(f.lse[0], s.lse[0], 1e-6);
}

TEST(Reference, DefaultScaleIsInverseSqrtHeadDim) {
  AttentionParams p = dense(1, 1, 1, 1, 1, 64);
  EXPECT_DOUBLE_EQ(p.scale(), 0.125);
  p.softmaxScale = 0.5;
  EXPECT_DOUBLE_EQ(p.scale(), 0.5);
}

TEST(Reference, CausalIsBottomRightAligned) {
  // seqlen_q 2 < seqlen_k 3: row 0 sees keys 0..1, row 1 sees all three.
  HostProblem causal(dense(1, 1, 1, 2, 3, 4, MaskMode::Causal));
  causal.randomise(1);
  SliceOutput c =
      referenceForward(causal.p, causal.inputs(), 0, 0, RefPrecision::Float64);

  // Row 1 equals unmasked attention over all keys.
  HostProblem full = causal;
  full.p.mask = MaskMode::None;
  SliceOutput n =
      referenceForward(full.p, full.inputs(), 0, 0, RefPrecision::Float64);
  for (int d = 0; d < 4; ++d)
    EXPECT_DOUBLE_EQ(c.o[4 + d], n.o[4 + d]);
  EXPECT_DOUBLE_EQ(c.lse[1], n.lse[1]);

  // Row 0 equals unmasked attention over the first two keys.
  HostProblem two(dense(1, 1, 1, 2, 2, 4));
  two.q = causal.q;
  two.k.assign(causal.k.begin(), causal.k.begin() + 8);
  two.v.assign(causal.v.begin(), causal.v.begin() + 8);
  SliceOutput t =
      referenceForward(two.p, two.inputs(), 0, 0, RefPrecision::Float64);
  for (int d = 0; d < 4; ++d)
    EXPECT_NEAR(c.o[d], t.o[d], 1e-15);
  EXPECT_NEAR(c.lse[0], t.lse[0], 1e-15);
}

TEST(Reference, FullyMaskedRowsGiveZeroAndMinusInfinity) {
  // seqlen_q 3 > seqlen_k 1: rows 0 and 1 see no key, row 2 sees key 0.
  HostProblem hp(dense(1, 1, 1, 3, 1, 2, MaskMode::Causal));
  hp.randomise(2);
  for (auto precision : {RefPrecision::Float64, RefPrecision::Float32}) {
    SliceOutput s = referenceForward(hp.p, hp.inputs(), 0, 0, precision);
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(s.o[i * 2], 0.0);
      EXPECT_EQ(s.o[i * 2 + 1], 0.0);
      EXPECT_EQ(s.lse[i], -kInf);
    }
    // One visible key: the output is that key's value row exactly.
    EXPECT_EQ(s.o[4], bf16ToFloat(hp.v[0]));
    EXPECT_EQ(s.o[5], bf16ToFloat(hp.v[1]));
    EXPECT_TRUE(std::isfinite(s.lse[2]));
  }
}

TEST(Reference, GqaQueryHeadReadsItsGroupsKvHead) {
  // 4 query heads over 2 K/V heads: query head 3 uses K/V head 1.
  HostProblem gqa(dense(2, 4, 2, 5, 7, 8));
  gqa.randomise(3);
  HostProblem mha(dense(2, 4, 4, 5, 7, 8));
  mha.q = gqa.q;
  // Expand K/V: MHA head h copies GQA head h / 2.
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 4; ++h)
      for (int64_t j = 0; j < 7; ++j)
        for (int64_t d = 0; d < 8; ++d) {
          mha.k[mha.p.kStrides.offset(b, h, j) + d] =
              gqa.k[gqa.p.kStrides.offset(b, h / 2, j) + d];
          mha.v[mha.p.vStrides.offset(b, h, j) + d] =
              gqa.v[gqa.p.vStrides.offset(b, h / 2, j) + d];
        }
  for (int64_t h = 0; h < 4; ++h) {
    SliceOutput a =
        referenceForward(gqa.p, gqa.inputs(), 1, h, RefPrecision::Float64);
    SliceOutput b =
        referenceForward(mha.p, mha.inputs(), 1, h, RefPrecision::Float64);
    EXPECT_EQ(a.o, b.o) << "head " << h;
    EXPECT_EQ(a.lse, b.lse) << "head " << h;
  }
}

TEST(Reference, StridesAreHonoured) {
  // The same logical tensors in BSHD and in BHSD with padded rows.
  HostProblem bshd(dense(2, 3, 3, 4, 5, 6));
  bshd.randomise(4);
  AttentionParams p2 = bshd.p;
  p2.qStrides = {3 * 4 * 10, 4 * 10, 10}; // BHSD, rows padded to 10
  p2.kStrides = p2.vStrides = {3 * 5 * 10, 5 * 10, 10};
  p2.oStrides = p2.qStrides;
  HostProblem bhsd(p2);
  auto copy = [](const std::vector<uint16_t> &from, const Strides &fs,
                 std::vector<uint16_t> &to, const Strides &ts, int64_t rows) {
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t h = 0; h < 3; ++h)
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t d = 0; d < 6; ++d)
            to[ts.offset(b, h, r) + d] = from[fs.offset(b, h, r) + d];
  };
  copy(bshd.q, bshd.p.qStrides, bhsd.q, p2.qStrides, 4);
  copy(bshd.k, bshd.p.kStrides, bhsd.k, p2.kStrides, 5);
  copy(bshd.v, bshd.p.vStrides, bhsd.v, p2.vStrides, 5);
  for (int64_t h = 0; h < 3; ++h) {
    SliceOutput a =
        referenceForward(bshd.p, bshd.inputs(), 1, h, RefPrecision::Float64);
    SliceOutput b =
        referenceForward(bhsd.p, bhsd.inputs(), 1, h, RefPrecision::Float64);
    EXPECT_EQ(a.o, b.o);
  }
}

TEST(Reference, VisiblePairs) {
  EXPECT_EQ(visiblePairs(MaskMode::None, 3, 5), 15);
  EXPECT_EQ(visiblePairs(MaskMode::Causal, 4, 4), 10);
  EXPECT_EQ(visiblePairs(MaskMode::Causal, 2, 4), 3 + 4);
  EXPECT_EQ(visiblePairs(MaskMode::Causal, 4, 2), 0 + 0 + 1 + 2);
}

// ---- comparison -------------------------------------------------------------
TEST(Reference, CheckPassesTheRoundedReferenceAndCountsEverything) {
  HostProblem hp(dense(2, 4, 2, 33, 47, 24, MaskMode::Causal, DType::F16));
  hp.randomise(5);
  std::vector<float> lse;
  std::vector<uint16_t> o = referenceOutput(hp, &lse);
  CheckResult r = checkForward(hp.p, hp.inputs(), o.data(), lse.data());
  EXPECT_TRUE(r.pass) << r.summary();
  EXPECT_EQ(r.slices, 8);
  EXPECT_EQ(r.out.count, 2 * 4 * 33 * 24);
  EXPECT_EQ(r.out.unwritten, 0);
  EXPECT_TRUE(r.checkedLse);
  EXPECT_GT(r.outBaseline.maxAbs, 0.0);
  EXPECT_NE(r.summary().find("PASS"), std::string::npos);
}

TEST(Reference, CheckFailsOnUnwrittenElements) {
  HostProblem hp(dense(1, 2, 2, 16, 16, 8));
  hp.randomise(6);
  std::vector<uint16_t> o = referenceOutput(hp, nullptr);
  o[hp.p.oStrides.offset(0, 1, 15) + 7] = kPoison16;
  CheckResult r = checkForward(hp.p, hp.inputs(), o.data(), nullptr);
  EXPECT_FALSE(r.pass);
  EXPECT_EQ(r.out.unwritten, 1);
  EXPECT_NE(r.summary().find("UNWRITTEN=1"), std::string::npos) << r.summary();
}

TEST(Reference, CheckFailsOnNanAndOnLargeErrors) {
  HostProblem hp(dense(1, 1, 1, 16, 16, 8));
  hp.randomise(7);
  std::vector<uint16_t> o = referenceOutput(hp, nullptr);
  std::vector<uint16_t> nan = o;
  nan[3] = 0x7fc0; // canonical bf16 NaN: written, but not finite
  CheckResult r = checkForward(hp.p, hp.inputs(), nan.data(), nullptr);
  EXPECT_FALSE(r.pass);
  EXPECT_EQ(r.out.nonFinite, 1);

  std::vector<uint16_t> off = o;
  off[5] = toBits(bf16ToFloat(off[5]) + 0.25f, DType::BF16);
  r = checkForward(hp.p, hp.inputs(), off.data(), nullptr);
  EXPECT_FALSE(r.pass) << r.summary();
  EXPECT_GE(r.out.maxAbs, 0.2);
}

TEST(Reference, CheckHoldsLseToTheRuleAndAcceptsMaskedRows) {
  HostProblem hp(dense(1, 1, 1, 4, 2, 8, MaskMode::Causal));
  hp.randomise(8);
  std::vector<float> lse;
  std::vector<uint16_t> o = referenceOutput(hp, &lse);
  ASSERT_EQ(lse[0], -std::numeric_limits<float>::infinity()); // masked row
  CheckResult r = checkForward(hp.p, hp.inputs(), o.data(), lse.data());
  EXPECT_TRUE(r.pass) << r.summary();

  lse[0] = 0.0f; // a masked row must stay -inf
  r = checkForward(hp.p, hp.inputs(), o.data(), lse.data());
  EXPECT_FALSE(r.pass);
  lse[0] = -std::numeric_limits<float>::infinity();
  lse[3] += 0.01f;
  r = checkForward(hp.p, hp.inputs(), o.data(), lse.data());
  EXPECT_FALSE(r.pass) << r.summary();
}

TEST(Reference, SampleSlices) {
  AttentionParams p = dense(4, 8, 8, 1, 1, 8);
  auto all = sampleSlices(p, 100, 0);
  EXPECT_EQ(all.size(), 32u);
  auto some = sampleSlices(p, 5, 1);
  ASSERT_EQ(some.size(), 5u);
  EXPECT_EQ(some.front(), std::make_pair(int64_t(0), int64_t(0)));
  EXPECT_EQ(some.back(), std::make_pair(int64_t(3), int64_t(7)));
  for (size_t i = 1; i < some.size(); ++i)
    EXPECT_LT(some[i - 1], some[i]);
}

TEST(Reference, CheckScansSlicesItDoesNotRecompute) {
  HostProblem hp(dense(2, 3, 3, 8, 4, 8, MaskMode::Causal));
  hp.randomise(9);
  std::vector<float> lse;
  std::vector<uint16_t> o = referenceOutput(hp, &lse);
  const std::vector<std::pair<int64_t, int64_t>> only = {{0, 0}};
  CheckResult r = checkForward(hp.p, hp.inputs(), o.data(), lse.data(), only);
  EXPECT_TRUE(r.pass) << r.summary();
  EXPECT_EQ(r.slices, 1);

  o[hp.p.oStrides.offset(1, 2, 7) + 1] = kPoison16; // outside the sample
  r = checkForward(hp.p, hp.inputs(), o.data(), lse.data(), only);
  EXPECT_FALSE(r.pass);
  EXPECT_EQ(r.out.unwritten, 1);

  o = referenceOutput(hp, &lse);
  lse[1 * hp.p.lseBatchStride + 1 * hp.p.lseHeadStride + 0] =
      1.0f; // masked row
  r = checkForward(hp.p, hp.inputs(), o.data(), lse.data(), only);
  EXPECT_FALSE(r.pass);
  EXPECT_EQ(r.lse.nonFinite, 1);
}
