//===- test_tune.cpp - Search space, tune database, CLI of autotune/bench --===//
//
// No GPU: pruning counts and reasons, the tune database's round trip,
// corruption, key mismatches and concurrent writers, parallel compiles of
// candidates, and the autotune/bench commands' usage errors.
//
//===----------------------------------------------------------------------===//
#include "flashjit/compiler/Pipeline.h"
#include "flashjit/kernels/Decode.h"
#include "flashjit/kernels/Forward.h"
#include "flashjit/kernels/SearchSpace.h"
#include "flashjit/runtime/Autotune.h"
#include "flashjit/runtime/Device.h"
#include "flashjit/runtime/TuneDatabase.h"

#include "Subprocess.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

namespace fs = std::filesystem;
using namespace flashjit;
using flashjit::test_support::ProcessResult;
using flashjit::test_support::readFile;
using flashjit::test_support::runProcess;

namespace {
AttentionSpec specWith(int d, MaskMode mask = MaskMode::None, int group = 1,
                       int align = 8) {
  AttentionSpec s;
  s.headDimQK = s.headDimV = d;
  s.mask = mask;
  s.gqaGroup = group;
  s.globalAlignElems = align;
  return s;
}

int prunedFor(const SearchSpace &space, PruneReason reason) {
  for (const auto &[r, n] : space.pruned)
    if (r == reason)
      return n;
  return 0;
}

class TuneFiles : public ::testing::Test {
protected:
  void SetUp() override {
    std::string tmpl =
        (fs::temp_directory_path() / "flashjit-tune-XXXXXX").string();
    dir_ = ::mkdtemp(tmpl.data());
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path() const { return dir_ + "/tune.json"; }
  std::string dir_;
};

TuneKey keyFor(int d, const std::string &gpu = "NVIDIA H100 80GB HBM3") {
  TuneKey key;
  key.spec = specWith(d);
  AttentionParams p;
  p.batch = 4;
  p.headsQ = p.headsKV = 16;
  p.seqlenQ = p.seqlenK = 4096;
  key.bucket = shapeBucket(p);
  key.gpu = gpu;
  key.flashjitVersion = "0.1.0";
  key.driverVersion = 13000;
  return key;
}

TuneEntry entryWith(int blockN, double ms) {
  TuneEntry e;
  e.config = {128, blockN, 8, 2, false};
  e.ms = ms;
  e.runnerUp = TileConfig{128, 32, 8, 3, false};
  e.runnerUpMs = ms * 1.1;
  e.defaultConfig = TileConfig{128, 64, 8, 2, false};
  e.defaultMs = ms * 1.3;
  e.candidates = 30;
  e.tunedAtUtc = "2026-12-02T00:00:00Z";
  return e;
}
} // namespace

// ---- search space ------------------------------------------------------------

TEST(SearchSpace, EveryConfigIsCountedOnceAndCandidatesValidate) {
  for (Arch arch : {Arch::Sm80, Arch::Sm86, Arch::Sm90a})
    for (int d : {1, 33, 64, 80, 128, 192, 256})
      for (int group : {1, 4}) {
        const AttentionSpec spec = specWith(d, MaskMode::Causal, group);
        ForwardKnobs knobs;
        knobs.families = {Family::Sm80};
        const SearchSpace space = forwardSearchSpace(spec, arch, knobs);
        const TileConfig baseline =
            defaultTileConfig(spec, arch, Family::Sm80);
        ASSERT_FALSE(space.candidates.empty());
        EXPECT_EQ(space.candidates.front(), baseline);
        const int grid = int(knobs.blockM.size() * knobs.blockN.size() *
                             knobs.warps.size() * knobs.stages.size()) *
                         (group > 1 ? 2 : 1);
        EXPECT_EQ(space.enumerated, grid);
        std::set<std::string> seen;
        bool baselineInGrid = false;
        // What every candidate must satisfy, checked by hand rather than
        // by the validate() that filtered them: whole m16 tiles per warp,
        // 16-key steps, and at least the Q tile plus `stages` K and V tiles
        // of the padded head dim within the arch's shared memory (the CUDA
        // programming guide's per-block limits).
        const int limit = arch == Arch::Sm80   ? 163 * 1024
                          : arch == Arch::Sm86 ? 99 * 1024
                                               : 227 * 1024;
        const int padded = (d + 15) / 16 * 16;
        for (const TileConfig &c : space.candidates) {
          const std::string what = canonicalText(c);
          EXPECT_EQ(c.blockM % (16 * c.warps), 0) << what;
          EXPECT_EQ(c.blockN % 16, 0) << what;
          EXPECT_GE(c.stages, 1) << what;
          EXPECT_LE((c.blockM + 2 * c.stages * c.blockN) * padded * 2, limit)
              << what;
          EXPECT_EQ(c.packGqa && group == 1, false) << what;
          EXPECT_TRUE(seen.insert(what).second) << "duplicate " << what;
        }
        for (int m : knobs.blockM)
          for (int n : knobs.blockN)
            for (int w : knobs.warps)
              for (int s : knobs.stages)
                baselineInGrid |= baseline == TileConfig{m, n, w, s,
                                                         baseline.packGqa};
        EXPECT_EQ(int(space.candidates.size()) - (baselineInGrid ? 0 : 1) +
                      space.prunedCount(),
                  space.enumerated)
            << "d=" << d << " " << toString(arch);
      }
}

// d=256 on sm_86 (99 KiB = 101376 bytes a block), worked out by hand: Q is
// 64 or 128 rows of 512 bytes, K and V a stage 1024 bytes a key. 64-row
// tiles (4 warps of 16 rows; 8 warps would have 8) leave 68 KiB: stages x
// block_n <= 64 keys. 128-row tiles leave 35 KiB (<= 35 keys), and only
// with 8 warps: 4 warps of 32 rows hold 2 x 32 x 4 = 256 accumulator
// registers for O alone. The default (64x64, one stage) comes first.
TEST(SearchSpace, D256OnSm86KeepsExactlyWhatFits) {
  const SearchSpace space =
      forwardSearchSpace(specWith(256, MaskMode::Causal), Arch::Sm86);
  const std::vector<TileConfig> want = {
      {64, 64, 4, 1},  {64, 16, 4, 1},  {64, 16, 4, 2}, {64, 16, 4, 3},
      {64, 32, 4, 1},  {64, 32, 4, 2},  {64, 48, 4, 1}, {128, 16, 8, 1},
      {128, 16, 8, 2}, {128, 32, 8, 1}};
  ASSERT_EQ(space.candidates.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_EQ(space.candidates[i], want[i])
        << i << ": " << canonicalText(space.candidates[i]);
  EXPECT_EQ(space.enumerated, 2 * 5 * 2 * 3);
  EXPECT_EQ(space.prunedCount(), 60 - 10);
}

TEST(SearchSpace, PrunesWhatCannotFitWithTheReason) {
  // d=256 on sm_86 (99 KB): Q alone is 67 KB at block_m 128, so most
  // multi-stage configs cannot fit; sm_90a (227 KB) keeps more of them.
  ForwardKnobs sm80;
  sm80.families = {Family::Sm80};
  const SearchSpace small =
      forwardSearchSpace(specWith(256), Arch::Sm86, sm80);
  const SearchSpace large =
      forwardSearchSpace(specWith(256), Arch::Sm90a, sm80);
  EXPECT_GT(prunedFor(small, PruneReason::SharedMemory),
            prunedFor(large, PruneReason::SharedMemory));
  EXPECT_GT(prunedFor(large, PruneReason::SharedMemory), 0);
  // 4 warps of 32 rows at d=256 need more than 255 registers.
  EXPECT_GT(prunedFor(large, PruneReason::Registers), 0);
  // block_m 64 with 8 warps leaves 8 rows per warp: never a valid shape.
  EXPECT_EQ(prunedFor(large, PruneReason::Shape),
            int(ForwardKnobs{}.blockN.size() * ForwardKnobs{}.stages.size()));
  // d=64 fits everything but the shape rule.
  const SearchSpace d64 = forwardSearchSpace(specWith(64), Arch::Sm90a, sm80);
  EXPECT_EQ(prunedFor(d64, PruneReason::SharedMemory), 0);
  EXPECT_EQ(prunedFor(d64, PruneReason::Registers), 0);
  for (const TileConfig &c : small.candidates)
    EXPECT_LE(forwardLayout(specWith(256), c).sharedMemBytes,
              maxSharedMemoryPerBlock(Arch::Sm86));
}

// The backward's main kernel at d=128 bf16, worked out by hand: its tiles
// take 1536 bytes a key (K, V in bf16; dK, dV in float32), 520 a query row
// (Q, dO; LSE and D) and 8 a (row, key) pair (P and dS in float32). On
// sm_86 (101376 bytes) every block_n 64 config needs more than 98304 + 8192
// bytes; block_n 32 fits up to block_m 64 (98816 bytes). sm_90a keeps all.
TEST(SearchSpace, BackwardKeepsExactlyWhatFits) {
  // The default main kernel's tiles (the scalar kernel's, TileConfig::scalar).
  auto scalarTiles = [](int blockM, int blockN, int warps, int stages) {
    TileConfig c{blockM, blockN, warps, stages};
    c.scalar = true;
    return c;
  };
  AttentionSpec spec = specWith(128, MaskMode::Causal);
  spec.direction = Direction::Backward;
  BackwardKnobs scalarKnobs;
  scalarKnobs.scalar = true;
  scalarKnobs.blockN = {16, 32, 64};
  const SearchSpace sm86 = backwardSearchSpace(spec, Arch::Sm86, scalarKnobs);
  EXPECT_EQ(sm86.enumerated, 27);
  EXPECT_EQ(prunedFor(sm86, PruneReason::SharedMemory), 9);
  EXPECT_EQ(sm86.prunedCount(), 9);
  ASSERT_EQ(sm86.candidates.size(), 18u);
  EXPECT_EQ(sm86.candidates.front(), scalarTiles(16, 32, 4, 1));
  for (const TileConfig &c : sm86.candidates) {
    EXPECT_NE(c.blockN, 64) << canonicalText(c);
    EXPECT_EQ(c.stages, 1) << canonicalText(c);
    EXPECT_TRUE(validate(c, spec, Arch::Sm86)) << canonicalText(c);
  }
  EXPECT_EQ(backwardSearchSpace(spec, Arch::Sm90a, scalarKnobs).candidates.size(),
            27u);
  // The runtime's default first (the sm90 kernel's at d = 128), the
  // mma.sync kernel's space (both stage counts searched) and the sm90
  // kernel's four tiles; every candidate valid.
  const SearchSpace mma = backwardSearchSpace(spec, Arch::Sm90a);
  EXPECT_EQ(mma.enumerated, 3 * 4 * 3 * 2 + 4);
  EXPECT_EQ(mma.candidates.front(), defaultTileConfig(spec, Arch::Sm90a));
  int twoStages = 0;
  for (const TileConfig &c : mma.candidates) {
    EXPECT_FALSE(c.scalar) << canonicalText(c);
    EXPECT_TRUE(validate(c, spec, Arch::Sm90a)) << canonicalText(c);
    twoStages += c.stages == 2;
  }
  EXPECT_GT(twoStages, 0);
  // d=256 on sm_90a: the scalar default drops to block_n 16.
  spec.headDimQK = spec.headDimV = 256;
  EXPECT_EQ(backwardSearchSpace(spec, Arch::Sm90a, scalarKnobs).candidates.front(),
            scalarTiles(16, 16, 4, 1));
  // A forward spec has no backward space.
  EXPECT_TRUE(backwardSearchSpace(specWith(128), Arch::Sm90a)
                  .candidates.empty());
  // d=64 on sm_90a: the sm90 kernel's tiles (one or two warpgroups, one or
  // two stages), valid, its default (the runtime's there) first.
  spec.headDimQK = spec.headDimV = 64;
  const SearchSpace d64 = backwardSearchSpace(spec, Arch::Sm90a);
  EXPECT_EQ(d64.candidates.front().family, Family::Sm90);
  EXPECT_EQ(d64.candidates.front().blockN, 128);
  int sm90 = 0;
  for (const TileConfig &c : d64.candidates)
    if (c.family == Family::Sm90) {
      ++sm90;
      EXPECT_TRUE(validate(c, spec, Arch::Sm90a)) << canonicalText(c);
    }
  EXPECT_EQ(sm90, 4);
  EXPECT_EQ(backwardSearchSpace(spec, Arch::Sm86).candidates.front().family,
            Family::Sm80);
  for (const TileConfig &c : backwardSearchSpace(spec, Arch::Sm86).candidates)
    EXPECT_EQ(c.family, Family::Sm80) << canonicalText(c);
}

TEST(SearchSpace, SearchesGqaPackingBothWays) {
  const SearchSpace space =
      forwardSearchSpace(specWith(64, MaskMode::None, 4), Arch::Sm90a);
  int packed = 0, unpacked = 0;
  for (const TileConfig &c : space.candidates)
    ++(c.packGqa ? packed : unpacked);
  EXPECT_GT(packed, 0);
  EXPECT_GT(unpacked, 0);
  for (const TileConfig &c :
       forwardSearchSpace(specWith(64), Arch::Sm90a).candidates)
    EXPECT_FALSE(c.packGqa);
}

// A decode-like problem is tuned around the decode table, not over prefill
// tiles: the table's config with the runtime's split heuristic first, then
// the table's row tile (block_m, warps, pack_gqa) at every K/V depth and
// stage count, each at every split count that the keys and grid z allow.
TEST(SearchSpace, DecodeSearchesTheDecodeTableAndSplitCounts) {
  ForwardProblem p;
  p.batch = 8;
  p.headsQ = 32;
  p.headsKV = 8;
  p.seqlenQ = 1;
  p.seqlenK = 32768;
  p.headDimQK = p.headDimV = 128;
  const AttentionSpec spec = specWith(128, MaskMode::None, 4);
  const SearchSpace space = forwardSearchSpaceFor(p, spec, Arch::Sm90a);
  const TileConfig table = *decodeTileConfig(spec, Arch::Sm90a, 4);
  ASSERT_EQ(space.candidates.size(), space.splits.size());
  ASSERT_FALSE(space.candidates.empty());
  EXPECT_EQ(space.candidates.front(), table);
  EXPECT_EQ(space.splitsOf(0), 0);
  EXPECT_EQ(table.blockM, 16); // one warp for a group of 4 rows
  std::set<int> depths, splitCounts;
  std::set<std::pair<std::string, int>> seen;
  for (size_t i = 1; i < space.candidates.size(); ++i) {
    const TileConfig &c = space.candidates[i];
    EXPECT_EQ(c.family, Family::Sm80);
    EXPECT_EQ(c.blockM, 16);
    EXPECT_EQ(c.warps, 1);
    EXPECT_TRUE(c.packGqa);
    depths.insert(c.blockN);
    splitCounts.insert(space.splitsOf(i));
    EXPECT_TRUE(seen.insert({canonicalText(c), space.splitsOf(i)}).second)
        << canonicalText(c) << " splits=" << space.splitsOf(i) << " twice";
  }
  EXPECT_EQ(depths, (std::set<int>{16, 32, 64, 128}));
  EXPECT_EQ(splitCounts, (std::set<int>{1, 2, 4, 8, 16, 32, 64, 128}));
  // 4 depths x 2 stage counts x 8 split counts, and the table's own.
  EXPECT_EQ(space.candidates.size(), 1u + 4 * 2 * 8);

  // Few keys and a large batch: no more splits than key blocks, and batch x
  // splits within grid z.
  p.seqlenK = 100;
  p.batch = 4000;
  const SearchSpace small = forwardSearchSpaceFor(p, spec, Arch::Sm90a);
  for (size_t i = 1; i < small.candidates.size(); ++i) {
    const int n = small.splitsOf(i);
    EXPECT_GE(n, 1);
    EXPECT_LE(n, (100 + small.candidates[i].blockN - 1) /
                     small.candidates[i].blockN);
    EXPECT_LE(int64_t(n) * 4000, 65535);
  }
  EXPECT_EQ(small.splitsOf(1), 1);

  // Prefill (64 rows of queries x 4 heads), or the sm90 family alone: the
  // forward families' tiles, no split counts.
  p.seqlenQ = 64;
  const SearchSpace prefill = forwardSearchSpaceFor(p, spec, Arch::Sm90a);
  EXPECT_TRUE(prefill.splits.empty());
  EXPECT_EQ(prefill.candidates.size(),
            forwardSearchSpace(spec, Arch::Sm90a).candidates.size());
  p.seqlenQ = 1;
  AutotuneOptions sm90Only;
  sm90Only.knobs.families = {Family::Sm90};
  EXPECT_TRUE(forwardSearchSpaceFor(p, spec, Arch::Sm90a, sm90Only)
                  .splits.empty());
}

// On sm_90a the sm90 family's knobs are searched beside the sm80 family's:
// consumer warpgroups, K/V tile rows, stages, pingpong (two warpgroups
// only) and overlap; every candidate validates, and none appears twice.
TEST(SearchSpace, CoversTheSm90FamilysKnobs) {
  ForwardKnobs knobs;
  knobs.families = {Family::Sm90};
  for (int d : {64, 128, 256}) {
    const AttentionSpec spec = specWith(d, MaskMode::Causal);
    const SearchSpace space = forwardSearchSpace(spec, Arch::Sm90a, knobs);
    EXPECT_EQ(space.candidates.front(), defaultTileConfig(spec, Arch::Sm90a));
    // 3 warpgroup counts x 5 tile lengths x 1 stage count x overlap on/off,
    // and pingpong for two warpgroups: 30 + 10.
    EXPECT_EQ(space.enumerated, 40) << "d=" << d;
    bool pingpong = false, overlap = false, oneWarpgroup = false;
    std::set<std::string> seen;
    for (const TileConfig &c : space.candidates) {
      EXPECT_EQ(c.family, Family::Sm90);
      EXPECT_TRUE(validate(c, spec, Arch::Sm90a).isOk()) << canonicalText(c);
      EXPECT_TRUE(seen.insert(canonicalText(c)).second) << canonicalText(c);
      pingpong |= c.pingpong;
      overlap |= c.overlap;
      oneWarpgroup |= c.warps == 4;
    }
    EXPECT_TRUE(pingpong && overlap && oneWarpgroup) << "d=" << d;
  }
  // d=256: 176-key tiles need more than 227 KiB, and three warpgroups leave
  // too few registers for the output tile.
  const SearchSpace d256 =
      forwardSearchSpace(specWith(256), Arch::Sm90a, knobs);
  EXPECT_GT(prunedFor(d256, PruneReason::SharedMemory), 0);
  EXPECT_GT(prunedFor(d256, PruneReason::Registers), 0);
  // Not on sm_80, and not for rows neither TMA nor cp.async can load (2-byte
  // aligned).
  EXPECT_EQ(forwardSearchSpace(specWith(128), Arch::Sm80, knobs).enumerated, 0);
  EXPECT_EQ(forwardSearchSpace(specWith(128, MaskMode::None, 1, 1), Arch::Sm90a,
                               knobs)
                .enumerated,
            0);
  // Rows TMA cannot address (d=100 BSHD, 8-byte aligned): the tuner tries
  // the family's copies (and checks each candidate), the default too.
  AttentionSpec rows = specWith(100, MaskMode::None, 1, 4);
  EXPECT_GT(forwardSearchSpace(rows, Arch::Sm90a, knobs).enumerated, 0);
  EXPECT_EQ(defaultTileConfig(rows, Arch::Sm90a).family, Family::Sm90);
  EXPECT_EQ(defaultTileConfig(specWith(96), Arch::Sm90a).family, Family::Sm90);
  EXPECT_TRUE(validate(defaultTileConfig(rows, Arch::Sm90a, Family::Sm90), rows,
                       Arch::Sm90a)
                  .isOk());
}

TEST(SearchSpace, ARegisterFileThatCannotHoldTheThreadsIsPruned) {
  // 16 warps of 16 rows at d=256: ~200 registers x 512 threads > 65536.
  ForwardKnobs knobs;
  knobs.families = {Family::Sm80};
  knobs.blockM = {256};
  knobs.warps = {16};
  knobs.blockN = {16};
  knobs.stages = {1};
  const SearchSpace space =
      forwardSearchSpace(specWith(256), Arch::Sm90a, knobs);
  // Shared memory fits (152 KB); about 176 registers each fit a thread.
  EXPECT_EQ(prunedFor(space, PruneReason::RegisterFile), 1);
  EXPECT_EQ(space.prunedCount(), 1);
  const TileConfig c{256, 16, 16, 1, false};
  Status s = validate(c, specWith(256), Arch::Sm90a);
  EXPECT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("register file"), std::string::npos)
      << s.message();
}

/// Autotune compiles candidates on many threads at once: the pipeline must
/// give each the same PTX it gives alone.
TEST(SearchSpace, CandidatesCompileConcurrentlyToTheSamePtx) {
  const AttentionSpec spec = specWith(80, MaskMode::Causal);
  SearchSpace space = forwardSearchSpace(spec, Arch::Sm90a);
  space.candidates.resize(4);
  std::vector<std::string> alone, together(4);
  for (const TileConfig &c : space.candidates) {
    auto a = compile(spec, c, Arch::Sm90a);
    ASSERT_TRUE(a) << a.message();
    alone.push_back(a->ptx);
  }
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] {
      auto a = compile(spec, space.candidates[i], Arch::Sm90a);
      together[i] = a ? a->ptx : "failed: " + a.message();
    });
  for (auto &t : threads)
    t.join();
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(together[i], alone[i]) << canonicalText(space.candidates[i]);
}

TEST(Autotune, RotatesEnoughWorkspacesToDefeatL2) {
  constexpr size_t MB = 1 << 20;
  const int64_t l2 = 50 * MB;
  EXPECT_EQ(workspacesToRotate(300 * MB, l2), 2); // never fewer than two
  EXPECT_EQ(workspacesToRotate(30 * MB, l2), 4);  // 2 x L2 = 100 MB
  EXPECT_EQ(workspacesToRotate(1 * MB, l2), 100); // small problems: many
  EXPECT_EQ(workspacesToRotate(16, l2), kMaxWorkspaces);
  EXPECT_EQ(workspacesToRotate(0, l2), 1);
}

// ---- tune database ---------------------------------------------------------

TEST(ShapeBucket, RoundsEachExtentUpToAPowerOfTwo) {
  AttentionParams p;
  p.batch = 3;
  p.headsQ = 5;
  p.seqlenQ = 1000;
  p.seqlenK = 17;
  const ShapeBucket b = shapeBucket(p);
  EXPECT_EQ(b.seqlenQ, 1024);
  EXPECT_EQ(b.seqlenK, 64);
  EXPECT_EQ(b.batchHeads, 16);
  EXPECT_EQ(toString(b), "sq1024_sk64_bh16");
  p.seqlenQ = 1024;
  p.batch = 2;
  p.headsQ = 8;
  EXPECT_EQ(shapeBucket(p), b);
  // Decode rows keep buckets of their own (a decode entry is not a
  // prefill's); key lengths from 64.
  p.seqlenQ = 1;
  EXPECT_EQ(toString(shapeBucket(p)), "sq1_sk64_bh16_decode");
  p.seqlenQ = 3;
  EXPECT_EQ(shapeBucket(p).seqlenQ, 4);
  p.seqlenQ = 64;
  EXPECT_EQ(shapeBucket(p).seqlenQ, 64);
  p.headsKV = p.headsQ; // 64 rows a row block: still the decode table
  EXPECT_TRUE(shapeBucket(p).decode);
  p.headsKV = 1; // 8 query heads a K/V head: 512 rows
  EXPECT_FALSE(shapeBucket(p).decode);
  // A GQA group of 3: seqlen_q 20 (60 rows a row block, the decode table)
  // and 32 (96 rows, prefill tiles) round to one seqlen_q but never share.
  p.headsQ = 6;
  p.headsKV = 2;
  p.seqlenQ = 20;
  const ShapeBucket decode = shapeBucket(p);
  p.seqlenQ = 32;
  const ShapeBucket prefill = shapeBucket(p);
  EXPECT_EQ(decode.seqlenQ, prefill.seqlenQ);
  EXPECT_TRUE(decode.decode);
  EXPECT_FALSE(prefill.decode);
  EXPECT_FALSE(decode == prefill);
}

TEST_F(TuneFiles, TuneDatabaseRoundTrip) {
  {
    TuneDatabase db(path());
    EXPECT_FALSE(db.lookup(keyFor(128)));
    ASSERT_TRUE(db.store(keyFor(128), entryWith(64, 1.5)).isOk());
    ASSERT_TRUE(db.store(keyFor(80), entryWith(32, 0.9)).isOk());
    // The writer sees its own store.
    ASSERT_TRUE(db.lookup(keyFor(80)));
  }
  TuneDatabase reopened(path()); // a new process
  auto e = reopened.lookup(keyFor(128));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->config, (TileConfig{128, 64, 8, 2, false}));
  EXPECT_DOUBLE_EQ(e->ms, 1.5);
  ASSERT_TRUE(e->runnerUp);
  EXPECT_EQ(*e->runnerUp, (TileConfig{128, 32, 8, 3, false}));
  EXPECT_DOUBLE_EQ(e->runnerUpMs, 1.65);
  ASSERT_TRUE(e->defaultConfig);
  EXPECT_EQ(e->candidates, 30);
  EXPECT_EQ(e->tunedAtUtc, "2026-12-02T00:00:00Z");
  auto other = reopened.lookup(keyFor(80));
  ASSERT_TRUE(other);
  EXPECT_EQ(other->config.blockN, 32);
  auto all = reopened.entries();
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 2u);
  // The file says what each entry is for.
  const std::string text = readFile(path());
  EXPECT_NE(text.find("\"gpu\": \"NVIDIA H100 80GB HBM3\""), std::string::npos);
  EXPECT_NE(text.find("\"bucket\": \"sq4096_sk4096_bh64\""), std::string::npos);
}

// A decode entry's split count survives the file; one outside
// [1, kMaxSplits] makes its entry malformed (skipped, the rest still read).
TEST_F(TuneFiles, ADecodeEntryKeepsItsSplitCount) {
  TuneEntry decode = entryWith(64, 0.2);
  decode.splits = 16;
  {
    TuneDatabase db(path());
    ASSERT_TRUE(db.store(keyFor(128), decode).isOk());
    ASSERT_TRUE(db.store(keyFor(80), entryWith(32, 0.9)).isOk());
  }
  auto e = TuneDatabase(path()).lookup(keyFor(128));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->splits, 16);
  auto plain = TuneDatabase(path()).lookup(keyFor(80));
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->splits, 0);
  EXPECT_EQ(readFile(path()).find("\"splits\": 0"), std::string::npos);
  // Storing one out of range is refused.
  decode.splits = 200;
  const Status refused = TuneDatabase(path()).store(keyFor(64), decode);
  EXPECT_FALSE(refused.isOk());
  EXPECT_NE(refused.message().find("[0, 128]"), std::string::npos)
      << refused.message();
  for (const char *bad : {"0", "129", "-3", "2.5"}) {
    std::string text = readFile(path());
    const std::string field = "\"splits\": ";
    const size_t at = text.find(field);
    ASSERT_NE(at, std::string::npos);
    const size_t end = text.find_first_of(",\n}", at + field.size());
    text.replace(at + field.size(), end - at - field.size(), bad);
    { std::ofstream(path()) << text; }
    TuneDatabase reader(path());
    ::testing::internal::CaptureStderr();
    EXPECT_FALSE(reader.lookup(keyFor(128))) << "splits " << bad;
    EXPECT_TRUE(reader.lookup(keyFor(80)));
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("malformed"), std::string::npos) << err;
  }
}

TEST_F(TuneFiles, AnotherGpuVersionDriverOrBucketDoesNotMatch) {
  TuneDatabase db(path());
  ASSERT_TRUE(db.store(keyFor(128), entryWith(64, 1.5)).isOk());
  TuneKey gpu = keyFor(128, "NVIDIA A100-SXM4-80GB");
  TuneKey version = keyFor(128);
  version.flashjitVersion = "0.2.0";
  TuneKey driver = keyFor(128);
  driver.driverVersion = 12080;
  TuneKey bucket = keyFor(128);
  bucket.bucket.seqlenK = 8192;
  TuneKey spec = keyFor(128);
  spec.spec.mask = MaskMode::Causal;
  for (const TuneKey &k : {gpu, version, driver, bucket, spec})
    EXPECT_FALSE(db.lookup(k)) << k.text();
  EXPECT_TRUE(db.lookup(keyFor(128)));
}

TEST_F(TuneFiles, StoringOneKeyKeepsEveryOther) {
  TuneDatabase db(path());
  ASSERT_TRUE(db.store(keyFor(64), entryWith(64, 1.0)).isOk());
  ASSERT_TRUE(db.store(keyFor(80), entryWith(32, 2.0)).isOk());
  ASSERT_TRUE(db.store(keyFor(64), entryWith(128, 0.5)).isOk()); // re-tune
  TuneDatabase fresh(path());
  EXPECT_EQ(fresh.lookup(keyFor(64))->config.blockN, 128);
  EXPECT_EQ(fresh.lookup(keyFor(80))->config.blockN, 32);
}

TEST_F(TuneFiles, ConcurrentWritersLoseNothing) {
  std::vector<std::thread> writers;
  const int dims[] = {16, 32, 48, 64, 80, 96, 112, 128};
  for (int d : dims)
    writers.emplace_back([&, d] {
      TuneDatabase db(path()); // each its own instance, as processes would
      EXPECT_TRUE(db.store(keyFor(d), entryWith(64, d)).isOk());
    });
  for (auto &t : writers)
    t.join();
  TuneDatabase db(path());
  for (int d : dims) {
    auto e = db.lookup(keyFor(d));
    ASSERT_TRUE(e) << d;
    EXPECT_DOUBLE_EQ(e->ms, d);
  }
  for (const auto &f : fs::directory_iterator(dir_))
    EXPECT_EQ(f.path().filename().string().find(".tmp-"), std::string::npos)
        << "left behind: " << f.path();
}

namespace {
/// Looks up two keys in a fresh instance over `path`: nothing found, and
/// exactly one warning naming the database.
void expectOneWarningAndNothing(const std::string &path, const char *what) {
  TuneDatabase db(path);
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(db.lookup(keyFor(128))) << what;
  EXPECT_FALSE(db.lookup(keyFor(80))) << what;
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("tune database"), std::string::npos) << what;
  EXPECT_EQ(err.find("warning"), err.rfind("warning"))
      << what << ": warned more than once: " << err;
}
} // namespace

namespace {
/// The files a corrupt tune.json was moved aside to, by name.
std::vector<std::string> corruptCopies(const std::string &dir) {
  std::vector<std::string> found;
  for (const auto &e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind("tune.json.corrupt", 0) == 0)
      found.push_back(e.path().string());
  std::sort(found.begin(), found.end());
  return found;
}
} // namespace

// Defect 11: each corrupt file is kept; a second one no longer overwrites
// the first's copy.
TEST_F(TuneFiles, CorruptDatabaseWarnsOnceFallsBackAndIsMovedAside) {
  std::set<std::string> kept;
  for (const char *garbage : {"not json at all {", "[1, 2, 3]",
                              "{\"format\": 1, \"entries\": [1]}"}) {
    { std::ofstream(path()) << garbage; }
    expectOneWarningAndNothing(path(), garbage);
    // Storing moves the broken file aside and starts a good one.
    TuneDatabase db(path());
    ::testing::internal::CaptureStderr();
    ASSERT_TRUE(db.store(keyFor(128), entryWith(64, 1.0)).isOk()) << garbage;
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_TRUE(TuneDatabase(path()).lookup(keyFor(128)));
    for (const std::string &copy : corruptCopies(dir_))
      kept.insert(readFile(copy));
    EXPECT_TRUE(kept.count(garbage)) << garbage;
    EXPECT_NE(err.find("moved aside to " + path() + ".corrupt-"),
              std::string::npos)
        << err;
  }
  EXPECT_EQ(corruptCopies(dir_).size(), 3u);
  EXPECT_EQ(kept.size(), 3u) << "a corrupt file overwrote an earlier one";
}

// Defect 15: numbers that do not convert to int exactly made an entry
// with a truncated (or undefined) config; they make it malformed.
TEST_F(TuneFiles, NumbersThatAreNotExactIntsMakeAnEntryMalformed) {
  for (const char *blockM : {"4294967424", "128.5", "1e308", "-1e308",
                             "18446744073709551615", "\"128\""}) {
    TuneDatabase db(path());
    ASSERT_TRUE(db.store(keyFor(80), entryWith(64, 1.0)).isOk());
    std::string text = readFile(path());
    const std::string field = "\"block_m\": 128";
    const size_t at = text.find(field);
    ASSERT_NE(at, std::string::npos) << text;
    text.replace(at, field.size(), std::string("\"block_m\": ") + blockM);
    { std::ofstream(path()) << text; }
    TuneDatabase reader(path());
    ::testing::internal::CaptureStderr();
    auto entry = reader.lookup(keyFor(80));
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_FALSE(entry) << blockM << " read as block_m "
                        << (entry ? entry->config.blockM : 0);
    EXPECT_NE(err.find("1 malformed"), std::string::npos) << blockM << err;
    fs::remove(path());
  }
}

TEST_F(TuneFiles, AnotherFormatIsIgnoredAndNeverReplaced) {
  for (const char *other : {"{\"format\": 99, \"entries\": {}}",
                            "{\"format\": \"1\", \"entries\": {}}",
                            "{\"format\": null, \"entries\": {}}",
                            "{\"entries\": {}}"}) {
    { std::ofstream(path()) << other; }
    expectOneWarningAndNothing(path(), other);
    TuneDatabase db(path());
    ::testing::internal::CaptureStderr();
    Status s = db.store(keyFor(128), entryWith(64, 1.0));
    ::testing::internal::GetCapturedStderr();
    EXPECT_FALSE(s.isOk()) << other;
    EXPECT_NE(s.message().find("format"), std::string::npos) << s.message();
    EXPECT_EQ(readFile(path()), other) << "replaced a file it cannot read";
  }
}

TEST_F(TuneFiles, AMalformedEntryIsSkippedAndKept) {
  TuneDatabase db(path());
  ASSERT_TRUE(db.store(keyFor(80), entryWith(32, 2.0)).isOk());
  // Break the file by hand: one more entry with a config of the wrong type.
  std::string text = readFile(path());
  const std::string marker = "\"entries\": {";
  text.insert(text.find(marker) + marker.size(),
              "\"broken\": {\"config\": 7, \"ms\": \"fast\"},");
  { std::ofstream(path()) << text; }
  TuneDatabase reader(path());
  ::testing::internal::CaptureStderr();
  auto good = reader.lookup(keyFor(80));
  EXPECT_FALSE(reader.lookup(keyFor(128)));
  const std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(good) << "one bad entry hid the good ones";
  EXPECT_EQ(good->config.blockN, 32);
  EXPECT_NE(err.find("1 malformed"), std::string::npos) << err;
  // A store keeps the bad entry as it was (it may be a newer writer's).
  ASSERT_TRUE(reader.store(keyFor(64), entryWith(64, 1.0)).isOk());
  EXPECT_NE(readFile(path()).find("\"broken\""), std::string::npos);
  EXPECT_TRUE(TuneDatabase(path()).lookup(keyFor(80)));
  EXPECT_TRUE(TuneDatabase(path()).lookup(keyFor(64)));
}

TEST_F(TuneFiles, UnreadableDatabaseFallsBackAndIsNotReplaced) {
  fs::create_directory(path()); // a directory where the file should be
  expectOneWarningAndNothing(path(), "a directory");
  TuneDatabase db(path());
  EXPECT_FALSE(db.store(keyFor(128), entryWith(64, 1.0)).isOk());
  EXPECT_TRUE(fs::is_directory(path()));
}

// ---- CLI -----------------------------------------------------------------------

namespace {
ProcessResult cli(std::vector<std::string> args, const std::string &cacheDir) {
  args.insert(args.begin(), FLASHJIT_CLI_PATH);
  ::setenv("FLASHJIT_CACHE_DIR", cacheDir.c_str(), 1);
  return runProcess(args);
}
bool has(const std::string &s, const std::string &part) {
  return s.find(part) != std::string::npos;
}
} // namespace

TEST_F(TuneFiles, AutotuneListsItsSearchSpaceWithoutAGpu) {
  ProcessResult r = cli({"autotune", "--list-space", "--head-dim", "256",
                         "--arch", "sm_86"},
                        dir_);
  ASSERT_EQ(r.exitCode, 0) << r.all();
  const SearchSpace space = forwardSearchSpace(specWith(256), Arch::Sm86);
  EXPECT_TRUE(has(r.all(), std::to_string(space.enumerated) +
                                " configs enumerated, " +
                                std::to_string(space.prunedCount()) +
                                " pruned"))
      << r.all();
  EXPECT_TRUE(has(r.all(), "shared memory")) << r.all();
  EXPECT_TRUE(has(r.all(), "candidates (" +
                                std::to_string(space.candidates.size())))
      << r.all();
}

TEST_F(TuneFiles, AutotuneListsTheDecodeSearchSpace) {
  ProcessResult r = cli({"autotune", "--list-space", "--decode", "--head-dim",
                         "128", "--heads-q", "32", "--heads-kv", "8",
                         "--seqlen-k", "32768", "--batch", "8"},
                        dir_);
  ASSERT_EQ(r.exitCode, 0) << r.all();
  EXPECT_TRUE(has(r.all(), "candidates (65,")) << r.all();
  EXPECT_TRUE(has(r.all(), "  block_m=16 block_n=64 warps=1 stages=2 pack_gqa "
                           "family=sm80\n"))
      << r.all();
  EXPECT_TRUE(has(r.all(), "block_n=128 warps=1 stages=1 pack_gqa family=sm80 "
                           "splits=128"))
      << r.all();
  EXPECT_FALSE(has(r.all(), "block_m=64")) << r.all();
  EXPECT_FALSE(has(r.all(), "family=sm90")) << r.all();
  // The search owns the split count.
  ProcessResult splits = cli({"autotune", "--decode", "--splits", "4"}, dir_);
  EXPECT_EQ(splits.exitCode, 2) << splits.all();
  EXPECT_TRUE(has(splits.all(), "drop --splits")) << splits.all();
}

TEST_F(TuneFiles, AutotuneListsItsSearchSpaceAsJson) {
  ProcessResult r = cli({"autotune", "--list-space", "--json", "--head-dim",
                         "64", "--heads-q", "8", "--heads-kv", "2"},
                        dir_);
  ASSERT_EQ(r.exitCode, 0) << r.all();
  const auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.out;
  AttentionSpec spec = specWith(64, MaskMode::None, 4);
  const SearchSpace space = forwardSearchSpace(spec, Arch::Sm90a);
  EXPECT_EQ(j["enumerated"], space.enumerated);
  EXPECT_EQ(j["candidates"].size(), space.candidates.size());
  // The default comes first: on sm_90a the sm90 family's (no pack_gqa).
  EXPECT_EQ(j["candidates"][0]["family"], "sm90");
  EXPECT_EQ(j["candidates"][0]["pack_gqa"], false);
}

// The scalar kernel's tiles (--scalar on): 36 configs at d=128, the 18 of
// block_n 64 and 128 too large for sm_86 (see
// SearchSpace.BackwardKeepsExactlyWhatFits).
TEST_F(TuneFiles, AutotuneListsTheBackwardSearchSpace) {
  ProcessResult r = cli({"autotune", "--backward", "--list-space",
                         "--head-dim", "128", "--arch", "sm_86", "--scalar",
                         "on"},
                        dir_);
  ASSERT_EQ(r.exitCode, 0) << r.all();
  EXPECT_TRUE(has(r.all(), "36 configs enumerated, 18 pruned")) << r.all();
  EXPECT_TRUE(has(r.all(), "candidates (18, the sm_86 default first):\n"
                           "  block_m=16 block_n=32 warps=4 stages=1"))
      << r.all();
  EXPECT_FALSE(has(r.all(), "block_n=64")) << r.all();
  EXPECT_FALSE(has(r.all(), "block_n=128")) << r.all();
  // Without --scalar: the default (mma.sync) kernel's tiles, two stages
  // too, and the sm90 kernel's four.
  ProcessResult mma = cli({"autotune", "--backward", "--list-space",
                           "--head-dim", "128"},
                          dir_);
  ASSERT_EQ(mma.exitCode, 0) << mma.all();
  EXPECT_TRUE(has(mma.all(), "76 configs enumerated")) << mma.all();
  EXPECT_TRUE(has(mma.all(), "block_m=64 block_n=128 warps=8 stages=2 "
                             "family=sm90"))
      << mma.all();
  EXPECT_TRUE(has(mma.all(), "stages=2")) << mma.all();
  EXPECT_FALSE(has(mma.all(), "scalar")) << mma.all();
  // --scalar names the backward's kernel: a forward search refuses it.
  ProcessResult forwardScalar =
      cli({"autotune", "--list-space", "--scalar", "on"}, dir_);
  EXPECT_EQ(forwardScalar.exitCode, 2) << forwardScalar.all();
  EXPECT_TRUE(has(forwardScalar.all(), "--scalar")) << forwardScalar.all();
  // --deterministic needs the backward; with it, it is accepted.
  ProcessResult det = cli({"autotune", "--backward", "--deterministic",
                           "--list-space", "--head-dim", "128"},
                          dir_);
  EXPECT_EQ(det.exitCode, 0) << det.all();
  ProcessResult forward =
      cli({"autotune", "--deterministic", "--list-space"}, dir_);
  EXPECT_EQ(forward.exitCode, 2) << forward.all();
  EXPECT_TRUE(has(forward.all(), "--deterministic")) << forward.all();
}

TEST_F(TuneFiles, CacheClearKeepsTheTuneDatabase) {
  ASSERT_TRUE(TuneDatabase(path()).store(keyFor(64), entryWith(64, 1.0)).isOk());
  ASSERT_TRUE(fs::exists(path() + ".lock"));
  ProcessResult r = cli({"cache", "clear"}, dir_);
  EXPECT_EQ(r.exitCode, 0) << r.all();
  EXPECT_TRUE(fs::exists(path()));
  EXPECT_TRUE(fs::exists(path() + ".lock"));
  ProcessResult info = cli({"cache", "info"}, dir_);
  EXPECT_NE(info.out.find("tuned:     1 configs"), std::string::npos)
      << info.all();
}

TEST_F(TuneFiles, AutotuneAndBenchRejectBadInputBeforeTheGpu) {
  const std::pair<std::vector<std::string>, std::string> cases[] = {
      {{"autotune", "--block-m", "64"}, "chooses the tile config"},
      {{"autotune", "--head-dim", "300"}, "--head-dim"},
      {{"autotune", "--heads-q", "6", "--heads-kv", "4"}, "--heads-q"},
      {{"autotune", "--list-space", "--arch", "sm_70"}, "--arch"},
      {{"bench", "--head-dims", "64,0"}, "--head-dims"},
      {{"bench", "--seqlens", "1024,-5"}, "--seqlens"},
      {{"bench", "--mask", "window"}, "--window-left"},
      {{"bench", "--seqlens", "64", "--seqlens-q", "5,6"}, "--seqlens-q"},
      {{"bench", "--head-dims", "64,80", "--head-dim-v", "32"}, "--head-dim-v"},
      {{"bench", "--back-to-back", "0"}, "--back-to-back"},
      {{"bench", "--backward", "--back-to-back", "4"}, "--back-to-back"},
  };
  for (const auto &[args, expect] : cases) {
    ProcessResult r = cli(args, dir_);
    EXPECT_EQ(r.exitCode, 2) << args[1] << " " << args[2] << "\n" << r.all();
    EXPECT_TRUE(has(r.all(), expect)) << r.all();
    EXPECT_FALSE(has(r.all(), "no CUDA driver found")) << r.all();
  }
}

TEST_F(TuneFiles, AutotuneAndBenchWithoutADriverSayWhy) {
  if (driverStatus().isOk())
    GTEST_SKIP() << "a CUDA driver is present";
  for (std::vector<std::string> args :
       {std::vector<std::string>{"autotune", "--head-dim", "64"},
        std::vector<std::string>{"bench", "--head-dims", "64,80"}}) {
    ProcessResult r = cli(args, dir_);
    EXPECT_EQ(r.exitCode, 1) << r.all();
    EXPECT_TRUE(has(r.all(), "no CUDA driver found")) << r.all();
  }
}

TEST_F(TuneFiles, AutotuneAndBenchDocumentTheirOptions) {
  ProcessResult a = cli({"autotune", "--help"}, dir_);
  EXPECT_EQ(a.exitCode, 0);
  const std::string help = a.all();
  for (const char *opt : {"--warmup", "--repeats", "--threads", "--top",
                          "--json", "--no-store", "--list-space", "--seqlen",
                          "--head-dim", "--mask", "tune database",
                          "--backward"})
    EXPECT_TRUE(has(help, opt)) << opt;
  ProcessResult b = cli({"bench", "--help"}, dir_);
  EXPECT_EQ(b.exitCode, 0);
  const std::string benchHelp = b.all();
  for (const char *opt : {"--head-dims", "--seqlens", "--json", "--repeats",
                          "--back-to-back", "--block-m", "tuned"})
    EXPECT_TRUE(has(benchHelp, opt)) << opt;
}
