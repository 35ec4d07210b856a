//===- test_assembler.cpp - ptxas, nvJitLink or the driver's JIT -----------===//
//
// The runtime assembles with the CUDA toolkit's ptxas binary, else its
// nvJitLink, where one is found that the driver can load the output of
// (runtime/lib/Assembler.h). These tests need no GPU: both run on the CPU.
// Where one is not installed its assembling test skips; the choice tests
// still run.
//
//===----------------------------------------------------------------------===//
#include "Assembler.h"
#include "Subprocess.h"

#include "flashjit/runtime/Device.h"

#include "flashjit/compiler/AttentionSpec.h"
#include "flashjit/compiler/Pipeline.h"
#include "flashjit/kernels/Forward.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

using namespace flashjit;

namespace {
constexpr int kFutureDriver = 99990; // CUDA 99.99: loads any library's cubins

/// Sets an environment variable for one scope, then restores it.
struct ScopedEnv {
  std::string name;
  std::optional<std::string> old;
  ScopedEnv(const char *n, const char *value) : name(n) {
    if (const char *was = std::getenv(n))
      old = was;
    ::setenv(n, value, 1);
  }
  ~ScopedEnv() {
    if (old)
      ::setenv(name.c_str(), old->c_str(), 1);
    else
      ::unsetenv(name.c_str());
  }
};

AttentionSpec d128Causal() {
  AttentionSpec s;
  s.headDimQK = s.headDimV = 128;
  s.dtype = DType::BF16;
  s.mask = MaskMode::Causal;
  return s;
}
/// `a` assembles the d=128 causal sm90 kernel into a cubin naming it, and
/// returns what it makes of PTX that does not assemble.
Expected<std::string> assembleGoodThenBad(const driver::Assembler &a) {
  const AttentionSpec spec = d128Causal();
  auto artifact = compile(spec, defaultTileConfig(spec, Arch::Sm90a), Arch::Sm90a);
  EXPECT_TRUE(artifact) << artifact.message();
  if (artifact) {
    auto cubin = driver::assembleWithToolkit(a, artifact->ptx,
                                             artifact->kernelName, Arch::Sm90a, 3);
    EXPECT_TRUE(cubin) << cubin.message();
    if (cubin) {
      EXPECT_EQ(cubin->substr(0, 4), std::string("\x7f" "ELF"));
      EXPECT_NE(cubin->find(artifact->kernelName), std::string::npos)
          << "the cubin names its kernel";
    }
  }
  return driver::assembleWithToolkit(
      a, ".version 8.0\n.target sm_90a\n.address_size 64\nnot_an_op;\n", "bad",
      Arch::Sm90a, 3);
}
} // namespace

TEST(Assembler, NvJitLinkAssemblesAnSm90KernelIntoACubin) {
  ScopedEnv only("FLASHJIT_ASSEMBLER", "nvjitlink");
  const driver::Assembler a = driver::chooseAssembler(kFutureDriver);
  if (!a.toolkit)
    GTEST_SKIP() << a.why;
  EXPECT_EQ(a.name.rfind("nvJitLink ", 0), 0u) << a.name;
  // PTX that does not assemble is an error carrying the compiler's log.
  auto bad = assembleGoodThenBad(a);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.message().find("nvJitLink"), std::string::npos) << bad.message();
  EXPECT_NE(bad.message().find("bad"), std::string::npos) << bad.message();
}

TEST(Assembler, ALibraryNewerThanTheDriverIsNotUsed) {
  const bool found = driver::chooseAssembler(kFutureDriver).toolkit;
  const driver::Assembler a = driver::chooseAssembler(/*CUDA 1.0*/ 1000);
  EXPECT_FALSE(a.toolkit);
  EXPECT_EQ(a.name, "driver JIT");
  if (found) {
    EXPECT_NE(a.why.find("newer than the driver"), std::string::npos) << a.why;
  }
}

TEST(Assembler, FlashjitAssemblerDriverForcesTheJit) {
  ScopedEnv force("FLASHJIT_ASSEMBLER", "driver");
  const driver::Assembler a = driver::chooseAssembler(kFutureDriver);
  EXPECT_FALSE(a.toolkit);
  EXPECT_EQ(a.why, "FLASHJIT_ASSEMBLER=driver");
  EXPECT_EQ(assemblerDescription(kFutureDriver),
            "driver JIT (FLASHJIT_ASSEMBLER=driver)");
}

TEST(Assembler, AMissingLibraryIsNamed) {
  ScopedEnv only("FLASHJIT_ASSEMBLER", "nvjitlink");
  ScopedEnv path("FLASHJIT_NVJITLINK", "/nonexistent/libnvJitLink.so");
  const driver::Assembler a = driver::chooseAssembler(kFutureDriver);
  EXPECT_FALSE(a.toolkit);
  EXPECT_NE(a.why.find("/nonexistent/libnvJitLink.so (not found)"),
            std::string::npos)
      << a.why;
}

// The ptxas binary compiles the whole program; nvJitLink and the driver's
// JIT compile relocatable code, which spills setmaxnreg kernels.
TEST(Assembler, PtxasAssemblesAnSm90KernelIntoACubin) {
  ScopedEnv only("FLASHJIT_ASSEMBLER", "ptxas");
  const driver::Assembler a = driver::chooseAssembler(kFutureDriver);
  if (a.ptxas.empty())
    GTEST_SKIP() << a.why;
  EXPECT_TRUE(a.toolkit);
  EXPECT_EQ(a.name.rfind("ptxas ", 0), 0u) << a.name;
  EXPECT_EQ(a.nvJitLink, nullptr);
  // ptxas's own log comes back with a failure.
  auto bad = assembleGoodThenBad(a);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.message().find("ptxas"), std::string::npos) << bad.message();
  EXPECT_NE(bad.message().find("for bad failed (exit"), std::string::npos)
      << bad.message();
  EXPECT_NE(bad.message().find("not_an_op"), std::string::npos) << bad.message();
}

TEST(Assembler, AMissingPtxasIsNamedAndTheJitServes) {
  ScopedEnv only("FLASHJIT_ASSEMBLER", "ptxas");
  ScopedEnv path("FLASHJIT_PTXAS", "/nonexistent/ptxas");
  const driver::Assembler a = driver::chooseAssembler(kFutureDriver);
  EXPECT_FALSE(a.toolkit);
  EXPECT_EQ(a.name, "driver JIT");
  EXPECT_NE(a.why.find("/nonexistent/ptxas (not found)"), std::string::npos)
      << a.why;
}

TEST(Assembler, PtxasComesFirstWhenFound) {
  const driver::Assembler a = driver::chooseAssembler(kFutureDriver);
  ScopedEnv only("FLASHJIT_ASSEMBLER", "ptxas");
  const bool ptxasFound = !driver::chooseAssembler(kFutureDriver).ptxas.empty();
  EXPECT_EQ(!a.ptxas.empty(), ptxasFound) << a.name;
}

// A package's ptxas ($FLASHJIT_BUNDLED_PTXAS: the Python package names
// Triton's) serves where the toolkit's are missing or newer than the
// driver; a fake one reports its release.
TEST(Assembler, ABundledPtxasServesLast) {
  const test_support::TempDir dir("flashjit-ptxas");
  const std::string fake = (dir.path() / "ptxas").string();
  {
    std::ofstream out(fake);
    out << "#!/bin/sh\necho 'Cuda compilation tools, release 11.0, V11.0.1'\n";
  }
  std::filesystem::permissions(fake, std::filesystem::perms::owner_all);
  ScopedEnv only("FLASHJIT_ASSEMBLER", "ptxas");
  ScopedEnv home("CUDA_HOME", "/nonexistent");
  ScopedEnv path("PATH", "");
  ScopedEnv bundled("FLASHJIT_BUNDLED_PTXAS", fake.c_str());
  // A CUDA 11.8 driver: any toolkit ptxas here (12 or later) is newer.
  const driver::Assembler a = driver::chooseAssembler(11080);
  EXPECT_EQ(a.ptxas, fake) << a.why;
  EXPECT_EQ(a.name, "ptxas 11.0");
  // Older than the bundled one: the driver's JIT, each refusal named.
  const driver::Assembler none = driver::chooseAssembler(10020);
  EXPECT_TRUE(none.ptxas.empty());
  EXPECT_NE(none.why.find(fake + " (ptxas 11.0, newer than the driver)"),
            std::string::npos)
      << none.why;
}
