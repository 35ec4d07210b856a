//===- test_runtime_gpu.cpp - Caches, threads, latency, C API on a GPU ---===//
#include "GpuTestSupport.h"

#include "flashjit/flashjit.h"
#include "flashjit/runtime/DiskCache.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

using namespace flashjit;
using namespace flashjit::test;

namespace {
double msSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - start)
      .count();
}
} // namespace

TEST(Runtime, DeviceFacts) {
  FLASHJIT_REQUIRE_GPU();
  const DeviceInfo &d = runtime().device();
  EXPECT_FALSE(d.name.empty());
  EXPECT_GT(d.smCount, 0);
  EXPECT_GE(d.maxSharedMemPerBlockOptin, 48 * 1024);
  EXPECT_GT(runtime().driverVersion(), 11000);
  std::printf("device: %s cc %d.%d (%s), %d SMs, %d B smem opt-in, driver %s\n",
              d.name.c_str(), d.ccMajor, d.ccMinor,
              std::string(toString(runtime().arch())).c_str(), d.smCount,
              d.maxSharedMemPerBlockOptin,
              formatCudaVersion(runtime().driverVersion()).c_str());
}

TEST(Runtime, NewBatchOrSeqlenDoesNotRecompile) {
  FLASHJIT_REQUIRE_GPU();
  Runtime &rt = runtime();
  auto problem = [](int64_t batch, int64_t sq, int64_t sk) {
    return denseProblem(DType::F16, MaskMode::Causal, batch, 4, 2, sq, sk, 72,
                        72);
  };
  ForwardRun first;
  FLASHJIT_ASSERT_OK(runForward(problem(1, 64, 64), 1, true, first));
  // A cold miss's full kernel, compiling behind its quick form, counts once
  // it is in.
  rt.finishCompiles();
  const CacheStats before = rt.cacheStats();
  // (Past 64 rows per K/V group: not decode-like, whose table is apart.)
  for (auto [batch, sq, sk] : {std::tuple{3, 200, 200}, std::tuple{2, 33, 999},
                               std::tuple{5, 513, 77}}) {
    ForwardRun run;
    Status s = runForward(problem(batch, sq, sk), batch, true, run);
    ASSERT_TRUE(s.isOk()) << s.message();
    CheckResult r = check(run);
    EXPECT_TRUE(r.pass) << r.summary();
  }
  const CacheStats after = rt.cacheStats();
  EXPECT_EQ(after.compiles, before.compiles);
  EXPECT_EQ(after.diskHits, before.diskHits);
  EXPECT_EQ(after.memoryHits, before.memoryHits + 3);
}

TEST(Runtime, TwoThreadsAskingForOneNewKernelCompileItOnce) {
  FLASHJIT_REQUIRE_GPU();
  Runtime &rt = runtime();
  ForwardProblem p =
      denseProblem(DType::BF16, MaskMode::None, 1, 2, 2, 100, 100, 40, 40);
  ForwardRun run; // device buffers, through the default tile
  FLASHJIT_ASSERT_OK(runForward(p, 5, false, run));
  ForwardProblem raced = run.problem;
  raced.tile = TileConfig{64, 32, 4, 1}; // a specialisation no other test uses
  rt.finishCompiles();                   // the default's, behind a quick form
  const CacheStats before = rt.cacheStats();
  Status results[2];
  std::thread threads[2];
  for (int t = 0; t < 2; ++t)
    threads[t] = std::thread([&, t] {
      auto plan = rt.planForward(raced);
      results[t] = plan ? Status::ok() : plan.status();
    });
  for (auto &t : threads)
    t.join();
  for (const Status &s : results)
    EXPECT_TRUE(s.isOk()) << s.message();
  const CacheStats after = rt.cacheStats();
  // Compiled once, or loaded once where $FLASHJIT_TEST_CACHE_DIR kept it.
  EXPECT_EQ(after.compiles + after.diskHits,
            before.compiles + before.diskHits + 1);
  EXPECT_EQ(after.memoryHits, before.memoryHits + 1);
}

TEST(Runtime, MemoryHitIsFast) {
  FLASHJIT_REQUIRE_GPU();
  Runtime &rt = runtime();
  ForwardRun run;
  ForwardProblem p =
      denseProblem(DType::BF16, MaskMode::Causal, 2, 8, 8, 256, 256, 128, 128);
  FLASHJIT_ASSERT_OK(runForward(p, 9, true, run));
  constexpr int kIters = 20000;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kIters; ++i)
    ASSERT_TRUE(rt.planForward(run.problem));
  const double us = msSince(start) * 1000 / kIters;
  std::printf("memory hit (validate + specialise + lookup): %.2f us\n", us);
  RecordProperty("memory_hit_us", std::to_string(us));
  EXPECT_LT(us, 5.0) << "goal: a memory hit under 5 us";
}

TEST(Runtime, DiskHitAfterDroppingTheMemoryCache) {
  FLASHJIT_REQUIRE_GPU();
  Runtime &rt = runtime();
  ForwardProblem p =
      denseProblem(DType::F16, MaskMode::None, 1, 2, 2, 300, 300, 96, 96);
  ForwardRun run;
  FLASHJIT_ASSERT_OK(runForward(p, 11, true, run));
  rt.finishCompiles();   // the full kernel on disk, not only its quick form
  rt.clearMemoryCache(); // as a new process would start
  const CacheStats before = rt.cacheStats();
  const auto start = std::chrono::steady_clock::now();
  auto plan = rt.planForward(run.problem);
  const double ms = msSince(start);
  ASSERT_TRUE(plan) << plan.message();
  EXPECT_EQ(plan->kernel->source, LoadedKernel::Source::Disk);
  const CacheStats after = rt.cacheStats();
  EXPECT_EQ(after.diskHits, before.diskHits + 1);
  EXPECT_EQ(after.compiles, before.compiles);
  // Nothing was generated or JIT-compiled for it.
  EXPECT_EQ(after.generateMs, before.generateMs);
  EXPECT_EQ(after.jitMs, before.jitMs);
  std::printf("disk hit (read + verify + cuModuleLoadData): %.2f ms\n", ms);
  RecordProperty("disk_hit_ms", std::to_string(ms));
  EXPECT_LT(ms, 5.0) << "goal: a disk hit under 5 ms";
  // And the reloaded kernel still computes the right thing.
  ForwardRun again;
  FLASHJIT_ASSERT_OK(runForward(p, 12, true, again));
  CheckResult r = check(again);
  EXPECT_TRUE(r.pass) << r.summary();
}

TEST(Runtime, CorruptDiskEntryIsRebuiltNotUsed) {
  FLASHJIT_REQUIRE_GPU();
  Runtime &rt = runtime();
  ForwardProblem p =
      denseProblem(DType::BF16, MaskMode::None, 1, 1, 1, 64, 64, 56, 56);
  ForwardRun run;
  FLASHJIT_ASSERT_OK(runForward(p, 13, false, run));
  rt.finishCompiles(); // the full kernel on disk, not only its quick form
  // Corrupt the cubin of that entry on disk, then force a reload.
  auto plan = rt.planForward(run.problem);
  ASSERT_TRUE(plan) << plan.message();
  ASSERT_FALSE(rt.cacheDirectory().empty());
  DiskCache disk(rt.cacheDirectory());
  auto entries = disk.list();
  ASSERT_TRUE(entries);
  std::string path;
  for (const auto &e : *entries)
    if (e.name.rfind(plan->kernel->name + "-", 0) == 0)
      path = e.path;
  ASSERT_FALSE(path.empty());
  std::filesystem::resize_file(path + "/kernel.cubin", 64);
  rt.clearMemoryCache();
  const CacheStats before = rt.cacheStats();
  testing::internal::CaptureStderr();
  auto replanned = rt.planForward(run.problem);
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(replanned) << replanned.message();
  EXPECT_NE(err.find("corrupt"), std::string::npos) << err;
  const CacheStats after = rt.cacheStats();
  EXPECT_EQ(after.compiles, before.compiles + 1);
  // The rebuild's time is split between generation and the driver's JIT.
  EXPECT_GT(after.generateMs, before.generateMs);
  EXPECT_GT(after.jitMs, before.jitMs);
  ForwardRun again;
  FLASHJIT_ASSERT_OK(runForward(p, 14, false, again));
  EXPECT_TRUE(check(again).pass);
}

/// A cold miss launches the quick form at once and the full kernel once it
/// is loaded: bitwise the same results, and the full kernel on disk for the
/// next process. Explicit tiles, and quickFirst off, get the full kernel.
TEST(Runtime, ColdMissRunsTheQuickFormUntilTheFullKernelLoads) {
  FLASHJIT_REQUIRE_GPU();
  const test_support::TempDir tmp("flashjit-quick");
  const std::string dir = tmp.path().string();
  ASSERT_FALSE(dir.empty());
  // Inputs, buffers and the full kernel's output, through the suite's
  // runtime (the same primary context).
  // The sm80 family's default (quick forms are its own), named explicitly
  // for the suite's runtime, then left to the runtimes under test.
  ForwardProblem p =
      denseProblem(DType::BF16, MaskMode::Causal, 2, 3, 3, 333, 300, 88, 88);
  p.tile = defaultTileConfig(specFor(p), runtime().arch(), Family::Sm80);
  ForwardRun full;
  FLASHJIT_ASSERT_OK(runForward(p, 21, true, full));
  full.problem.tile.reset();
  const std::vector<uint16_t> fullO = full.o;
  const std::vector<float> fullLse = full.lse;
  // Every launch poisons O and LSE first: each output compared below was
  // written by that launch's kernel.
  auto launchOn = [&](Runtime &rt, LoadedKernel::Source expected) {
    LoadedKernel::Source source{};
    const Status s = launchOnce(rt, full, &source);
    EXPECT_TRUE(s.isOk()) << s.message();
    EXPECT_EQ(source, expected);
    return std::pair{full.o, full.lse};
  };
  RuntimeOptions options;
  options.cacheDirectory = dir;
  if (runtime().arch() == Arch::Sm90a) {
    // The sm90 family has no quick form: a cold miss compiles the kernel.
    auto rt = Runtime::create(options);
    ASSERT_TRUE(rt) << rt.message();
    auto plan = (*rt)->planForward(full.problem);
    ASSERT_TRUE(plan) << plan.message();
    EXPECT_EQ(plan->config.family, Family::Sm90);
    EXPECT_EQ(plan->kernel->source, LoadedKernel::Source::Compiled);
    EXPECT_EQ((*rt)->cacheStats().quickCompiles, 0u);
  }
  // The runtimes below use the sm80 family, whose quick forms they are.
  options.family = Family::Sm80;
  {
    auto rt = Runtime::create(options);
    ASSERT_TRUE(rt) << rt.message();
    const auto quick = launchOn(**rt, LoadedKernel::Source::Quick);
    (*rt)->finishCompiles();
    const auto upgraded = launchOn(**rt, LoadedKernel::Source::Compiled);
    const CacheStats st = (*rt)->cacheStats();
    EXPECT_EQ(st.quickCompiles, 1u);
    EXPECT_EQ(st.compiles, 1u);
    EXPECT_EQ(bitwiseDifference(quick.first, fullO), "") << "quick form's O";
    EXPECT_EQ(bitwiseDifference(quick.second, fullLse), "")
        << "quick form's LSE";
    EXPECT_EQ(bitwiseDifference(upgraded.first, fullO), "");
    EXPECT_EQ(bitwiseDifference(upgraded.second, fullLse), "");
    // An explicit tile is exactly the kernel it names.
    ForwardProblem explicitTile = full.problem;
    explicitTile.tile = TileConfig{64, 32, 4, 2};
    auto plan = (*rt)->planForward(explicitTile);
    ASSERT_TRUE(plan) << plan.message();
    EXPECT_EQ(plan->kernel->source, LoadedKernel::Source::Compiled);
    EXPECT_EQ((*rt)->cacheStats().quickCompiles, 1u);
  }
  { // The next process finds the full kernel on disk.
    auto rt = Runtime::create(options);
    ASSERT_TRUE(rt) << rt.message();
    const auto fromDisk = launchOn(**rt, LoadedKernel::Source::Disk);
    EXPECT_EQ(bitwiseDifference(fromDisk.first, fullO), "");
    EXPECT_EQ(bitwiseDifference(fromDisk.second, fullLse), "");
    EXPECT_EQ((*rt)->cacheStats().quickCompiles, 0u);
  }
  { // Off: a cold miss waits for the full kernel.
    std::filesystem::remove_all(dir);
    options.quickFirst = false;
    auto rt = Runtime::create(options);
    ASSERT_TRUE(rt) << rt.message();
    const auto direct = launchOn(**rt, LoadedKernel::Source::Compiled);
    EXPECT_EQ(bitwiseDifference(direct.first, fullO), "");
    EXPECT_EQ(bitwiseDifference(direct.second, fullLse), "");
    EXPECT_EQ((*rt)->cacheStats().quickCompiles, 0u);
  }
}

TEST(Runtime, TimingWithEvents) {
  FLASHJIT_REQUIRE_GPU();
  Runtime &rt = runtime();
  ForwardRun run;
  ForwardProblem p =
      denseProblem(DType::BF16, MaskMode::None, 1, 4, 4, 1024, 1024, 128, 128);
  FLASHJIT_ASSERT_OK(runForward(p, 15, false, run));
  auto plan = rt.planForward(run.problem);
  ASSERT_TRUE(plan);
  auto ms = rt.timeMs([&] { return launchChecked(rt, *plan); });
  ASSERT_TRUE(ms) << ms.message();
  EXPECT_GT(*ms, 0.0f);
  EXPECT_LT(*ms, 1000.0f);
}

namespace {
/// The C API's arguments for a dense problem with device buffers.
flashjit_forward_args cArgsOf(const ForwardProblem &d) {
  flashjit_forward_args a;
  EXPECT_EQ(flashjit_forward_args_init(&a, sizeof a), FLASHJIT_SUCCESS);
  a.q = d.q;
  a.k = d.k;
  a.v = d.v;
  a.o = d.o;
  a.lse = d.lse;
  a.dtype = d.dtype == DType::F16 ? FLASHJIT_FP16 : FLASHJIT_BF16;
  a.mask = static_cast<int32_t>(d.mask);
  a.batch = d.batch;
  a.heads_q = d.headsQ;
  a.heads_kv = d.headsKV;
  a.seqlen_q = d.seqlenQ;
  a.seqlen_k = d.seqlenK;
  a.head_dim_qk = d.headDimQK;
  a.head_dim_v = d.headDimV;
  const Strides *from[] = {&d.qStrides, &d.kStrides, &d.vStrides, &d.oStrides};
  int64_t *to[] = {a.q_strides, a.k_strides, a.v_strides, a.o_strides};
  for (int t = 0; t < 4; ++t) {
    to[t][0] = from[t]->batch;
    to[t][1] = from[t]->head;
    to[t][2] = from[t]->row;
  }
  a.lse_strides[0] = d.lseBatchStride;
  a.lse_strides[1] = d.lseHeadStride;
  return a;
}
} // namespace

TEST(CApi, ForwardThroughTheCInterface) {
  FLASHJIT_REQUIRE_GPU();
  // The C runtime uses the default cache directory: point it at the tests'.
  ::setenv("FLASHJIT_CACHE_DIR", gpuEnv().cacheDir.c_str(), 1);
  flashjit_runtime *crt = nullptr;
  ASSERT_EQ(flashjit_runtime_create(0, &crt), FLASHJIT_SUCCESS)
      << flashjit_last_error();

  // Inputs come from a C++ run with the same problem; then O and LSE are
  // re-poisoned and recomputed through the C API.
  ForwardProblem p =
      denseProblem(DType::F16, MaskMode::Causal, 2, 6, 2, 90, 130, 64, 64);
  ForwardRun run;
  FLASHJIT_ASSERT_OK(runForward(p, 21, true, run));
  const ForwardProblem &d = run.problem;
  FLASHJIT_ASSERT_OK(poisonOutputs(run));

  flashjit_forward_args a = cArgsOf(d);
  ASSERT_EQ(flashjit_attention_forward(crt, &a, nullptr), FLASHJIT_SUCCESS)
      << flashjit_last_error();
  const Status fetched = fetchOutputs(run);
  ASSERT_TRUE(fetched.isOk()) << fetched.message();
  CheckResult r = check(run);
  EXPECT_TRUE(r.pass) << r.summary();

  // Errors come back as codes with a message naming the argument.
  a.heads_kv = 4;
  EXPECT_EQ(flashjit_attention_forward(crt, &a, nullptr),
            FLASHJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(flashjit_last_error()).find("heads_kv"),
            std::string::npos);
  a.heads_kv = 2;
  a.block_m = 48;
  EXPECT_EQ(flashjit_attention_forward(crt, &a, nullptr),
            FLASHJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(flashjit_last_error()).find("block_m"),
            std::string::npos);
  flashjit_runtime_destroy(crt);
}

/// Options through the C API: a cold miss with quick_first launches the quick
/// form, flashjit_finish_compiles swaps in the full kernel; both give the
/// suite's full kernel's output bit for bit, as does quick_first = 0.
TEST(CApi, QuickFirstAndFinishCompiles) {
  FLASHJIT_REQUIRE_GPU();
  ForwardProblem p =
      denseProblem(DType::BF16, MaskMode::None, 1, 4, 2, 200, 257, 80, 80);
  ForwardRun full;
  FLASHJIT_ASSERT_OK(runForward(p, 22, true, full));
  const std::vector<uint16_t> fullO = full.o;
  const std::vector<float> fullLse = full.lse;
  const flashjit_forward_args a = cArgsOf(full.problem);
  // O and LSE of one launch through the C API, poisoned before it.
  auto outputOf = [&](flashjit_runtime *crt) {
    EXPECT_TRUE(poisonOutputs(full).isOk());
    EXPECT_EQ(flashjit_attention_forward(crt, &a, nullptr), FLASHJIT_SUCCESS)
        << flashjit_last_error();
    const Status s = fetchOutputs(full);
    EXPECT_TRUE(s.isOk()) << s.message();
    return bitwiseDifference(full.o, fullO) + bitwiseDifference(full.lse, fullLse);
  };
  for (int32_t quickFirst : {1, 0}) {
    SCOPED_TRACE("quick_first = " + std::to_string(quickFirst));
    const test_support::TempDir dir("flashjit-capi");
    ASSERT_FALSE(dir.path().empty());
    const std::string dirName = dir.path().string();
    flashjit_runtime_options options;
    ASSERT_EQ(flashjit_runtime_options_init(&options, sizeof options),
              FLASHJIT_SUCCESS);
    options.cache_dir = dirName.c_str();
    options.quick_first = quickFirst;
    flashjit_runtime *crt = nullptr;
    ASSERT_EQ(flashjit_runtime_create_with_options(&options, &crt),
              FLASHJIT_SUCCESS)
        << flashjit_last_error();
    EXPECT_EQ(outputOf(crt), ""); // cold: the quick form when quick_first
    ASSERT_EQ(flashjit_finish_compiles(crt), FLASHJIT_SUCCESS);
    EXPECT_EQ(outputOf(crt), ""); // the full kernel
    flashjit_runtime_destroy(crt);
    // Both runtimes stored the full kernel in their own directory.
    EXPECT_FALSE(std::filesystem::is_empty(dir.path()));
  }
}
