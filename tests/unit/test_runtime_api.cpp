//===- test_runtime_api.cpp - Runtime API paths that need no GPU ----------===//
//
// Argument validation, the compute capability table, and the behaviour of
// the C and C++ APIs on a machine without a CUDA driver (these skip where a
// driver is present).
//
//===----------------------------------------------------------------------===//
#include "flashjit/flashjit.h"
#include "flashjit/runtime/Device.h"
#include "flashjit/runtime/Runtime.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <thread>

using namespace flashjit;

namespace {
const void *fakePtr(uintptr_t n) {
  return reinterpret_cast<const void *>(n << 20);
}

ForwardProblem goodProblem() {
  ForwardProblem p;
  p.batch = 2;
  p.headsQ = 8;
  p.headsKV = 2;
  p.seqlenQ = 100;
  p.seqlenK = 300;
  p.headDimQK = p.headDimV = 80;
  p.setDenseBSHD();
  p.q = fakePtr(1);
  p.k = fakePtr(2);
  p.v = fakePtr(3);
  p.o = const_cast<void *>(fakePtr(4));
  return p;
}

/// validate() fails and its message contains every fragment.
void expectInvalid(const ForwardProblem &p,
                   std::initializer_list<const char *> fragments) {
  Status s = validate(p);
  ASSERT_FALSE(s.isOk());
  for (const char *f : fragments)
    EXPECT_NE(s.message().find(f), std::string::npos)
        << "'" << f << "' not in: " << s.message();
}

bool haveDriver() { return driverStatus().isOk(); }
} // namespace

TEST(Validate, AcceptsAGoodProblem) {
  Status s = validate(goodProblem());
  EXPECT_TRUE(s.isOk()) << s.message();
}

TEST(Validate, NamesTheArgumentAndTheRange) {
  auto with = [](auto change) {
    ForwardProblem p = goodProblem();
    change(p);
    return p;
  };
  expectInvalid(with([](auto &p) { p.batch = 0; }),
                {"batch", "[1, 65535]", "got 0"});
  expectInvalid(with([](auto &p) { p.headsQ = 70000; }),
                {"heads_q", "[1, 65535]"});
  expectInvalid(with([](auto &p) { p.headsKV = 3; }),
                {"heads_q (8)", "multiple of heads_kv (3)"});
  expectInvalid(with([](auto &p) { p.headsKV = 16; }), {"heads_kv", "[1, 8]"});
  expectInvalid(with([](auto &p) { p.seqlenQ = 0; }), {"seqlen_q", "got 0"});
  expectInvalid(with([](auto &p) { p.seqlenK = -5; }), {"seqlen_k", "got -5"});
  expectInvalid(with([](auto &p) { p.headDimQK = 257; }),
                {"head_dim_qk", "[1, 256]", "got 257"});
  expectInvalid(with([](auto &p) { p.headDimV = 0; }),
                {"head_dim_v", "[1, 256]"});
  expectInvalid(with([](auto &p) { p.k = nullptr; }),
                {"k must be a device pointer"});
  expectInvalid(with([](auto &p) { p.o = static_cast<char *>(p.o) + 1; }),
                {"o (", "aligned to 2 bytes"});
  expectInvalid(
      with([](auto &p) { p.lse = reinterpret_cast<float *>(0x1002); }),
      {"lse", "aligned to 4 bytes"});
  expectInvalid(with([](auto &p) { p.vStrides.head = -1; }),
                {"v_head_stride must be >= 0", "got -1"});
  expectInvalid(with([](auto &p) { p.oStrides.row = 40; }),
                {"o_row_stride must be >= 80", "head_dim_v", "got 40"});
  expectInvalid(with([](auto &p) { p.softmaxScale = std::nan(""); }),
                {"softmax_scale must be finite and > 0"});
  expectInvalid(with([](auto &p) { p.softmaxScale = -0.125; }),
                {"softmax_scale must be finite and > 0", "-0.125"});
}

TEST(Validate, FeaturesNeedTheirDevicePointers) {
  auto with = [](auto change) {
    ForwardProblem p = goodProblem();
    change(p);
    return p;
  };
  expectInvalid(with([](auto &p) {
                  p.bias = BiasMode::Tensor;
                  p.biasShape = {1, 1, {}};
                  p.setDenseBias();
                }),
                {"bias must be a device pointer"});
  expectInvalid(with([](auto &p) { p.bias = BiasMode::Alibi; }),
                {"alibi_slopes must be a device pointer"});
  expectInvalid(with([](auto &p) {
                  p.bias = BiasMode::Alibi;
                  p.alibiSlopes = reinterpret_cast<const float *>(0x1002);
                }),
                {"alibi_slopes", "aligned to 4 bytes"});
  expectInvalid(with([](auto &p) {
                  p.varlen = VarlenSeqs{{0, 50, 100}, {0, 100, 300}, 100, 300};
                  p.setDenseBSHD();
                }),
                {"cu_seqlens_q must be a device pointer"});
  expectInvalid(with([](auto &p) { p.keyLengths = {10, 300}; }),
                {"key_lengths must be a device pointer"});
  // With the pointers, the same problems are valid.
  ForwardProblem ok = with([](auto &p) {
    p.keyLengths = {10, 300};
    p.deviceKeyLengths = static_cast<const int32_t *>(fakePtr(9));
    p.bias = BiasMode::Alibi;
    p.alibiSlopes = static_cast<const float *>(fakePtr(10));
  });
  EXPECT_TRUE(validate(ok).isOk()) << validate(ok).message();
}

TEST(SpecFor, CarriesEveryFeatureIntoTheSpec) {
  ForwardProblem p = goodProblem();
  EXPECT_EQ(specFor(p).gqaGroup, 4);
  EXPECT_FALSE(specFor(p).softcap);
  p.softcap = 30;
  p.mask = MaskMode::Window;
  p.bias = BiasMode::Alibi;
  p.keyLengths = {1, 2};
  p.varlen = VarlenSeqs{{0, 50, 100}, {0, 100, 300}, 101, 300};
  p.setDenseBSHD();
  const AttentionSpec spec = specFor(p);
  EXPECT_TRUE(spec.softcap);
  EXPECT_EQ(spec.mask, MaskMode::Window);
  EXPECT_EQ(spec.bias, BiasMode::Alibi);
  EXPECT_TRUE(spec.keyLengths);
  EXPECT_TRUE(spec.varlen);
  // Varlen ignores batch strides: an odd one does not narrow the copies.
  p.qStrides.batch = 3;
  EXPECT_EQ(specFor(p).globalAlignElems, 8);
}

TEST(Device, ComputeCapabilityToArch) {
  EXPECT_EQ(*archForComputeCapability(9, 0), Arch::Sm90a);
  EXPECT_EQ(*archForComputeCapability(8, 0), Arch::Sm80);
  EXPECT_EQ(*archForComputeCapability(8, 6), Arch::Sm86);
  EXPECT_EQ(*archForComputeCapability(8, 9), Arch::Sm89);
  // GPUs that run the sm_80 family through PTX (Orin, B200, RTX 50xx).
  EXPECT_EQ(*archForComputeCapability(8, 7), Arch::Sm87);
  EXPECT_EQ(*archForComputeCapability(10, 0), Arch::Sm100);
  EXPECT_EQ(*archForComputeCapability(12, 0), Arch::Sm120);
  for (auto [major, minor] :
       {std::pair{7, 5}, std::pair{10, 3}, std::pair{12, 1}}) {
    auto a = archForComputeCapability(major, minor);
    ASSERT_FALSE(a);
    EXPECT_NE(a.message().find("compute capability " + std::to_string(major) +
                               "." + std::to_string(minor)),
              std::string::npos)
        << a.message();
  }
  EXPECT_EQ(formatCudaVersion(12080), "12.8");
  EXPECT_EQ(formatCudaVersion(13000), "13.0");
}

TEST(NoDriver, CppApiReportsItAndDoesNotCrash) {
  if (haveDriver())
    GTEST_SKIP() << "a CUDA driver is present";
  Status s = driverStatus();
  EXPECT_NE(s.message().find("no CUDA driver found (libcuda.so.1"),
            std::string::npos)
      << s.message();
  auto rt = Runtime::create();
  ASSERT_FALSE(rt);
  EXPECT_EQ(rt.message(), s.message());
  EXPECT_FALSE(deviceCount());
  EXPECT_FALSE(queryDevice(0));
  EXPECT_FALSE(driverVersion());
}

TEST(NoDriver, CApiReturnsAnErrorCodeAndALastError) {
  if (haveDriver())
    GTEST_SKIP() << "a CUDA driver is present";
  flashjit_runtime *rt = reinterpret_cast<flashjit_runtime *>(0x1);
  EXPECT_EQ(flashjit_runtime_create(0, &rt), FLASHJIT_ERROR_NO_DRIVER);
  EXPECT_EQ(rt, nullptr);
  EXPECT_NE(std::strstr(flashjit_last_error(), "no CUDA driver found"), nullptr)
      << flashjit_last_error();
  EXPECT_STREQ(flashjit_status_string(FLASHJIT_ERROR_NO_DRIVER),
               "FLASHJIT_ERROR_NO_DRIVER");
  flashjit_runtime_destroy(nullptr); // a no-op
}

TEST(CApi, NullArgumentsAreInvalidNotFatal) {
  EXPECT_EQ(flashjit_runtime_create(0, nullptr),
            FLASHJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::strstr(flashjit_last_error(), "out"), nullptr);
  flashjit_forward_args args;
  ASSERT_EQ(flashjit_forward_args_init(&args, sizeof args), FLASHJIT_SUCCESS);
  EXPECT_EQ(args.dtype, FLASHJIT_BF16);
  EXPECT_EQ(args.batch, 0);
  EXPECT_EQ(flashjit_attention_forward(nullptr, &args, nullptr),
            FLASHJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::strstr(flashjit_last_error(), "rt must not be NULL"), nullptr);
}

TEST(CApi, RuntimeOptionsDefaultToTheCxxOnesAndAreChecked) {
  flashjit_runtime_options options;
  std::memset(&options, 0x7f, sizeof options);
  ASSERT_EQ(flashjit_runtime_options_init(&options, sizeof options),
            FLASHJIT_SUCCESS);
  const RuntimeOptions cxx;
  EXPECT_EQ(options.device, cxx.device);
  EXPECT_EQ(options.disk_cache, 1);
  EXPECT_EQ(options.use_tuned, 1);
  EXPECT_EQ(options.quick_first, 1);
  EXPECT_EQ(options.cache_dir, nullptr);

  flashjit_runtime *rt = reinterpret_cast<flashjit_runtime *>(0x1);
  EXPECT_EQ(flashjit_runtime_create_with_options(nullptr, &rt),
            FLASHJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(rt, nullptr);
  EXPECT_NE(std::strstr(flashjit_last_error(), "options must not be NULL"),
            nullptr);
  // Flags are checked before the driver is looked for.
  for (auto [flag, name] :
       {std::pair{&flashjit_runtime_options::disk_cache, "disk_cache"},
        std::pair{&flashjit_runtime_options::use_tuned, "use_tuned"},
        std::pair{&flashjit_runtime_options::quick_first, "quick_first"}}) {
    flashjit_runtime_options bad = options;
    bad.*flag = 2;
    EXPECT_EQ(flashjit_runtime_create_with_options(&bad, &rt),
              FLASHJIT_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(std::string(flashjit_last_error()),
              std::string(name) + " must be 0 or 1, got 2");
  }
  EXPECT_EQ(flashjit_finish_compiles(nullptr),
            FLASHJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::strstr(flashjit_last_error(), "rt must not be NULL"), nullptr);
  if (!haveDriver()) {
    options.quick_first = 0;
    options.cache_dir = "/nonexistent";
    EXPECT_EQ(flashjit_runtime_create_with_options(&options, &rt),
              FLASHJIT_ERROR_NO_DRIVER);
  }
}

TEST(CApi, LastErrorIsPerThread) {
  EXPECT_EQ(flashjit_runtime_create(0, nullptr),
            FLASHJIT_ERROR_INVALID_ARGUMENT);
  std::string other = "unset";
  std::thread([&] { other = flashjit_last_error(); }).join();
  EXPECT_EQ(other, "");
  EXPECT_STRNE(flashjit_last_error(), "");
}

TEST(CApi, Version) {
  EXPECT_STRNE(flashjit_version(), "");
  EXPECT_STREQ(flashjit_status_string(FLASHJIT_SUCCESS), "FLASHJIT_SUCCESS");
}
