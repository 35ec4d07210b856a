//===- test_standin.cpp - The runtime's launch path on the stand-in driver --===//
//
// Run by ctest unit-standin, with tests/standin's libcuda.so.1 as the driver:
// no GPU, but device queries, PTX links, module loads, launches, memory and
// events all go through the runtime as they would on one. Kernels do not
// run, so these check what reaches the driver (grids, geometry, refusals),
// never results. The multi-threaded ones are what the TSan run exercises.
//
//===----------------------------------------------------------------------===//
#include "flashjit/flashjit.h"
#include "flashjit/runtime/Autotune.h"
#include "flashjit/runtime/DiskCache.h"
#include "flashjit/runtime/Runtime.h"
#include "flashjit/kernels/Decode.h"

#include "StandIn.h"
#include "Subprocess.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <set>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
using namespace flashjit;
using flashjit::test_support::readFile;
using flashjit::test_support::standInLastLaunch;
using flashjit::test_support::standInLaunches;
using flashjit::test_support::standInTensorMap;
using flashjit::test_support::standInTensorMaps;
using flashjit::test_support::TempDir;

namespace {
const void *fakePtr(uintptr_t n) {
  return reinterpret_cast<const void *>(n << 20);
}

/// A small valid problem on fake (never dereferenced) device pointers.
ForwardProblem smallProblem(int64_t headsQ = 2, int64_t headsKV = 2) {
  ForwardProblem p;
  p.batch = 1;
  p.headsQ = headsQ;
  p.headsKV = headsKV;
  p.seqlenQ = p.seqlenK = 64;
  p.headDimQK = p.headDimV = 64;
  p.setDenseBSHD();
  p.q = fakePtr(1);
  p.k = fakePtr(2);
  p.v = fakePtr(3);
  p.o = const_cast<void *>(fakePtr(4));
  return p;
}

/// One query row of 16 heads over 2 K/V heads against 32k keys of d = 128,
/// two sequences: a decode problem the runtime splits.
ForwardProblem decodeProblem() {
  ForwardProblem p = smallProblem(16, 2);
  p.batch = 2;
  p.seqlenQ = 1;
  p.seqlenK = 32768;
  p.headDimQK = p.headDimV = 128;
  p.setDenseBSHD();
  return p;
}

/// The stand-in is an sm_90 device. The tiering tests need a family with a
/// quick form (sm80): `quickFirst` asks for it.
std::unique_ptr<Runtime> makeRuntime(const std::string &cacheDir,
                                     bool quickFirst = false) {
  RuntimeOptions o;
  o.cacheDirectory = cacheDir;
  o.quickFirst = quickFirst;
  if (quickFirst)
    o.family = Family::Sm80;
  auto rt = Runtime::create(o);
  EXPECT_TRUE(rt) << rt.message();
  return rt ? std::move(*rt) : nullptr;
}
} // namespace

TEST(StandIn, TheDriverIsTheStandIn) {
  FLASHJIT_REQUIRE_STANDIN();
  TempDir dir;
  auto rt = makeRuntime(dir.path().string());
  ASSERT_TRUE(rt);
  EXPECT_EQ(rt->arch(), Arch::Sm90a);
  EXPECT_NE(rt->device().name.find("stand-in"), std::string::npos);
}

// Heads of d = 100 in 16-byte rows (BSHD): loading them as columns of their
// rows stopped an H200 (bench/results/2026-12-05-h200-sm90-backward-tma.md),
// so the runtime plans them with sm80, and forcing sm90 is refused before
// any launch, naming the alignment TMA needs.
TEST(StandIn, Sm90CopiesHeadsOffSixteenBytes) {
  FLASHJIT_REQUIRE_STANDIN();
  TempDir dir;
  auto rt = makeRuntime(dir.path().string());
  ASSERT_TRUE(rt);
  ForwardProblem p = smallProblem(4, 2);
  p.headDimQK = p.headDimV = 100;
  p.setDenseBSHD();
  EXPECT_EQ(specFor(p).globalAlignElems, 4);
  // By default the producer warpgroup copies (faster than the sm80 family
  // on an H100): no tensor map is encoded.
  auto copies = rt->planForward(p);
  ASSERT_TRUE(copies) << copies.message();
  EXPECT_EQ(copies->config.family, Family::Sm90);
  EXPECT_FALSE(copies->launch.usesTma());
  EXPECT_EQ(copies->tensorMapCount, 0);
  // Forced, the sm80 family.
  p.tile = defaultTileConfig(specFor(p), Arch::Sm90a, Family::Sm80);
  auto sm80 = rt->planForward(p);
  ASSERT_TRUE(sm80) << sm80.message();
  EXPECT_EQ(sm80->config.family, Family::Sm80);
  EXPECT_EQ(sm80->tensorMapCount, 0);
  p.tile = defaultTileConfig(specFor(p), Arch::Sm90a, Family::Sm90);
  // A head 2 bytes off: neither TMA nor cp.async, and no launch.
  const long before = standInLaunches();
  p.v = static_cast<const char *>(p.v) + 2;
  auto refused = rt->planForward(p);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.message().find("cp.async"), std::string::npos)
      << refused.message();
  EXPECT_EQ(standInLaunches(), before);
}

// Defect 6: grid.x was narrowed to 32 bits before the limit check, so a
// problem needing 2^37 row blocks launched 2^37 mod 2^32 and succeeded.
TEST(StandIn, AGridTooLargeForTheLaunchIsAnErrorNotATruncation) {
  FLASHJIT_REQUIRE_STANDIN();
  TempDir dir;
  auto rt = makeRuntime(dir.path().string());
  ASSERT_TRUE(rt);
  ForwardProblem p = smallProblem(1024, 1);
  p.seqlenQ = 2147483647;
  p.setDenseBSHD();
  TileConfig tile;
  tile.blockM = 16;
  tile.blockN = 16;
  tile.warps = 1;
  tile.stages = 1;
  tile.packGqa = true;
  p.tile = tile;
  const long before = standInLaunches();
  auto plan = rt->planForward(p);
  ASSERT_FALSE(plan) << "planned a grid of " << plan->grid[0] << " x "
                     << plan->grid[1];
  EXPECT_NE(plan.message().find("seqlen_q too large"), std::string::npos)
      << plan.message();
  EXPECT_NE(plan.message().find("2^31 - 1"), std::string::npos)
      << plan.message();
  EXPECT_EQ(standInLaunches(), before);
}

// Decode on an sm_90a device: the decode table hands the problem to the
// sm80 family, which splits the keys (grid z = batch x splits) and launches
// the combine kernel after the forward one; a paged cache with new keys
// launches the append kernel first. Kernels do not run: this checks what
// reaches the driver.
TEST(StandIn, DecodeSplitsOnTheSm80FamilyAndLaunchesItsHelpers) {
  FLASHJIT_REQUIRE_STANDIN();
  TempDir dir;
  auto rt = makeRuntime(dir.path().string());
  ASSERT_TRUE(rt);
  ForwardProblem p = decodeProblem();
  p.keyLengths = {32768, 1000};
  p.deviceKeyLengths = static_cast<const int32_t *>(fakePtr(5));
  auto plan = rt->planForward(p);
  ASSERT_TRUE(plan) << plan.message();
  EXPECT_EQ(plan->config.family, Family::Sm80);
  EXPECT_TRUE(plan->config.packGqa);
  EXPECT_EQ(plan->config.blockM, 16);
  ASSERT_GT(plan->numSplits, 1);
  EXPECT_TRUE(plan->spec.splitKV);
  EXPECT_EQ(plan->grid[2], unsigned(2 * plan->numSplits));
  EXPECT_GT(plan->workspaceBytes, 0u);
  auto bytes = rt->forwardWorkspaceBytes(p);
  ASSERT_TRUE(bytes) << bytes.message();
  EXPECT_EQ(*bytes, plan->workspaceBytes);
  {
    // A caller's workspace smaller than the need is refused before a launch.
    ForwardProblem small = p;
    small.workspace = const_cast<void *>(fakePtr(9));
    small.workspaceBytes = *bytes - 16;
    auto refused = rt->planForward(small);
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.message().find("workspace_bytes"), std::string::npos)
        << refused.message();
  }
  const long before = standInLaunches();
  ASSERT_TRUE(rt->launch(*plan));
  EXPECT_EQ(standInLaunches(), before + 2); // forward, then combine
  auto last = standInLastLaunch();
  ASSERT_TRUE(last);
  EXPECT_EQ(last->kernel, plan->kernel->name + "_combine");
  EXPECT_EQ(last->grid[0], (2u * 16 + 3) / 4); // a warp per (row, head)
  EXPECT_EQ(last->block[0], unsigned(kCombineThreads));

  // One split asked for: the plain kernel, one launch.
  p.numSplits = 1;
  auto single = rt->planForward(p);
  ASSERT_TRUE(single) << single.message();
  EXPECT_EQ(single->numSplits, 1);
  EXPECT_FALSE(single->spec.splitKV);
  EXPECT_EQ(single->grid[2], 2u);

  // A paged cache with one new key per sequence: append, forward, combine.
  ForwardProblem paged = p;
  paged.numSplits = 4;
  PagedKV pg;
  pg.pageSize = 16;
  pg.maxPagesPerSeq = 2048;
  pg.numPages = 4096;
  for (int32_t i = 0; i < 2 * 2048; ++i)
    pg.blockTable.push_back((i * 7) % 4096);
  paged.paged = pg;
  paged.keyLengths = {32767, 999};
  paged.newKeys = 1;
  paged.setDenseBSHD();
  paged.kNew = fakePtr(6);
  paged.vNew = fakePtr(7);
  paged.deviceBlockTable = static_cast<const int32_t *>(fakePtr(8));
  auto pagedPlan = rt->planForward(paged);
  ASSERT_TRUE(pagedPlan) << pagedPlan.message();
  EXPECT_TRUE(pagedPlan->spec.pagedKV);
  EXPECT_EQ(pagedPlan->numSplits, 4);
  EXPECT_EQ(pagedPlan->appendGrid[1], 2u);
  const long beforePaged = standInLaunches();
  ASSERT_TRUE(rt->launch(*pagedPlan));
  EXPECT_EQ(standInLaunches(), beforePaged + 3);

  // A page id out of range is refused before any launch.
  paged.paged->blockTable[2047] = 4096; // sequence 0's last page
  auto bad = rt->planForward(paged);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.message().find("block_table[0][2047]"), std::string::npos)
      << bad.message();
}

// Split keys with the default tiles: the sm80 default table's tiles of a
// split spec (32 keys at d = 96, whose partials need the registers that
// 64-key tiles spill, tests/ptxas), the same rows per CTA; without a split
// the table's own. A named tile is the kernel it names, split or not.
TEST(StandIn, SplitKeysTakeTheSplitSpecsDefaultTile) {
  FLASHJIT_REQUIRE_STANDIN();
  TempDir dir;
  RuntimeOptions o;
  o.cacheDirectory = dir.path().string();
  o.quickFirst = false;
  o.family = Family::Sm80;
  auto rt = Runtime::create(o);
  ASSERT_TRUE(rt) << rt.message();
  ForwardProblem p = smallProblem();
  p.seqlenQ = p.seqlenK = 1024;
  p.headDimQK = p.headDimV = 96;
  p.setDenseBSHD();
  p.numSplits = 2;
  auto split = (*rt)->planForward(p);
  ASSERT_TRUE(split) << split.message();
  EXPECT_TRUE(split->spec.splitKV);
  EXPECT_EQ(split->config.blockM, 128);
  EXPECT_EQ(split->config.blockN, 32);
  EXPECT_EQ(split->config.stages, 2);
  p.numSplits = 1;
  auto whole = (*rt)->planForward(p);
  ASSERT_TRUE(whole) << whole.message();
  EXPECT_FALSE(whole->spec.splitKV);
  EXPECT_EQ(whole->config.blockN, 64);
  p.numSplits = 2;
  p.tile = TileConfig{128, 64, 4, 2};
  auto named = (*rt)->planForward(p);
  ASSERT_TRUE(named) << named.message();
  EXPECT_EQ(named->config.blockN, 64);
}

// The sm90 family packs a GQA group's query heads into one CTA: its Q map
// puts heads before rows, so that a box of 64 columns x 8 heads x 8
// queries lands as 64 rows of (query, head) pairs; K and V keep (columns,
// rows, heads). The grid covers seqlen_q x group rows per K/V head.
TEST(StandIn, Sm90PackedGqaMapsQHeadsBeforeRows) {
  FLASHJIT_REQUIRE_STANDIN();
  TempDir dir;
  auto rt = makeRuntime(dir.path().string());
  ASSERT_TRUE(rt);
  ForwardProblem p = smallProblem(16, 2); // a group of 8
  p.seqlenQ = p.seqlenK = 256;
  p.headDimQK = p.headDimV = 128;
  p.setDenseBSHD();
  TileConfig t;
  t.family = Family::Sm90;
  t.blockM = 128;
  t.blockN = 128;
  t.warps = 8;
  t.stages = 2;
  for (bool packed : {false, true}) {
    SCOPED_TRACE(packed ? "packed" : "unpacked");
    t.packGqa = packed;
    p.tile = t;
    const long before = standInTensorMaps();
    auto plan = rt->planForward(p, /*fullKernel=*/true);
    ASSERT_TRUE(plan) << plan.message();
    EXPECT_EQ(plan->config.packGqa, packed);
    EXPECT_EQ(plan->grid[0], packed ? 256u * 8 / 128 : 256u / 128);
    EXPECT_EQ(plan->grid[1], packed ? 2u : 16u);
    ASSERT_EQ(standInTensorMaps(), before + 3);
    auto q = standInTensorMap(before), k = standInTensorMap(before + 1);
    ASSERT_TRUE(q && k);
    EXPECT_EQ(q->rank, 4u);
    // Element strides: head 128, row 16 x 128; bytes twice that.
    const unsigned long long qDims[2][4] = {{128, 256, 16, 1}, {128, 16, 256, 1}};
    const unsigned long long qBox[2][4] = {{64, 64, 1, 1}, {64, 8, 8, 1}};
    const unsigned long long qStrides[2][2] = {{4096, 256}, {256, 4096}};
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(q->dims[i], qDims[packed][i]) << i;
      EXPECT_EQ(q->box[i], qBox[packed][i]) << i;
    }
    EXPECT_EQ(q->strides[0], qStrides[packed][0]);
    EXPECT_EQ(q->strides[1], qStrides[packed][1]);
    const unsigned long long kDims[4] = {128, 256, 2, 1}, kBox[4] = {64, 128, 1, 1};
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(k->dims[i], kDims[i]) << i;
      EXPECT_EQ(k->box[i], kBox[i]) << i;
    }
  }
  // A group that does not divide a warpgroup's 64 rows is refused.
  ForwardProblem odd = smallProblem(6, 2);
  odd.tile = t;
  auto refused = rt->planForward(odd);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.message().find("divides 64"), std::string::npos)
      << refused.message();
}

// `flashjit bench --back-to-back N`: each timed run queues N launches
// between its events; warm-up runs are single launches. A count below one
// is an error, not a division by zero.
TEST(StandIn, TimingQueuesBackToBackLaunchesPerRun) {
  FLASHJIT_REQUIRE_STANDIN();
  TempDir dir;
  auto rt = makeRuntime(dir.path().string());
  ASSERT_TRUE(rt);
  auto plan = rt->planForward(smallProblem(), /*fullKernel=*/true);
  ASSERT_TRUE(plan) << plan.message();
  const std::vector<ForwardPlan> plans{*plan};
  long before = standInLaunches();
  auto alone = timePlans(*rt, plans, /*warmup=*/2, /*repeats=*/3);
  ASSERT_TRUE(alone) << alone.message();
  EXPECT_EQ(standInLaunches(), before + 2 + 3);
  before = standInLaunches();
  auto queued = timePlans(*rt, plans, 2, 3, /*backToBack=*/5);
  ASSERT_TRUE(queued) << queued.message();
  EXPECT_EQ(standInLaunches(), before + 2 + 3 * 5);
  EXPECT_GE(queued->ms, 0.0);
  EXPECT_LE(queued->minMs, queued->ms);
  before = standInLaunches();
  auto none = timePlans(*rt, plans, 2, 3, /*backToBack=*/0);
  ASSERT_FALSE(none);
  EXPECT_EQ(standInLaunches(), before);
}

// A tuned decode entry's split count is launched where the caller leaves
// the choice to the runtime, and nowhere else.
TEST(StandIn, DecodeTakesTheTunedSplitCount) {
  FLASHJIT_REQUIRE_STANDIN();
  TempDir dir;
  auto rt = makeRuntime(dir.path().string());
  ASSERT_TRUE(rt);
  const ForwardProblem p = decodeProblem();
  auto heuristic = rt->planForward(p);
  ASSERT_TRUE(heuristic) << heuristic.message();
  const int tunedSplits = heuristic->numSplits == 8 ? 16 : 8;
  TuneEntry entry;
  entry.config = heuristic->config;
  entry.config.blockN = 32;
  entry.splits = tunedSplits;
  entry.ms = 0.1;
  ASSERT_TRUE(rt->storeTuned(rt->tuneKey(p), entry));
  // A new runtime on the same cache directory reads the entry from disk.
  auto fresh = makeRuntime(dir.path().string());
  ASSERT_TRUE(fresh);
  auto plan = fresh->planForward(p);
  ASSERT_TRUE(plan) << plan.message();
  EXPECT_EQ(plan->source, ConfigSource::Tuned);
  EXPECT_EQ(plan->config.blockN, 32);
  EXPECT_EQ(plan->numSplits, tunedSplits);
  EXPECT_EQ(plan->grid[2], unsigned(2 * tunedSplits));
  // The caller's count wins.
  ForwardProblem asked = p;
  asked.numSplits = 3;
  auto three = fresh->planForward(asked);
  ASSERT_TRUE(three) << three.message();
  EXPECT_EQ(three->numSplits, 3);
  asked.numSplits = 1;
  auto one = fresh->planForward(asked);
  ASSERT_TRUE(one) << one.message();
  EXPECT_EQ(one->numSplits, 1);

  // The tuned count, capped at the key blocks of a bucket-mate (keys
  // 2049..4096 share a bucket; 128-key tiles: 17 blocks at 2100 keys).
  ForwardProblem shorter = p;
  shorter.seqlenK = 4096;
  entry.config.blockN = 128;
  entry.splits = 64;
  ASSERT_TRUE(fresh->storeTuned(fresh->tuneKey(shorter), entry));
  auto full = fresh->planForward(shorter);
  ASSERT_TRUE(full) << full.message();
  EXPECT_EQ(full->source, ConfigSource::Tuned);
  EXPECT_EQ(full->numSplits, 32);
  shorter.seqlenK = 2100;
  auto capped = fresh->planForward(shorter);
  ASSERT_TRUE(capped) << capped.message();
  EXPECT_EQ(capped->source, ConfigSource::Tuned);
  EXPECT_EQ(capped->numSplits, 17);
}

// The autotuner plans each decode candidate with its own split count (the
// baseline with the runtime's), and refuses a caller's count.
TEST(StandIn, AutotuneRunsEachDecodeCandidateWithItsSplitCount) {
  FLASHJIT_REQUIRE_STANDIN();
  TempDir dir;
  auto rt = makeRuntime(dir.path().string());
  ASSERT_TRUE(rt);
  ForwardProblem p = decodeProblem();
  p.seqlenK = 4096;
  p.setDenseBSHD();
  // Buffers the stand-in really holds: the search reads outputs and inputs
  // back (the oracle then finds O unwritten: the stand-in runs nothing).
  std::vector<DeviceBuffer> buffers;
  for (size_t elements : {p.qElements(), p.kElements(), p.vElements(),
                          p.oElements()}) {
    auto b = rt->allocate(elements * 2);
    ASSERT_TRUE(b) << b.message();
    buffers.push_back(std::move(*b));
  }
  p.q = buffers[0].data();
  p.k = buffers[1].data();
  p.v = buffers[2].data();
  p.o = buffers[3].data();
  AutotuneOptions options;
  options.warmup = 0;
  options.repeats = 1;
  options.store = false;
  options.decodeKnobs.blockN = {32};
  options.decodeKnobs.stages = {2};
  options.decodeKnobs.splits = {1, 3, 8};
  auto heuristic = rt->planForward(p);
  ASSERT_TRUE(heuristic) << heuristic.message();
  auto tuned = autotune(*rt, {p}, options);
  ASSERT_TRUE(tuned) << tuned.message();
  ASSERT_EQ(tuned->ranked.size(), 4u);
  std::set<int> planned;
  for (const CandidateResult &c : tuned->ranked) {
    // Every candidate compiled, launched and matched the baseline; the
    // fastest ones then fail the oracle (nothing was computed).
    ASSERT_TRUE(c.ok() || c.failure.rfind("oracle: ", 0) == 0) << c.failure;
    EXPECT_EQ(c.splitsRun, c.splits ? c.splits : heuristic->numSplits)
        << canonicalText(c.config) << " splits " << c.splits;
    planned.insert(c.splitsRun);
  }
  EXPECT_EQ(planned, (std::set<int>{1, 3, 8, heuristic->numSplits}));
  p.numSplits = 4;
  auto refused = autotune(*rt, {p}, options);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.message().find("num_splits 4"), std::string::npos)
      << refused.message();
}

// Defect 2: launch facts come from the key; a hand-edited meta.json is a
// corrupt entry, rebuilt, and the launch uses the real geometry.
TEST(StandIn, AHandEditedMetaJsonIsRebuiltNotLaunched) {
  FLASHJIT_REQUIRE_STANDIN();
  TempDir dir;
  ForwardProblem p = smallProblem();
  unsigned threads = 0;
  std::string entryPath;
  {
    auto rt = makeRuntime(dir.path().string());
    ASSERT_TRUE(rt);
    auto plan = rt->planForward(p);
    ASSERT_TRUE(plan) << plan.message();
    threads = unsigned(plan->kernel->threadsPerBlock);
    ASSERT_TRUE(rt->launch(*plan).isOk());
    auto last = standInLastLaunch();
    ASSERT_TRUE(last);
    EXPECT_EQ(last->block[0], threads);
    DiskCache disk(rt->cacheDirectory());
    auto entries = disk.list();
    ASSERT_TRUE(entries && entries->size() == 1u);
    entryPath = (*entries)[0].path;
  }
  // Halve the threads in meta.json, as a hand edit would.
  const std::string metaPath = entryPath + "/meta.json";
  nlohmann::json meta = nlohmann::json::parse(readFile(metaPath));
  meta["kernel"]["threads_per_block"] = threads / 2;
  { std::ofstream(metaPath) << meta.dump(2); }

  auto rt = makeRuntime(dir.path().string());
  ASSERT_TRUE(rt);
  testing::internal::CaptureStderr();
  auto plan = rt->planForward(p);
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(plan) << plan.message();
  EXPECT_NE(err.find("corrupt"), std::string::npos) << err;
  EXPECT_NE(err.find("launch facts"), std::string::npos) << err;
  EXPECT_EQ(rt->cacheStats().compiles, 1u) << "the edited entry was used";
  ASSERT_TRUE(rt->launch(*plan).isOk());
  auto last = standInLastLaunch();
  ASSERT_TRUE(last);
  EXPECT_EQ(last->block[0], threads);
  EXPECT_EQ(nlohmann::json::parse(readFile(metaPath))["kernel"]
                ["threads_per_block"],
            threads);
}

// Defect 16: a tuned config that does not validate, or a quick form, was
// dropped (or used) without a word.
TEST(StandIn, AnUnusableTunedConfigWarnsOnceAndFallsBackToTheDefault) {
  FLASHJIT_REQUIRE_STANDIN();
  for (const char *bad : {R"({"block_m": 7, "block_n": 64, "warps": 4,
                               "stages": 2, "pack_gqa": false})",
                          R"({"block_m": -64, "block_n": 64, "warps": 4,
                               "stages": 2, "pack_gqa": false})",
                          R"({"block_m": 128, "block_n": 256, "warps": 4,
                               "stages": 4, "pack_gqa": false})",
                          R"({"block_m": 128, "block_n": 64, "warps": 4,
                               "stages": 2, "pack_gqa": false,
                               "quick": true})"}) {
    TempDir dir;
    auto rt = makeRuntime(dir.path().string());
    ASSERT_TRUE(rt);
    ForwardProblem p = smallProblem();
    p.headDimQK = p.headDimV = 256;
    p.setDenseBSHD();
    const TuneKey key = rt->tuneKey(p);
    nlohmann::json doc = {
        {"format", 1},
        {"entries",
         {{key.text(),
           {{"config", nlohmann::json::parse(bad)}, {"ms", 1.0}}}}}};
    { std::ofstream(dir.path() / "tune.json") << doc.dump(2); }
    testing::internal::CaptureStderr();
    const bool tuned = rt->tunedEntry(p).has_value();
    const bool tunedAgain = rt->tunedEntry(p).has_value();
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_FALSE(tuned) << bad;
    EXPECT_FALSE(tunedAgain) << bad;
    EXPECT_NE(err.find("unusable config"), std::string::npos) << bad << err;
    EXPECT_EQ(err.find("warning"), err.rfind("warning"))
        << "warned more than once: " << err;
  }
}

// ---- the C API ----------------------------------------------------------------
namespace {
struct CRuntime {
  flashjit_runtime *rt = nullptr;
  explicit CRuntime(const std::string &cacheDir) {
    flashjit_runtime_options o;
    EXPECT_EQ(flashjit_runtime_options_init(&o, sizeof o), FLASHJIT_SUCCESS);
    o.cache_dir = cacheDir.c_str();
    o.quick_first = 0;
    EXPECT_EQ(flashjit_runtime_create_with_options(&o, &rt), FLASHJIT_SUCCESS)
        << flashjit_last_error();
  }
  ~CRuntime() { flashjit_runtime_destroy(rt); }
};

flashjit_forward_args smallArgs() {
  flashjit_forward_args a;
  flashjit_forward_args_init(&a, sizeof a);
  a.batch = 1;
  a.heads_q = a.heads_kv = 2;
  a.seqlen_q = a.seqlen_k = 64;
  a.head_dim_qk = 64;
  const int64_t strides[3] = {64 * 2 * 64, 64, 2 * 64};
  for (int64_t *s : {a.q_strides, a.k_strides, a.v_strides, a.o_strides})
    std::memcpy(s, strides, sizeof strides);
  a.q = fakePtr(1);
  a.k = fakePtr(2);
  a.v = fakePtr(3);
  a.o = const_cast<void *>(fakePtr(4));
  return a;
}
} // namespace

// Defect 5: batch sized the host copies of cu_seqlens before it was
// checked: 100000 read 400 kB past a 3-entry array, 2^40 tried 4 TiB.
TEST(StandInCApi, BatchIsCheckedBeforeItSizesAnything) {
  FLASHJIT_REQUIRE_STANDIN();
  TempDir dir;
  CRuntime c(dir.path().string());
  ASSERT_TRUE(c.rt);
  const int32_t cuHost[3] = {0, 10, 20};
  for (int64_t batch : {int64_t(100000), int64_t(1) << 40, int64_t(-5)}) {
    flashjit_forward_args a = smallArgs();
    a.batch = batch;
    a.cu_seqlens_q = a.cu_seqlens_k =
        static_cast<const int32_t *>(fakePtr(9));
    a.cu_seqlens_q_host = a.cu_seqlens_k_host = cuHost;
    a.total_q = a.total_k = 20;
    EXPECT_EQ(flashjit_attention_forward(c.rt, &a, nullptr),
              FLASHJIT_ERROR_INVALID_ARGUMENT)
        << batch << ": " << flashjit_last_error();
    EXPECT_NE(std::strstr(flashjit_last_error(), "batch must be in [1, 65535]"),
              nullptr)
        << batch << ": " << flashjit_last_error();
  }
}

// Defect 17: heads_kv 0 means heads_q (multi-head attention).
TEST(StandInCApi, HeadsKvZeroMeansHeadsQ) {
  FLASHJIT_REQUIRE_STANDIN();
  TempDir dir;
  CRuntime c(dir.path().string());
  ASSERT_TRUE(c.rt);
  flashjit_forward_args a = smallArgs();
  a.heads_kv = 0;
  ASSERT_EQ(flashjit_attention_forward(c.rt, &a, nullptr), FLASHJIT_SUCCESS)
      << flashjit_last_error();
  auto last = standInLastLaunch();
  ASSERT_TRUE(last);
  EXPECT_NE(last->kernel.find("_g1_"), std::string::npos) << last->kernel;
  EXPECT_EQ(last->grid[1], 2u); // one CTA row per query head
}

// ---- the backward's launch path --------------------------------------------------

namespace {
/// The backward call of `forward` (dense, its LSE and gradients at fake
/// device addresses).
BackwardProblem backwardProblem(const ForwardProblem &forward) {
  BackwardProblem p;
  static_cast<ForwardProblem &>(p) = forward;
  p.setDenseBSHD();
  p.lse = static_cast<float *>(const_cast<void *>(fakePtr(5)));
  p.dO = fakePtr(6);
  p.dQ = const_cast<void *>(fakePtr(7));
  p.dK = const_cast<void *>(fakePtr(8));
  p.dV = const_cast<void *>(fakePtr(9));
  return p;
}
} // namespace

// Three launches in order (D, the main kernel, the dQ conversion), the main
// kernel's grid over key tiles and K/V heads, the others over 64-row query
// blocks and query heads; on sm_90 the sm90 backward from d = 64 (with its
// four tensor maps), the sm80 one below.
TEST(StandInBackward, LaunchesItsThreeEntriesInOrder) {
  FLASHJIT_REQUIRE_STANDIN();
  TempDir dir;
  auto rt = makeRuntime(dir.path().string());
  ASSERT_TRUE(rt);
  BackwardProblem p = backwardProblem(smallProblem(4, 2));
  p.seqlenK = 300; // several key tiles of any default's block_n
  p.setDenseBSHD();
  auto plan = rt->planBackward(p);
  ASSERT_TRUE(plan) << plan.message();
  const std::string name = plan->main.kernel->name;
  EXPECT_EQ(name.rfind("bwd_", 0), 0u) << name;
  EXPECT_EQ(plan->main.config.family, Family::Sm90);
  EXPECT_EQ(plan->main.tensorMapCount, 4);
  {
    BackwardProblem narrow = p;
    narrow.headDimQK = narrow.headDimV = 32;
    narrow.setDenseBSHD();
    auto small = rt->planBackward(narrow);
    ASSERT_TRUE(small) << small.message();
    EXPECT_EQ(small->main.config.family, Family::Sm80);
    EXPECT_EQ(small->main.tensorMapCount, 0);
  }
  const long before = standInLaunches();
  ASSERT_TRUE(rt->attentionBackward(p).isOk()); // the runtime's workspace
  EXPECT_EQ(standInLaunches(), before + 3);
  auto last = standInLastLaunch();
  ASSERT_TRUE(last);
  EXPECT_EQ(last->kernel, backwardConvertEntry(name));
  EXPECT_EQ(last->grid[0], 1u); // 64 query rows
  EXPECT_EQ(last->grid[1], 4u); // query heads
  EXPECT_EQ(last->block[0], unsigned(kBackwardAuxThreads));
  const unsigned keyTiles =
      unsigned((p.seqlenK + plan->main.config.blockN - 1) /
               plan->main.config.blockN);
  EXPECT_EQ(plan->main.grid[0], keyTiles);
  EXPECT_EQ(plan->main.grid[1], 2u); // K/V heads
  // Deterministic: at most kMaxDqSplits partial sums, one per CTA column.
  p.deterministic = true;
  auto det = rt->planBackward(p);
  ASSERT_TRUE(det) << det.message();
  EXPECT_EQ(det->args.dqSplits, int32_t(deterministicDqSplits(keyTiles)));
  EXPECT_EQ(det->main.grid[0], unsigned(det->args.dqSplits));
  EXPECT_GT(det->workspaceLayout.bytes(), plan->workspaceLayout.bytes());
  EXPECT_EQ(det->main.workspaceBytes, size_t(det->workspaceLayout.bytes()));
  auto detBytes = rt->backwardWorkspaceBytes(p);
  ASSERT_TRUE(detBytes) << detBytes.message();
  EXPECT_EQ(*detBytes, det->main.workspaceBytes);
  // A caller's workspace smaller than the need is refused before a launch.
  p.workspace = const_cast<void *>(fakePtr(10));
  p.workspaceBytes = *detBytes - 16;
  auto small = rt->planBackward(p);
  ASSERT_FALSE(small);
  EXPECT_NE(small.message().find("workspace_bytes"), std::string::npos)
      << small.message();
  // So is one off 16-byte alignment (large enough).
  p.workspace = static_cast<char *>(const_cast<void *>(fakePtr(10))) + 4;
  p.workspaceBytes = *detBytes;
  auto skewed = rt->planBackward(p);
  ASSERT_FALSE(skewed);
  EXPECT_NE(skewed.message().find("workspace ("), std::string::npos)
      << skewed.message();
  EXPECT_NE(skewed.message().find("aligned to 16 bytes"), std::string::npos)
      << skewed.message();
  p.workspace = nullptr, p.workspaceBytes = 0;
  // The decode inputs are the forward's.
  p.numSplits = 2;
  auto split = rt->planBackward(p);
  ASSERT_FALSE(split);
  EXPECT_NE(split.message().find("num_splits"), std::string::npos)
      << split.message();
  p.numSplits = 0;
  // The LSE is required.
  p.lse = nullptr;
  auto noLse = rt->planBackward(p);
  ASSERT_FALSE(noLse);
  EXPECT_NE(noLse.message().find("lse"), std::string::npos) << noLse.message();
}

// The sm90 backward loads Q, K, V and dO by TMA: four maps after the
// backward's arguments, dO's with its own strides (BHSD here, Q's BSHD);
// with dO off 16-byte alignment every thread copies instead (no maps).
TEST(StandInBackward, Sm90EncodesTheGradientsMapToo) {
  FLASHJIT_REQUIRE_STANDIN();
  TempDir dir;
  auto rt = makeRuntime(dir.path().string());
  ASSERT_TRUE(rt);
  BackwardProblem p = backwardProblem(smallProblem(4, 2));
  p.batch = 2;
  p.seqlenQ = 100;
  p.seqlenK = 300;
  p.setDenseBSHD();
  p.dOStrides = {4 * 100 * 64, 100 * 64, 64}; // BHSD
  p.tile = defaultTileConfig(specFor(p), Arch::Sm90a, Family::Sm90);
  const long mapsBefore = test_support::standInTensorMaps();
  auto plan = rt->planBackward(p);
  ASSERT_TRUE(plan) << plan.message();
  EXPECT_EQ(plan->main.tensorMapCount, 4);
  ASSERT_EQ(test_support::standInTensorMaps(), mapsBefore + 4);
  auto dO = test_support::standInTensorMap(mapsBefore + 3);
  ASSERT_TRUE(dO);
  EXPECT_EQ(dO->rank, 4u);
  const unsigned long long dims[] = {64, 100, 4, 2};
  const unsigned long long strides[] = {64 * 2, 100 * 64 * 2,
                                        4 * 100 * 64 * 2};
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(dO->dims[i], dims[i]) << i;
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(dO->strides[i], strides[i]) << i;
  EXPECT_EQ(dO->box[0], 64u);
  EXPECT_EQ(dO->box[1], 64u); // block_m rows
  auto k = test_support::standInTensorMap(mapsBefore + 1);
  ASSERT_TRUE(k);
  EXPECT_EQ(k->dims[1], 300u);
  EXPECT_EQ(k->box[1], unsigned(p.tile->blockN));
  const long before = standInLaunches();
  ASSERT_TRUE(rt->launch(*plan).isOk());
  EXPECT_EQ(standInLaunches(), before + 3);

  BackwardProblem skewed = p;
  skewed.dO = static_cast<const char *>(p.dO) + 2;
  auto copied = rt->planBackward(skewed);
  ASSERT_TRUE(copied) << copied.message();
  EXPECT_EQ(copied->main.tensorMapCount, 0);
  EXPECT_EQ(copied->main.spec.globalAlignElems, 1);
  // Past d = 64 the copying kernel runs out of registers: refused, naming
  // why.
  skewed.headDimQK = skewed.headDimV = 96;
  skewed.setDenseBSHD();
  skewed.tile = defaultTileConfig(specFor(skewed), Arch::Sm90a, Family::Sm90);
  auto refused = rt->planBackward(skewed);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.message().find("16-byte aligned"), std::string::npos)
      << refused.message();
}

// A tuned backward config is stored under the backward spec's key: the
// backward plan uses it (and says so), the forward of the same shape does
// not, and one the backward cannot run is refused with a warning.
TEST(StandInBackward, PlansUseTheTunedBackwardConfig) {
  FLASHJIT_REQUIRE_STANDIN();
  TempDir dir;
  auto rt = makeRuntime(dir.path().string());
  ASSERT_TRUE(rt);
  BackwardProblem p = backwardProblem(smallProblem());
  const ForwardProblem &forward = p;
  EXPECT_NE(rt->tuneKey(p).text(), rt->tuneKey(forward).text());
  TileConfig tuned;
  tuned.family = Family::Sm80;
  tuned.blockM = 64, tuned.blockN = 16, tuned.warps = 8, tuned.stages = 1;
  tuned.scalar = true; // the scalar main kernel, whose tiles are one stage
  TuneEntry entry;
  entry.config = tuned;
  entry.ms = 1.0;
  ASSERT_TRUE(rt->storeTuned(rt->tuneKey(p), entry));
  auto plan = rt->planBackward(p);
  ASSERT_TRUE(plan) << plan.message();
  EXPECT_EQ(plan->main.source, ConfigSource::Tuned);
  EXPECT_EQ(plan->main.config, tuned);
  EXPECT_EQ(plan->main.kernel->threadsPerBlock, 8 * 32);
  auto fwd = rt->planForward(forward);
  ASSERT_TRUE(fwd) << fwd.message();
  EXPECT_EQ(fwd->source, ConfigSource::Default);

  // stages 2: the scalar kernel's tiles are not pipelined.
  TempDir other;
  auto fresh = makeRuntime(other.path().string());
  ASSERT_TRUE(fresh);
  entry.config.stages = 2;
  ASSERT_TRUE(fresh->storeTuned(fresh->tuneKey(p), entry));
  testing::internal::CaptureStderr();
  auto fallback = fresh->planBackward(p);
  const std::string err = testing::internal::GetCapturedStderr();
  ASSERT_TRUE(fallback) << fallback.message();
  EXPECT_EQ(fallback->main.source, ConfigSource::Default);
  EXPECT_NE(err.find("unusable config"), std::string::npos) << err;
  EXPECT_NE(err.find("stages must be 1"), std::string::npos) << err;
}

TEST(StandInCApi, BackwardWithItsOwnWorkspace) {
  FLASHJIT_REQUIRE_STANDIN();
  TempDir dir;
  CRuntime c(dir.path().string());
  ASSERT_TRUE(c.rt);
  flashjit_backward_args b;
  ASSERT_EQ(flashjit_backward_args_init(&b, sizeof b), FLASHJIT_SUCCESS);
  EXPECT_EQ(b.forward.struct_size, sizeof b.forward);
  b.forward = smallArgs();
  b.forward.lse = static_cast<float *>(const_cast<void *>(fakePtr(5)));
  const int64_t lse[2] = {2 * 64, 64};
  std::memcpy(b.forward.lse_strides, lse, sizeof lse);
  b.dout = fakePtr(6);
  b.dq = const_cast<void *>(fakePtr(7));
  b.dk = const_cast<void *>(fakePtr(8));
  b.dv = const_cast<void *>(fakePtr(9));
  for (int64_t *s : {b.dout_strides, b.dq_strides, b.dk_strides, b.dv_strides})
    std::memcpy(s, b.forward.q_strides, sizeof b.forward.q_strides);
  uint64_t bytes = 0;
  ASSERT_EQ(flashjit_backward_workspace_size(c.rt, &b, &bytes),
            FLASHJIT_SUCCESS)
      << flashjit_last_error();
  EXPECT_GT(bytes, 0u);
  b.forward.workspace = const_cast<void *>(fakePtr(10));
  b.forward.workspace_bytes = bytes;
  const long before = standInLaunches();
  ASSERT_EQ(flashjit_attention_backward(c.rt, &b, nullptr), FLASHJIT_SUCCESS)
      << flashjit_last_error();
  EXPECT_EQ(standInLaunches(), before + 3);
  // Bad input names the argument.
  b.dq = nullptr;
  EXPECT_EQ(flashjit_attention_backward(c.rt, &b, nullptr),
            FLASHJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::strstr(flashjit_last_error(), "dq must be a device pointer"),
            nullptr)
      << flashjit_last_error();
  b.struct_size = 8;
  EXPECT_EQ(flashjit_attention_backward(c.rt, &b, nullptr),
            FLASHJIT_ERROR_INVALID_ARGUMENT);
}

// ---- many threads (the TSan run's subject) ------------------------------------
TEST(StandInThreads, OneKeyFromManyThreadsCompilesOnce) {
  FLASHJIT_REQUIRE_STANDIN();
  TempDir dir;
  auto rt = makeRuntime(dir.path().string(), /*quickFirst=*/true);
  ASSERT_TRUE(rt);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 4; ++i)
        if (!rt->attentionForward(smallProblem()))
          ++failures;
    });
  for (auto &t : threads)
    t.join();
  rt->finishCompiles();
  EXPECT_EQ(failures, 0);
  const CacheStats st = rt->cacheStats();
  EXPECT_EQ(st.compiles + st.quickCompiles, 2u)
      << "one quick form and one full kernel, whatever the threads";
  EXPECT_EQ(st.memoryHits, 8u * 4u - 1) << "one call built, the rest hit";
}

TEST(StandInThreads, DestroyingTheRuntimeWhileFullKernelsCompile) {
  FLASHJIT_REQUIRE_STANDIN();
  TempDir dir;
  for (int round = 0; round < 3; ++round) {
    auto rt = makeRuntime(dir.path().string() + "/" + std::to_string(round),
                          /*quickFirst=*/true);
    ASSERT_TRUE(rt);
    // Quick forms launch; their full kernels compile in the background,
    // and the runtime goes away while they do.
    for (int d : {32, 48}) {
      ForwardProblem p = smallProblem();
      p.headDimQK = p.headDimV = d;
      p.setDenseBSHD();
      auto plan = rt->planForward(p);
      ASSERT_TRUE(plan) << plan.message();
      EXPECT_EQ(plan->kernel->source, LoadedKernel::Source::Quick);
    }
  }
}

TEST(StandInThreads, TheCApiFromManyThreads) {
  FLASHJIT_REQUIRE_STANDIN();
  TempDir dir;
  CRuntime c(dir.path().string());
  ASSERT_TRUE(c.rt);
  std::atomic<int> failures{0}, wrongErrors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 6; ++i) {
        flashjit_forward_args a = smallArgs();
        if ((i + t) % 3 == 0) { // an invalid call: its own error, per thread
          a.head_dim_qk = 300;
          if (flashjit_attention_forward(c.rt, &a, nullptr) !=
                  FLASHJIT_ERROR_INVALID_ARGUMENT ||
              !std::strstr(flashjit_last_error(), "head_dim_qk"))
            ++wrongErrors;
        } else if (flashjit_attention_forward(c.rt, &a, nullptr) !=
                   FLASHJIT_SUCCESS) {
          ++failures;
        }
      }
    });
  for (auto &t : threads)
    t.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(wrongErrors, 0);
}
