//===- test_params.cpp - validateParams: what a forward call may ask for --===//
#include "flashjit/kernels/AttentionParams.h"

#include <gtest/gtest.h>

#include <cmath>
#include <initializer_list>
#include <limits>
#include <string>

using namespace flashjit;

namespace {
/// A valid dense BSHD problem: batch 2, 4 query heads over 2 K/V heads,
/// 64 queries, 80 keys, head dim 64.
AttentionParams valid() {
  AttentionParams p;
  p.batch = 2;
  p.headsQ = 4;
  p.headsKV = 2;
  p.seqlenQ = 64;
  p.seqlenK = 80;
  p.headDimQK = p.headDimV = 64;
  p.setDenseBSHD();
  return p;
}

/// Varlen over 3 sequences of (10, 20), (0, 5) and (30, 40) queries/keys.
AttentionParams varlen() {
  AttentionParams p = valid();
  p.batch = 3;
  p.seqlenQ = 30;
  p.seqlenK = 40;
  p.varlen = VarlenSeqs{{0, 10, 10, 40}, {0, 20, 25, 65}, 40, 65};
  p.setDenseBSHD();
  return p;
}

/// Expects `p` to be rejected with a message containing every fragment.
void expectError(const AttentionParams &p,
                 std::initializer_list<std::string> fragments,
                 bool writesLse = true) {
  const Status s = validateParams(p, writesLse);
  ASSERT_FALSE(s) << "accepted, expected: " << *fragments.begin();
  for (const std::string &f : fragments)
    EXPECT_NE(s.message().find(f), std::string::npos)
        << "message: " << s.message() << "\nmissing: " << f;
}

void expectOk(const AttentionParams &p, bool writesLse = true) {
  const Status s = validateParams(p, writesLse);
  EXPECT_TRUE(s) << s.message();
}
} // namespace

// ---- accepted ---------------------------------------------------------------
TEST(Params, ValidFeatureCombinationsPass) {
  expectOk(valid());

  AttentionParams w = valid();
  w.mask = MaskMode::Window;
  for (auto [l, r] : {std::pair<int64_t, int64_t>{0, 0},
                      {kUnboundedWindow, 0},
                      {128, kUnboundedWindow},
                      {kUnboundedWindow, kUnboundedWindow},
                      {1000000, 3}}) {
    w.windowLeft = l;
    w.windowRight = r;
    expectOk(w);
  }

  AttentionParams c = valid();
  c.mask = MaskMode::Causal;
  c.seqlenQ = 200; // more queries than keys: the first rows see nothing
  c.setDenseBSHD();
  c.softcap = 30;
  expectOk(c);

  AttentionParams bias = valid();
  bias.bias = BiasMode::Tensor;
  for (auto [bb, bh] :
       {std::pair<int64_t, int64_t>{1, 1}, {2, 1}, {1, 4}, {2, 4}}) {
    bias.biasShape.batch = bb;
    bias.biasShape.heads = bh;
    bias.setDenseBias();
    expectOk(bias);
  }
  bias.biasShape.strides = {0, 0, 0}; // one row broadcast over the queries
  expectOk(bias);

  AttentionParams alibi = valid();
  alibi.bias = BiasMode::Alibi;
  alibi.alibiBatchStride = 4;
  expectOk(alibi);

  // Bias extents are ignored without a bias tensor (the C API leaves 0).
  AttentionParams noBias = valid();
  noBias.biasShape.batch = noBias.biasShape.heads = 0;
  expectOk(noBias);

  AttentionParams v = varlen();
  v.mask = MaskMode::Window;
  v.windowLeft = 8;
  v.bias = BiasMode::Alibi;
  v.softcap = 50;
  expectOk(v);
  v.keyLengths = {20, 0, 17};
  expectOk(v);

  AttentionParams k = valid();
  k.keyLengths = {0, 80};
  expectOk(k);

  AttentionParams dv = valid();
  dv.headDimQK = 192;
  dv.headDimV = 128;
  dv.setDenseBSHD();
  expectOk(dv);

  AttentionParams mqa = valid();
  mqa.headsKV = 1;
  expectOk(mqa);
}

TEST(Params, LseStridesAreCheckedOnlyWhenWritten) {
  AttentionParams p = valid();
  p.lseBatchStride = p.lseHeadStride = 0;
  expectOk(p, /*writesLse=*/false);
  expectError(p, {"lse_batch_stride is 0 with batch = 2", "overlap"});
  p.lseBatchStride = 4 * 64;
  p.lseHeadStride = 1;
  expectError(p, {"lse_head_stride must be >= 64",
                  "the seqlen_q contiguous rows", "got 1"});
  p.lseHeadStride = -1;
  expectError(p, {"lse_batch_stride and lse_head_stride must be >= 0"});
  // Varlen: LSE is [heads_q, total_q].
  AttentionParams v = varlen();
  v.lseHeadStride = 39;
  expectError(v, {"lse_head_stride must be >= 40", "total_q", "got 39"});
  v.lseBatchStride = -5; // ignored under varlen
  v.lseHeadStride = 40;
  expectOk(v);
}

// ---- sizes ------------------------------------------------------------------
TEST(Params, EnumsOutOfRange) {
  AttentionParams p = valid();
  p.dtype = static_cast<DType>(7);
  expectError(p, {"dtype must be one of", dtypeChoices()});
  p = valid();
  p.mask = static_cast<MaskMode>(9);
  expectError(p, {"mask must be one of", maskChoices()});
  p = valid();
  p.bias = static_cast<BiasMode>(-1);
  expectError(p, {"bias must be one of", biasChoices()});
}

TEST(Params, SizeRanges) {
  const int64_t big = int64_t(std::numeric_limits<int32_t>::max()) + 1;
  struct Case {
    int64_t AttentionParams::*field;
    int64_t value;
    std::string message;
  } cases[] = {
      {&AttentionParams::batch, 0, "batch must be in [1, 65535], got 0"},
      {&AttentionParams::batch, 65536,
       "batch must be in [1, 65535], got 65536"},
      {&AttentionParams::headsQ, 0, "heads_q must be in [1, 65535], got 0"},
      {&AttentionParams::headsKV, 8, "heads_kv must be in [1, 4], got 8"},
      {&AttentionParams::seqlenQ, 0,
       "seqlen_q must be in [1, 2147483647], got 0"},
      {&AttentionParams::seqlenK, big,
       "seqlen_k must be in [1, 2147483647], got 2147483648"},
      {&AttentionParams::headDimQK, 257,
       "head_dim_qk must be in [1, 256], got 257"},
      {&AttentionParams::headDimV, 0, "head_dim_v must be in [1, 256], got 0"},
  };
  for (const Case &c : cases) {
    AttentionParams p = valid();
    p.*c.field = c.value;
    expectError(p, {c.message});
  }
}

TEST(Params, HeadsQMustBeAMultipleOfHeadsKV) {
  AttentionParams p = valid();
  p.headsQ = 12;
  p.headsKV = 5;
  p.setDenseBSHD();
  expectError(p, {"heads_q (12) must be a multiple of heads_kv (5)"});
}

// ---- strides ----------------------------------------------------------------
TEST(Params, NegativeStrides) {
  AttentionParams p = valid();
  p.kStrides.head = -1;
  expectError(p, {"k_head_stride must be >= 0, got -1"});
  p = valid();
  p.qStrides.batch = -3;
  expectError(p, {"q_batch_stride must be >= 0, got -3"});
  p = valid();
  p.oStrides.row = -64;
  expectError(p, {"o_row_stride must be >= 0, got -64"});
  // Batch strides are ignored under varlen.
  AttentionParams v = varlen();
  v.vStrides.batch = -1;
  expectOk(v);
}

TEST(Params, OutputRowsMustNotOverlap) {
  AttentionParams p = valid();
  p.oStrides.row = 63;
  expectError(p, {"o_row_stride must be >= 64",
                  "the head_dim_v contiguous columns", "got 63"});
  p.seqlenQ = 1; // a single row cannot overlap another
  p.setDenseBSHD();
  p.oStrides.row = 0;
  expectOk(p);
}

// Defect 7: outputs that alias themselves, and strides whose extent
// overflows, were accepted.
TEST(Params, OutputsMustNotAliasThemselves) {
  AttentionParams p = valid(); // batch 2, heads_q 4, BSHD
  p.oStrides.head = 0;
  expectError(p, {"o_head_stride is 0 with heads_q = 4", "overlap"});
  p = valid();
  p.oStrides.batch = 0;
  expectError(p, {"o_batch_stride is 0 with batch = 2"});
  p = valid();
  p.oStrides.head = 32; // heads half-overlap their rows
  expectError(p, {"o_head_stride must be >= 64", "got 32"});
  p = valid();
  p.oStrides.batch = p.oStrides.row; // batch 1 starts at row 1 of batch 0
  expectError(p, {"stride must be >=", "overlap"});
  p = valid();
  p.lseBatchStride = 0;
  expectError(p, {"lse_batch_stride is 0 with batch = 2"});
  // Any order of dimensions is fine as long as none overlaps: BHSD, and
  // heads interleaved inside rows (BSHD) both pass.
  p = valid();
  p.oStrides = bhsdStrides(p.headsQ, p.seqlenQ, p.headDimV);
  expectOk(p);
  // Inputs may alias (a broadcast K/V head is stride 0).
  p = valid();
  p.kStrides.head = 0;
  expectOk(p);
}

TEST(Params, StridesWhoseExtentOverflowsAreRejected) {
  AttentionParams p = valid();
  p.oStrides.row = int64_t(1) << 62;
  expectError(p, {"o is too large", "more than 2^63 - 1 bytes",
                  "o_row_stride = 4611686018427387904 over seqlen_q = 64"});
  p = valid();
  p.qStrides.batch = INT64_MAX;
  expectError(p, {"q is too large", "q_batch_stride"});
  p = valid();
  p.vStrides.head = int64_t(1) << 62; // fits in elements, not in bytes
  expectError(p, {"v is too large"});
  p = valid();
  p.lseHeadStride = int64_t(1) << 61;
  expectError(p, {"lse is too large"});
  p = valid();
  p.bias = BiasMode::Alibi;
  p.alibiBatchStride = INT64_MAX / 2;
  expectError(p, {"alibi_slopes is too large"});
}

// Defect 4: a tensor bias over 2^31 x 2^31 scores overflowed the dense
// strides (UB; a negative stride in release builds).
TEST(Params, HugeBiasTensorsAreRejectedWithoutOverflow) {
  AttentionParams p = valid();
  p.batch = p.headsQ = p.headsKV = 4;
  p.seqlenQ = p.seqlenK = 2147483647;
  p.setDenseBSHD();
  p.bias = BiasMode::Tensor;
  p.biasShape.batch = p.biasShape.heads = 4;
  p.setDenseBias(); // saturates instead of wrapping
  EXPECT_GT(p.biasShape.strides.batch, 0);
  expectError(p, {"bias is too large", "bias_batch_stride"});
  EXPECT_EQ(saturatingMul(INT64_MAX, 2), INT64_MAX);
  EXPECT_EQ(saturatingMul(INT64_MIN, 2), INT64_MIN);
  EXPECT_EQ(saturatingMul(-3, 4, 5), -60);
}

// Defect 8: values that pass as doubles but become inf or 0 as the float32
// the kernel computes with.
TEST(Params, ScaleAndSoftcapMustBeNormalFloat32sForTheKernel) {
  for (double scale : {1e39, 1e-320, 1e-39, 3e38}) {
    AttentionParams p = valid();
    p.softmaxScale = scale;
    expectError(p, {"softmax_scale must be in [", "float32"});
  }
  for (double cap : {1e39, 1e-320, 1e-39}) {
    AttentionParams p = valid();
    p.softcap = cap;
    expectError(p, {"softcap must be 0 (off) or in [", "float32"});
  }
  AttentionParams p = valid();
  p.softmaxScale = 1e30;
  p.softcap = 1e-30; // each fine, the ratio is not
  expectError(p, {"softmax_scale / softcap"});
  p.softmaxScale = 0.125;
  p.softcap = 50;
  expectOk(p);
  p.softmaxScale = 1e-30;
  p.softcap = 1e30;
  expectError(p, {"softmax_scale / softcap"});
}

// ---- scores -----------------------------------------------------------------
TEST(Params, SoftmaxScaleMustBeFiniteAndPositive) {
  for (double scale :
       {0.0, -0.125, std::numeric_limits<double>::infinity(), std::nan("")}) {
    AttentionParams p = valid();
    p.softmaxScale = scale;
    expectError(p, {"softmax_scale must be finite and > 0"});
  }
}

TEST(Params, WindowSidesMustBeNonNegativeOrUnbounded) {
  AttentionParams p = valid();
  p.mask = MaskMode::Window;
  p.windowLeft = -2;
  expectError(p, {"window_left must be >= 0, or -1 for unbounded, got -2"});
  p.windowLeft = 4;
  p.windowRight = -7;
  expectError(p, {"window_right must be >= 0, or -1 for unbounded, got -7"});
}

TEST(Params, WindowNeedsMaskWindow) {
  AttentionParams p = valid();
  p.windowLeft = 16;
  expectError(p, {"window_left (16)", "mask=window", "mask is none"});
  p = valid();
  p.mask = MaskMode::Causal;
  p.windowRight = 0;
  expectError(p, {"window_right (0)", "mask=window", "mask is causal"});
}

TEST(Params, SoftcapMustBeFiniteAndNonNegative) {
  for (double cap :
       {-1.0, std::numeric_limits<double>::infinity(), std::nan("")}) {
    AttentionParams p = valid();
    p.softcap = cap;
    expectError(p, {"softcap must be finite and >= 0"});
  }
}

TEST(Params, BiasShapeMustBroadcast) {
  AttentionParams p = valid(); // batch 2, heads_q 4
  p.bias = BiasMode::Tensor;
  p.biasShape.batch = 3;
  p.setDenseBias();
  expectError(p, {"bias shape [3, 1, seqlen_q, seqlen_k] does not broadcast "
                  "to [batch=2, heads_q=4, seqlen_q, seqlen_k]",
                  "bias_batch must be 1 or 2"});
  p.biasShape.batch = 2;
  p.biasShape.heads = 2;
  expectError(p,
              {"bias shape [2, 2, seqlen_q, seqlen_k]", "bias_heads 1 or 4"});
  p.biasShape.heads = 0;
  expectError(p, {"bias shape [2, 0,"});
}

TEST(Params, BiasStridesMustBeNonNegative) {
  AttentionParams p = valid();
  p.bias = BiasMode::Tensor;
  p.biasShape.heads = 4;
  p.setDenseBias();
  p.biasShape.strides.head = -1;
  expectError(p, {"bias_head_stride must be >= 0, got -1"});
  p.setDenseBias();
  p.biasShape.strides.row = -80;
  expectError(p, {"bias_row_stride must be >= 0, got -80"});
  // A broadcast dimension's stride is never used.
  p.setDenseBias();
  p.biasShape.heads = 1;
  p.biasShape.strides.head = -1;
  p.biasShape.strides.batch = -7;
  expectOk(p);
}

TEST(Params, AlibiBatchStrideMustBeNonNegative) {
  AttentionParams p = valid();
  p.bias = BiasMode::Alibi;
  p.alibiBatchStride = -4;
  expectError(p, {"alibi_batch_stride must be >= 0", "got -4"});
}

// ---- varlen and key lengths -------------------------------------------------
TEST(Params, CuSeqlensNeedBatchPlusOneEntries) {
  AttentionParams p = varlen();
  p.varlen->cuSeqlensQ.pop_back();
  expectError(p, {"cu_seqlens_q must have batch + 1 = 4 entries, got 3"});
  p = varlen();
  p.varlen->cuSeqlensK.push_back(70);
  expectError(p, {"cu_seqlens_k must have batch + 1 = 4 entries, got 5"});
}

TEST(Params, CuSeqlensStartAtOrAfterZero) {
  AttentionParams p = varlen();
  p.varlen->cuSeqlensK[0] = -1;
  expectError(p, {"cu_seqlens_k[0] must be >= 0, got -1"});
  p = varlen();
  p.varlen->cuSeqlensQ = {5, 15, 15, 40}; // an offset start is fine
  expectOk(p);
}

TEST(Params, CuSeqlensMustNotDecrease) {
  AttentionParams p = varlen();
  p.batch = 4;
  p.varlen->cuSeqlensQ = {0, 10, 40, 20, 30};
  p.varlen->cuSeqlensK = {0, 10, 20, 30, 40};
  p.keyLengths.clear();
  expectError(p, {"cu_seqlens_q decreases at index 3: 40 -> 20"});
}

TEST(Params, CuSeqlensMustEndWithinTheBuffer) {
  AttentionParams p = valid();
  p.seqlenQ = 100;
  p.seqlenK = 500;
  p.varlen = VarlenSeqs{{0, 100, 200}, {0, 400, 900}, 200, 800};
  p.setDenseBSHD();
  expectError(p, {"cu_seqlens_k[2] = 900 exceeds total_k = 800"});
  p.varlen->totalK = 900;
  p.varlen->totalQ = 150;
  p.setDenseBSHD();
  expectError(p, {"cu_seqlens_q[2] = 200 exceeds total_q = 150"});
}

TEST(Params, SequencesMustFitTheMaxSeqlens) {
  AttentionParams p = varlen(); // seqlen_q 30, seqlen_k 40
  p.seqlenQ = 29;
  expectError(p,
              {"sequence 2 has length 30", "cu_seqlens_q[3]", "seqlen_q = 29"});
  p = varlen();
  p.seqlenK = 20;
  expectError(p,
              {"sequence 2 has length 40", "cu_seqlens_k[3]", "seqlen_k = 20"});
}

TEST(Params, TotalsMustBePositive) {
  AttentionParams p = varlen();
  p.varlen->totalQ = 0;
  expectError(p, {"total_q must be in [1, 2147483647], got 0"});
  p = varlen();
  p.varlen->totalK = -3;
  expectError(p, {"total_k must be in [1, 2147483647], got -3"});
}

TEST(Params, KeyLengthsNeedOneEntryPerBatch) {
  AttentionParams p = valid();
  p.keyLengths = {10, 20, 30};
  expectError(p, {"key_lengths must have batch = 2 entries, got 3"});
}

TEST(Params, KeyLengthsMustFitTheirSequence) {
  AttentionParams p = valid(); // seqlen_k 80
  p.keyLengths = {81, 3};
  expectError(p, {"key_lengths[0] must be in [0, 80]", "got 81"});
  p.keyLengths = {3, -1};
  expectError(p, {"key_lengths[1] must be in [0, 80]", "got -1"});
  // Under varlen the bound is that sequence's key count (5 for sequence 1).
  AttentionParams v = varlen();
  v.keyLengths = {20, 6, 40};
  expectError(v, {"key_lengths[1] must be in [0, 5]", "sequence 1", "got 6"});
}
