//===- test_cli.cpp - flashjit compile: help, error messages, every stage ---===//
//
// Runs the built CLI (FLASHJIT_CLI_PATH) as a subprocess with posix_spawn,
// stdout and stderr captured separately, and checks the exit status
// precisely (a crash is never a "non-zero exit"). Each bad input must give
// one message naming the option and what it accepts. Compiles cost about
// 0.3 s each, so the positive cases are few.
//
//===----------------------------------------------------------------------===//
#include "Subprocess.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

/// One run of the CLI, with a readable account for failure messages.
struct CliResult : flashjit::test_support::ProcessResult {
  std::string describe() const {
    std::ostringstream os;
    os << "exit=" << exitCode << (signaled ? " (signal " : "")
       << (signaled ? std::to_string(signal) + ")" : "") << "\n--- stdout ("
       << out.size() << " bytes) ---\n"
       << out.substr(0, 2000) << "\n--- stderr ---\n"
       << err.substr(0, 4000);
    return os.str();
  }
};

bool contains(const std::string &s, const std::string &part) {
  return s.find(part) != std::string::npos;
}

using flashjit::test_support::readFile;
using flashjit::test_support::TempDir;

/// Runs `flashjit <args...>` (no shell) and waits for it.
CliResult runFlashjit(const std::vector<std::string> &args) {
  CliResult r;
#ifdef FLASHJIT_CLI_PATH
  std::vector<std::string> argv{FLASHJIT_CLI_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  static_cast<flashjit::test_support::ProcessResult &>(r) = flashjit::test_support::runProcess(argv);
#else
  (void)args;
#endif
  return r;
}

/// No sign of a crash or of an internal failure in the output.
void expectNoCrash(const CliResult &r) {
  EXPECT_TRUE(r.started) << r.err;
  EXPECT_FALSE(r.signaled) << r.describe();
  EXPECT_LT(r.exitCode, 128) << r.describe();
  for (const char *bad :
       {"Assertion", "Stack dump", "terminate called", "Segmentation fault",
        "core dumped", "UNREACHABLE", "LLVM ERROR", "PLEASE submit"})
    EXPECT_FALSE(contains(r.all(), bad)) << "'" << bad << "' in\n"
                                         << r.describe();
}

size_t countLinesContaining(const std::string &text, const std::string &what) {
  size_t n = 0;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (contains(line, what))
      ++n;
  return n;
}

class CliCompile : public ::testing::Test {
protected:
  void SetUp() override {
#ifndef FLASHJIT_CLI_PATH
    GTEST_SKIP() << "FLASHJIT_CLI_PATH is not defined by this build";
#else
    if (!fs::exists(FLASHJIT_CLI_PATH))
      GTEST_SKIP() << "flashjit binary not built: " << FLASHJIT_CLI_PATH;
#endif
  }

  /// `flashjit compile <args>` for an input that must be refused: non-zero
  /// exit, no crash, nothing on stdout, one error line on stderr that
  /// contains every string in `mustName`.
  void expectRefused(const std::vector<std::string> &args,
                     std::initializer_list<std::string> mustName) {
    std::vector<std::string> full{"compile"};
    full.insert(full.end(), args.begin(), args.end());
    std::string cmd = "flashjit";
    for (const auto &a : full)
      cmd += " " + a;
    SCOPED_TRACE(cmd);
    CliResult r = runFlashjit(full);
    ASSERT_TRUE(r.started) << r.err;
    expectNoCrash(r);
    EXPECT_NE(r.exitCode, 0) << r.describe();
    EXPECT_TRUE(r.out.empty()) << r.describe();
    EXPECT_EQ(countLinesContaining(r.err, "error"), 1u) << r.describe();
    for (const std::string &s : mustName)
      EXPECT_TRUE(contains(r.err, s))
          << "message does not contain '" << s << "'\n"
          << r.describe();
  }

  /// `flashjit compile --head-dim 80 --arch sm_80 --emit <stage>`.
  static CliResult emit(const std::string &stage) {
    return runFlashjit({"compile", "--head-dim", "80", "--arch", "sm_80",
                        "--emit", stage});
  }
};

} // namespace

// ---- help ----------------------------------------------------------------------

TEST_F(CliCompile, TopLevelHelpListsSubcommands) {
  CliResult r = runFlashjit({"--help"});
  expectNoCrash(r);
  EXPECT_EQ(r.exitCode, 0) << r.describe();
  for (const char *sub : {"compile", "run", "cache", "info"})
    EXPECT_TRUE(contains(r.all(), sub)) << sub << "\n" << r.describe();
}

TEST_F(CliCompile, NoSubcommandIsAnErrorNotACrash) {
  CliResult r = runFlashjit({});
  expectNoCrash(r);
  EXPECT_NE(r.exitCode, 0) << r.describe();
  EXPECT_TRUE(contains(r.all(), "subcommand")) << r.describe();
}

TEST_F(CliCompile, VersionFlag) {
  CliResult r = runFlashjit({"--version"});
  expectNoCrash(r);
  EXPECT_EQ(r.exitCode, 0) << r.describe();
  EXPECT_TRUE(contains(r.all(), "flashjit")) << r.describe();
  EXPECT_TRUE(contains(r.all(), "LLVM")) << r.describe();
}

TEST_F(CliCompile, CompileHelpListsOptions) {
  CliResult r = runFlashjit({"compile", "--help"});
  expectNoCrash(r);
  EXPECT_EQ(r.exitCode, 0) << r.describe();
  for (const char *opt :
       {"--head-dim", "--head-dim-v", "--dtype", "--mask", "--emit",
        "--dump-dir", "--arch", "--block-m", "--block-n", "--warps",
        "--stages", "--align", "--bias", "--softcap", "--varlen",
        "--key-lengths", "--pack-gqa", "window", "alibi"})
    EXPECT_TRUE(contains(r.all(), opt)) << opt << "\n" << r.describe();
  // The accepted values are spelled out.
  EXPECT_TRUE(contains(r.all(), "tile|gpu|nvvm|llvm|ptx")) << r.describe();
  EXPECT_TRUE(contains(r.all(), "sm_80")) << r.describe();
  EXPECT_TRUE(contains(r.all(), "fp16|bf16")) << r.describe();
}

// ---- bad inputs: one clear message each ------------------------------------------

TEST_F(CliCompile, HeadDimZero) {
  expectRefused({"--head-dim", "0"}, {"--head-dim", "[1, 256]", "got 0"});
}

TEST_F(CliCompile, HeadDimTooLarge) {
  expectRefused({"--head-dim", "300"}, {"--head-dim", "[1, 256]", "300"});
}

TEST_F(CliCompile, HeadDimVZero) {
  expectRefused({"--head-dim-v", "0"}, {"--head-dim-v", "[1, 256]", "got 0"});
}

TEST_F(CliCompile, HeadDimNotANumber) {
  CliResult r = runFlashjit({"compile", "--head-dim", "abc"});
  expectNoCrash(r);
  EXPECT_EQ(r.exitCode, 2) << r.describe();
  EXPECT_TRUE(r.out.empty()) << r.describe();
  EXPECT_TRUE(contains(r.err, "--head-dim")) << r.describe();
  EXPECT_TRUE(contains(r.err, "abc")) << r.describe();
}

TEST_F(CliCompile, UnknownDtype) {
  expectRefused({"--dtype", "fp8"}, {"--dtype", "fp16", "bf16", "fp8"});
}

TEST_F(CliCompile, UnknownMask) {
  expectRefused({"--mask", "sliding"}, {"--mask", "none", "causal", "sliding"});
}

TEST_F(CliCompile, HeadsQNotAMultipleOfHeadsKV) {
  expectRefused({"--heads-q", "6", "--heads-kv", "4"},
                {"--heads-q", "--heads-kv", "multiple", "6"});
}

TEST_F(CliCompile, UnsupportedArch) {
  expectRefused({"--arch", "sm_75"},
                {"--arch", "sm_80", "sm_86", "sm_89", "sm_90", "sm_90a",
                 "sm_75"});
}

TEST_F(CliCompile, UnknownEmitStage) {
  expectRefused({"--emit", "sass"},
                {"--emit", "tile", "gpu", "nvvm", "llvm", "ptx", "sass"});
}

TEST_F(CliCompile, BadAlign) {
  expectRefused({"--align", "3"}, {"align", "1, 2, 4, 8", "3"});
}

TEST_F(CliCompile, SharedMemoryOverTheLimit) {
  // 227 KiB is sm_90a's opt-in limit.
  expectRefused({"--family", "sm80", "--block-m", "256", "--block-n", "256",
                 "--stages", "4", "--head-dim", "256", "--arch", "sm_90a"},
                {"shared memory", std::to_string(227 * 1024), "sm_90a"});
  // The sm90 family's tiles count against the same limit.
  expectRefused({"--block-n", "256", "--stages", "4", "--head-dim", "256",
                 "--arch", "sm_90a"},
                {"shared memory", std::to_string(227 * 1024), "sm_90a"});
}

TEST_F(CliCompile, SharedMemoryLimitIsPerArch) {
  // Fits an H100 (227 KiB), not an RTX 30xx (99 KiB): sm_86 is refused with
  // its own limit.
  expectRefused({"--head-dim", "128", "--block-m", "128", "--block-n", "64",
                 "--warps", "8", "--stages", "4", "--arch", "sm_86",
                 "--emit", "tile"},
                {"shared memory", std::to_string(99 * 1024), "sm_86"});
}

// Tile options: the message names the knob (as block_n / warps, the names
// of the spec and the docs, or as the flag) and what it accepts.
TEST_F(CliCompile, WarpsNotAPowerOfTwo) {
  expectRefused({"--family", "sm80", "--warps", "3"},
                {"warps", "power of two", "3"});
  // The sm90 family counts consumer warps: 4 per warpgroup of 64 rows.
  expectRefused({"--family", "sm90", "--warps", "6"},
                {"warps", "4, 8 or 12", "6"});
}

TEST_F(CliCompile, FamilyNamesItsRequirements) {
  expectRefused({"--family", "sm70"}, {"--family", "sm80|sm90", "sm70"});
  expectRefused({"--family", "sm90", "--arch", "sm_80"},
                {"sm90", "sm_90a", "sm_80"});
  // Rows TMA cannot address are copied by cp.async, 4 bytes at a time at
  // least: 2-byte aligned heads are the sm80 family's.
  expectRefused({"--family", "sm90", "--align", "1"},
                {"sm90", "16-byte", "cp.async", "4 bytes", "sm80"});
  expectRefused({"--family", "sm90", "--quick"}, {"quick"});
  expectRefused({"--family", "sm80", "--pingpong", "on"}, {"pingpong"});
  expectRefused({"--pingpong", "maybe"}, {"--pingpong", "on or off", "maybe"});
  expectRefused({"--family", "sm90", "--warps", "4", "--block-m", "64",
                 "--pingpong", "on"},
                {"pingpong", "two consumer warpgroups"});
}

TEST_F(CliCompile, BlockNNotAMultipleOf16) {
  expectRefused({"--block-n", "24"}, {"multiple of 16", "24"});
  CliResult r = runFlashjit({"compile", "--block-n", "24"});
  EXPECT_TRUE(contains(r.err, "block_n") || contains(r.err, "--block-n"))
      << r.describe();
}

TEST_F(CliCompile, BlockMNotAMultipleOfWarps) {
  expectRefused({"--family", "sm80", "--block-m", "48", "--warps", "4"},
                {"multiple", "64", "48"});
  CliResult r = runFlashjit(
      {"compile", "--family", "sm80", "--block-m", "48", "--warps", "4"});
  EXPECT_TRUE(contains(r.err, "block_m") || contains(r.err, "--block-m"))
      << r.describe();
}

TEST_F(CliCompile, StagesOutOfRange) {
  expectRefused({"--stages", "5"}, {"stages", "[1, 4]", "5"});
  expectRefused({"--stages", "0"}, {"stages", "[1, 4]", "0"});
}

TEST_F(CliCompile, UnknownBias) {
  expectRefused({"--bias", "relative"},
                {"--bias", "none", "tensor", "alibi", "relative"});
}

TEST_F(CliCompile, NegativeSoftcap) {
  expectRefused({"--softcap", "-1"}, {"--softcap", ">= 0", "-1"});
}

TEST_F(CliCompile, PackGqaNeedsAGroup) {
  expectRefused({"--family", "sm80", "--pack-gqa", "on"},
                {"--pack-gqa", "GQA group > 1"});
  expectRefused({"--heads-q", "4", "--pack-gqa", "maybe"},
                {"--pack-gqa", "on or off", "maybe"});
}

// ---- every stage -------------------------------------------------------------------

TEST_F(CliCompile, EmitPtx) {
  CliResult r = emit("ptx");
  expectNoCrash(r);
  ASSERT_EQ(r.exitCode, 0) << r.describe();
  for (const char *s : {".target sm_80", ".visible .entry fwd_bf16_hqk80_hv80",
                        "mma.sync.aligned.m16n8k16", "ldmatrix", "cp.async"})
    EXPECT_TRUE(contains(r.out, s)) << "no '" << s << "' in the PTX\n"
                                    << r.describe();
  // The bf16 kernel multiplies bf16, not fp16.
  EXPECT_TRUE(contains(r.out, ".bf16")) << r.describe();
  EXPECT_TRUE(r.err.empty()) << r.describe();
}

TEST_F(CliCompile, EmitTile) {
  CliResult r = emit("tile");
  expectNoCrash(r);
  ASSERT_EQ(r.exitCode, 0) << r.describe();
  EXPECT_TRUE(contains(r.out, "flashjit.attention_fwd")) << r.describe();
}

TEST_F(CliCompile, EmitGpu) {
  CliResult r = emit("gpu");
  expectNoCrash(r);
  ASSERT_EQ(r.exitCode, 0) << r.describe();
  EXPECT_TRUE(contains(r.out, "nvvm.mma.sync")) << r.describe();
  EXPECT_TRUE(contains(r.out, "nvgpu.ldmatrix")) << r.describe();
  EXPECT_TRUE(contains(r.out, "gpu.func")) << r.describe();
}

TEST_F(CliCompile, EmitNvvm) {
  CliResult r = emit("nvvm");
  expectNoCrash(r);
  ASSERT_EQ(r.exitCode, 0) << r.describe();
  EXPECT_TRUE(contains(r.out, "llvm.func") || contains(r.out, "nvvm"))
      << r.describe();
  // Past the gpu stage: no nvgpu ops (ldmatrix, cp.async) are left.
  EXPECT_TRUE(contains(r.out, "nvvm.ldmatrix")) << r.describe();
  EXPECT_FALSE(contains(r.out, "nvgpu.")) << r.describe();
}

TEST_F(CliCompile, EmitLlvm) {
  CliResult r = emit("llvm");
  expectNoCrash(r);
  ASSERT_EQ(r.exitCode, 0) << r.describe();
  EXPECT_TRUE(contains(r.out, "target triple")) << r.describe();
  EXPECT_TRUE(contains(r.out, "nvptx64")) << r.describe();
}

TEST_F(CliCompile, DumpDirWritesEveryStage) {
  TempDir tmp;
  ASSERT_FALSE(tmp.path().empty());
  // A directory that does not exist yet (two levels) is created.
  const fs::path dir = tmp.path() / "dump" / "d100";
  CliResult r = runFlashjit({"compile", "--head-dim", "100", "--dtype", "fp16",
                             "--mask", "causal", "--align", "4", "--arch",
                             "sm_80", "--dump-dir", dir.string()});
  expectNoCrash(r);
  ASSERT_EQ(r.exitCode, 0) << r.describe();
  for (const char *file : {"kernel.tile.mlir", "kernel.gpu.mlir",
                           "kernel.nvvm.mlir", "kernel.ll", "kernel.ptx"}) {
    const fs::path p = dir / file;
    ASSERT_TRUE(fs::exists(p)) << p;
    EXPECT_GT(fs::file_size(p), 0u) << p;
  }
  EXPECT_TRUE(contains(readFile(dir / "kernel.tile.mlir"),
                       "flashjit.attention_fwd"));
  EXPECT_TRUE(contains(readFile(dir / "kernel.gpu.mlir"), "gpu.func"));
  EXPECT_TRUE(contains(readFile(dir / "kernel.ll"), "target triple"));
  const std::string ptx = readFile(dir / "kernel.ptx");
  EXPECT_TRUE(contains(ptx, ".target sm_80"));
  EXPECT_TRUE(contains(ptx, "fwd_fp16_hqk100_hv100_causal_g1_lse_a4"));
  EXPECT_TRUE(contains(ptx, "mma.sync.aligned.m16n8k16"));
  EXPECT_TRUE(contains(ptx, ".f16"));
  // Nothing but the dump: stdout stays empty.
  EXPECT_TRUE(r.out.empty()) << r.describe();
}

// ---- forward features -------------------------------------------------------------

TEST_F(CliCompile, EveryFeatureReachesTheSpecAndThePtx) {
  CliResult tile = runFlashjit(
      {"compile", "--head-dim", "128", "--head-dim-v", "64", "--mask",
       "window", "--bias", "alibi", "--softcap", "30", "--varlen",
       "--key-lengths", "--heads-q", "8", "--heads-kv", "2", "--family",
       "sm80", "--emit", "tile"});
  expectNoCrash(tile);
  ASSERT_EQ(tile.exitCode, 0) << tile.describe();
  for (const char *s :
       {"mask = \"window\"", "gqa_group = 4", "bias = \"alibi\"",
        "softcap = true", "varlen = true", "key_lengths = true",
        "pack_gqa = true", "head_dim_v = 64"})
    EXPECT_TRUE(contains(tile.out, s)) << s << "\n" << tile.describe();

  CliResult ptx = runFlashjit({"compile", "--head-dim", "64", "--bias",
                               "tensor", "--arch", "sm_80"});
  expectNoCrash(ptx);
  ASSERT_EQ(ptx.exitCode, 0) << ptx.describe();
  EXPECT_TRUE(contains(ptx.out, ".visible .entry fwd_bf16_hqk64_hv64_none_g1_lse_a8_tensor_"))
      << ptx.describe();
  // The bias is read from global memory, one element per score.
  EXPECT_TRUE(contains(ptx.out, "ld.global")) << ptx.describe();
}

// d=100 BSHD: heads 200 bytes apart, which TMA cannot load (a box must
// start 16 bytes aligned). The sm90 family's producer warpgroup copies them
// by cp.async, arriving on the full barriers as the copies land, and the
// consumers fence before wgmma reads them; by default they take the sm80
// family until that is measured.
TEST_F(CliCompile, UnalignedRowsReachTheSm90FamilyAsCopies) {
  CliResult ptx = runFlashjit({"compile", "--head-dim", "100", "--align", "4",
                               "--family", "sm90"});
  expectNoCrash(ptx);
  ASSERT_EQ(ptx.exitCode, 0) << ptx.describe();
  EXPECT_TRUE(contains(ptx.out, "_a4_bm128_")) << ptx.describe();
  EXPECT_TRUE(contains(ptx.out, "cp.async.ca.shared.global")) << ptx.describe();
  EXPECT_TRUE(contains(ptx.out, "cp.async.mbarrier.arrive.noinc"))
      << ptx.describe();
  EXPECT_TRUE(contains(ptx.out, "fence.proxy.async")) << ptx.describe();
  EXPECT_TRUE(contains(ptx.out, "wgmma.mma_async")) << ptx.describe();
  EXPECT_FALSE(contains(ptx.out, "cp.async.bulk.tensor")) << ptx.describe();
  // No tensor maps among the parameters (the runtime encodes none).
  EXPECT_FALSE(contains(ptx.out, ".param .align 64 .b8")) << ptx.describe();
  CliResult tile = runFlashjit(
      {"compile", "--head-dim", "100", "--align", "4", "--emit", "tile"});
  expectNoCrash(tile);
  ASSERT_EQ(tile.exitCode, 0) << tile.describe();
  // The default too (faster than the sm80 family on an H100).
  EXPECT_TRUE(contains(tile.out, "align = 4")) << tile.describe();
  EXPECT_TRUE(contains(tile.out, "family = \"sm90\"")) << tile.describe();
}

TEST_F(CliCompile, PackGqaOffKeepsOneHeadPerCta) {
  CliResult r = runFlashjit({"compile", "--heads-q", "8", "--heads-kv", "2",
                             "--pack-gqa", "off", "--emit", "tile"});
  expectNoCrash(r);
  ASSERT_EQ(r.exitCode, 0) << r.describe();
  EXPECT_FALSE(contains(r.out, "pack_gqa")) << r.describe();
  EXPECT_TRUE(contains(r.out, "gqa_group = 4")) << r.describe();
}
