//===- test_reference_backward.cpp - The CPU backward oracle --------------===//
//
// The float64 backward against central finite differences of the float64
// forward's loss sum(dO * O), for every forward feature; the float32
// yardstick against it; checkBackward's verdicts (the 2x rule, poison,
// key padding) and the workspace layout.
//
//===----------------------------------------------------------------------===//
#include "flashjit/kernels/ReferenceBackward.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace flashjit;

namespace {

BackwardParams dense(int64_t b, int64_t hq, int64_t hkv, int64_t sq,
                     int64_t sk, int64_t dqk, int64_t dv,
                     MaskMode mask = MaskMode::None) {
  BackwardParams p;
  p.dtype = DType::BF16;
  p.mask = mask;
  p.batch = b;
  p.headsQ = hq;
  p.headsKV = hkv;
  p.seqlenQ = sq;
  p.seqlenK = sk;
  p.headDimQK = dqk;
  p.headDimV = dv;
  p.setDenseBSHD();
  return p;
}

/// A slice of random doubles (not rounded to any dtype: finite differences
/// need values they can move by a small step).
BackwardSlice randomSlice(const AttentionParams &p, int64_t sq, int64_t sk,
                          uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  BackwardSlice s;
  s.group = p.gqaGroup();
  s.seqQ = sq;
  s.seqK = s.keyRows = sk;
  auto fill = [&](std::vector<double> &v, int64_t n) {
    v.resize(n);
    for (double &x : v)
      x = normal(rng);
  };
  fill(s.q, s.group * sq * p.headDimQK);
  fill(s.dO, s.group * sq * p.headDimV);
  fill(s.k, sk * p.headDimQK);
  fill(s.v, sk * p.headDimV);
  if (p.bias == BiasMode::Tensor)
    fill(s.bias, s.group * sq * sk);
  if (p.bias == BiasMode::Alibi)
    for (int64_t g = 0; g < s.group; ++g)
      s.slopes.push_back(0.25 * (g + 1));
  return s;
}

/// Central differences of referenceLoss against `grad` for every element
/// of `values` (a member of `slice`).
void expectMatchesFiniteDifferences(const AttentionParams &p,
                                    BackwardSlice slice,
                                    std::vector<double> BackwardSlice::*values,
                                    const std::vector<double> &grad,
                                    const char *what) {
  ASSERT_EQ((slice.*values).size(), grad.size()) << what;
  const double eps = 1e-6;
  for (size_t at = 0; at < grad.size(); ++at) {
    const double saved = (slice.*values)[at];
    (slice.*values)[at] = saved + eps;
    const double up = referenceLoss(p, slice);
    (slice.*values)[at] = saved - eps;
    const double down = referenceLoss(p, slice);
    (slice.*values)[at] = saved;
    const double numeric = (up - down) / (2 * eps);
    EXPECT_NEAR(grad[at], numeric, 1e-6 * (1 + std::abs(numeric)))
        << what << "[" << at << "]";
  }
}

struct FeatureCase {
  const char *name;
  MaskMode mask;
  int64_t hq, hkv, sq, sk, dqk, dv;
  double softcap;
  BiasMode bias;
  int64_t windowLeft = kUnboundedWindow, windowRight = kUnboundedWindow;
};

class BackwardFiniteDifferences
    : public ::testing::TestWithParam<FeatureCase> {};

TEST_P(BackwardFiniteDifferences, GradientsMatchTheForwardsLoss) {
  const FeatureCase &c = GetParam();
  BackwardParams p = dense(1, c.hq, c.hkv, c.sq, c.sk, c.dqk, c.dv, c.mask);
  p.softcap = c.softcap;
  p.bias = c.bias;
  p.windowLeft = c.windowLeft;
  p.windowRight = c.windowRight;
  p.softmaxScale = 0.7;
  const BackwardSlice slice = randomSlice(p, c.sq, c.sk, 42);
  const Gradients g = referenceBackward(p, slice, RefPrecision::Float64);
  ASSERT_EQ(g.dQ.size(), slice.q.size());
  ASSERT_EQ(g.dK.size(), slice.k.size());
  ASSERT_EQ(g.dV.size(), slice.v.size());
  expectMatchesFiniteDifferences(p, slice, &BackwardSlice::q, g.dQ, "dq");
  expectMatchesFiniteDifferences(p, slice, &BackwardSlice::k, g.dK, "dk");
  expectMatchesFiniteDifferences(p, slice, &BackwardSlice::v, g.dV, "dv");
  if (c.bias == BiasMode::Tensor)
    expectMatchesFiniteDifferences(p, slice, &BackwardSlice::bias, g.dBias,
                                   "dbias");
  // Something to differentiate: not every gradient is zero.
  double norm = 0;
  for (double x : g.dQ)
    norm += std::abs(x);
  EXPECT_GT(norm, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Features, BackwardFiniteDifferences,
    ::testing::Values(
        FeatureCase{"plain", MaskMode::None, 1, 1, 5, 7, 4, 4, 0,
                    BiasMode::None},
        FeatureCase{"causal_sq_lt_sk", MaskMode::Causal, 1, 1, 4, 7, 3, 5, 0,
                    BiasMode::None},
        FeatureCase{"causal_sq_gt_sk", MaskMode::Causal, 1, 1, 7, 4, 3, 3, 0,
                    BiasMode::None},
        FeatureCase{"window", MaskMode::Window, 1, 1, 6, 6, 4, 2, 0,
                    BiasMode::None, 2, 1},
        FeatureCase{"window_left_only", MaskMode::Window, 1, 1, 5, 8, 3, 3, 0,
                    BiasMode::None, 1, kUnboundedWindow},
        FeatureCase{"gqa", MaskMode::None, 4, 1, 4, 5, 3, 3, 0,
                    BiasMode::None},
        FeatureCase{"gqa_causal_dv_ne_dqk", MaskMode::Causal, 2, 1, 5, 5, 6,
                    3, 0, BiasMode::None},
        FeatureCase{"softcap", MaskMode::None, 1, 1, 5, 6, 4, 4, 1.5,
                    BiasMode::None},
        FeatureCase{"bias_tensor", MaskMode::Causal, 2, 1, 4, 6, 3, 3, 0,
                    BiasMode::Tensor},
        FeatureCase{"alibi_softcap", MaskMode::None, 2, 2, 4, 5, 3, 4, 2.0,
                    BiasMode::Alibi},
        FeatureCase{"softcap_bias", MaskMode::Window, 1, 1, 6, 6, 3, 3, 1.0,
                    BiasMode::Tensor, 1, 2}),
    [](const ::testing::TestParamInfo<FeatureCase> &info) {
      return std::string(info.param.name);
    });

/// Host arrays of a backward problem, random bf16/fp16 values.
struct HostBackward {
  BackwardParams p;
  std::vector<uint16_t> q, k, v, bias, dO;
  std::vector<float> slopes;
  explicit HostBackward(BackwardParams params, uint64_t seed) : p(params) {
    q.assign(p.qElements(), 0);
    k.assign(p.kElements(), 0);
    v.assign(p.vElements(), 0);
    dO.assign(p.dOElements(), 0);
    fillNormal(q.data(), q.size(), p.dtype, seed);
    fillNormal(k.data(), k.size(), p.dtype, seed + 1);
    fillNormal(v.data(), v.size(), p.dtype, seed + 2);
    fillNormal(dO.data(), dO.size(), p.dtype, seed + 3);
    if (p.bias == BiasMode::Tensor) {
      bias.assign(p.biasElements(), 0);
      fillNormal(bias.data(), bias.size(), p.dtype, seed + 4);
    }
    for (int64_t h = 0; h < p.headsQ; ++h)
      slopes.push_back(0.5f / (h + 1));
  }
  HostInputs inputs() const {
    return {q.data(), k.data(), v.data(), bias.data(), slopes.data()};
  }
  /// The float64 gradients as 16-bit patterns (what a perfect kernel
  /// writes), poison elsewhere.
  struct Grads {
    std::vector<uint16_t> dQ, dK, dV, dBias;
  };
  Grads referenceGrads() const {
    Grads g;
    g.dQ.assign(p.dQElements(), kPoison16);
    g.dK.assign(p.dKElements(), kPoison16);
    g.dV.assign(p.dVElements(), kPoison16);
    if (p.biasGrad)
      g.dBias.assign(p.dBiasElements(), toBits(0.f, p.dtype));
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t hkv = 0; hkv < p.headsKV; ++hkv) {
        const BackwardSlice s = loadBackwardSlice(p, inputs(), dO.data(), b,
                                                  hkv);
        const Gradients r = referenceBackward(p, s, RefPrecision::Float64);
        auto bits = [&](double x) { return toBits(float(x), p.dtype); };
        for (int64_t gi = 0; gi < s.group; ++gi) {
          const int64_t h = hkv * s.group + gi;
          for (int64_t i = 0; i < s.seqQ; ++i) {
            for (int64_t d = 0; d < p.headDimQK; ++d)
              g.dQ[p.dQOffset(b, h, i) + d] =
                  bits(r.dQ[(gi * s.seqQ + i) * p.headDimQK + d]);
            if (p.biasGrad)
              for (int64_t j = 0; j < s.seqK; ++j)
                g.dBias[p.dBiasOffset(b, h, i, j)] =
                    bits(r.dBias[(gi * s.seqQ + i) * s.seqK + j]);
          }
        }
        for (int64_t j = 0; j < s.keyRows; ++j) {
          for (int64_t d = 0; d < p.headDimQK; ++d)
            g.dK[p.dKOffset(b, hkv, j) + d] = bits(r.dK[j * p.headDimQK + d]);
          for (int64_t d = 0; d < p.headDimV; ++d)
            g.dV[p.dVOffset(b, hkv, j) + d] = bits(r.dV[j * p.headDimV + d]);
        }
      }
    return g;
  }
  BackwardCheckResult check(const Grads &g) const {
    return checkBackward(p, inputs(), dO.data(), g.dQ.data(), g.dK.data(),
                         g.dV.data(), g.dBias.empty() ? nullptr : g.dBias.data());
  }
};

TEST(ReferenceBackward, Float32YardstickIsCloseToFloat64) {
  BackwardParams p = dense(1, 2, 1, 33, 47, 40, 24, MaskMode::Causal);
  p.softcap = 5;
  const HostBackward hb(p, 7);
  const BackwardSlice s = loadBackwardSlice(p, hb.inputs(), hb.dO.data(), 0, 0);
  const Gradients g64 = referenceBackward(p, s, RefPrecision::Float64);
  const Gradients g32 = referenceBackward(p, s, RefPrecision::Float32);
  auto relErr = [](const std::vector<double> &a, const std::vector<double> &b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      num += (a[i] - b[i]) * (a[i] - b[i]);
      den += b[i] * b[i];
    }
    return std::sqrt(num / den);
  };
  // bf16 rounding of P, dS and the gradients: about 2^-8 relative.
  for (auto [a, b, what] :
       {std::tuple{&g32.dQ, &g64.dQ, "dq"}, std::tuple{&g32.dK, &g64.dK, "dk"},
        std::tuple{&g32.dV, &g64.dV, "dv"}}) {
    const double err = relErr(*a, *b);
    EXPECT_LT(err, 2e-2) << what;
    EXPECT_GT(err, 1e-5) << what << ": the yardstick rounds like the GPU";
  }
}

TEST(ReferenceBackward, MaskedRowsAndUnseenKeysHaveZeroGradients) {
  // seqlen_q > seqlen_k, causal: the first sq - sk queries see no key.
  BackwardParams p = dense(1, 1, 1, 6, 3, 8, 8, MaskMode::Causal);
  const HostBackward hb(p, 3);
  const BackwardSlice s = loadBackwardSlice(p, hb.inputs(), hb.dO.data(), 0, 0);
  const Gradients g = referenceBackward(p, s, RefPrecision::Float64);
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t d = 0; d < 8; ++d)
      EXPECT_EQ(g.dQ[i * 8 + d], 0.0) << "row " << i;
  // A window right of every query: key 0 is seen by nobody.
  BackwardParams w = dense(1, 1, 1, 4, 4, 8, 8, MaskMode::Window);
  w.windowLeft = 0;
  w.windowRight = 0; // each query sees its own key only
  const HostBackward hw(w, 5);
  const BackwardSlice sw = loadBackwardSlice(w, hw.inputs(), hw.dO.data(), 0, 0);
  const Gradients gw = referenceBackward(w, sw, RefPrecision::Float64);
  // One key per row: P = 1, dS = P (dP - D) = 0, so dQ and dK vanish.
  for (double x : gw.dQ)
    EXPECT_NEAR(x, 0.0, 1e-12);
  for (double x : gw.dK)
    EXPECT_NEAR(x, 0.0, 1e-12);
}

TEST(ReferenceBackward, KeyPaddingAndVarlenSlices) {
  BackwardParams p = dense(2, 2, 1, 5, 6, 4, 4);
  p.keyLengths = {6, 2};
  const HostBackward hb(p, 11);
  const BackwardSlice s = loadBackwardSlice(p, hb.inputs(), hb.dO.data(), 1, 0);
  EXPECT_EQ(s.seqK, 2);
  EXPECT_EQ(s.keyRows, 6);
  const Gradients g = referenceBackward(p, s, RefPrecision::Float64);
  ASSERT_EQ(g.dK.size(), 6u * 4);
  for (int64_t j = 2; j < 6; ++j)
    for (int64_t d = 0; d < 4; ++d) {
      EXPECT_EQ(g.dK[j * 4 + d], 0.0);
      EXPECT_EQ(g.dV[j * 4 + d], 0.0);
    }

  BackwardParams v = dense(3, 2, 2, 4, 5, 4, 4);
  v.varlen = VarlenSeqs{{0, 4, 4, 7}, {0, 5, 6, 8}, 7, 8};
  v.setDenseBSHD();
  const HostBackward hv(v, 13);
  const BackwardSlice empty =
      loadBackwardSlice(v, hv.inputs(), hv.dO.data(), 1, 1);
  EXPECT_EQ(empty.seqQ, 0);
  EXPECT_EQ(empty.seqK, 1);
  const Gradients ge = referenceBackward(v, empty, RefPrecision::Float64);
  EXPECT_TRUE(ge.dQ.empty());
  for (double x : ge.dV)
    EXPECT_EQ(x, 0.0); // no query: nothing flows back
  // The whole problem checks out against itself.
  const auto grads = hv.referenceGrads();
  const BackwardCheckResult r = hv.check(grads);
  EXPECT_TRUE(r.pass) << r.summary();
}

TEST(ReferenceBackward, CheckAcceptsTheReferenceAndRejectsErrors) {
  BackwardParams p = dense(2, 4, 2, 17, 23, 24, 16, MaskMode::Causal);
  p.bias = BiasMode::Tensor;
  p.biasShape = {2, 4, {}};
  p.setDenseBias();
  p.biasGrad = true;
  const HostBackward hb(p, 21);
  auto grads = hb.referenceGrads();
  {
    const BackwardCheckResult r = hb.check(grads);
    EXPECT_TRUE(r.pass) << r.summary();
    EXPECT_TRUE(r.checkedDBias);
    EXPECT_EQ(r.slices, 4);
    EXPECT_GT(r.dQ.count, 0);
    EXPECT_NE(r.summary().find("PASS"), std::string::npos);
  }
  // One wrong element of dK (in a compared slice) fails the rule.
  {
    auto bad = grads;
    const int64_t at = p.dKOffset(1, 1, 5) + 3;
    const float was = fromBits(bad.dK[at], p.dtype);
    bad.dK[at] = toBits(was + 4 * (1 + std::abs(was)), p.dtype);
    const BackwardCheckResult r = hb.check(bad);
    EXPECT_FALSE(r.pass);
    EXPECT_NE(r.summary().find("dk"), std::string::npos);
  }
  // An unwritten element fails even in a slice that is only scanned.
  {
    auto bad = grads;
    bad.dV[p.dVOffset(0, 1, 0)] = kPoison16;
    const BackwardCheckResult r = checkBackward(
        p, hb.inputs(), hb.dO.data(), bad.dQ.data(), bad.dK.data(),
        bad.dV.data(), bad.dBias.data(), {{1, 0}});
    EXPECT_FALSE(r.pass);
    EXPECT_EQ(r.dV.unwritten, 1);
  }
  // dBias is checked where the bias is full and its gradient asked for.
  {
    auto bad = grads;
    bad.dBias[p.dBiasOffset(1, 3, 16, 22)] = toBits(3.0f, p.dtype);
    EXPECT_FALSE(hb.check(bad).pass);
  }
}

// One visible key: dS = P (dP - D) is exactly 0, so are dQ and dK, and the
// float32 yardstick (dP and D summed in the same order) gets 0 too. A kernel
// summing dP and D in different orders is off by float rounding of the terms
// (|dP| ~ sqrt(d)): the slack follows the terms, while an error at the
// dtype's resolution still fails.
TEST(ReferenceBackward, CancellingGradientsAreHeldToTheTermsRounding) {
  const BackwardParams p = dense(1, 2, 2, 1, 1, 128, 128, MaskMode::Causal);
  const HostBackward hb(p, 41);
  const auto grads = hb.referenceGrads();
  for (uint16_t x : grads.dQ)
    ASSERT_EQ(fromBits(x, p.dtype), 0.0f);
  auto rounded = grads;
  rounded.dQ[p.dQOffset(0, 1, 0) + 5] = toBits(7e-7f, p.dtype);
  rounded.dK[p.dKOffset(0, 0, 0) + 9] = toBits(-8e-7f, p.dtype);
  const BackwardCheckResult ok = hb.check(rounded);
  EXPECT_TRUE(ok.pass) << ok.summary();
  EXPECT_EQ(ok.dQBaseline.maxAbs, 0.0);
  auto wrong = grads;
  wrong.dQ[p.dQOffset(0, 1, 0) + 5] = toBits(1e-2f, p.dtype);
  const BackwardCheckResult bad = hb.check(wrong);
  EXPECT_FALSE(bad.pass) << bad.summary();
}

TEST(ReferenceBackward, KeyPaddingRowsMustBeZero) {
  BackwardParams p = dense(2, 2, 2, 8, 8, 16, 16);
  p.keyLengths = {8, 3};
  const HostBackward hb(p, 31);
  auto grads = hb.referenceGrads();
  EXPECT_TRUE(hb.check(grads).pass);
  grads.dK[p.dKOffset(1, 0, 6)] = toBits(0.5f, p.dtype);
  const BackwardCheckResult r = hb.check(grads);
  EXPECT_FALSE(r.pass) << r.summary();
}

TEST(BackwardParamsTest, ValidationNamesTheArgument) {
  BackwardParams p = dense(1, 2, 1, 8, 8, 16, 16);
  EXPECT_TRUE(validateBackwardParams(p).isOk());
  BackwardParams bad = p;
  bad.dQStrides.row = 8;
  Status s = validateBackwardParams(bad);
  ASSERT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("dq_row_stride"), std::string::npos)
      << s.message();
  bad = p;
  bad.dOStrides.row = 0; // a broadcast dO is fine: it is only read
  EXPECT_TRUE(validateBackwardParams(bad).isOk());
  bad = p;
  bad.biasGrad = true;
  s = validateBackwardParams(bad);
  ASSERT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("dbias"), std::string::npos) << s.message();
  bad.bias = BiasMode::Tensor;
  bad.biasShape = {1, 1, {}}; // broadcast over heads
  bad.setDenseBias();
  s = validateBackwardParams(bad);
  ASSERT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("full"), std::string::npos) << s.message();
  bad.dKStrides.head = -1;
  bad.biasGrad = false;
  s = validateBackwardParams(bad);
  ASSERT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("dk_head_stride"), std::string::npos)
      << s.message();
}

TEST(BackwardParamsTest, WorkspaceLayout) {
  BackwardParams p = dense(2, 3, 1, 10, 12, 33, 16);
  const BackwardWorkspace w = backwardWorkspace(p, 4);
  EXPECT_EQ(w.rows, 2 * 3 * 10);
  EXPECT_EQ(w.rowBatchStride, 30);
  EXPECT_EQ(w.rowHeadStride, 10);
  EXPECT_EQ(w.dqRowStride, 36);
  EXPECT_EQ(w.lseOffset % 4, 0);
  EXPECT_EQ(w.dOutSumOffset % 4, 0);
  EXPECT_EQ(w.dqAccumOffset % 4, 0);
  EXPECT_GE(w.dOutSumOffset, w.rows);
  EXPECT_GE(w.dqAccumOffset, w.dOutSumOffset + w.rows);
  EXPECT_EQ(w.floats, w.dqAccumOffset + 4 * w.rows * 36);
  BackwardParams v = p;
  v.varlen = VarlenSeqs{{0, 3, 9}, {0, 4, 12}, 9, 12};
  const BackwardWorkspace wv = backwardWorkspace(v, 1);
  EXPECT_EQ(wv.rowBatchStride, 0);
  EXPECT_EQ(wv.rowHeadStride, 9);
  EXPECT_EQ(wv.rows, 27);
}

} // namespace
