//===- test_decode_gpu.cpp - Split-KV and paged KV caches vs the oracle ---===//
//
// Decode (seqlen_q = 1) and prefill with a cached prefix (seqlen_q > 1,
// bottom-right causal) over a paged KV cache: page sizes {1, 16, 32, 64,
// 128, 256}, random non-contiguous block tables (the unused entries
// poisoned with invalid ids), cache lengths 0, 1, not page multiples and up
// to 128k, GQA 8:1 and MQA, the forward features; split-KV with every split
// count agreeing with one split within float32 rounding; the append path.
// Every run: fresh random inputs, poisoned outputs, the 2x rule on O and
// LSE against the float64 oracle, every element written.
//
// Paged caches and split-KV are the sm80 family's (Decode.h): with
// $FLASHJIT_TEST_FAMILY=sm90 these tests skip, saying so.
//
//===----------------------------------------------------------------------===//
#include "GpuTestSupport.h"

#include "flashjit/kernels/Decode.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>

using namespace flashjit;
using namespace flashjit::test;

namespace {

#define FLASHJIT_REQUIRE_SM80_FAMILY()                                         \
  do {                                                                         \
    FLASHJIT_REQUIRE_GPU();                                                    \
    if (const char *f = std::getenv("FLASHJIT_TEST_FAMILY");                   \
        f && std::string(f) == "sm90")                                         \
      GTEST_SKIP() << "paged KV caches and split-KV are the sm80 family's "    \
                      "(FLASHJIT_TEST_FAMILY=sm90)";                           \
  } while (0)

/// A paged problem: `cacheLengths` keys per sequence in pages of
/// `pageSize` rows, every sequence's pages drawn at random (without
/// replacement) from a pool with spare pages; the table entries past a
/// sequence's pages hold invalid ids (never read).
ForwardProblem pagedProblem(DType dtype, MaskMode mask, int64_t headsQ,
                            int64_t headsKV, int64_t seqlenQ, int headDimQK,
                            int headDimV, int64_t pageSize,
                            const std::vector<int32_t> &cacheLengths,
                            uint64_t seed) {
  const int64_t batch = int64_t(cacheLengths.size());
  const int64_t longest = std::max<int64_t>(
      1, *std::max_element(cacheLengths.begin(), cacheLengths.end()));
  ForwardProblem p = denseProblem(dtype, mask, batch, headsQ, headsKV,
                                  seqlenQ, longest, headDimQK, headDimV);
  PagedKV pg;
  pg.pageSize = pageSize;
  pg.maxPagesPerSeq = (longest + pageSize - 1) / pageSize;
  int64_t used = 0;
  for (int32_t len : cacheLengths)
    used += (len + pageSize - 1) / pageSize;
  pg.numPages = used + 3;
  std::vector<int32_t> ids(pg.numPages);
  std::iota(ids.begin(), ids.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(ids.begin(), ids.end(), rng);
  pg.blockTable.assign(batch * pg.maxPagesPerSeq, -1);
  size_t next = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t pages = (cacheLengths[b] + pageSize - 1) / pageSize;
    for (int64_t i = 0; i < pages; ++i)
      pg.blockTable[b * pg.maxPagesPerSeq + i] = ids[next++];
    for (int64_t i = pages; i < pg.maxPagesPerSeq; ++i)
      pg.blockTable[b * pg.maxPagesPerSeq + i] = int32_t(1) << 30; // unread
  }
  p.paged = std::move(pg);
  p.keyLengths = cacheLengths;
  p.setDenseBSHD();
  return p;
}

/// runForward with a caller's split workspace for any split count,
/// poisoned (NaN): a partial that no CTA wrote shows in O and LSE (the
/// runtime's own workspace would still hold the previous launch's).
Status runDecode(ForwardProblem p, uint64_t seed, ForwardRun &run) {
  const int64_t rows = p.varlen ? p.varlen->totalQ : p.batch * p.seqlenQ;
  const size_t bytes =
      partialLayout(rows, p.headsQ, p.headDimV, kMaxSplits).bytes;
  DeviceBuffer workspace;
  if (Status s = upload(workspace, nullptr, bytes); !s)
    return s;
  if (Status s = runtime().fill32(workspace.data(), kPoison32, bytes / 4); !s)
    return s;
  if (!p.workspace) {
    p.workspace = workspace.data();
    p.workspaceBytes = bytes;
  }
  return runForward(p, seed, /*withLse=*/true, run); // synchronises
}

CheckResult expectPass(const ForwardRun &run, const std::string &what) {
  const CheckResult r = check(run);
  EXPECT_TRUE(r.pass) << what << "\n" << r.summary();
  return r;
}

/// Elementwise: a split run's O within `bound` of the one-split run's, and
/// LSE within float32 rounding. Each split rounds P to the 16-bit type
/// against its own running max, so O moves by the size of that rounding:
/// the bound is twice the one-split run's own error against float64 (a lost
/// or doubled split moves O by its magnitude).
void expectSameWithinRounding(const ForwardRun &a, const ForwardRun &b,
                              double bound, const std::string &what) {
  ASSERT_EQ(a.o.size(), b.o.size());
  const DType dt = a.problem.dtype;
  size_t bad = 0;
  double worst = 0;
  for (size_t i = 0; i < a.o.size(); ++i) {
    const double diff = std::fabs(fromBits(a.o[i], dt) - fromBits(b.o[i], dt));
    if (!(diff <= bound)) {
      ++bad;
      worst = std::max(worst, diff);
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " output elements differ by "
                     << "more than " << bound << " (worst " << worst << ")";
  ASSERT_EQ(a.lse.size(), b.lse.size());
  for (size_t i = 0; i < a.lse.size(); ++i) {
    if (std::isinf(a.lse[i]) || std::isinf(b.lse[i])) {
      ASSERT_EQ(a.lse[i], b.lse[i]) << what << ": LSE " << i;
      continue;
    }
    ASSERT_NEAR(a.lse[i], b.lse[i], 1e-5 * std::max(1.f, std::fabs(a.lse[i])))
        << what << ": LSE " << i;
  }
}

std::string lengthsText(const std::vector<int32_t> &lengths) {
  std::ostringstream os;
  for (size_t i = 0; i < lengths.size(); ++i)
    os << (i ? "," : "") << lengths[i];
  return os.str();
}

} // namespace

// ---- paged decode over page sizes ---------------------------------------------
class PagedDecode : public ::testing::TestWithParam<int> {};

TEST_P(PagedDecode, MatchesTheOracle) {
  FLASHJIT_REQUIRE_SM80_FAMILY();
  const int64_t page = GetParam();
  // Empty, one key, not page multiples, exact multiples, longer caches.
  const std::vector<int32_t> lengths = {
      0, 1, int32_t(page + 1), int32_t(3 * page - 1), int32_t(2 * page), 777,
      4100};
  for (DType dtype : {DType::BF16, DType::F16}) {
    // GQA 8:1 (packed) and MQA.
    for (auto [hq, hkv] : {std::pair{16, 2}, std::pair{8, 1}}) {
      ForwardProblem p = pagedProblem(dtype, MaskMode::None, hq, hkv, 1, 128,
                                      128, page, lengths, page * 7 + hq);
      ForwardRun run;
      ASSERT_TRUE(runDecode(p, page + hkv, run))
          << "page " << page;
      expectPass(run, "page " + std::to_string(page) + " heads " +
                          std::to_string(hq) + "/" + std::to_string(hkv) +
                          " " + std::string(toString(dtype)) + " lengths " +
                          lengthsText(lengths));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Decode, PagedDecode,
                         ::testing::Values(1, 16, 32, 64, 128, 256),
                         [](const ::testing::TestParamInfo<int> &info) {
                           return "page" + std::to_string(info.param);
                         });

// ---- prefill with a cached prefix ---------------------------------------------
TEST(PagedPrefill, CausalBottomRightMatchesTheOracle) {
  FLASHJIT_REQUIRE_SM80_FAMILY();
  // Rows of short caches see no key (cache shorter than the new queries).
  const std::vector<int32_t> lengths = {3, 70, 300, 1025};
  for (int64_t page : {1, 16, 256})
    for (int64_t seqlenQ : {2, 17, 128})
      for (auto [hq, hkv] : {std::pair{16, 2}, std::pair{4, 4}}) {
        ForwardProblem p =
            pagedProblem(DType::BF16, MaskMode::Causal, hq, hkv, seqlenQ, 64,
                         64, page, lengths, page + seqlenQ);
        ForwardRun run;
        ASSERT_TRUE(runDecode(p, seqlenQ, run));
        expectPass(run, "prefill page " + std::to_string(page) +
                            " seqlen_q " + std::to_string(seqlenQ));
      }
}

TEST(PagedPrefill, VarlenQueriesOverPagedCaches) {
  FLASHJIT_REQUIRE_SM80_FAMILY();
  const std::vector<int32_t> lengths = {40, 9, 513};
  ForwardProblem p = pagedProblem(DType::F16, MaskMode::Causal, 8, 2, 9, 64,
                                  64, 16, lengths, 5);
  p.varlen = VarlenSeqs{{0, 9, 10, 14}, {}, 14, 0};
  p.setDenseBSHD();
  ForwardRun run;
  ASSERT_TRUE(runDecode(p, 11, run));
  expectPass(run, "varlen queries over a paged cache");
}

// ---- the forward features over a paged, split cache ---------------------------
TEST(PagedFeatures, SplitAndUnsplitMatchTheOracle) {
  FLASHJIT_REQUIRE_SM80_FAMILY();
  const std::vector<int32_t> lengths = {1, 100, 2049};
  struct Case {
    const char *name;
    int dqk, dv;
    std::function<void(ForwardProblem &)> apply;
  };
  const Case cases[] = {
      {"window", 64, 64,
       [](ForwardProblem &p) {
         p.mask = MaskMode::Window;
         p.windowLeft = 300;
         p.windowRight = 0;
       }},
      {"softcap", 128, 128, [](ForwardProblem &p) { p.softcap = 30; }},
      {"alibi", 128, 128, [](ForwardProblem &p) { p.bias = BiasMode::Alibi; }},
      {"dv_ne_dqk", 192, 128, [](ForwardProblem &) {}},
      {"d33", 33, 33, [](ForwardProblem &) {}},
      {"d1", 1, 1, [](ForwardProblem &) {}},
      {"d256", 256, 256, [](ForwardProblem &) {}},
  };
  for (const Case &c : cases)
    for (int splits : {1, 0, 7}) {
      ForwardProblem p = pagedProblem(DType::BF16, MaskMode::None, 16, 2, 1,
                                      c.dqk, c.dv, 16, lengths, 3);
      c.apply(p);
      if (p.bias == BiasMode::Alibi)
        p.alibiBatchStride = 0;
      p.numSplits = splits;
      ForwardRun run;
      ASSERT_TRUE(runDecode(p, 4, run)) << c.name;
      expectPass(run, std::string(c.name) + " splits " +
                          std::to_string(splits));
    }
}

// ---- split-KV -------------------------------------------------------------------
TEST(SplitKV, EverySplitCountAgreesWithOne) {
  FLASHJIT_REQUIRE_SM80_FAMILY();
  for (bool paged : {false, true}) {
    ForwardProblem p = denseProblem(DType::BF16, MaskMode::None, 2, 32, 4, 1,
                                    8192, 128, 128);
    if (paged)
      p = pagedProblem(DType::BF16, MaskMode::None, 32, 4, 1, 128, 128, 64,
                       {8192, 5000}, 9);
    p.numSplits = 1;
    ForwardRun one;
    ASSERT_TRUE(runDecode(p, 21, one));
    const double bound = 2 * expectPass(one, "one split").out.maxAbs;
    ASSERT_GT(bound, 0.0);
    for (int splits : {2, 3, 5, 8, 13, 32, 64, kMaxSplits}) {
      p.numSplits = splits;
      ForwardRun run;
      ASSERT_TRUE(runDecode(p, 21, run)) << splits;
      // run.problem has the device pointers planning checks.
      auto plan = runtime().planForward(run.problem);
      ASSERT_TRUE(plan) << plan.message();
      EXPECT_EQ(plan->numSplits, splits);
      EXPECT_EQ(plan->grid[2], unsigned(p.batch * splits));
      const std::string what = std::string(paged ? "paged" : "contiguous") +
                               " splits " + std::to_string(splits);
      expectPass(run, what);
      expectSameWithinRounding(run, one, bound, what);
    }
  }
}

TEST(SplitKV, ChosenForDecodeShapesAndCorrect) {
  FLASHJIT_REQUIRE_SM80_FAMILY();
  // batch 2 x 2 K/V groups of 8 query heads, 32k keys: 4 CTAs without
  // splits on a GPU of dozens of SMs.
  ForwardProblem p = denseProblem(DType::BF16, MaskMode::None, 2, 16, 2, 1,
                                  32768, 128, 128);
  ForwardRun run;
  ASSERT_TRUE(runDecode(p, 2, run));
  auto plan = runtime().planForward(run.problem);
  ASSERT_TRUE(plan) << plan.message();
  EXPECT_GT(plan->numSplits, 1);
  EXPECT_EQ(plan->config.family, Family::Sm80);
  EXPECT_TRUE(plan->config.packGqa);
  auto again = runtime().planForward(run.problem);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->numSplits, plan->numSplits) << "not deterministic";
  expectPass(run, "auto splits " + std::to_string(plan->numSplits));
  // Causal decode with seqlen_q > 1 and key lengths: the split path too.
  ForwardProblem c = denseProblem(DType::F16, MaskMode::Causal, 3, 8, 8, 4,
                                  20000, 64, 64);
  c.keyLengths = {0, 4, 19999};
  c.numSplits = 16;
  ForwardRun causal;
  ASSERT_TRUE(runDecode(c, 3, causal));
  expectPass(causal, "causal split with key lengths");
}

TEST(SplitKV, CallerWorkspaceAndLongPagedCache) {
  FLASHJIT_REQUIRE_SM80_FAMILY();
  // 128k keys in 256-row pages, one sequence, MQA.
  ForwardProblem p = pagedProblem(DType::BF16, MaskMode::None, 8, 1, 1, 128,
                                  128, 256, {131072}, 17);
  ForwardRun first;
  ASSERT_TRUE(runDecode(p, 8, first));
  expectPass(first, "128k paged");
  // What it needs, from the problem with its device pointers: exactly that
  // much of the caller's (poisoned) memory.
  ForwardProblem withPointers = first.problem;
  withPointers.workspace = nullptr;
  withPointers.workspaceBytes = 0;
  auto bytes = runtime().forwardWorkspaceBytes(withPointers);
  ASSERT_TRUE(bytes) << bytes.message();
  ASSERT_GT(*bytes, 0u) << "a 128k-key MQA decode should split";
  auto ws = runtime().allocate(*bytes);
  ASSERT_TRUE(ws) << ws.message();
  ASSERT_TRUE(runtime().fill32(ws->data(), kPoison32, *bytes / 4));
  p.workspace = ws->data();
  p.workspaceBytes = *bytes;
  ForwardRun run;
  ASSERT_TRUE(runDecode(p, 8, run));
  expectPass(run, "128k paged, caller's workspace");
  // Too small a workspace is an error, not an overrun.
  withPointers.workspace = ws->data();
  withPointers.workspaceBytes = *bytes - 1;
  auto plan = runtime().planForward(withPointers);
  ASSERT_FALSE(plan);
  EXPECT_NE(plan.message().find("workspace_bytes"), std::string::npos)
      << plan.message();
}

// ---- append ---------------------------------------------------------------------
TEST(PagedAppend, NewRowsLandInTheirPagesAndAreAttended) {
  FLASHJIT_REQUIRE_SM80_FAMILY();
  for (int64_t page : {1, 16, 256})
    for (int64_t newKeys : {1, 3}) {
      const std::vector<int32_t> cache = {0, 15, 16, 700};
      std::vector<int32_t> capacity = cache;
      for (int32_t &c : capacity)
        c += int32_t(newKeys);
      for (int dim : {128, 33}) {
        ForwardProblem p =
            pagedProblem(DType::BF16, MaskMode::Causal, 8, 2, newKeys, dim,
                         dim, page, capacity, page + newKeys);
        p.keyLengths = cache; // the lengths before the append
        p.newKeys = newKeys;
        p.setDenseBSHD();
        std::vector<uint16_t> kNew(p.kNewElements()), vNew(p.vNewElements());
        fillNormal(kNew.data(), kNew.size(), p.dtype, 91);
        fillNormal(vNew.data(), vNew.size(), p.dtype, 92);
        DeviceBuffer dkNew, dvNew;
        ASSERT_TRUE(upload(dkNew, kNew.data(), kNew.size() * 2));
        ASSERT_TRUE(upload(dvNew, vNew.data(), vNew.size() * 2));
        p.kNew = dkNew.data();
        p.vNew = dvNew.data();
        ForwardRun run;
        ASSERT_TRUE(runDecode(p, 5, run));
        // The host cache with the rows appended: the device's must equal it
        // bit for bit, and the oracle attends over it.
        for (int64_t b = 0; b < p.batch; ++b)
          for (int64_t h = 0; h < p.headsKV; ++h)
            for (int64_t j = 0; j < newKeys; ++j) {
              const int64_t key = cache[b] + j;
              std::memcpy(&run.k[p.kOffset(b, h, key)],
                          &kNew[p.kNewOffset(b, h, j)], dim * 2);
              std::memcpy(&run.v[p.vOffset(b, h, key)],
                          &vNew[p.vNewOffset(b, h, j)], dim * 2);
            }
        std::vector<uint16_t> deviceK(run.k.size()), deviceV(run.v.size());
        ASSERT_TRUE(runtime().copyToHost(deviceK.data(), run.problem.k,
                                         deviceK.size() * 2));
        ASSERT_TRUE(runtime().copyToHost(deviceV.data(), run.problem.v,
                                         deviceV.size() * 2));
        auto differing = [](const std::vector<uint16_t> &a,
                            const std::vector<uint16_t> &b) {
          size_t n = 0;
          for (size_t i = 0; i < a.size(); ++i)
            n += a[i] != b[i];
          return n;
        };
        EXPECT_EQ(differing(deviceK, run.k), 0u)
            << "K cache elements differ; page " << page << " new " << newKeys;
        EXPECT_EQ(differing(deviceV, run.v), 0u)
            << "V cache elements differ; page " << page << " new " << newKeys;
        expectPass(run, "append page " + std::to_string(page) + " new " +
                            std::to_string(newKeys) + " d " +
                            std::to_string(dim));
      }
    }
}

// ---- bad input: errors before any launch ---------------------------------------
TEST(PagedValidation, BadBlockTableIsRefusedBeforeLaunch) {
  FLASHJIT_REQUIRE_SM80_FAMILY();
  ForwardProblem p = pagedProblem(DType::BF16, MaskMode::None, 8, 2, 1, 64,
                                  64, 16, {40, 3}, 1);
  p.paged->blockTable[1] = int32_t(p.paged->numPages); // sequence 0, page 1
  ForwardRun run;
  const Status s = runDecode(p, 1, run);
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("block_table[0][1]"), std::string::npos)
      << s.message();
}
