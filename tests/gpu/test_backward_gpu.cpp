//===- test_backward_gpu.cpp - The backward against the fp64 oracle --------===//
//
// The backward matrix: head dims {1, 33, 64, 80, 100, 128, 192, 256} x
// {fp16, bf16} x {none, causal} on lengths that include 1 and non-tile
// multiples, GQA 4:1, MQA, head_dim_v != head_dim_qk (192/128), a window,
// softcap, ALiBi and key lengths. Every run: the forward for O and LSE,
// then the backward on a random dO with poisoned gradients; dQ, dK, dV each
// within 2x of the float32 yardstick's error against float64, every element
// written. Deterministic mode: the same bits over 5 runs. Every case runs
// both main kernels (TileConfig::scalar), each at its own default tiles.
//
//===----------------------------------------------------------------------===//
#include "GpuTestSupport.h"

#include "flashjit/kernels/Backward.h"
#include "flashjit/kernels/LayoutSm90.h"
#include "flashjit/kernels/ReferenceBackward.h"
#include "flashjit/runtime/Autotune.h"

#include <cstring>
#include <optional>
#include <sstream>

using namespace flashjit;
using namespace flashjit::test;

namespace {

struct Gradients16 {
  std::vector<uint16_t> dO, dQ, dK, dV, dBias;
};

/// Device buffers of a backward call's dO and gradients.
struct GradientBuffers {
  DeviceBuffer dO, dQ, dK, dV, dBias;
};

/// The backward call of `run`'s forward (run by runForward with its LSE):
/// a random dO from `seed` (its host copy in `hostDO`), gradients laid out
/// like their tensors in `buffers`; no workspace.
Expected<BackwardProblem> backwardOf(const ForwardRun &run, bool deterministic,
                                     bool biasGrad, uint64_t seed,
                                     std::vector<uint16_t> &hostDO,
                                     GradientBuffers &buffers) {
  BackwardProblem p;
  static_cast<ForwardProblem &>(p) = run.problem;
  p.tile.reset();
  p.deterministic = deterministic;
  p.dOStrides = p.oStrides, p.dQStrides = p.qStrides;
  p.dKStrides = p.kStrides, p.dVStrides = p.vStrides;
  p.biasGrad = biasGrad;
  p.dBiasStrides = {p.headsQ * p.seqlenQ * p.seqlenK, p.seqlenQ * p.seqlenK,
                    p.seqlenK};
  const size_t eb = elementBytes(p.dtype);
  hostDO.resize(p.oElements());
  fillNormal(hostDO.data(), hostDO.size(), p.dtype, seed * 7 + 5);
  Status s = upload(buffers.dO, hostDO.data(), hostDO.size() * eb);
  if (s)
    s = upload(buffers.dQ, nullptr, p.qElements() * eb);
  if (s)
    s = upload(buffers.dK, nullptr, p.kElements() * eb);
  if (s)
    s = upload(buffers.dV, nullptr, p.vElements() * eb);
  if (s && biasGrad)
    s = upload(buffers.dBias, nullptr, p.params().dBiasElements() * eb);
  if (!s)
    return s;
  p.dO = buffers.dO.data(), p.dQ = buffers.dQ.data();
  p.dK = buffers.dK.data(), p.dV = buffers.dV.data();
  p.dBias = biasGrad ? buffers.dBias.data() : nullptr;
  return p;
}

/// The main kernel under test, each at its own default tiles: the
/// runtime's choice, the sm80 scalar or mma.sync one, or the sm90 (wgmma)
/// one (also with one warpgroup of 64 keys, or one stage).
enum class MainKernel {
  Default,
  Scalar,
  Mma,
  Sm90,
  Sm90OneWarpgroup,
  Sm90OneStage
};
MainKernel sm80Kernel(bool scalar) {
  return scalar ? MainKernel::Scalar : MainKernel::Mma;
}

/// The backward of `run`'s forward (run by runForward with its LSE) on a
/// random dO from `seed`: `repeats` launches, each after poisoning the
/// gradients; `out` holds the last one's, `differing` counts the elements
/// in which a later run's differ from the first's. `callerWorkspace`: a
/// workspace of backwardWorkspaceBytes; otherwise the runtime's own.
Status runBackward(ForwardRun &run, bool deterministic, uint64_t seed,
                   int repeats, Gradients16 &out, size_t &differing,
                   bool biasGrad = false,
                   MainKernel kernel = MainKernel::Default,
                   bool callerWorkspace = true) {
  Runtime &rt = runtime();
  GradientBuffers buffers;
  auto problem =
      backwardOf(run, deterministic, biasGrad, seed, out.dO, buffers);
  if (!problem)
    return problem.status();
  BackwardProblem &p = *problem;
  if (kernel == MainKernel::Scalar || kernel == MainKernel::Mma)
    p.tile = defaultBackwardConfigSm80(specFor(p), rt.arch(),
                                       kernel == MainKernel::Scalar);
  if (kernel >= MainKernel::Sm90) {
    p.tile = defaultTileConfig(specFor(p), rt.arch(), Family::Sm90);
    if (kernel == MainKernel::Sm90OneWarpgroup)
      p.tile->warps = 4, p.tile->blockN = 64;
    if (kernel == MainKernel::Sm90OneStage)
      p.tile->stages = 1;
  }
  const size_t eb = elementBytes(p.dtype);
  const size_t dBiasElements = biasGrad ? p.params().dBiasElements() : 0;
  DeviceBuffer dws;
  auto bytes = rt.backwardWorkspaceBytes(p);
  if (!bytes)
    return bytes.status();
  if (callerWorkspace) {
    if (Status w = upload(dws, nullptr, *bytes); !w)
      return w;
    p.workspace = dws.data();
    p.workspaceBytes = *bytes;
  }
  Status s = Status::ok();
  differing = 0;
  std::vector<uint16_t> firstQ, firstK, firstV;
  for (int i = 0; i < repeats; ++i) {
    s = rt.fill16(p.dQ, kPoison16, p.qElements());
    if (s)
      s = rt.fill16(p.dK, kPoison16, p.kElements());
    if (s)
      s = rt.fill16(p.dV, kPoison16, p.vElements());
    if (s && biasGrad)
      s = rt.fill16(p.dBias, kPoison16, dBiasElements);
    if (s)
      s = rt.attentionBackward(p);
    if (s)
      s = rt.synchronize();
    out.dQ.assign(p.qElements(), 0);
    out.dK.assign(p.kElements(), 0);
    out.dV.assign(p.vElements(), 0);
    if (s)
      s = rt.copyToHost(out.dQ.data(), p.dQ, out.dQ.size() * eb);
    if (s)
      s = rt.copyToHost(out.dK.data(), p.dK, out.dK.size() * eb);
    if (s)
      s = rt.copyToHost(out.dV.data(), p.dV, out.dV.size() * eb);
    out.dBias.assign(dBiasElements, 0);
    if (s && biasGrad)
      s = rt.copyToHost(out.dBias.data(), p.dBias, dBiasElements * eb);
    if (!s)
      return s;
    if (i == 0) {
      firstQ = out.dQ, firstK = out.dK, firstV = out.dV;
      continue;
    }
    for (auto [a, b] : {std::pair{&firstQ, &out.dQ}, std::pair{&firstK, &out.dK},
                        std::pair{&firstV, &out.dV}})
      for (size_t j = 0; j < a->size(); ++j)
        differing += (*a)[j] != (*b)[j];
  }
  return Status::ok();
}

/// The gradients `g` of `run`'s backward (laid out like their tensors,
/// dBias dense when `biasGrad`) against the float64 reference.
BackwardCheckResult checkGradients(const ForwardRun &run, const Gradients16 &g,
                                   bool biasGrad = false) {
  BackwardProblem bp;
  static_cast<ForwardProblem &>(bp) = run.problem;
  bp.dOStrides = bp.oStrides, bp.dQStrides = bp.qStrides;
  bp.dKStrides = bp.kStrides, bp.dVStrides = bp.vStrides;
  bp.biasGrad = biasGrad;
  bp.dBiasStrides = {bp.headsQ * bp.seqlenQ * bp.seqlenK,
                     bp.seqlenQ * bp.seqlenK, bp.seqlenK};
  return checkBackward(bp.params(), run.inputs(), g.dO.data(), g.dQ.data(),
                       g.dK.data(), g.dV.data(),
                       biasGrad ? g.dBias.data() : nullptr);
}

struct BackwardCase {
  std::string name;
  DType dtype = DType::BF16;
  int64_t headDim = 64, headDimV = 64;
  MaskMode mask = MaskMode::None;
  int64_t batch = 2, headsQ = 2, headsKV = 2, seqlenQ = 77, seqlenK = 77;
  int64_t windowLeft = kUnboundedWindow, windowRight = kUnboundedWindow;
  double softcap = 0;
  BiasMode bias = BiasMode::None;
  std::vector<int32_t> keyLengths;
  std::optional<VarlenSeqs> varlen;
  bool deterministic = false;
  bool biasGrad = false;
};

void PrintTo(const BackwardCase &c, std::ostream *os) { *os << c.name; }

std::vector<BackwardCase> backwardCases() {
  std::vector<BackwardCase> out;
  const int64_t lengths[][2] = {{77, 77}, {1, 1}, {130, 47}, {33, 190}};
  int shape = 0;
  for (int64_t d : {1, 33, 64, 80, 100, 128, 192, 256})
    for (DType dtype : {DType::F16, DType::BF16})
      for (MaskMode mask : {MaskMode::None, MaskMode::Causal}) {
        BackwardCase c;
        c.dtype = dtype;
        c.headDim = c.headDimV = d;
        c.mask = mask;
        c.seqlenQ = lengths[shape % 4][0];
        c.seqlenK = lengths[shape % 4][1];
        ++shape;
        c.name = "d" + std::to_string(d) + "_" + std::string(toString(dtype)) +
                 "_" + std::string(toString(mask)) + "_sq" +
                 std::to_string(c.seqlenQ) + "_sk" + std::to_string(c.seqlenK);
        out.push_back(c);
      }
  BackwardCase gqa;
  gqa.name = "gqa4_causal", gqa.headsQ = 8, gqa.headsKV = 2;
  gqa.mask = MaskMode::Causal, gqa.seqlenQ = 100, gqa.seqlenK = 150;
  out.push_back(gqa);
  BackwardCase mqa = gqa;
  mqa.name = "mqa_none", mqa.headsKV = 1, mqa.mask = MaskMode::None;
  out.push_back(mqa);
  BackwardCase dv = gqa;
  dv.name = "d192_dv128_gqa4_causal", dv.headDim = 192, dv.headDimV = 128;
  out.push_back(dv);
  BackwardCase window;
  window.name = "window_band", window.mask = MaskMode::Window;
  window.windowLeft = 20, window.windowRight = 7, window.seqlenQ = 90;
  window.seqlenK = 120;
  out.push_back(window);
  BackwardCase softcap;
  softcap.name = "softcap_causal", softcap.softcap = 5;
  softcap.mask = MaskMode::Causal;
  out.push_back(softcap);
  BackwardCase alibi;
  alibi.name = "alibi_causal", alibi.bias = BiasMode::Alibi;
  alibi.mask = MaskMode::Causal;
  out.push_back(alibi);
  BackwardCase klen;
  klen.name = "key_lengths", klen.keyLengths = {50, 77};
  out.push_back(klen);
  BackwardCase bias;
  bias.name = "bias_full_causal", bias.bias = BiasMode::Tensor;
  bias.mask = MaskMode::Causal, bias.seqlenQ = 70, bias.seqlenK = 90;
  out.push_back(bias);
  BackwardCase dbias = bias;
  dbias.name = "dbias_causal_softcap_gqa2", dbias.biasGrad = true;
  dbias.softcap = 5, dbias.headsQ = 4, dbias.headsKV = 2;
  out.push_back(dbias);
  // Sequences of 0 queries, of 1 and longer than the tiles; GQA 2:1.
  BackwardCase varlen;
  varlen.name = "varlen_causal_gqa2", varlen.mask = MaskMode::Causal;
  varlen.headsQ = 4, varlen.headsKV = 2, varlen.batch = 4;
  VarlenSeqs seqs;
  const int32_t lq[] = {77, 0, 1, 40}, lk[] = {90, 5, 1, 130};
  seqs.cuSeqlensQ = {0}, seqs.cuSeqlensK = {0};
  for (int b = 0; b < 4; ++b) {
    seqs.cuSeqlensQ.push_back(seqs.cuSeqlensQ.back() + lq[b]);
    seqs.cuSeqlensK.push_back(seqs.cuSeqlensK.back() + lk[b]);
  }
  seqs.totalQ = seqs.cuSeqlensQ.back(), seqs.totalK = seqs.cuSeqlensK.back();
  varlen.seqlenQ = 77, varlen.seqlenK = 130;
  varlen.varlen = seqs;
  out.push_back(varlen);
  BackwardCase detDv = dv;
  detDv.name = "d192_dv128_gqa4_causal_deterministic";
  detDv.deterministic = true;
  out.push_back(detDv);
  return out;
}

/// A case and the main kernel: scalar (true) or mma.sync (false).
using KernelCase = std::tuple<BackwardCase, bool>;
class BackwardMatrix : public ::testing::TestWithParam<KernelCase> {};

ForwardProblem problemOf(const BackwardCase &c) {
  ForwardProblem p;
  p.dtype = c.dtype;
  p.mask = c.mask;
  p.batch = c.batch;
  p.headsQ = c.headsQ;
  p.headsKV = c.headsKV;
  p.seqlenQ = c.seqlenQ;
  p.seqlenK = c.seqlenK;
  p.headDimQK = c.headDim;
  p.headDimV = c.headDimV;
  p.windowLeft = c.windowLeft;
  p.windowRight = c.windowRight;
  p.softcap = c.softcap;
  p.bias = c.bias;
  p.keyLengths = c.keyLengths;
  p.varlen = c.varlen;
  p.setDenseBSHD();
  if (c.bias == BiasMode::Tensor) {
    p.biasShape = {c.batch, c.headsQ, {}};
    p.setDenseBias();
  }
  return p;
}

TEST_P(BackwardMatrix, MatchesTheFloat64Reference) {
  FLASHJIT_REQUIRE_GPU();
  const auto &[c, scalar] = GetParam();
  ForwardRun run;
  FLASHJIT_ASSERT_OK(runForward(problemOf(c), 11, /*withLse=*/true, run));
  Gradients16 g;
  size_t differing = 0;
  Status s = runBackward(run, c.deterministic, 11, 1, g, differing, c.biasGrad,
                         sm80Kernel(scalar));
  ASSERT_TRUE(s.isOk()) << s.message();
  const BackwardCheckResult r = checkGradients(run, g, c.biasGrad);
  EXPECT_TRUE(r.pass) << r.summary();
  EXPECT_EQ(r.checkedDBias, c.biasGrad);
}

INSTANTIATE_TEST_SUITE_P(
    Sm80, BackwardMatrix,
    ::testing::Combine(::testing::ValuesIn(backwardCases()), ::testing::Bool()),
    [](const ::testing::TestParamInfo<KernelCase> &info) {
      return std::get<0>(info.param).name +
             (std::get<1>(info.param) ? "_scalar" : "_mma");
    });

/// Causal GQA 4:1 over 300 queries and 700 keys, deterministic dQ.
BackwardCase deterministicCase() {
  BackwardCase c;
  c.headsQ = 8, c.headsKV = 2, c.seqlenQ = 300, c.seqlenK = 700;
  c.mask = MaskMode::Causal, c.deterministic = true;
  return c;
}

/// The sm90 (wgmma) main kernel on every case of the matrix that it
/// serves (head dims to 256 with one of them to 128, or both to 160; bias
/// and softcap to 96, no dBias), a deterministic GQA one, a long one (many
/// steps and key tiles), score modifiers at its head dim limits and the
/// split columns past 128 (padding boxes, a second warpgroup with nothing
/// to add): on sm_90a only, the family forced.
std::vector<BackwardCase> sm90BackwardCases() {
  std::vector<BackwardCase> out;
  for (const BackwardCase &c : backwardCases()) {
    BackwardProblem p;
    static_cast<ForwardProblem &>(p) = problemOf(c);
    p.deterministic = c.deterministic;
    p.biasGrad = c.biasGrad;
    if (supportsBackwardSm90(specFor(p), Arch::Sm90a))
      out.push_back(c);
  }
  BackwardCase det = deterministicCase();
  det.name = "gqa4_causal_deterministic_300x700";
  out.push_back(det);
  BackwardCase longer;
  longer.name = "long_gqa2_causal_333x517";
  longer.batch = 1, longer.headsQ = 4, longer.headsKV = 2;
  longer.seqlenQ = 333, longer.seqlenK = 517, longer.mask = MaskMode::Causal;
  out.push_back(longer);
  // Softcap and ALiBi together on GQA 4:1 at d = 96 (the tanh kept for dS,
  // the step's head's slope), fp16.
  BackwardCase capped;
  capped.name = "d96_softcap_alibi_gqa4_causal_fp16";
  capped.dtype = DType::F16, capped.headDim = capped.headDimV = 96;
  capped.softcap = 5, capped.bias = BiasMode::Alibi;
  capped.headsQ = 8, capped.headsKV = 2, capped.mask = MaskMode::Causal;
  capped.seqlenQ = 150, capped.seqlenK = 230;
  out.push_back(capped);
  // A bias tensor with a window at d = 64 (keys past the window and the
  // sequence read clamped elements, weighed 0), deterministic.
  BackwardCase banded = longer;
  banded.name = "d64_bias_window_deterministic";
  banded.bias = BiasMode::Tensor, banded.mask = MaskMode::Window;
  banded.windowLeft = 40, banded.windowRight = 3, banded.deterministic = true;
  banded.seqlenQ = 140, banded.seqlenK = 170;
  out.push_back(banded);
  struct Split {
    const char *name;
    int dqk, dv, headsQ, headsKV, seqlenQ, seqlenK;
    MaskMode mask;
    bool deterministic;
  };
  for (const Split &k :
       {Split{"split_d160_gqa2_causal", 160, 160, 4, 2, 300, 300,
              MaskMode::Causal, false},
        Split{"split_d136_none_130x333", 136, 136, 2, 2, 130, 333,
              MaskMode::None, false},
        Split{"split_d256_dv128_gqa4_causal_deterministic", 256, 128, 8, 2, 257,
              200, MaskMode::Causal, true},
        Split{"split_d64_dv256", 64, 256, 2, 1, 150, 150, MaskMode::None,
              false},
        Split{"split_d200_dv40_causal", 200, 40, 2, 2, 1, 77, MaskMode::Causal,
              false}}) {
    BackwardCase c;
    c.name = k.name;
    c.headDim = k.dqk, c.headDimV = k.dv;
    c.batch = 2, c.headsQ = k.headsQ, c.headsKV = k.headsKV;
    c.seqlenQ = k.seqlenQ, c.seqlenK = k.seqlenK;
    c.mask = k.mask, c.deterministic = k.deterministic;
    out.push_back(c);
  }
  return out;
}

class Sm90BackwardMatrix : public ::testing::TestWithParam<BackwardCase> {};

TEST_P(Sm90BackwardMatrix, MatchesTheFloat64Reference) {
  FLASHJIT_REQUIRE_GPU();
  if (runtime().arch() != Arch::Sm90a)
    GTEST_SKIP() << "the sm90 backward needs sm_90a; this GPU is "
                 << toString(runtime().arch());
  const BackwardCase &c = GetParam();
  ForwardRun run;
  FLASHJIT_ASSERT_OK(runForward(problemOf(c), 13, /*withLse=*/true, run));
  // The default (two warpgroups, two stages), then one warpgroup and one
  // stage: each of the kernel's paths. Past d = 128 the two warpgroups
  // share the keys (split columns): no one-warpgroup form.
  std::vector<MainKernel> kernels = {MainKernel::Sm90,
                                     MainKernel::Sm90OneStage};
  if (std::max(c.headDim, c.headDimV) <= kBackwardSm90MaxHeadDim)
    kernels.push_back(MainKernel::Sm90OneWarpgroup);
  for (MainKernel kernel : kernels) {
    Gradients16 g;
    size_t differing = 0;
    // Deterministic cases run three times: the same bits each time.
    Status s = runBackward(run, c.deterministic, 13, c.deterministic ? 3 : 1,
                           g, differing, c.biasGrad, kernel);
    ASSERT_TRUE(s.isOk()) << s.message();
    EXPECT_EQ(differing, 0u);
    const BackwardCheckResult r = checkGradients(run, g, c.biasGrad);
    EXPECT_TRUE(r.pass) << int(kernel) << ": " << r.summary();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Sm90, Sm90BackwardMatrix, ::testing::ValuesIn(sm90BackwardCases()),
    [](const ::testing::TestParamInfo<BackwardCase> &info) {
      return info.param.name;
    });

class BackwardLong : public ::testing::TestWithParam<bool> {};

/// Both kernels, with a GQA group longer than a key tile and several
/// query blocks per tile, so that key tiles visit many steps (two-stage
/// loads across heads and blocks) and the atomics of many CTAs meet.
TEST_P(BackwardLong, MatchesTheFloat64Reference) {
  FLASHJIT_REQUIRE_GPU();
  BackwardCase c;
  c.headDim = c.headDimV = 128;
  c.batch = 1, c.headsQ = 4, c.headsKV = 2, c.seqlenQ = 333, c.seqlenK = 517;
  c.mask = GetParam() ? MaskMode::Causal : MaskMode::None;
  for (bool scalar : {true, false}) {
    ForwardRun run;
    FLASHJIT_ASSERT_OK(runForward(problemOf(c), 3, /*withLse=*/true, run));
    Gradients16 g;
    size_t differing = 0;
    Status s = runBackward(run, false, 3, 1, g, differing, false,
                           sm80Kernel(scalar));
    ASSERT_TRUE(s.isOk()) << s.message();
    const BackwardCheckResult r = checkGradients(run, g);
    EXPECT_TRUE(r.pass) << (scalar ? "scalar: " : "mma: ") << r.summary();
  }
}

INSTANTIATE_TEST_SUITE_P(Sm80, BackwardLong, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool> &info) {
                           return info.param ? "causal" : "none";
                         });

class BackwardDeterministic : public ::testing::TestWithParam<bool> {};

TEST_P(BackwardDeterministic, SameBitsOverFiveRuns) {
  FLASHJIT_REQUIRE_GPU();
  const bool scalar = GetParam();
  ForwardRun run;
  FLASHJIT_ASSERT_OK(
      runForward(problemOf(deterministicCase()), 5, /*withLse=*/true, run));
  Gradients16 g;
  size_t differing = 0;
  Status s = runBackward(run, /*deterministic=*/true, 5, 5, g, differing,
                         /*biasGrad=*/false, sm80Kernel(scalar));
  ASSERT_TRUE(s.isOk()) << s.message();
  EXPECT_EQ(differing, 0u);
  const BackwardCheckResult r = checkGradients(run, g);
  EXPECT_TRUE(r.pass) << (scalar ? "scalar: " : "mma: ") << r.summary();
}

INSTANTIATE_TEST_SUITE_P(Sm80, BackwardDeterministic, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool> &info) {
                           return info.param ? "scalar" : "mma";
                         });

// Without a caller's workspace the runtime's per-stream one (the split-KV
// partials' too) serves: the same bits as with the caller's, and correct.
TEST(BackwardWorkspace, RuntimeWorkspaceGivesTheSameBits) {
  FLASHJIT_REQUIRE_GPU();
  ForwardRun run;
  FLASHJIT_ASSERT_OK(
      runForward(problemOf(deterministicCase()), 6, /*withLse=*/true, run));
  Gradients16 caller, own;
  size_t differing = 0;
  Status s = runBackward(run, /*deterministic=*/true, 6, 1, caller, differing);
  ASSERT_TRUE(s.isOk()) << s.message();
  s = runBackward(run, /*deterministic=*/true, 6, 2, own, differing,
                  /*biasGrad=*/false, MainKernel::Default,
                  /*callerWorkspace=*/false);
  ASSERT_TRUE(s.isOk()) << s.message();
  EXPECT_EQ(differing, 0u);
  EXPECT_EQ(caller.dQ, own.dQ);
  EXPECT_EQ(caller.dK, own.dK);
  EXPECT_EQ(caller.dV, own.dV);
}

// The backward's autotune: every candidate's gradients match the default
// config's, the winner passes the float64 backward and is stored under the
// backward spec's key, where planBackward finds it (the forward's plan does
// not). Deterministic too: its scratch is sized for the candidate with the
// most dQ splits.
TEST(BackwardAutotune, TunesStoresAndPlansUseIt) {
  FLASHJIT_REQUIRE_GPU();
  for (bool deterministic : {false, true}) {
    SCOPED_TRACE(deterministic ? "deterministic" : "atomic dQ");
    BackwardCase c;
    c.headsQ = 4, c.headsKV = 2, c.seqlenQ = 150, c.seqlenK = 230;
    c.headDim = c.headDimV = 80, c.mask = MaskMode::Causal;
    ForwardRun a, b;
    FLASHJIT_ASSERT_OK(runForward(problemOf(c), 31, /*withLse=*/true, a));
    FLASHJIT_ASSERT_OK(runForward(problemOf(c), 32, /*withLse=*/true, b));
    std::vector<uint16_t> hostA, hostB;
    GradientBuffers bufA, bufB;
    auto pa = backwardOf(a, deterministic, false, 31, hostA, bufA);
    auto pb = backwardOf(b, deterministic, false, 32, hostB, bufB);
    ASSERT_TRUE(pa && pb);

    const test_support::TempDir dir("flashjit-tune-backward");
    RuntimeOptions ro;
    ro.cacheDirectory = dir.path().string();
    auto tuner = Runtime::create(ro);
    ASSERT_TRUE(tuner) << tuner.message();
    AutotuneOptions options;
    options.warmup = 1;
    options.repeats = 3;
    options.backwardKnobs.blockM = {16, 64};
    options.backwardKnobs.blockN = {16, 64};
    options.backwardKnobs.warps = {4};
    auto tuned = autotuneBackward(**tuner, {*pa, *pb}, options);
    ASSERT_TRUE(tuned) << tuned.message();
    const AutotuneResult &r = *tuned;
    EXPECT_EQ(r.spec.direction, Direction::Backward);
    EXPECT_EQ(r.spec.deterministic, deterministic);
    EXPECT_EQ(r.ranked.size(), 9u); // the default and 2 x 2 x 2 stage counts
    for (const CandidateResult &cand : r.ranked)
      EXPECT_TRUE(cand.ok()) << canonicalText(cand.config) << ": "
                             << cand.failure;
    EXPECT_NE(r.oracleCheck.find("PASS"), std::string::npos) << r.oracleCheck;
    ASSERT_EQ(r.storedIn, TuneDatabase::pathIn(dir.path().string()));
    auto plan = (*tuner)->planBackward(*pa);
    ASSERT_TRUE(plan) << plan.message();
    EXPECT_EQ(plan->main.source, ConfigSource::Tuned);
    EXPECT_EQ(plan->main.config, r.ranked.front().config);
    auto forward = (*tuner)->planForward(a.problem);
    ASSERT_TRUE(forward) << forward.message();
    EXPECT_NE(forward->source, ConfigSource::Tuned);
  }
}

} // namespace
