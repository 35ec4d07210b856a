//===- test_features_gpu.cpp - Forward features against the fp64 oracle ---===//
//
// The feature matrix: head dims {1, 33, 64, 80, 100, 128, 192, 256} x
// {fp16, bf16} x every mode (bottom-right causal with seqlen_q != seqlen_k,
// sliding windows, bias tensors full and broadcast, ALiBi, softcap, GQA
// packed and not, head_dim_v != head_dim_qk, varlen, key lengths, BHSD
// without LSE, rows masked by a -inf bias, and all of them at once). Shapes
// rotate through sequence lengths that include 1 and lengths that are not
// tile multiples. Every run: fresh random inputs, poisoned outputs, the 2x
// rule on O and LSE, every element written, masked rows O = 0, LSE = -inf.
//
//===----------------------------------------------------------------------===//
#include "GpuTestSupport.h"

#include <cstring>
#include <functional>
#include <limits>
#include <sstream>

using namespace flashjit;
using namespace flashjit::test;

namespace {

enum class Mode {
  CausalRect,
  WindowCausal, ///< (left, 0)
  WindowRight,  ///< (unbounded, right)
  WindowBand,   ///< (left, right)
  BiasFull,
  BiasBroadcast,
  Alibi,
  Softcap,
  GqaPacked,
  MqaUnpacked,
  HeadDimV,
  Varlen,
  KeyLengths,
  BhsdNoLse,
  NegInfBiasRows,
  Everything,
};

const char *modeName(Mode m) {
  switch (m) {
  case Mode::CausalRect: return "causal_rect";
  case Mode::WindowCausal: return "window_left";
  case Mode::WindowRight: return "window_right";
  case Mode::WindowBand: return "window_band";
  case Mode::BiasFull: return "bias_full";
  case Mode::BiasBroadcast: return "bias_broadcast";
  case Mode::Alibi: return "alibi";
  case Mode::Softcap: return "softcap";
  case Mode::GqaPacked: return "gqa_packed";
  case Mode::MqaUnpacked: return "mqa_unpacked";
  case Mode::HeadDimV: return "head_dim_v";
  case Mode::Varlen: return "varlen";
  case Mode::KeyLengths: return "key_lengths";
  case Mode::BhsdNoLse: return "bhsd_nolse";
  case Mode::NegInfBiasRows: return "neginf_bias_rows";
  case Mode::Everything: return "everything";
  }
  return "?";
}

constexpr Mode kModes[] = {
    Mode::CausalRect, Mode::WindowCausal,  Mode::WindowRight,
    Mode::WindowBand, Mode::BiasFull,      Mode::BiasBroadcast,
    Mode::Alibi,      Mode::Softcap,       Mode::GqaPacked,
    Mode::MqaUnpacked, Mode::HeadDimV,     Mode::Varlen,
    Mode::KeyLengths, Mode::BhsdNoLse,     Mode::NegInfBiasRows,
    Mode::Everything};

struct FeatureCase {
  DType dtype;
  int headDim;
  Mode mode;
  int shape; ///< index into kShapes

  std::string name() const {
    std::ostringstream os;
    os << modeName(mode) << "_" << toString(dtype) << "_d" << headDim << "_s"
       << shape;
    return os.str();
  }
};

/// (seqlen_q, seqlen_k): 1, tile multiples and not, longer queries than keys
/// (rows fully masked under causal) and the reverse.
constexpr std::pair<int64_t, int64_t> kShapes[] = {
    {1, 1}, {17, 130}, {130, 17}, {200, 333}, {1, 257}, {64, 64}, {129, 128}};

void PrintTo(const FeatureCase &c, std::ostream *os) { *os << c.name(); }

std::vector<FeatureCase> featureMatrix() {
  std::vector<FeatureCase> cases;
  int i = 0;
  for (int d : {1, 33, 64, 80, 100, 128, 192, 256})
    for (DType dtype : {DType::F16, DType::BF16})
      for (Mode mode : kModes)
        cases.push_back({dtype, d, mode, i++ % int(std::size(kShapes))});
  return cases;
}

/// Head dim of V paired with each Q/K head dim (192/128, 256/128, 80/64 as
/// the issue names; the others change in both directions).
int headDimVFor(int d) {
  switch (d) {
  case 1: return 8;
  case 33: return 64;
  case 64: return 33;
  case 80: return 64;
  case 100: return 128;
  case 128: return 256;
  case 192: return 128;
  case 256: return 128;
  }
  return d;
}

/// The problem of a case (pointers not set), and whether it writes LSE.
ForwardProblem problemFor(const FeatureCase &c, bool &withLse) {
  auto [sq, sk] = kShapes[c.shape];
  const int d = c.headDim;
  ForwardProblem p = denseProblem(c.dtype, MaskMode::None, 2, 3, 3, sq, sk, d, d);
  withLse = true;
  switch (c.mode) {
  case Mode::CausalRect:
    p.mask = MaskMode::Causal;
    if (sq == sk) // make it rectangular either way
      p.seqlenQ = sq + 37;
    break;
  case Mode::WindowCausal:
    p.mask = MaskMode::Window;
    p.windowLeft = 40, p.windowRight = 0;
    break;
  case Mode::WindowRight:
    p.mask = MaskMode::Window;
    p.windowRight = 16;
    break;
  case Mode::WindowBand:
    p.mask = MaskMode::Window;
    p.windowLeft = 70, p.windowRight = 5;
    break;
  case Mode::BiasFull:
    p.bias = BiasMode::Tensor;
    p.biasShape = {p.batch, p.headsQ, {}};
    break;
  case Mode::BiasBroadcast:
    p.bias = BiasMode::Tensor;
    // Cycle through [1, H], [B, 1] and [1, 1].
    p.biasShape = {c.shape % 3 == 1 ? p.batch : 1,
                   c.shape % 3 == 0 ? p.headsQ : 1,
                   {}};
    p.mask = MaskMode::Causal;
    break;
  case Mode::Alibi:
    p.bias = BiasMode::Alibi;
    p.alibiBatchStride = c.shape % 2 ? p.headsQ : 0; // [B, H] or [H] slopes
    break;
  case Mode::Softcap:
    p.softcap = 5.0; // low enough to bend scores of N(0, d) products
    p.mask = MaskMode::Causal;
    p.softmaxScale = 1.0 / std::sqrt(double(d)) * 4; // push scores into the cap
    break;
  case Mode::GqaPacked:
    p.headsQ = 8, p.headsKV = 2;
    p.mask = MaskMode::Causal;
    break;
  case Mode::MqaUnpacked:
    p.headsQ = 4, p.headsKV = 1;
    break;
  case Mode::HeadDimV:
    p.headDimV = headDimVFor(d);
    p.mask = MaskMode::Causal;
    break;
  case Mode::Varlen: {
    VarlenSeqs seqs;
    const int64_t lq[] = {sq, 0, 17, 1, sk};
    const int64_t lk[] = {sk, 5, 130, 1, sq};
    seqs.cuSeqlensQ = {0};
    seqs.cuSeqlensK = {0};
    for (int b = 0; b < 5; ++b) {
      seqs.cuSeqlensQ.push_back(int32_t(seqs.cuSeqlensQ.back() + lq[b]));
      seqs.cuSeqlensK.push_back(int32_t(seqs.cuSeqlensK.back() + lk[b]));
    }
    seqs.totalQ = seqs.cuSeqlensQ.back() + 3; // slack rows stay poisoned
    seqs.totalK = seqs.cuSeqlensK.back();
    p.batch = 5;
    p.seqlenQ = std::max({sq, sk, int64_t(17)});
    p.seqlenK = std::max({sq, sk, int64_t(130)});
    p.varlen = seqs;
    p.mask = c.shape % 2 ? MaskMode::Causal : MaskMode::None;
    break;
  }
  case Mode::KeyLengths:
    p.batch = 3;
    p.keyLengths = {int32_t(sk), int32_t((sk + 1) / 2), 0};
    p.mask = c.shape % 2 ? MaskMode::Causal : MaskMode::None;
    break;
  case Mode::BhsdNoLse:
    withLse = false;
    p.mask = MaskMode::Causal;
    break;
  case Mode::NegInfBiasRows:
    p.bias = BiasMode::Tensor;
    p.biasShape = {p.batch, 1, {}};
    break;
  case Mode::Everything: {
    p.headsQ = 6, p.headsKV = 2;
    p.mask = MaskMode::Window;
    p.windowLeft = 50, p.windowRight = 3;
    p.bias = BiasMode::Alibi;
    p.softcap = 20;
    VarlenSeqs seqs;
    seqs.cuSeqlensQ = {0, int32_t(sq), int32_t(sq + 33)};
    seqs.cuSeqlensK = {0, int32_t(sk), int32_t(sk + 90)};
    seqs.totalQ = seqs.cuSeqlensQ.back();
    seqs.totalK = seqs.cuSeqlensK.back();
    p.seqlenQ = std::max<int64_t>(sq, 33);
    p.seqlenK = std::max<int64_t>(sk, 90);
    p.varlen = seqs;
    p.keyLengths = {int32_t(std::max<int64_t>(sk - 3, 0)), 90};
    break;
  }
  }
  p.setDenseBSHD();
  if (p.bias == BiasMode::Tensor)
    p.setDenseBias();
  if (c.mode == Mode::BhsdNoLse) {
    p.qStrides = bhsdStrides(p.headsQ, p.seqlenQ, p.headDimQK);
    p.kStrides = bhsdStrides(p.headsKV, p.seqlenK, p.headDimQK);
    p.vStrides = bhsdStrides(p.headsKV, p.seqlenK, p.headDimV);
    p.oStrides = bhsdStrides(p.headsQ, p.seqlenQ, p.headDimV);
  }
  return p;
}

/// Rows 0, 3, 6, ... of every bias batch of a NegInfBiasRows case see only
/// -inf (O = 0, LSE = -inf); other modes keep their random bias.
std::function<void(ForwardRun &)> prepareFor(const FeatureCase &c) {
  return [mode = c.mode](ForwardRun &run) {
    if (mode != Mode::NegInfBiasRows)
      return;
    const uint16_t negInf = toBits(-std::numeric_limits<float>::infinity(),
                                   run.problem.dtype);
    for (int64_t b = 0; b < run.problem.biasShape.batch; ++b)
      for (int64_t i = 0; i < run.problem.seqlenQ; i += 3)
        for (int64_t j = 0; j < run.problem.seqlenK; ++j)
          run.bias[run.problem.biasOffset(b, 0, i, j)] = negInf;
  };
}

class Features : public ::testing::TestWithParam<FeatureCase> {};

TEST_P(Features, MatchReferenceByTheTwoXRule) {
  FLASHJIT_REQUIRE_GPU();
  const FeatureCase &c = GetParam();
  bool withLse = true;
  ForwardProblem p = problemFor(c, withLse);
  // The problem itself is valid (pointers come with the upload).
  const Status valid = validateParams(p, withLse);
  ASSERT_TRUE(valid.isOk()) << valid.message();
  if (c.mode == Mode::MqaUnpacked) {
    TileConfig tile = suiteDefault(p);
    tile.packGqa = false;
    p.tile = tile;
  }
  const uint64_t seed = std::hash<std::string>()(c.name());
  ForwardRun run;
  Status s = runForward(p, seed, withLse, run, 0, prepareFor(c));
  ASSERT_TRUE(s.isOk()) << c.name() << ": " << s.message();
  CheckResult r = check(run, /*maxSlices=*/12, seed);
  EXPECT_TRUE(r.pass) << c.name() << "\n" << r.summary();
  EXPECT_EQ(r.out.unwritten, 0);
  EXPECT_EQ(r.out.nonFinite, 0);
  if (withLse) {
    EXPECT_TRUE(r.checkedLse);
    EXPECT_EQ(r.lse.unwritten, 0);
  }
  if (c.mode == Mode::NegInfBiasRows) {
    const ForwardProblem &q = run.problem;
    int64_t bad = 0;
    for (int64_t b = 0; b < q.batch; ++b)
      for (int64_t h = 0; h < q.headsQ; ++h)
        for (int64_t i = 0; i < q.seqlenQ; i += 3) {
          for (int64_t j = 0; j < q.headDimV; ++j)
            bad += fromBits(run.o[q.oOffset(b, h, i) + j], q.dtype) != 0.f;
          bad += !(std::isinf(run.lse[q.lseOffset(b, h, i)]) &&
                   run.lse[q.lseOffset(b, h, i)] < 0);
        }
    EXPECT_EQ(bad, 0) << "rows with an all -inf bias must give O = 0, LSE = -inf";
  }
}

INSTANTIATE_TEST_SUITE_P(Matrix, Features, ::testing::ValuesIn(featureMatrix()),
                         [](const auto &info) { return info.param.name(); });

// ---- the quick form ------------------------------------------------------

/// Runs `p` with the full kernel of `tile` and with its quick form on the
/// same inputs; expects bitwise equal O and LSE (and correct ones).
void expectQuickFormBitwiseEqual(ForwardProblem p, TileConfig tile,
                                 bool withLse, uint64_t seed,
                                 const std::function<void(ForwardRun &)> &prepare,
                                 const std::string &what) {
  ForwardRun runs[2];
  for (bool quick : {false, true}) {
    tile.quick = quick;
    p.tile = tile;
    Status s = runForward(p, seed, withLse, runs[quick], 0, prepare);
    ASSERT_TRUE(s.isOk()) << what << (quick ? " quick: " : ": ") << s.message();
  }
  EXPECT_EQ(bitwiseDifference(runs[0].o, runs[1].o), "") << what << ": O";
  EXPECT_EQ(bitwiseDifference(runs[0].lse, runs[1].lse), "") << what << ": LSE";
  // Equal, and not equally wrong (nor equally unwritten).
  CheckResult r = check(runs[1], /*maxSlices=*/4, seed);
  EXPECT_TRUE(r.pass) << what << " quick\n" << r.summary();
  EXPECT_EQ(r.out.unwritten, 0) << what;
}

class QuickForm : public ::testing::TestWithParam<FeatureCase> {};

TEST_P(QuickForm, BitwiseEqualsTheFullKernel) {
  FLASHJIT_REQUIRE_GPU();
  const FeatureCase &c = GetParam();
  bool withLse = true;
  ForwardProblem p = problemFor(c, withLse);
  // The quick form is the sm80 family's (the sm90 family has none).
  TileConfig tile =
      defaultTileConfig(specFor(p), runtime().arch(), Family::Sm80);
  if (c.mode == Mode::MqaUnpacked)
    tile.packGqa = false;
  expectQuickFormBitwiseEqual(p, tile, withLse,
                              std::hash<std::string>()(c.name()) ^ 0x9e37,
                              prepareFor(c), c.name());
}

INSTANTIATE_TEST_SUITE_P(Matrix, QuickForm, ::testing::ValuesIn(featureMatrix()),
                         [](const auto &info) { return info.param.name(); });

/// Long sequences (many K/V tiles, rescales across them) at every head dim
/// of the throughput table, both dtypes, both masks.
TEST(QuickFormLong, BitwiseEqualsTheFullKernelAtLongSequences) {
  FLASHJIT_REQUIRE_GPU();
  int i = 0;
  for (int d : {64, 80, 96, 100, 128, 160, 192, 256})
    for (MaskMode mask : {MaskMode::None, MaskMode::Causal})
      for (auto [sq, sk] : {std::pair<int64_t, int64_t>{1000, 1000},
                            {4096, 4096}, {1000, 4096}}) {
        const DType dtype = i++ % 2 ? DType::F16 : DType::BF16;
        ForwardProblem p = denseProblem(dtype, mask, 1, 2, 2, sq, sk, d, d);
        std::ostringstream what;
        what << "d" << d << "_" << toString(mask) << "_" << toString(dtype)
             << "_" << sq << "x" << sk;
        expectQuickFormBitwiseEqual(
            p, defaultTileConfig(specFor(p), runtime().arch(), Family::Sm80),
            true,
            std::hash<std::string>()(what.str()), nullptr, what.str());
      }
}

/// A new batch size or sequence length reuses the kernel; a new window
/// extent or softcap value too (run-time arguments).
TEST(FeaturesRuntime, WindowAndSoftcapValuesDoNotRecompile) {
  FLASHJIT_REQUIRE_GPU();
  ForwardProblem p =
      denseProblem(DType::BF16, MaskMode::Window, 1, 2, 2, 100, 100, 64, 64);
  p.softcap = 10;
  p.windowLeft = 10, p.windowRight = 0;
  ForwardRun run;
  FLASHJIT_ASSERT_OK(runForward(p, 1, true, run));
  runtime().finishCompiles(); // the full kernel behind a quick form
  const CacheStats before = runtime().cacheStats();
  p.windowLeft = 33, p.windowRight = 7;
  p.softcap = 3;
  p.batch = 3;
  p.seqlenQ = 150;
  p.setDenseBSHD();
  FLASHJIT_ASSERT_OK(runForward(p, 2, true, run));
  const CacheStats after = runtime().cacheStats();
  EXPECT_EQ(after.compiles, before.compiles);
  EXPECT_EQ(after.diskHits, before.diskHits);
  EXPECT_TRUE(check(run).pass);
}

/// Packed GQA reads K/V once per group; both forms must agree with the
/// reference (and so with each other) on the same problem.
TEST(FeaturesRuntime, PackedAndUnpackedGqaBothMatch) {
  FLASHJIT_REQUIRE_GPU();
  ForwardProblem p =
      denseProblem(DType::F16, MaskMode::Causal, 2, 12, 3, 300, 300, 80, 80);
  for (bool packed : {true, false}) {
    // pack_gqa is an sm80 knob.
    TileConfig tile =
        defaultTileConfig(specFor(p), runtime().arch(), Family::Sm80);
    tile.packGqa = packed;
    p.tile = tile;
    ForwardRun run;
    FLASHJIT_ASSERT_OK(runForward(p, 7, true, run));
    CheckResult r = check(run, 6, 7);
    EXPECT_TRUE(r.pass) << (packed ? "packed\n" : "unpacked\n") << r.summary();
  }
}

} // namespace
