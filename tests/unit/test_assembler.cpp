//===- test_assembler.cpp - nvJitLink or the driver's JIT ------------------===//
//
// The runtime assembles with the CUDA toolkit's nvJitLink where one is found
// that the driver can load the output of (runtime/lib/Assembler.h). These
// tests need no GPU: nvJitLink runs on the CPU. Where no libnvJitLink is
// installed the assembling test skips; the choice tests still run.
//
//===----------------------------------------------------------------------===//
#include "Assembler.h"

#include "flashjit/runtime/Device.h"

#include "flashjit/compiler/AttentionSpec.h"
#include "flashjit/compiler/Pipeline.h"
#include "flashjit/kernels/Forward.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

using namespace flashjit;

namespace {
constexpr int kFutureDriver = 99990; // CUDA 99.99: loads any library's cubins

/// Sets an environment variable for one scope.
struct ScopedEnv {
  std::string name;
  ScopedEnv(const char *n, const char *value) : name(n) {
    ::setenv(n, value, 1);
  }
  ~ScopedEnv() { ::unsetenv(name.c_str()); }
};

AttentionSpec d128Causal() {
  AttentionSpec s;
  s.headDimQK = s.headDimV = 128;
  s.dtype = DType::BF16;
  s.mask = MaskMode::Causal;
  return s;
}
} // namespace

TEST(Assembler, NvJitLinkAssemblesAnSm90KernelIntoACubin) {
  const driver::Assembler a = driver::chooseAssembler(kFutureDriver);
  if (!a.toolkit)
    GTEST_SKIP() << a.why;
  EXPECT_EQ(a.name.rfind("nvJitLink ", 0), 0u) << a.name;
  const AttentionSpec spec = d128Causal();
  auto artifact = compile(spec, defaultTileConfig(spec, Arch::Sm90a), Arch::Sm90a);
  ASSERT_TRUE(artifact) << artifact.message();
  auto cubin = driver::assembleWithToolkit(a, artifact->ptx,
                                           artifact->kernelName, Arch::Sm90a, 3);
  ASSERT_TRUE(cubin) << cubin.message();
  ASSERT_GT(cubin->size(), 4u);
  EXPECT_EQ(cubin->substr(0, 4), std::string("\x7f" "ELF"));
  EXPECT_NE(cubin->find(artifact->kernelName), std::string::npos)
      << "the cubin names its kernel";
  // PTX that does not assemble is an error carrying the compiler's log.
  auto bad = driver::assembleWithToolkit(
      a, ".version 8.0\n.target sm_90a\n.address_size 64\nnot_an_op;\n", "bad",
      Arch::Sm90a, 3);
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
  ScopedEnv path("FLASHJIT_NVJITLINK", "/nonexistent/libnvJitLink.so");
  const driver::Assembler a = driver::chooseAssembler(kFutureDriver);
  EXPECT_FALSE(a.toolkit);
  EXPECT_NE(a.why.find("/nonexistent/libnvJitLink.so (not found)"),
            std::string::npos)
      << a.why;
}
