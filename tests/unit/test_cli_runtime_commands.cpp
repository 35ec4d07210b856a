//===- test_cli_runtime_commands.cpp - flashjit run|cache|info, no GPU ----===//
//
// Runs the built CLI (FLASHJIT_CLI_PATH) as a subprocess: the cache
// subcommands work on plain files, and the GPU ones fail cleanly (non-zero,
// a readable reason) where no driver is present.
//
//===----------------------------------------------------------------------===//
#include "flashjit/runtime/Device.h"
#include "flashjit/runtime/DiskCache.h"

#include "StandIn.h"

#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using namespace flashjit;

namespace {
struct Result {
  int exitCode = -1;
  std::string output; ///< stdout and stderr together
};

/// Runs `flashjit <args>` with FLASHJIT_CACHE_DIR=`cacheDir` (and the
/// stand-in libcuda on its library path when `standIn`).
Result runCli(const std::string &args, const std::string &cacheDir,
              bool standIn = false) {
#ifdef FLASHJIT_CLI_PATH
  const std::string env =
      standIn ? "LD_LIBRARY_PATH='" + test_support::standInDir() + "' " : "";
  const std::string cmd = env + "FLASHJIT_CACHE_DIR='" + cacheDir + "' '" +
                          FLASHJIT_CLI_PATH + "' " + args + " 2>&1";
  Result r;
  FILE *pipe = ::popen(cmd.c_str(), "r");
  if (!pipe)
    return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0)
    r.output.append(buf, n);
  const int status = ::pclose(pipe);
  r.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
#else
  return {};
#endif
}

class Cli : public ::testing::Test {
protected:
  void SetUp() override {
#ifndef FLASHJIT_CLI_PATH
    GTEST_SKIP() << "FLASHJIT_CLI_PATH is not defined by this build";
#endif
    std::string tmpl =
        (fs::temp_directory_path() / "flashjit-cli-XXXXXX").string();
    dir_ = ::mkdtemp(tmpl.data());
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty())
      fs::remove_all(dir_, ec);
  }
  std::string dir_;
};

bool contains(const std::string &s, const std::string &part) {
  return s.find(part) != std::string::npos;
}
} // namespace

TEST_F(Cli, CacheInfoListClear) {
  DiskCache cache(dir_);
  CacheKey key;
  key.flashjitVersion = "t";
  CacheEntry entry{"ptx", std::string(2048, 'c'), kernelMetaFor(key)};
  ASSERT_TRUE(cache.store(key, entry).isOk());

  Result info = runCli("cache info", dir_);
  EXPECT_EQ(info.exitCode, 0) << info.output;
  EXPECT_TRUE(contains(info.output, dir_)) << info.output;
  EXPECT_TRUE(contains(info.output, "entries:   1")) << info.output;
  EXPECT_TRUE(contains(info.output, "tuned:     0 configs")) << info.output;

  Result list = runCli("cache list", dir_);
  EXPECT_EQ(list.exitCode, 0) << list.output;
  EXPECT_TRUE(contains(list.output, key.entryName())) << list.output;
  EXPECT_TRUE(contains(list.output, "KiB")) << list.output;

  Result clear = runCli("cache clear", dir_);
  EXPECT_EQ(clear.exitCode, 0) << clear.output;
  EXPECT_TRUE(contains(clear.output, "removed 1 entry")) << clear.output;
  EXPECT_FALSE(cache.load(key));

  Result empty = runCli("cache list", dir_);
  EXPECT_EQ(empty.exitCode, 0);
  EXPECT_TRUE(contains(empty.output, "no entries")) << empty.output;
}

TEST_F(Cli, CacheNeedsASubcommand) {
  Result r = runCli("cache", dir_);
  EXPECT_NE(r.exitCode, 0);
}

TEST_F(Cli, InfoPrintsVersionsAndCacheEvenWithoutADriver) {
  Result r = runCli("info", dir_);
  EXPECT_TRUE(contains(r.output, "flashjit:")) << r.output;
  EXPECT_TRUE(contains(r.output, "LLVM:")) << r.output;
  EXPECT_TRUE(contains(r.output, dir_)) << r.output;
  if (driverStatus().isOk()) {
    EXPECT_TRUE(contains(r.output, "driver:")) << r.output;
  } else {
    EXPECT_NE(r.exitCode, 0);
    EXPECT_TRUE(contains(r.output, "no CUDA driver found")) << r.output;
  }
}

TEST_F(Cli, RunWithoutADriverFailsWithTheReason) {
  if (driverStatus().isOk())
    GTEST_SKIP() << "a CUDA driver is present";
  Result r = runCli("run --head-dim 80 --check", dir_);
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_TRUE(contains(r.output, "no CUDA driver found")) << r.output;
  // A valid paged decode problem gets as far.
  r = runCli("run --decode --page-size 16 --splits 4 --seqlen-k 1000 "
             "--heads-q 32 --heads-kv 8 --batch 3 --key-lengths 0,1,999 --check",
             dir_);
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_TRUE(contains(r.output, "no CUDA driver found")) << r.output;
}

TEST_F(Cli, RunRejectsBadArgumentsBeforeTouchingTheGpu) {
  Result r = runCli("run --batch 0", dir_);
  EXPECT_NE(r.exitCode, 0);
  EXPECT_TRUE(contains(r.output, "--batch")) << r.output;
  r = runCli("run --dtype fp8", dir_);
  EXPECT_NE(r.exitCode, 0);
  EXPECT_TRUE(contains(r.output, "--dtype")) << r.output;
}

/// Feature arguments that cannot work are usage errors (exit 2) naming the
/// option, found before any GPU is looked for.
TEST_F(Cli, RunRejectsBadFeatureArgumentsWithoutAGpu) {
  const std::pair<const char *, std::vector<const char *>> cases[] = {
      {"run --mask window", {"--window-left"}},
      {"run --mask causal --window-left 4", {"window"}},
      {"run --mask window --window-left -2", {"--window-left"}},
      {"run --bias tensor --batch 2 --bias-shape 3,1",
       {"bias", "broadcast"}},
      {"run --bias-shape 1,1", {"--bias tensor"}},
      {"run --seqlens-q 5,3 --seqlens-k 5", {"--seqlens-q", "--seqlens-k"}},
      {"run --key-lengths 5 --batch 2", {"--key-lengths"}},
      {"run --key-lengths 500 --seqlen 100", {"--key-lengths"}},
      {"run --layout bsdh", {"--layout", "bshd", "bhsd"}},
      {"run --softcap -3", {"--softcap"}},
      {"run --heads-q 6 --heads-kv 4", {"--heads-q"}},
      {"run --page-size 16", {"--page-size", "--decode"}},
      {"run --decode --page-size 0", {"--page-size"}},
      {"run --decode --splits 129", {"--splits"}},
      {"run --decode --page-size 16 --layout bhsd", {"--page-size", "bshd"}},
      {"run --decode --seqlen-k 100 --key-lengths 50,101 --batch 2",
       {"--key-lengths[1]", "got 101"}},
      {"run --backward --decode --page-size 16", {"--page-size", "--backward"}},
      {"run --backward --splits 4", {"--splits", "--backward"}},
      {"bench --backward --decode --page-size 16", {"--page-size"}},
  };
  for (const auto &[args, names] : cases) {
    Result r = runCli(args, dir_);
    EXPECT_NE(r.exitCode, 0) << args << "\n" << r.output;
    EXPECT_FALSE(contains(r.output, "no CUDA driver found")) << args;
    for (const char *name : names)
      EXPECT_TRUE(contains(r.output, name))
          << args << ": no '" << name << "' in\n" << r.output;
  }
}

TEST_F(Cli, EverySubcommandDocumentsItsOptions) {
  Result run = runCli("run --help", dir_);
  EXPECT_EQ(run.exitCode, 0);
  for (const char *opt :
       {"--batch", "--seqlen", "--seqlen-q", "--seqlen-k", "--scale", "--seed",
        "--check", "--warmup", "--repeats", "--head-dim", "--dtype", "--mask",
        "--window-left", "--window-right", "--bias", "--bias-shape",
        "--softcap", "--seqlens-q", "--seqlens-k", "--key-lengths",
        "--layout", "--pack-gqa", "--decode", "--page-size", "--splits"})
    EXPECT_TRUE(contains(run.output, opt)) << opt;
  for (const char *cmd : {"cache --help", "cache list --help", "info --help"}) {
    Result r = runCli(cmd, dir_);
    EXPECT_EQ(r.exitCode, 0) << cmd;
    EXPECT_TRUE(contains(r.output, "Usage")) << cmd;
  }
}

// Defect 1, as a user meets it: `cache clear` in a directory that holds
// more than flashjit's entries.
TEST_F(Cli, CacheClearRemovesOnlyFlashjitEntries) {
  DiskCache cache(dir_);
  CacheKey key;
  key.flashjitVersion = "t";
  ASSERT_TRUE(
      cache.store(key, {"ptx", std::string(64, 'c'), kernelMetaFor(key)})
          .isOk());
  fs::create_directories(dir_ + "/.git/refs");
  fs::create_directories(dir_ + "/Documents");
  std::ofstream(dir_ + "/Documents/letter.txt") << "keep me";
  Result list = runCli("cache list", dir_);
  EXPECT_EQ(list.exitCode, 0) << list.output;
  EXPECT_TRUE(contains(list.output, key.entryName())) << list.output;
  EXPECT_FALSE(contains(list.output, "Documents")) << list.output;
  EXPECT_FALSE(contains(list.output, ".git")) << list.output;
  Result info = runCli("cache info", dir_);
  EXPECT_TRUE(contains(info.output, "entries:   1")) << info.output;
  Result clear = runCli("cache clear", dir_);
  EXPECT_EQ(clear.exitCode, 0) << clear.output;
  EXPECT_TRUE(contains(clear.output, "removed 1 entry")) << clear.output;
  EXPECT_TRUE(fs::exists(dir_ + "/.git/refs"));
  EXPECT_TRUE(fs::exists(dir_ + "/Documents/letter.txt"));
  EXPECT_FALSE(fs::exists(cache.entryPath(key)));
}

// Defect 12: usage errors exit 2 from every subcommand, and tile options
// are checked before the driver is looked for.
TEST_F(Cli, RunUsageErrorsExit2BeforeTheDriver) {
  for (const char *args :
       {"run --dtype fp8", "run --head-dim 300", "run --warps 3",
        "run --block-m 7", "run --stages 9", "run --pack-gqa maybe",
        "run --block-n 4096", "run --mask diagonal",
        "run --head-dim 256 --block-m 256 --block-n 256 --stages 4"}) {
    Result r = runCli(args, dir_);
    EXPECT_EQ(r.exitCode, 2) << args << "\n" << r.output;
    EXPECT_FALSE(contains(r.output, "no CUDA driver")) << args;
  }
  Result warps = runCli("run --warps 3", dir_);
  EXPECT_TRUE(contains(warps.output, "--warps must be a power of two"))
      << warps.output;
}

// Defect 13: list options name themselves; the prefix sums cannot wrap;
// empty entries and negative seeds are refused.
TEST_F(Cli, ListOptionsAreParsedStrictlyAndNameTheOption) {
  const std::pair<const char *, std::vector<const char *>> cases[] = {
      {"run --seqlens-q 2147483647,1",
       {"--seqlens-q must add up to at most 2147483647", "2147483648"}},
      {"run --seqlens-k 2000000000,2000000000 --seqlens-q 1,1",
       {"--seqlens-k must add up"}},
      {"run --seqlens-q 1,,2", {"--seqlens-q", "entry 2", "empty"}},
      {"run --seqlens-q 1,2,", {"--seqlens-q", "entry 3", "empty"}},
      {"run --seqlens-q 1,x", {"--seqlens-q", "'x'", "not an integer"}},
      {"run --seqlens-q 5,-1", {"--seqlens-q", "[0, 2147483647]", "-1"}},
      {"run --key-lengths 1,,2 --batch 3", {"--key-lengths", "empty"}},
      {"run --bias tensor --bias-shape 1,,1", {"--bias-shape", "empty"}},
      {"run --bias tensor --bias-shape 1,1,1", {"--bias-shape", "1 or 2"}},
      {"run --seed -1", {"--seed"}},
      {"bench --head-dims 64,,80", {"--head-dims", "empty"}},
      {"bench --seqlens 1024,0", {"--seqlens", "[1, 2147483647]"}},
  };
  for (const auto &[args, fragments] : cases) {
    Result r = runCli(args, dir_);
    EXPECT_EQ(r.exitCode, 2) << args << "\n" << r.output;
    EXPECT_FALSE(contains(r.output, "cu_seqlens")) << args << r.output;
    for (const char *f : fragments)
      EXPECT_TRUE(contains(r.output, f))
          << args << ": no '" << f << "' in\n" << r.output;
  }
  // Space-separated lists still work.
  Result spaced = runCli("run --seqlens-q 5 3 --seqlens-k 5,7 --warps 3", dir_);
  EXPECT_TRUE(contains(spaced.output, "--warps")) << spaced.output;
}

// Defect 4: sizes whose products overflow int64 are errors, not UB.
TEST_F(Cli, HugeSizesAreUsageErrorsNotOverflows) {
  Result r = runCli(
      "run --bias tensor --heads-q 4 --batch 4 --seqlen 2147483647", dir_);
  EXPECT_EQ(r.exitCode, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "is too large")) << r.output;
  EXPECT_FALSE(contains(r.output, "runtime error")) << r.output; // UBSan
}

// Defect 17: --heads-kv defaults to --heads-q (multi-head attention).
TEST_F(Cli, HeadsKvDefaultsToHeadsQ) {
  Result r = runCli("compile --heads-q 16 --emit tile", dir_);
  ASSERT_EQ(r.exitCode, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "gqa_group = 1")) << r.output;
  r = runCli("compile --heads-q 16 --heads-kv 4 --emit tile", dir_);
  ASSERT_EQ(r.exitCode, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "gqa_group = 4")) << r.output;
}

// ---- with the stand-in driver: the launch path without a GPU ----------------
class CliStandIn : public Cli {
protected:
  void SetUp() override {
    Cli::SetUp();
    if (test_support::standInDir().empty())
      GTEST_FAIL() << "FLASHJIT_STANDIN_DIR is not defined by this build";
  }
};

// Defect 3: host buffers of 1.6 TB were allocated without a check and the
// std::bad_alloc ended the process (SIGABRT).
TEST_F(CliStandIn, AProblemTooLargeForTheMachineIsAClearError) {
  Result r = runCli("run --seqlen 100000000 --heads-q 64 --heads-kv 64",
                    dir_, /*standIn=*/true);
  EXPECT_EQ(r.exitCode, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "stand-in")) << r.output;
  EXPECT_TRUE(contains(r.output, "the problem needs")) << r.output;
  EXPECT_TRUE(contains(r.output, "GiB of device memory")) << r.output;
  EXPECT_FALSE(contains(r.output, "bad_alloc")) << r.output;
}

// The stand-in runs no kernel: every candidate of autotune --backward (both
// families' on sm_90a) compiles and "runs", all agree with the default
// (nothing written), and the
// float64 check of the fastest finds the gradients unwritten, so nothing is
// stored.
TEST_F(CliStandIn, AutotuneBackwardStoresNothingTheOracleRejects) {
  Result r = runCli("autotune --backward --deterministic --head-dim 64 "
                    "--seqlen 128 --heads-q 2 --heads-kv 2 --repeats 1 "
                    "--warmup 0",
                    dir_, /*standIn=*/true);
  EXPECT_EQ(r.exitCode, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "backward deterministic")) << r.output;
  // The sm80 mma.sync kernel's 72 tiles and the sm90 kernel's 4 (d = 64).
  EXPECT_TRUE(contains(r.output, "76 configs enumerated")) << r.output;
  EXPECT_TRUE(contains(r.output, "oracle: dq:")) << r.output;
  EXPECT_TRUE(contains(r.output, "UNWRITTEN")) << r.output;
  EXPECT_TRUE(contains(r.output, "nothing stored")) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/tune.json")) << r.output;
}

// A decode problem is tuned over the decode table's tiles and split counts,
// listed with them (that each runs with its own count:
// StandIn.AutotuneRunsEachDecodeCandidateWithItsSplitCount).
TEST_F(CliStandIn, AutotuneDecodeSearchesSplitCounts) {
  Result r = runCli("autotune --decode --head-dim 64 --heads-q 8 --heads-kv 2 "
                    "--seqlen-k 64 --batch 2 --repeats 1 --warmup 0",
                    dir_, /*standIn=*/true);
  EXPECT_EQ(r.exitCode, 1) << r.output; // the oracle finds O unwritten
  EXPECT_TRUE(contains(r.output, "8 configs enumerated")) << r.output;
  // block_n 16: 4 key blocks (1, 2, 4 splits); 32: 2; 64 and 128: 1; two
  // stage counts each, and the table's config with the runtime's choice.
  EXPECT_TRUE(contains(r.output, "timing:  15 candidates")) << r.output;
  EXPECT_TRUE(contains(r.output, "block_n=16 warps=1 stages=1 pack_gqa "
                                 "family=sm80 splits=4"))
      << r.output;
  EXPECT_FALSE(contains(r.output, "splits=8")) << r.output;
  EXPECT_FALSE(contains(r.output, "compile:")) << r.output;
  EXPECT_TRUE(contains(r.output, "nothing stored")) << r.output;
}

// Defects 12 and 17 past the driver: tiles that no supported GPU takes
// are usage errors; the problem line shows the GQA group.
TEST_F(CliStandIn, RunShowsTheGqaGroupAndLaunches) {
  Result r = runCli("run --heads-q 4 --seqlen 64 --head-dim 32 --warmup 0 "
                    "--repeats 1",
                    dir_, /*standIn=*/true);
  ASSERT_EQ(r.exitCode, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "heads_q=4 heads_kv=4 (gqa group 1)"))
      << r.output;
  r = runCli("run --heads-q 4 --heads-kv 1 --seqlen 64 --head-dim 32 "
             "--warmup 0 --repeats 1",
             dir_, /*standIn=*/true);
  ASSERT_EQ(r.exitCode, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "heads_q=4 heads_kv=1 (gqa group 4)"))
      << r.output;
}
