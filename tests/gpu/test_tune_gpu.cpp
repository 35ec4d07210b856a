//===- test_tune_gpu.cpp - Autotune a small problem, then use the result --===//
#include "GpuTestSupport.h"

#include "flashjit/runtime/Autotune.h"

#include <fstream>

using namespace flashjit;
using namespace flashjit::test;

namespace {
/// A runtime over its own cache directory (so its own tune database).
struct TunedRuntime {
  std::string dir;
  std::unique_ptr<Runtime> rt;
  explicit TunedRuntime(const std::string &directory, bool useTuned = true)
      : dir(directory) {
    RuntimeOptions options;
    options.cacheDirectory = dir;
    options.useTuned = useTuned;
    auto created = Runtime::create(options);
    if (created)
      rt = std::move(*created);
  }
};

std::string freshDirectory() {
  std::string tmpl =
      (std::filesystem::temp_directory_path() / "flashjit-tune-gpu-XXXXXX")
          .string();
  return ::mkdtemp(tmpl.data()) ? tmpl : std::string();
}
} // namespace

TEST(Autotune, SmallProblemIsTunedStoredAndUsed) {
  FLASHJIT_REQUIRE_GPU();
  const std::string dir = freshDirectory();
  ASSERT_FALSE(dir.empty());
  TunedRuntime tuner(dir);
  ASSERT_TRUE(tuner.rt);

  // Two workspaces of fresh inputs (the rotation), causal, d = 80.
  const ForwardProblem shape =
      denseProblem(DType::BF16, MaskMode::Causal, 2, 4, 2, 300, 300, 80, 80);
  ForwardRun a, b;
  FLASHJIT_ASSERT_OK(runForward(shape, 11, true, a));
  FLASHJIT_ASSERT_OK(runForward(shape, 12, true, b));

  AutotuneOptions options;
  options.warmup = 1;
  options.repeats = 3;
  options.knobs.blockN = {32, 64};
  options.knobs.stages = {1, 2};
  int compiled = 0, measured = 0; // the last count each phase reported
  options.progress = [&](std::string_view phase, int done, int total) {
    EXPECT_LE(done, total);
    int &last = phase == "compile" ? compiled : measured;
    EXPECT_EQ(done, last == 0 && done == 0 ? 0 : last + 1) << phase;
    last = done;
  };
  auto tuned = autotune(*tuner.rt, {a.problem, b.problem}, options);
  ASSERT_TRUE(tuned) << tuned.message();
  const AutotuneResult &r = *tuned;
  const int n = int(r.ranked.size());
  EXPECT_GT(n, 4);
  EXPECT_EQ(compiled, n);
  EXPECT_EQ(measured, n);
  EXPECT_EQ(r.workspaces, 2);
  // The baseline is the per-arch default and it ran.
  const AttentionSpec spec = specFor(a.problem);
  EXPECT_EQ(r.baseline.config, defaultTileConfig(spec, tuner.rt->arch()));
  ASSERT_TRUE(r.baseline.ok()) << r.baseline.failure;
  // Every candidate ran, matched the baseline and used no local memory;
  // ranked fastest first.
  for (int i = 0; i < n; ++i) {
    EXPECT_TRUE(r.ranked[i].ok())
        << canonicalText(r.ranked[i].config) << ": " << r.ranked[i].failure;
    EXPECT_EQ(r.ranked[i].localBytes, 0) << canonicalText(r.ranked[i].config);
    EXPECT_GT(r.ranked[i].ms, 0);
    EXPECT_LE(r.ranked[i].minMs, r.ranked[i].ms);
    if (i > 0) {
      EXPECT_LE(r.ranked[i - 1].ms, r.ranked[i].ms);
    }
  }
  EXPECT_EQ(r.storedIn, TuneDatabase::pathIn(dir));
  const TileConfig best = r.ranked.front().config;
  // The winner was held to the float64 reference before it was stored.
  EXPECT_EQ(r.oracleCheck.rfind(canonicalText(best) + ": ", 0), 0u)
      << r.oracleCheck;
  EXPECT_NE(r.oracleCheck.find("PASS"), std::string::npos) << r.oracleCheck;

  // The tuning runtime, and a new one over the same directory (a new
  // process), now plan this problem -- and any of its bucket -- with it.
  TunedRuntime later(dir);
  ASSERT_TRUE(later.rt);
  for (Runtime *rt : {tuner.rt.get(), later.rt.get()}) {
    auto plan = rt->planForward(a.problem);
    ASSERT_TRUE(plan) << plan.message();
    EXPECT_EQ(plan->source, ConfigSource::Tuned);
    EXPECT_EQ(plan->config, best);
  }
  ForwardProblem sameBucket = a.problem;
  sameBucket.seqlenQ = sameBucket.seqlenK = 290; // rounds to 512 too
  auto plan = later.rt->planForward(sameBucket);
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->source, ConfigSource::Tuned);
  // The tuned kernel is correct against the float64 reference (O and LSE
  // poisoned first: the last candidate's values are gone).
  const Status launched = launchOnce(*later.rt, a);
  ASSERT_TRUE(launched.isOk()) << launched.message();
  const CheckResult checked = check(a);
  EXPECT_TRUE(checked.pass) << checked.summary();

  // Another bucket, or tuned configs off: the default.
  ForwardProblem otherBucket = a.problem;
  otherBucket.seqlenQ = otherBucket.seqlenK = 100;
  plan = later.rt->planForward(otherBucket);
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->source, ConfigSource::Default);
  TunedRuntime off(dir, /*useTuned=*/false);
  plan = off.rt->planForward(a.problem);
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->source, ConfigSource::Default);

  // A corrupt database warns and falls back to the default.
  { std::ofstream(TuneDatabase::pathIn(dir)) << "{ truncated"; }
  TunedRuntime corrupt(dir);
  ::testing::internal::CaptureStderr();
  plan = corrupt.rt->planForward(a.problem);
  const std::string warning = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->source, ConfigSource::Default);
  EXPECT_NE(warning.find("tune database"), std::string::npos) << warning;
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

// A decode problem is tuned over the decode table's tiles and split counts
// (not prefill tiles); the stored winner, its split count included, is what
// a later runtime plans, and its output passes the float64 check.
TEST(Autotune, DecodeTunesTilesAndSplitCounts) {
  FLASHJIT_REQUIRE_GPU();
  if (const char *f = std::getenv("FLASHJIT_TEST_FAMILY");
      f && std::string(f) == "sm90")
    GTEST_SKIP() << "split-KV is the sm80 family's (FLASHJIT_TEST_FAMILY=sm90)";
  const std::string dir = freshDirectory();
  ASSERT_FALSE(dir.empty());
  TunedRuntime tuner(dir);
  ASSERT_TRUE(tuner.rt);
  // One query row of 16 heads over 2 K/V heads (8 rows a row block), 8k keys.
  const ForwardProblem shape =
      denseProblem(DType::BF16, MaskMode::None, 2, 16, 2, 1, 8192, 128, 128);
  ForwardRun a, b;
  FLASHJIT_ASSERT_OK(runForward(shape, 21, true, a));
  FLASHJIT_ASSERT_OK(runForward(shape, 22, true, b));
  AutotuneOptions options;
  options.warmup = 1;
  options.repeats = 3;
  options.decodeKnobs.blockN = {32, 64};
  options.decodeKnobs.stages = {2};
  options.decodeKnobs.splits = {1, 4, 16};
  auto tuned = autotune(*tuner.rt, {a.problem, b.problem}, options);
  ASSERT_TRUE(tuned) << tuned.message();
  const AutotuneResult &r = *tuned;
  EXPECT_EQ(r.ranked.size(), 1u + 2 * 3);
  const auto table = decodeTileConfig(specFor(a.problem), tuner.rt->arch(), 8);
  ASSERT_TRUE(table);
  EXPECT_EQ(r.baseline.config, *table);
  EXPECT_EQ(r.baseline.splits, 0);
  for (const CandidateResult &c : r.ranked) {
    EXPECT_TRUE(c.ok()) << canonicalText(c.config) << " splits " << c.splits
                        << ": " << c.failure;
    EXPECT_EQ(c.localBytes, 0) << canonicalText(c.config);
    if (c.splits > 0) {
      EXPECT_EQ(c.splitsRun, c.splits) << canonicalText(c.config);
    }
  }
  EXPECT_NE(r.oracleCheck.find("PASS"), std::string::npos) << r.oracleCheck;
  const CandidateResult &best = r.ranked.front();
  const auto stored = TuneDatabase(TuneDatabase::pathIn(dir)).lookup(r.key);
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->config, best.config);
  EXPECT_EQ(stored->splits, best.splits);
  TunedRuntime later(dir);
  ASSERT_TRUE(later.rt);
  auto plan = later.rt->planForward(a.problem);
  ASSERT_TRUE(plan) << plan.message();
  EXPECT_EQ(plan->source, ConfigSource::Tuned);
  EXPECT_EQ(plan->config, best.config);
  EXPECT_EQ(plan->numSplits, best.splitsRun);
  FLASHJIT_ASSERT_OK(launchOnce(*later.rt, a));
  const CheckResult checked = check(a);
  EXPECT_TRUE(checked.pass) << checked.summary();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

TEST(Autotune, WorkspacesMustBeOneProblem) {
  FLASHJIT_REQUIRE_GPU();
  const ForwardProblem shape =
      denseProblem(DType::F16, MaskMode::None, 1, 2, 2, 64, 64, 64, 64);
  ForwardRun a;
  FLASHJIT_ASSERT_OK(runForward(shape, 21, false, a));
  AutotuneOptions options;
  options.store = false;
  options.repeats = 2;
  options.knobs.blockM = {64};
  options.knobs.blockN = {32};
  options.knobs.stages = {1};
  auto tuned = autotune(runtime(), {a.problem}, options);
  ASSERT_TRUE(tuned) << tuned.message();
  EXPECT_TRUE(tuned->storedIn.empty());
  EXPECT_TRUE(tuned->ranked.front().ok()) << tuned->ranked.front().failure;
  // Checked against the float64 reference even when nothing is stored.
  EXPECT_NE(tuned->oracleCheck.find("PASS"), std::string::npos)
      << tuned->oracleCheck;
  EXPECT_FALSE(autotune(runtime(), std::vector<ForwardProblem>{}, options));
  // Workspaces whose sizes differ are not one problem: refused up front.
  ForwardProblem longer = a.problem;
  longer.seqlenK = 32;
  auto mixed = autotune(runtime(), {a.problem, longer}, options);
  ASSERT_FALSE(mixed);
  EXPECT_NE(mixed.message().find("workspace 1"), std::string::npos)
      << mixed.message();
}
