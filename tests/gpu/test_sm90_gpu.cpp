//===- test_sm90_gpu.cpp - The sm90 family's variants against the oracle --===//
//
// On sm_90a: every variant of the sm90 family (one to three consumer
// warpgroups, K/V tile lengths, one to three stages, intra-warpgroup
// overlap, pingpong, packed GQA groups) on problems that reach each of its paths: many K/V
// tiles (the mbarrier ring wraps around), causal and rectangular masks
// (tile skipping, the masked first tile), lengths that are no tile
// multiple, GQA, varlen and key lengths whose padding keys hold NaN (rows
// TMA loads and P V must not let through). The feature matrix
// (test_features_gpu.cpp) runs the family's defaults on every feature.
//
//===----------------------------------------------------------------------===//
#include "GpuTestSupport.h"

#include "flashjit/kernels/Forward.h"

#include <limits>
#include <sstream>

using namespace flashjit;
using namespace flashjit::test;

namespace {

/// The sm90 configs tried per problem: the default, then its variants.
std::vector<TileConfig> variants(const AttentionSpec &spec) {
  const TileConfig base = defaultTileConfig(spec, Arch::Sm90a, Family::Sm90);
  std::vector<TileConfig> out{base};
  auto add = [&](auto edit) {
    TileConfig c = base;
    edit(c);
    if (validate(c, spec, Arch::Sm90a))
      out.push_back(c);
  };
  add([](TileConfig &c) { c.overlap = true; });
  add([](TileConfig &c) { c.pingpong = true; });
  add([](TileConfig &c) { c.pingpong = c.overlap = true; });
  add([](TileConfig &c) { c.blockM = 64, c.warps = 4; });
  add([](TileConfig &c) { c.blockM = 192, c.warps = 12, c.blockN = 64; });
  add([](TileConfig &c) { c.stages = 1; });
  add([](TileConfig &c) { c.stages = 3, c.blockN = 64; });
  add([](TileConfig &c) { c.blockN = 176; });
  // GQA problems (groups 2 and 4): a K/V head's whole group in one CTA.
  add([](TileConfig &c) { c.packGqa = true; });
  return out;
}

/// K and V rows past a batch's key length become NaN: a kernel must never
/// let them into O (P is 0 there, but 0 * NaN is NaN).
void poisonPaddingKeys(ForwardRun &run) {
  const ForwardProblem &p = run.problem;
  const uint16_t nan = toBits(std::numeric_limits<float>::quiet_NaN(), p.dtype);
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.headsKV; ++h)
      for (int64_t j = p.keyLengths[b]; j < p.seqlenK; ++j) {
        for (int64_t c = 0; c < p.headDimQK; ++c)
          run.k[p.kOffset(b, h, j) + c] = nan;
        for (int64_t c = 0; c < p.headDimV; ++c)
          run.v[p.vOffset(b, h, j) + c] = nan;
      }
}

struct Sm90Problem {
  std::string name;
  ForwardProblem problem;
  std::function<void(ForwardRun &)> prepare;
};

std::vector<Sm90Problem> problems(int d, DType dtype) {
  std::vector<Sm90Problem> out;
  // Long rectangular causal: tile skipping, a masked first tile, rows past
  // the keys' diagonal.
  out.push_back({"causal_1000x1500",
                 denseProblem(dtype, MaskMode::Causal, 1, 2, 2, 1000, 1500, d, d),
                 nullptr});
  // 4096 keys: 16 to 64 tiles, the ring wraps around many times.
  out.push_back({"none_257x4096",
                 denseProblem(dtype, MaskMode::None, 1, 2, 2, 257, 4096, d, d),
                 nullptr});
  ForwardProblem gqa =
      denseProblem(dtype, MaskMode::Causal, 2, 8, 2, 300, 700, d, d);
  out.push_back({"gqa4_causal_300x700", gqa, nullptr});
  ForwardProblem window =
      denseProblem(dtype, MaskMode::Window, 1, 2, 2, 777, 777, d, d);
  window.windowLeft = 200, window.windowRight = 17;
  out.push_back({"window_777", window, nullptr});
  ForwardProblem klen =
      denseProblem(dtype, MaskMode::None, 3, 2, 2, 150, 600, d, d);
  klen.keyLengths = {600, 333, 1};
  out.push_back({"key_lengths_nan_padding", klen, poisonPaddingKeys});
  ForwardProblem varlen =
      denseProblem(dtype, MaskMode::Causal, 3, 4, 2, 1, 1, d, d);
  VarlenSeqs seqs;
  seqs.cuSeqlensQ = {0, 300, 300, 377};
  seqs.cuSeqlensK = {0, 500, 505, 634};
  seqs.totalQ = 377;
  seqs.totalK = 634;
  varlen.varlen = seqs;
  varlen.seqlenQ = 300;
  varlen.seqlenK = 500;
  varlen.setDenseBSHD();
  out.push_back({"varlen_causal", varlen, nullptr});
  return out;
}

/// Runs every variant of `pr` (variants()) against the float64 reference,
/// outputs poisoned. A variant that the assembler spills is refused (the
/// suite runs no kernel with local memory) and counted in `spilled`; the
/// default must run.
void runVariants(const Sm90Problem &pr, int &runs, int &spilled) {
  const AttentionSpec spec = specFor(pr.problem);
  const std::vector<TileConfig> configs = variants(spec);
  for (const TileConfig &c : configs) {
    ForwardProblem p = pr.problem;
    p.tile = c;
    const std::string what = pr.name + " " + kernelName(spec, c, Arch::Sm90a);
    const uint64_t seed = std::hash<std::string>()(what);
    ForwardRun run;
    Status s = runForward(p, seed, /*withLse=*/true, run, 0, pr.prepare);
    if (!s.isOk() && c != configs.front() &&
        s.message().find("local memory") != std::string::npos) {
      std::printf("  spills, not run: %s\n", what.c_str());
      ++spilled;
      continue;
    }
    ASSERT_TRUE(s.isOk()) << what << ": " << s.message();
    CheckResult r = check(run, /*maxSlices=*/6, seed);
    EXPECT_TRUE(r.pass) << what << "\n" << r.summary();
    EXPECT_EQ(r.out.unwritten, 0) << what;
    EXPECT_EQ(r.out.nonFinite, 0) << what;
    ++runs;
  }
}

} // namespace

TEST(Sm90Family, EveryVariantMatchesTheReference) {
  FLASHJIT_REQUIRE_GPU();
  if (runtime().arch() != Arch::Sm90a)
    GTEST_SKIP() << "the sm90 family needs sm_90a; this GPU is "
                 << toString(runtime().arch());
  int runs = 0, spilled = 0, i = 0;
  for (int d : {64, 72, 96, 128, 192, 256}) {
    const DType dtype = i++ % 2 ? DType::F16 : DType::BF16;
    std::vector<Sm90Problem> all = problems(d, dtype);
    // One head of one batch: the maps' heads and batches of extent 1.
    all.push_back({"one_head_one_batch",
                   denseProblem(dtype, MaskMode::None, 1, 1, 1, 333, 500, d, d),
                   nullptr});
    for (const Sm90Problem &pr : all) {
      const AttentionSpec spec = specFor(pr.problem);
      ASSERT_TRUE(supportsSm90(spec, Arch::Sm90a).isOk()) << pr.name;
      runVariants(pr, runs, spilled);
      if (::testing::Test::HasFatalFailure())
        return;
    }
  }
  // 6 head dims x 7 problems x at least the default and three variants.
  EXPECT_GE(runs, 6 * 7 * 4);
  std::printf("%d runs, %d variants refused for spills\n", runs, spilled);
}

/// Every element of q, k and v that no head owns (gaps between heads and
/// after the last) becomes NaN: a pad column the kernel failed to zero
/// would carry it into O.
void poisonGaps(ForwardRun &run) {
  const ForwardProblem &p = run.problem;
  const uint16_t nan = toBits(std::numeric_limits<float>::quiet_NaN(), p.dtype);
  auto poison = [&](std::vector<uint16_t> &data, int64_t heads, int64_t rows,
                    int64_t cols, auto offset) {
    std::vector<bool> owned(data.size(), false);
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c)
            owned[offset(b, h, r) + c] = true;
    for (size_t i = 0; i < data.size(); ++i)
      if (!owned[i])
        data[i] = nan;
  };
  poison(run.q, p.headsQ, p.seqlenQ, p.headDimQK,
         [&](int64_t b, int64_t h, int64_t r) { return p.qOffset(b, h, r); });
  poison(run.k, p.headsKV, p.seqlenK, p.headDimQK,
         [&](int64_t b, int64_t h, int64_t r) { return p.kOffset(b, h, r); });
  poison(run.v, p.headsKV, p.seqlenK, p.headDimV,
         [&](int64_t b, int64_t h, int64_t r) { return p.vOffset(b, h, r); });
}

/// Rows TMA cannot address (BSHD at d = 100, 36, 34 and 250: heads 200,
/// 72, 68 and 500 bytes apart; a box must start 16 bytes aligned): the
/// family, forced (the runtime's default there is still sm80), copies them
/// by cp.async from the producer warpgroup, 8 or 4 bytes at a time, zeros
/// past the head dim and the keys. Gaps between heads and keys past a
/// batch's length hold NaN: a pad column or row the copies failed to zero
/// would carry it into O.
TEST(Sm90Family, CopiedRowsMatchTheReference) {
  FLASHJIT_REQUIRE_GPU();
  if (runtime().arch() != Arch::Sm90a)
    GTEST_SKIP() << "the sm90 family needs sm_90a; this GPU is "
                 << toString(runtime().arch());
  std::vector<Sm90Problem> all = problems(100, DType::BF16);
  all.push_back({"d36_fp16_causal",
                 denseProblem(DType::F16, MaskMode::Causal, 2, 4, 4, 333, 555,
                              36, 36),
                 nullptr});
  all.push_back({"d34_gqa2",
                 denseProblem(DType::BF16, MaskMode::None, 1, 16, 8, 200, 1000,
                              34, 34),
                 nullptr});
  // Four boxes past 192 columns (one consumer warpgroup), and Dv != Dqk
  // with key lengths.
  all.push_back({"d250_fp16_8heads",
                 denseProblem(DType::F16, MaskMode::None, 1, 8, 8, 150, 333,
                              250, 250),
                 nullptr});
  ForwardProblem dv64 =
      denseProblem(DType::BF16, MaskMode::Causal, 3, 4, 2, 150, 600, 100, 64);
  dv64.keyLengths = {600, 333, 1};
  all.push_back({"d100_dv64_key_lengths_nan_padding", dv64, poisonPaddingKeys});
  // Heads 102 apart in rows of 208, the gaps NaN.
  ForwardProblem gaps =
      denseProblem(DType::BF16, MaskMode::Causal, 2, 2, 2, 300, 700, 100, 100);
  gaps.qStrides = {300 * 208, 102, 208};
  gaps.kStrides = gaps.vStrides = {700 * 208, 102, 208};
  all.push_back({"gaps_nan", gaps, poisonGaps});
  int runs = 0, spilled = 0;
  for (const Sm90Problem &pr : all) {
    const AttentionSpec spec = specFor(pr.problem);
    ASSERT_FALSE(rowsTmaAligned(spec)) << pr.name;
    ASSERT_TRUE(supportsSm90(spec, Arch::Sm90a).isOk()) << pr.name;
    ASSERT_FALSE(launchFacts(spec, variants(spec).front()).usesTma())
        << pr.name;
    runVariants(pr, runs, spilled);
    if (::testing::Test::HasFatalFailure())
      return;
  }
  EXPECT_GE(runs, 11 * 4);
  std::printf("%d runs, %d variants refused for spills\n", runs, spilled);
}

/// On sm_90a the runtime plans TMA-addressable problems with the sm90
/// family's default: 384 threads, three tensor maps.
TEST(Sm90Family, TheDefaultIsTheOneTheRuntimePicks) {
  FLASHJIT_REQUIRE_GPU();
  if (runtime().arch() != Arch::Sm90a)
    GTEST_SKIP() << "the sm90 family needs sm_90a; this GPU is "
                 << toString(runtime().arch());
  ForwardProblem p =
      denseProblem(DType::BF16, MaskMode::Causal, 2, 4, 4, 500, 500, 128, 128);
  const TileConfig expected = defaultTileConfig(specFor(p), Arch::Sm90a);
  EXPECT_EQ(expected.family, Family::Sm90);
  ForwardRun run;
  FLASHJIT_ASSERT_OK(runForward(p, 3, true, run));
  auto chosen = runtime().planForward(run.problem, /*fullKernel=*/true);
  ASSERT_TRUE(chosen.isOk()) << chosen.message();
  EXPECT_EQ(chosen->config, expected);
  EXPECT_EQ(chosen->launch.threadsPerBlock, 384);
  EXPECT_EQ(chosen->tensorMapCount, 3);
}
