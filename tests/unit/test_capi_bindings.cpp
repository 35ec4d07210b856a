//===- test_capi_bindings.cpp - The C API's framework entry points, no GPU ===//
//
// What bindings (Python, JAX, Julia) rely on: the struct_size ABI guard,
// the 0/1 flags, trusted device lengths (no host copies, no reads), PTX
// generation without a GPU, and prepare / current_device errors.
//
//===----------------------------------------------------------------------===//
#include "flashjit/flashjit.h"
#include "flashjit/runtime/Runtime.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>

using namespace flashjit;

namespace {
bool contains(const char *text, const std::string &part) {
  return std::string(text).find(part) != std::string::npos;
}

/// Placeholder addresses, 256-byte aligned as flashjit_prepare documents.
const void *placeholder(uintptr_t n) {
  return reinterpret_cast<const void *>(n * 256);
}

/// Dense BSHD args: [2, 128, 8, 72] q/k/v/o, no LSE.
flashjit_forward_args denseArgs() {
  flashjit_forward_args a;
  EXPECT_EQ(flashjit_forward_args_init(&a, sizeof a), FLASHJIT_SUCCESS);
  a.batch = 2;
  a.heads_q = a.heads_kv = 8;
  a.seqlen_q = a.seqlen_k = 128;
  a.head_dim_qk = 72;
  a.q = placeholder(1);
  a.k = placeholder(2);
  a.v = placeholder(3);
  a.o = const_cast<void *>(placeholder(4));
  for (int64_t *s : {a.q_strides, a.k_strides, a.v_strides, a.o_strides}) {
    s[0] = 128 * 8 * 72;
    s[1] = 72;
    s[2] = 8 * 72;
  }
  return a;
}

/// generate_ptx's text, or the error.
std::string ptxOf(const flashjit_forward_args &a, const char *arch) {
  char *ptx = nullptr;
  const flashjit_status s = flashjit_generate_ptx(&a, arch, &ptx);
  if (s != FLASHJIT_SUCCESS) {
    EXPECT_EQ(ptx, nullptr);
    return std::string("error: ") + flashjit_last_error();
  }
  std::string text(ptx);
  flashjit_free(ptx);
  return text;
}
} // namespace

TEST(CApiAbi, InitWritesOnlyAStructOfItsOwnSize) {
  EXPECT_EQ(flashjit_api_version(), FLASHJIT_API_VERSION);
  flashjit_forward_args a;
  std::memset(&a, 0x5a, sizeof a);
  // A binding built against a header with a smaller (older) struct.
  EXPECT_EQ(flashjit_forward_args_init(&a, sizeof a - 8),
            FLASHJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flashjit_last_error(),
                       "struct_size is " + std::to_string(sizeof a - 8)))
      << flashjit_last_error();
  EXPECT_TRUE(contains(flashjit_last_error(), "another flashjit.h"))
      << flashjit_last_error();
  const unsigned char *bytes = reinterpret_cast<const unsigned char *>(&a);
  for (size_t i = 0; i < sizeof a; ++i)
    ASSERT_EQ(bytes[i], 0x5a) << "byte " << i << " written";
  EXPECT_EQ(flashjit_forward_args_init(nullptr, sizeof a),
            FLASHJIT_ERROR_INVALID_ARGUMENT);

  ASSERT_EQ(flashjit_forward_args_init(&a, sizeof a), FLASHJIT_SUCCESS);
  EXPECT_EQ(a.struct_size, sizeof a);
  EXPECT_EQ(a.trust_device_lengths, 0);
  EXPECT_EQ(a.full_kernel, 0);
  EXPECT_EQ(a.window_left, -1);

  flashjit_runtime_options o;
  EXPECT_EQ(flashjit_runtime_options_init(&o, sizeof o + 8),
            FLASHJIT_ERROR_INVALID_ARGUMENT);
  ASSERT_EQ(flashjit_runtime_options_init(&o, sizeof o), FLASHJIT_SUCCESS);
  EXPECT_EQ(o.struct_size, sizeof o);
}

TEST(CApiAbi, EveryCallRefusesAForeignStructSize) {
  flashjit_forward_args a = denseArgs();
  a.struct_size = 200; // an older header's struct
  char *ptx = reinterpret_cast<char *>(0x1);
  EXPECT_EQ(flashjit_generate_ptx(&a, "sm_80", &ptx),
            FLASHJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(ptx, nullptr);
  EXPECT_TRUE(contains(flashjit_last_error(),
                       "flashjit_forward_args.struct_size is 200"))
      << flashjit_last_error();
  a.struct_size = 0; // never initialised
  EXPECT_EQ(flashjit_generate_ptx(&a, "sm_80", &ptx),
            FLASHJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flashjit_last_error(), "flashjit_forward_args_init"))
      << flashjit_last_error();

  flashjit_runtime_options o;
  ASSERT_EQ(flashjit_runtime_options_init(&o, sizeof o), FLASHJIT_SUCCESS);
  o.struct_size = 24;
  flashjit_runtime *rt = reinterpret_cast<flashjit_runtime *>(0x1);
  EXPECT_EQ(flashjit_runtime_create_with_options(&o, &rt),
            FLASHJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(rt, nullptr);
  EXPECT_TRUE(contains(flashjit_last_error(),
                       "flashjit_runtime_options.struct_size is 24"))
      << flashjit_last_error();
}

TEST(CApiBindings, FlagsAreZeroOrOne) {
  for (auto [flag, name] :
       {std::pair{&flashjit_forward_args::trust_device_lengths,
                  "trust_device_lengths"},
        std::pair{&flashjit_forward_args::full_kernel, "full_kernel"}}) {
    flashjit_forward_args a = denseArgs();
    a.*flag = 2;
    EXPECT_EQ(ptxOf(a, "sm_80"),
              std::string("error: ") + name + " must be 0 or 1, got 2");
  }
}

TEST(CApiBindings, GeneratesPtxForEveryTargetWithoutAGpu) {
  const flashjit_forward_args a = denseArgs();
  for (const char *arch :
       {"sm_80", "sm_86", "sm_87", "sm_89", "sm_90a", "sm_100", "sm_120"}) {
    const std::string ptx = ptxOf(a, arch);
    EXPECT_TRUE(contains(ptx.c_str(), std::string(".target ") + arch))
        << arch << ": " << ptx.substr(0, 300);
    // The specialisation: head dim 72, no LSE, this target.
    EXPECT_TRUE(contains(ptx.c_str(), "hqk72_hv72"))
        << arch << ": " << ptx.substr(0, 300);
  }
}

TEST(CApiBindings, GeneratePtxNamesBadArguments) {
  flashjit_forward_args a = denseArgs();
  EXPECT_EQ(ptxOf(a, "sm_75"),
            "error: arch must be one of "
            "sm_80|sm_86|sm_87|sm_89|sm_90|sm_90a|sm_100|sm_120, got 'sm_75'");
  EXPECT_TRUE(contains(ptxOf(a, nullptr).c_str(), "got NULL"));
  EXPECT_EQ(flashjit_generate_ptx(&a, "sm_80", nullptr),
            FLASHJIT_ERROR_INVALID_ARGUMENT);
  a.head_dim_qk = 300;
  EXPECT_EQ(ptxOf(a, "sm_80"),
            "error: head_dim_qk must be in [1, 256], got 300");
  a = denseArgs();
  a.q = nullptr;
  EXPECT_TRUE(
      contains(ptxOf(a, "sm_80").c_str(), "q must be a device pointer"));
  a = denseArgs();
  a.block_m = 48; // not a multiple of 16 rows per warp
  EXPECT_TRUE(contains(ptxOf(a, "sm_80").c_str(), "error: "))
      << ptxOf(a, "sm_80").substr(0, 200);
}

TEST(CApiBindings, VarlenWithoutHostCopiesIsTrustedUnread) {
  // Packed [total, heads, dim]; the device prefix sums are placeholders
  // that must not be read (there is no GPU to read them from).
  flashjit_forward_args a = denseArgs();
  a.cu_seqlens_q = static_cast<const int32_t *>(placeholder(5));
  a.cu_seqlens_k = static_cast<const int32_t *>(placeholder(6));
  a.key_lengths = static_cast<const int32_t *>(placeholder(7));
  a.total_q = a.total_k = 300;
  a.trust_device_lengths = 1;
  const std::string ptx = ptxOf(a, "sm_90a");
  EXPECT_TRUE(contains(ptx.c_str(), "_varlen")) << ptx.substr(0, 300);
  EXPECT_TRUE(contains(ptx.c_str(), "_klen")) << ptx.substr(0, 300);
  // Host copies, where given, are still checked.
  const int32_t decreasing[] = {0, 100, 50};
  a.cu_seqlens_q_host = decreasing;
  EXPECT_EQ(ptxOf(a, "sm_90a"),
            "error: cu_seqlens_q decreases at index 2: 100 -> 50");
  // The totals are checked whatever the lengths.
  a.cu_seqlens_q_host = nullptr;
  a.total_q = 0;
  EXPECT_EQ(ptxOf(a, "sm_90a"),
            "error: total_q must be in [1, 2147483647], got 0");
}

TEST(CApiBindings, PrepareAndCurrentDeviceNeedTheirArguments) {
  const flashjit_forward_args a = denseArgs();
  EXPECT_EQ(flashjit_prepare(nullptr, &a), FLASHJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(flashjit_last_error(), "rt must not be NULL"));
  EXPECT_EQ(flashjit_current_device(nullptr), FLASHJIT_ERROR_INVALID_ARGUMENT);
  int32_t device = 7;
  const flashjit_status s = flashjit_current_device(&device);
  if (!driverStatus()) {
    EXPECT_EQ(s, FLASHJIT_ERROR_NO_DRIVER);
    EXPECT_EQ(device, 7);
  } else { // this test's thread made no context current
    EXPECT_EQ(s, FLASHJIT_ERROR_DEVICE) << flashjit_last_error();
  }
}

TEST(TrustedLengths, KeyLengthsOnTheDeviceAloneTurnTheFeatureOn) {
  ForwardProblem p;
  p.batch = 2;
  p.headsQ = p.headsKV = 4;
  p.seqlenQ = p.seqlenK = 64;
  p.headDimQK = p.headDimV = 64;
  p.setDenseBSHD();
  p.q = p.k = p.v = placeholder(1);
  p.o = const_cast<void *>(placeholder(2));
  p.deviceKeyLengths = static_cast<const int32_t *>(placeholder(3));
  EXPECT_FALSE(p.hasKeyLengths()); // untrusted: host copies decide
  EXPECT_FALSE(specFor(p).keyLengths);
  p.trustDeviceLengths = true;
  EXPECT_TRUE(p.hasKeyLengths());
  EXPECT_TRUE(validate(p).isOk()) << validate(p).message();
  EXPECT_TRUE(specFor(p).keyLengths);
  // Varlen without host prefix sums is an error unless trusted.
  p.varlen = VarlenSeqs{{}, {}, 128, 128};
  p.deviceCuSeqlensQ = p.deviceCuSeqlensK =
      static_cast<const int32_t *>(placeholder(4));
  EXPECT_TRUE(validate(p).isOk()) << validate(p).message();
  p.trustDeviceLengths = false;
  EXPECT_EQ(validate(p).message(),
            "cu_seqlens_q must have batch + 1 = 3 entries, got 0");
}

// ---- decode fields (API version 3) --------------------------------------------
namespace {
/// Decode over a paged cache: 2 sequences of one query, 8 query heads over
/// 2 K/V heads, head dim 64, pages of 16 rows, 3 per sequence (host copies
/// of the block table and cache lengths).
struct PagedArgs {
  int32_t table[6] = {5, 1, 3, 0, 2, 4};
  int32_t lengths[2] = {40, 17};
  flashjit_forward_args a;
  PagedArgs() {
    EXPECT_EQ(flashjit_forward_args_init(&a, sizeof a), FLASHJIT_SUCCESS);
    a.batch = 2;
    a.heads_q = 8;
    a.heads_kv = 2;
    a.seqlen_q = 1;
    a.seqlen_k = 48;
    a.head_dim_qk = 64;
    a.q = placeholder(1);
    a.k = placeholder(2);
    a.v = placeholder(3);
    a.o = const_cast<void *>(placeholder(4));
    for (int64_t *s : {a.q_strides, a.o_strides}) {
      s[0] = 8 * 64;
      s[1] = 64;
      s[2] = 8 * 64;
    }
    for (int64_t *s : {a.k_strides, a.v_strides}) { // {page, head, row}
      s[0] = 16 * 2 * 64;
      s[1] = 64;
      s[2] = 2 * 64;
    }
    a.block_table = reinterpret_cast<const int32_t *>(placeholder(5));
    a.block_table_host = table;
    a.num_pages = 6;
    a.page_size = 16;
    a.max_pages_per_seq = 3;
    a.key_lengths = reinterpret_cast<const int32_t *>(placeholder(6));
    a.key_lengths_host = lengths;
  }
};
} // namespace

TEST(CApiDecode, PagedArgsCompileTheirKernelAndAppendHelper) {
  PagedArgs p;
  const std::string ptx = ptxOf(p.a, "sm_80");
  EXPECT_TRUE(contains(ptx.c_str(), "_paged_")) << ptx.substr(0, 300);
  EXPECT_TRUE(contains(ptx.c_str(), "_append")) << ptx.substr(0, 300);
}

TEST(CApiDecode, BadBlockTablesAndSplitsFailBeforeAnyLaunch) {
  PagedArgs p;
  p.table[4] = 6; // sequence 1's second page (17 keys use two)
  EXPECT_TRUE(contains(ptxOf(p.a, "sm_80").c_str(),
                       "block_table[1][1] = 6 is not a page id in [0, "
                       "num_pages = 6)"));
  PagedArgs q;
  q.lengths[0] = 49;
  EXPECT_TRUE(contains(ptxOf(q.a, "sm_80").c_str(), "key_lengths[0]"));
  PagedArgs r;
  r.a.key_lengths = nullptr;
  r.a.key_lengths_host = nullptr;
  EXPECT_TRUE(contains(ptxOf(r.a, "sm_80").c_str(),
                       "a paged KV cache needs key_lengths"));
  PagedArgs s;
  s.a.num_splits = kMaxSplits + 1;
  EXPECT_TRUE(contains(ptxOf(s.a, "sm_80").c_str(),
                       "num_splits must be in [0, 128]"));
  PagedArgs t;
  t.a.page_size = 0;
  EXPECT_TRUE(contains(ptxOf(t.a, "sm_80").c_str(), "page_size"));
}
