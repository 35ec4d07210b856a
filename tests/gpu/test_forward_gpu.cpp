//===- test_forward_gpu.cpp - Forward correctness against the fp64 oracle -===//
//
// The matrix: head dims {1, 8, 33, 64, 72, 80, 96, 100, 128, 160,
// 192, 256} x {fp16, bf16} x {none, causal}, each on one (seqlen_q,
// seqlen_k) pair taken in turn from a list with equal and unequal lengths,
// with batch and heads > 1 (MHA and GQA alternate), plus a few long
// sequences checked on sampled (batch, head) slices. Every run gets fresh
// random inputs and a poisoned output; the check demands every element
// written and the 2x rule for O and LSE.
//
//===----------------------------------------------------------------------===//
#include "GpuTestSupport.h"

#include "flashjit/kernels/SearchSpace.h"

#include <sstream>

using namespace flashjit;
using namespace flashjit::test;

namespace {
struct Case {
  DType dtype;
  MaskMode mask;
  int64_t batch, headsQ, headsKV, seqlenQ, seqlenK, headDimQK, headDimV;
  bool lse;
  int maxSlices; ///< slices recomputed on the CPU (the rest are scanned)

  std::string name() const {
    std::ostringstream os;
    os << toString(dtype) << "_" << toString(mask) << "_b" << batch << "_h"
       << headsQ << "x" << headsKV << "_s" << seqlenQ << "x" << seqlenK << "_d"
       << headDimQK;
    if (headDimV != headDimQK)
      os << "v" << headDimV;
    if (!lse)
      os << "_nolse";
    return os.str();
  }
};

std::vector<Case> matrix() {
  const int headDims[] = {1, 8, 33, 64, 72, 80, 96, 100, 128, 160, 192, 256};
  const std::pair<int64_t, int64_t> seqlens[] = {
      {1, 1},       {17, 17},  {128, 128}, {17, 128},   {128, 17},
      {1000, 1000}, {1, 1000}, {1000, 17}, {128, 1000}, {200, 1}};
  std::vector<Case> cases;
  int i = 0;
  for (int d : headDims)
    for (DType dtype : {DType::F16, DType::BF16})
      for (MaskMode mask : {MaskMode::None, MaskMode::Causal}) {
        auto [sq, sk] = seqlens[i % std::size(seqlens)];
        const bool gqa = i % 2 == 1;
        const bool big = sq * sk >= 100000;
        cases.push_back({dtype, mask, 2, gqa ? 4 : 3, gqa ? 2 : 3, sq, sk, d, d,
                         /*lse=*/i % 5 != 4, big ? 3 : 1 << 20});
        ++i;
      }
  return cases;
}

std::vector<Case> longCases() {
  return {
      {DType::BF16, MaskMode::Causal, 1, 2, 2, 4096, 4096, 64, 64, true, 2},
      {DType::BF16, MaskMode::None, 1, 2, 2, 4096, 4096, 128, 128, true, 2},
      {DType::F16, MaskMode::Causal, 1, 4, 1, 4096, 4096, 256, 256, true, 2},
      {DType::BF16, MaskMode::Causal, 2, 4, 4, 1000, 4096, 80, 80, true, 2},
      {DType::F16, MaskMode::Causal, 1, 2, 2, 4096, 1000, 100, 100, true, 2},
      {DType::BF16, MaskMode::None, 1, 2, 2, 4096, 17, 160, 160, false, 2},
      // Causal CTAs run longest first in chunks of 8 heads here (32 Ki keys of
      // K/V per chunk over 4096 keys); 21 heads make the last chunk of each
      // batch take the remainder (13).
      {DType::BF16, MaskMode::Causal, 2, 21, 21, 1000, 4096, 128, 128, true, 3},
      // Different head dims for Q/K and V.
      {DType::BF16, MaskMode::Causal, 2, 4, 2, 333, 777, 192, 128, true, 4},
      {DType::F16, MaskMode::None, 2, 3, 3, 128, 250, 64, 33, true, 1 << 20},
  };
}

class Forward : public ::testing::TestWithParam<Case> {};

TEST_P(Forward, MatchesReferenceByTheTwoXRule) {
  FLASHJIT_REQUIRE_GPU();
  const Case &c = GetParam();
  ForwardProblem p =
      denseProblem(c.dtype, c.mask, c.batch, c.headsQ, c.headsKV, c.seqlenQ,
                   c.seqlenK, c.headDimQK, c.headDimV);
  const uint64_t seed = std::hash<std::string>()(c.name()); // fresh per case
  ForwardRun run;
  Status s = runForward(p, seed, c.lse, run);
  ASSERT_TRUE(s.isOk()) << s.message();
  CheckResult r = check(run, c.maxSlices, seed);
  EXPECT_TRUE(r.pass) << c.name() << "\n" << r.summary();
  EXPECT_EQ(r.out.unwritten, 0);
  if (c.lse) {
    EXPECT_TRUE(r.checkedLse);
    EXPECT_EQ(r.lse.unwritten, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Matrix, Forward, ::testing::ValuesIn(matrix()),
                         [](const auto &info) { return info.param.name(); });
INSTANTIATE_TEST_SUITE_P(Long, Forward, ::testing::ValuesIn(longCases()),
                         [](const auto &info) { return info.param.name(); });

/// Layouts other than dense BSHD, and starts that are not 16-byte aligned:
/// the runtime must pick a narrower alignment and stay correct.
struct LayoutCase {
  const char *name;
  int64_t shiftElems; ///< tensors start this many elements past aligned
  bool bhsd;
  int64_t rowPad; ///< extra elements per row
  int expectAlign;
};

class Layout : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(Layout, IsHonouredAndAlignmentDetected) {
  FLASHJIT_REQUIRE_GPU();
  const LayoutCase &c = GetParam();
  const int64_t b = 2, hq = 4, hkv = 2, sq = 77, sk = 130, d = 64;
  ForwardProblem p =
      denseProblem(DType::BF16, MaskMode::Causal, b, hq, hkv, sq, sk, d, d);
  const int64_t row = d + c.rowPad;
  auto strides = [&](int64_t heads, int64_t seqlen) {
    return c.bhsd ? Strides{heads * seqlen * row, seqlen * row, row}
                  : Strides{seqlen * heads * row, row, heads * row};
  };
  p.qStrides = p.oStrides = strides(hq, sq);
  p.kStrides = p.vStrides = strides(hkv, sk);
  ForwardRun run;
  Status s = runForward(p, 1234 + c.shiftElems, true, run, c.shiftElems);
  ASSERT_TRUE(s.isOk()) << s.message();
  EXPECT_EQ(specFor(run.problem).globalAlignElems, c.expectAlign);
  CheckResult r = check(run);
  EXPECT_TRUE(r.pass) << r.summary();
  // Elements between the rows of O are not the kernel's: runForward checked
  // that they (and the guards around O) are still poison.
}

INSTANTIATE_TEST_SUITE_P(
    Forward, Layout,
    ::testing::Values(LayoutCase{"bhsd", 0, true, 0, 8},
                      LayoutCase{"bshd_padded_rows", 0, false, 8, 8},
                      LayoutCase{"shift4", 4, false, 0, 4},
                      LayoutCase{"shift2_pad2", 2, true, 2, 2},
                      LayoutCase{"shift1", 1, false, 0, 1},
                      LayoutCase{"odd_row_pad", 0, true, 3, 1}),
    [](const auto &info) { return std::string(info.param.name); });

/// Every tile config the autotuner may pick (the search space, not just the
/// defaults) on a shape whose lengths are no tile multiple: bottom-right
/// causal with seqlen_q < seqlen_k, head dims with and without padding.
struct ConfigCase {
  DType dtype;
  MaskMode mask;
  int headDim;
  std::string name() const {
    std::ostringstream os;
    os << toString(dtype) << "_" << toString(mask) << "_d" << headDim;
    return os.str();
  }
};

class EveryCandidate : public ::testing::TestWithParam<ConfigCase> {};

TEST_P(EveryCandidate, MatchesReference) {
  FLASHJIT_REQUIRE_GPU();
  const ConfigCase &c = GetParam();
  ForwardProblem p = denseProblem(c.dtype, c.mask, 1, 2, 2, 333, 777,
                                  c.headDim, c.headDim);
  const SearchSpace space = forwardSearchSpace(specFor(p), runtime().arch());
  ASSERT_GT(space.candidates.size(), 20u);
  for (const TileConfig &tile : space.candidates) {
    p.tile = tile;
    const std::string what = c.name() + " " + canonicalText(tile);
    const uint64_t seed = std::hash<std::string>()(what);
    ForwardRun run;
    Status s = runForward(p, seed, /*withLse=*/true, run);
    ASSERT_TRUE(s.isOk()) << what << ": " << s.message();
    CheckResult r = check(run, 1 << 20, seed);
    EXPECT_TRUE(r.pass) << what << "\n" << r.summary();
    EXPECT_EQ(r.out.unwritten, 0) << what;
    EXPECT_EQ(r.lse.unwritten, 0) << what;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Search, EveryCandidate,
    ::testing::Values(ConfigCase{DType::BF16, MaskMode::Causal, 64},
                      ConfigCase{DType::F16, MaskMode::Causal, 100},
                      ConfigCase{DType::BF16, MaskMode::None, 128}),
    [](const auto &info) { return info.param.name(); });

TEST(ForwardErrors, BadTileIsRejectedWithItsName) {
  FLASHJIT_REQUIRE_GPU();
  ForwardProblem p =
      denseProblem(DType::BF16, MaskMode::None, 1, 1, 1, 16, 16, 64, 64);
  ForwardRun run;
  p.tile = TileConfig{48, 64, 4, 2}; // block_m not a multiple of 16 * warps
  Status s = runForward(p, 1, false, run);
  ASSERT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("block_m"), std::string::npos) << s.message();
}

} // namespace
