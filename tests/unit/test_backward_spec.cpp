//===- test_backward_spec.cpp - Backward specs: validation, key, kernels ---===//
//
// No GPU: a backward spec's identity (canonical text, kernel name, the
// forward's texts unchanged), its checks with their messages, the sm80
// family's backward configs and layout, and its module (three entries, fast
// mode with f32 atomics, deterministic mode without) through the pipeline.
//
//===----------------------------------------------------------------------===//
#include "flashjit/compiler/AttentionSpec.h"
#include "flashjit/compiler/Pipeline.h"
#include "flashjit/kernels/Backward.h"
#include "flashjit/kernels/LayoutSm90.h"

#include <gtest/gtest.h>

#include <string>
#include <tuple>

using namespace flashjit;

namespace {

bool contains(const std::string &s, const std::string &part) {
  return s.find(part) != std::string::npos;
}

AttentionSpec backwardSpec(int d = 64) {
  AttentionSpec s;
  s.headDimQK = s.headDimV = d;
  s.direction = Direction::Backward;
  return s;
}

TEST(BackwardSpec, DirectionIsPartOfTheIdentity) {
  AttentionSpec fwd;
  AttentionSpec bwd = fwd;
  bwd.direction = Direction::Backward;
  EXPECT_NE(fwd, bwd);
  EXPECT_NE(canonicalText(fwd), canonicalText(bwd));
  // Forward texts (and so their cache keys) predate the backward fields.
  EXPECT_FALSE(contains(canonicalText(fwd), "deterministic"));
  EXPECT_TRUE(contains(canonicalText(bwd), "kind=bwd"));
  AttentionSpec det = bwd;
  det.deterministic = true;
  EXPECT_NE(canonicalText(det), canonicalText(bwd));
  const TileConfig c = defaultTileConfig(bwd, Arch::Sm80);
  EXPECT_EQ(kernelName(bwd, c, Arch::Sm80).rfind("bwd_", 0), 0u);
  EXPECT_TRUE(contains(kernelName(det, c, Arch::Sm80), "_det_"));
}

TEST(BackwardSpec, DirectionParsesAndPrints) {
  EXPECT_EQ(parseDirection("backward"), Direction::Backward);
  EXPECT_EQ(parseDirection("bwd"), Direction::Backward);
  EXPECT_EQ(parseDirection("forward"), Direction::Forward);
  EXPECT_FALSE(parseDirection("sideways"));
  EXPECT_EQ(toString(Direction::Backward), "backward");
  EXPECT_EQ(directionChoices(), "forward|backward");
}

TEST(BackwardSpec, ChecksNameTheField) {
  AttentionSpec s = backwardSpec();
  s.writeLse = false;
  EXPECT_TRUE(contains(validate(s).message(), "lse must be on"));
  AttentionSpec f;
  f.deterministic = true;
  EXPECT_TRUE(contains(validate(f).message(), "facts of backward kernels"));
  AttentionSpec g = backwardSpec();
  g.biasGrad = true;
  EXPECT_TRUE(contains(validate(g).message(), "bias_grad needs bias = tensor"));
}

TEST(BackwardConfig, DefaultsValidateAndFitEveryArch) {
  for (Arch arch : {Arch::Sm80, Arch::Sm86, Arch::Sm89, Arch::Sm90a,
                    Arch::Sm120})
    for (int d : {1, 33, 64, 100, 128, 160, 192, 256})
      for (int dv : {d, 128}) {
        AttentionSpec s = backwardSpec(d);
        s.headDimV = dv;
        const TileConfig c = defaultTileConfig(s, arch);
        // sm_90a takes the sm90 backward from d = 64 (16-byte rows; past
        // 128 where it splits the columns: one of the two to 128, or both
        // to 160); everything else the sm80 one.
        const bool sm90 = arch == Arch::Sm90a && std::max(d, dv) >= 64 &&
                          (std::min(d, dv) <= 128 || std::max(d, dv) <= 160);
        EXPECT_EQ(c.family, sm90 ? Family::Sm90 : Family::Sm80)
            << toString(arch) << " d=" << d << "/" << dv;
        Status v = validate(c, s, arch);
        EXPECT_TRUE(v.isOk()) << "d=" << d << " dv=" << dv << " "
                              << toString(arch) << ": " << v.message();
        EXPECT_LE(sm90 ? backwardLayoutSm90(s, c).sharedMemBytes
                       : backwardLayoutSm80(s, c).sharedMemBytes,
                  maxSharedMemoryPerBlock(arch));
      }
}

TEST(BackwardConfig, RejectsWhatItCannotBuild) {
  AttentionSpec s = backwardSpec(256);
  TileConfig c = defaultTileConfig(s, Arch::Sm86);
  c.blockN = 48;
  EXPECT_TRUE(contains(validate(c, s, Arch::Sm86).message(), "block_n"));
  c = defaultTileConfig(s, Arch::Sm86);
  c.blockM = c.blockN = 64;
  EXPECT_TRUE(contains(validate(c, s, Arch::Sm86).message(), "shared memory"));
  // The sm90 backward keeps dK and dV in registers: head dims up to 256
  // with the columns split (160 where both pass 128), 64 where rows are not
  // 16-byte aligned (no TMA).
  c = defaultTileConfig(s, Arch::Sm90a, Family::Sm90);
  const std::string sm90 = validate(c, s, Arch::Sm90a).message();
  EXPECT_TRUE(contains(sm90, "head dims past 160 only where the other is at "
                             "most 128"))
      << sm90;
  EXPECT_TRUE(contains(sm90, "256/256")) << sm90;
  AttentionSpec both176 = backwardSpec(176);
  EXPECT_TRUE(
      contains(validate(defaultTileConfig(both176, Arch::Sm90a, Family::Sm90),
                        both176, Arch::Sm90a)
                   .message(),
               "176/176"));
  AttentionSpec wide = backwardSpec(256);
  wide.headDimV = 128;
  EXPECT_TRUE(validate(defaultTileConfig(wide, Arch::Sm90a, Family::Sm90), wide,
                       Arch::Sm90a)
                  .isOk());
  AttentionSpec odd = backwardSpec(72);
  odd.globalAlignElems = 4; // 8-byte rows
  const std::string copied =
      validate(defaultTileConfig(odd, Arch::Sm90a, Family::Sm90), odd,
               Arch::Sm90a)
          .message();
  EXPECT_TRUE(contains(copied, "head dims up to 64 where rows are not "
                               "16-byte aligned"))
      << copied;
  odd.headDimQK = odd.headDimV = 64;
  EXPECT_TRUE(validate(defaultTileConfig(odd, Arch::Sm90a, Family::Sm90), odd,
                       Arch::Sm90a)
                  .isOk());
  // Varlen or a window: up to 96.
  for (bool varlen : {false, true}) {
    AttentionSpec masked = backwardSpec(128);
    masked.varlen = varlen;
    masked.mask = varlen ? MaskMode::Causal : MaskMode::Window;
    const std::string why =
        validate(defaultTileConfig(masked, Arch::Sm90a, Family::Sm90), masked,
                 Arch::Sm90a)
            .message();
    EXPECT_TRUE(contains(why, "up to 96 with varlen or a window")) << why;
    masked.headDimQK = masked.headDimV = 96;
    EXPECT_TRUE(validate(defaultTileConfig(masked, Arch::Sm90a, Family::Sm90),
                         masked, Arch::Sm90a)
                    .isOk());
  }
  // A bias or softcap: up to 96, and 64 with varlen or a window; no dBias
  // (the runtime's default where served).
  auto sm90Why = [](const AttentionSpec &spec) {
    return validate(defaultTileConfig(spec, Arch::Sm90a, Family::Sm90), spec,
                    Arch::Sm90a)
        .message();
  };
  for (BiasMode bias : {BiasMode::None, BiasMode::Tensor, BiasMode::Alibi}) {
    AttentionSpec modded = backwardSpec(128);
    modded.bias = bias;
    modded.softcap = bias == BiasMode::None;
    const std::string why = sm90Why(modded);
    EXPECT_TRUE(contains(why, "up to 96 with a bias or softcap (")) << why;
    EXPECT_TRUE(contains(why, "128/128")) << why;
    modded.headDimQK = modded.headDimV = 96;
    EXPECT_EQ(sm90Why(modded), "");
    EXPECT_EQ(defaultTileConfig(modded, Arch::Sm90a).family, Family::Sm90);
    modded.mask = MaskMode::Window;
    EXPECT_TRUE(contains(sm90Why(modded),
                         "up to 64 with a bias or softcap and varlen or a "
                         "window"))
        << sm90Why(modded);
    modded.headDimQK = modded.headDimV = 64;
    EXPECT_EQ(sm90Why(modded), "");
  }
  AttentionSpec dBias = backwardSpec(32);
  dBias.bias = BiasMode::Tensor;
  dBias.biasGrad = true;
  EXPECT_TRUE(contains(sm90Why(dBias), "does not write dBias")) << sm90Why(dBias);
  EXPECT_EQ(defaultTileConfig(dBias, Arch::Sm90a).family, Family::Sm80);
}

// The sm90 backward (wgmma): its defaults are valid for what it serves, the
// runtime's default stays sm80 until a GPU has checked it, and its layout's
// tiles are disjoint, 1024-byte aligned (128-byte swizzled boxes), dQ's
// rows and the barriers after them.
TEST(BackwardConfig, Sm90ServesHeadDimsTo128) {
  for (int d : {1, 16, 33, 48, 64, 72, 100, 128})
    for (int dv : {d, 32}) {
      AttentionSpec s = backwardSpec(d);
      s.headDimV = dv;
      const TileConfig c = defaultTileConfig(s, Arch::Sm90a, Family::Sm90);
      EXPECT_EQ(c.family, Family::Sm90);
      Status v = validate(c, s, Arch::Sm90a);
      EXPECT_TRUE(v.isOk()) << "d=" << d << "/" << dv << ": " << v.message();
      // The runtime's default from d = 64 (faster there on an H200).
      EXPECT_EQ(defaultTileConfig(s, Arch::Sm90a).family,
                std::max(d, dv) >= 64 ? Family::Sm90 : Family::Sm80);
      const BackwardSm90Layout l = backwardLayoutSm90(s, c);
      EXPECT_EQ(l.threads, 256);
      EXPECT_TRUE(l.tma); // 16-byte rows
      const int offsets[] = {l.kOffset,  l.vOffset,  l.qOffset,
                             l.dOOffset, l.dSOffset, l.rowValuesOffset};
      for (int i = 0; i + 1 < int(std::size(offsets)); ++i) {
        EXPECT_EQ(offsets[i] % 1024, 0) << i;
        EXPECT_LT(offsets[i], offsets[i + 1]) << i;
      }
      // K: one 128-key box per 64 columns; Q: two stages of 64-row boxes.
      EXPECT_EQ(l.vOffset - l.kOffset, (d + 63) / 64 * 128 * 128);
      EXPECT_EQ(l.dOOffset - l.qOffset, 2 * ((d + 63) / 64) * 64 * 128);
      // dQ after LSE' and D: 64 rows of at least the columns a warpgroup
      // stores (a whole second box when the two split them), 8 floats past
      // a multiple of 32; one buffer per warpgroup when both take every
      // column.
      const bool split = d > 64;
      EXPECT_EQ(l.dqSplitsColumns, split) << d;
      EXPECT_EQ(l.dqBuffers, split ? 1 : 2) << d;
      EXPECT_GE(l.dqRowFloats, split ? 128 : (d + 7) / 8 * 8) << d;
      EXPECT_EQ(l.dqRowFloats % 32, 8) << d;
      EXPECT_GE(l.dQOffset, l.rowValuesOffset + 2 * 2 * 64 * 4);
      EXPECT_EQ(l.dQOffset % 16, 0);
      EXPECT_GE(l.barrierOffset, l.dQOffset + l.dqBuffers * 64 * l.dqRowFloats * 4);
      EXPECT_EQ(l.barrierOffset % 8, 0);
      EXPECT_EQ(l.barrierCount, 1 + c.stages);
      EXPECT_EQ(l.sharedMemBytes, l.barrierOffset + 8 * l.barrierCount);
      // Sub-steps: 64, 32 or 16 queries as dK + dV grow.
      const int acc = (d + 7) / 8 * 8 + (dv + 7) / 8 * 8;
      EXPECT_EQ(l.subSteps, acc > 192 ? 4 : acc > 64 ? 2 : 1) << d << "/" << dv;
    }
  {
    // Deterministic: one writer of dQ, one buffer.
    AttentionSpec det = backwardSpec(64);
    det.deterministic = true;
    EXPECT_EQ(backwardLayoutSm90(det, defaultTileConfig(det, Arch::Sm90a,
                                                         Family::Sm90))
                  .dqBuffers,
              1);
  }
  AttentionSpec s = backwardSpec(64);
  TileConfig c = defaultTileConfig(s, Arch::Sm90a, Family::Sm90);
  EXPECT_FALSE(validate(c, s, Arch::Sm80).isOk()); // wgmma: sm_90a only
  EXPECT_FALSE(backwardLayoutSm90(s, c).splitColumns);
  c.warps = 4; // one warpgroup: 64 keys
  EXPECT_TRUE(contains(validate(c, s, Arch::Sm90a).message(), "block_n"));
  c.blockN = 64;
  EXPECT_TRUE(validate(c, s, Arch::Sm90a).isOk());
  c.blockM = 128;
  EXPECT_TRUE(contains(validate(c, s, Arch::Sm90a).message(), "block_m"));
  // A softcap at d = 64 is served (RejectsWhatItCannotBuild has the limits).
  s.softcap = true;
  EXPECT_TRUE(
      validate(defaultTileConfig(s, Arch::Sm90a, Family::Sm90), s, Arch::Sm90a)
          .isOk());
}

// The scalar kernel's layout: dK and dV in float32, P and dS tiles.
TEST(BackwardLayout, TilesAreDisjointAndAligned) {
  AttentionSpec s = backwardSpec(100);
  s.headDimV = 72;
  const TileConfig c = defaultBackwardConfigSm80(s, Arch::Sm80, true);
  const BackwardLayout l = backwardLayoutSm80(s, c);
  const int offsets[] = {l.kOffset,  l.vOffset,  l.qOffset,   l.dOOffset,
                         l.dKOffset, l.dVOffset, l.pOffset,   l.dSOffset,
                         l.lseOffset, l.dSumOffset, l.sharedMemBytes};
  for (int i = 0; i + 1 < int(std::size(offsets)); ++i) {
    EXPECT_EQ(offsets[i] % 16, 0);
    EXPECT_LT(offsets[i], offsets[i + 1]);
  }
  EXPECT_EQ(l.vOffset - l.kOffset, (c.blockN * 100 * 2 + 15) / 16 * 16);
  EXPECT_EQ(l.dVOffset - l.dKOffset, c.blockN * 100 * 4);
}

TEST(BackwardConfig, BothKernelsHaveDefaultsThatFitEveryArch) {
  for (bool scalar : {true, false})
    for (Arch arch : {Arch::Sm80, Arch::Sm86, Arch::Sm89, Arch::Sm90a,
                      Arch::Sm120})
      for (int d : {1, 16, 33, 64, 72, 100, 128, 144, 160, 192, 200, 256})
        for (bool heavy : {false, true}) {
          AttentionSpec s = backwardSpec(d);
          s.headDimV = d > 128 ? 128 : d;
          s.softcap = heavy;
          const TileConfig c = defaultBackwardConfigSm80(s, arch, scalar);
          const std::string what = "d=" + std::to_string(d) + " " +
                                   std::string(toString(arch)) +
                                   (scalar ? " scalar" : " mma") +
                                   (heavy ? " softcap" : "");
          EXPECT_EQ(c.scalar, scalar) << what;
          Status v = validate(c, s, arch);
          EXPECT_TRUE(v.isOk()) << what << ": " << v.message();
          const BackwardLayout l = backwardLayoutSm80(s, c);
          EXPECT_LE(l.sharedMemBytes, maxSharedMemoryPerBlock(arch)) << what;
          if (scalar)
            continue;
          // Every product's grid covers its tile with whole 16 x 16 blocks.
          EXPECT_EQ(l.paddedHeadDimQK % 32, 0) << what;
          EXPECT_GE(l.paddedHeadDimQK, d) << what;
          for (auto [g, rows, cols] :
               {std::tuple{l.sdp, c.blockM, c.blockN},
                std::tuple{l.dv, c.blockN, l.paddedHeadDimV},
                std::tuple{l.dk, c.blockN, l.paddedHeadDimQK},
                std::tuple{l.dq, c.blockM, l.paddedHeadDimQK}}) {
            EXPECT_EQ(g.warpsM * g.rows, rows) << what;
            EXPECT_EQ(g.warpsN * g.cols, cols) << what;
            EXPECT_EQ(g.rows % 16, 0) << what;
            EXPECT_EQ(g.cols % 16, 0) << what;
            EXPECT_LE(g.warps(), c.warps) << what;
          }
          EXPECT_LE(l.estimatedRegisters, 255) << what;
        }
}

TEST(BackwardConfig, ScalarIsTheBackwardsKnob) {
  AttentionSpec fwd;
  TileConfig c = defaultTileConfig(fwd, Arch::Sm80);
  c.scalar = true;
  EXPECT_TRUE(contains(validate(c, fwd, Arch::Sm80).message(),
                       "backward specs only"));
  AttentionSpec bwd = backwardSpec(64);
  const TileConfig mma = defaultBackwardConfigSm80(bwd, Arch::Sm80, false);
  const TileConfig scalar = defaultBackwardConfigSm80(bwd, Arch::Sm80, true);
  EXPECT_NE(kernelName(bwd, mma, Arch::Sm80), kernelName(bwd, scalar, Arch::Sm80));
  EXPECT_TRUE(contains(kernelName(bwd, scalar, Arch::Sm80), "_scalar_"));
  EXPECT_FALSE(contains(kernelName(bwd, mma, Arch::Sm80), "scalar"));
  // Texts of other kernels (and so their cache keys) are unchanged.
  EXPECT_TRUE(contains(canonicalText(scalar), ";scalar=1"));
  EXPECT_FALSE(contains(canonicalText(mma), "scalar"));
  // The scalar kernel's limits: no 128-row tiles, one stage.
  TileConfig big = scalar;
  big.blockN = 128;
  EXPECT_TRUE(contains(validate(big, bwd, Arch::Sm80).message(), "block_n"));
  TileConfig staged = scalar;
  staged.stages = 2;
  EXPECT_TRUE(contains(validate(staged, bwd, Arch::Sm80).message(),
                       "stages must be 1"));
  // The mma.sync kernel names registers it cannot hold.
  TileConfig wide = mma;
  wide.blockN = 128;
  wide.warps = 1;
  bwd.headDimQK = bwd.headDimV = 256;
  EXPECT_TRUE(contains(validate(wide, bwd, Arch::Sm90a).message(),
                       "registers"));
}

TEST(BackwardLayout, MmaTilesAreDisjointAndAligned) {
  AttentionSpec s = backwardSpec(100);
  s.headDimV = 72;
  TileConfig c = defaultBackwardConfigSm80(s, Arch::Sm80, false);
  c.stages = 2;
  const BackwardLayout l = backwardLayoutSm80(s, c);
  const int offsets[] = {l.kOffset, l.vOffset,  l.qOffset,
                         l.dOOffset, l.pOffset, l.dSOffset,
                         l.sharedMemBytes};
  for (int i = 0; i + 1 < int(std::size(offsets)); ++i) {
    EXPECT_EQ(offsets[i] % 16, 0);
    EXPECT_LT(offsets[i], offsets[i + 1]);
  }
  // Rows of the head dims padded to 32; two stages of Q and dO; P and dS
  // rows one 16-byte chunk longer than block_n.
  EXPECT_EQ(l.paddedHeadDimQK, 128);
  EXPECT_EQ(l.paddedHeadDimV, 96);
  EXPECT_EQ(l.vOffset - l.kOffset, c.blockN * 128 * 2);
  EXPECT_EQ(l.dOOffset - l.qOffset, 2 * c.blockM * 128 * 2);
  EXPECT_EQ(l.pitchPdS, c.blockN + 8);
  EXPECT_EQ(l.swizzleBitsQK, 3);
  EXPECT_EQ(l.swizzleBitsV, 2);
}

TEST(BackwardCompile, MmaKernelMultipliesOnTensorCores) {
  for (bool deterministic : {false, true}) {
    AttentionSpec s = backwardSpec(80);
    s.mask = MaskMode::Causal;
    s.gqaGroup = 2;
    s.deterministic = deterministic;
    const TileConfig c = defaultBackwardConfigSm80(s, Arch::Sm80, false);
    auto art = compile(s, c, Arch::Sm80);
    ASSERT_TRUE(art) << art.message();
    EXPECT_TRUE(contains(art->ptx, "mma.sync.aligned.m16n8k16.row.col.f32.bf16"));
    EXPECT_TRUE(contains(art->ptx, "ldmatrix.sync.aligned.m8n8.x4.trans"));
    EXPECT_TRUE(contains(art->ptx, "cp.async"));
    EXPECT_EQ(art->launch.threadsPerBlock, c.warps * 32);
    EXPECT_EQ(art->launch.sharedMemBytes,
              backwardLayoutSm80(s, c).sharedMemBytes);
    EXPECT_EQ(contains(art->ptx, "atom.global.add.f32") ||
                  contains(art->ptx, "red.global.add.f32"),
              !deterministic);
  }
}

TEST(BackwardCompile, ModuleHasThreeEntries) {
  for (bool deterministic : {false, true}) {
    AttentionSpec s = backwardSpec(33);
    s.mask = MaskMode::Causal;
    s.gqaGroup = 4;
    s.deterministic = deterministic;
    s.globalAlignElems = 1;
    const TileConfig c = defaultTileConfig(s, Arch::Sm80);
    auto art = compile(s, c, Arch::Sm80);
    ASSERT_TRUE(art) << art.message();
    const std::string name = kernelName(s, c, Arch::Sm80);
    EXPECT_EQ(art->kernelName, name);
    EXPECT_TRUE(contains(art->ptx, ".entry " + name + "("));
    EXPECT_TRUE(contains(art->ptx, ".entry " + backwardPreprocessEntry(name)));
    EXPECT_TRUE(contains(art->ptx, ".entry " + backwardConvertEntry(name)));
    EXPECT_EQ(art->launch.threadsPerBlock, c.warps * 32);
    EXPECT_EQ(art->launch.sharedMemBytes,
              backwardLayoutSm80(s, c).sharedMemBytes);
    EXPECT_EQ(contains(art->ptx, "atom.global.add.f32") ||
                  contains(art->ptx, "red.global.add.f32"),
              !deterministic);
  }
}

} // namespace

// Past d = 128 the two warpgroups share 64 keys and split the columns in
// whole boxes: warpgroup w's dK (dQ) and dV columns start at w dkN and
// w dvN, the second's past the head dims on zeroed padding boxes; one
// stage where two do not fit; the runtime's default.
TEST(BackwardConfig, Sm90SplitsColumnsPast128) {
  struct Case {
    int dqk, dv, dkN, dvN, storedQK, storedV, stages;
  };
  // Stages: two where K, V, both copies of Q and dO, dS and dQ's rows fit
  // in 227 KiB (by hand: 136/136 needs 259 KiB with two, 192/128 219).
  for (const Case &k :
       {Case{136, 136, 128, 128, 4, 4, 1}, Case{160, 64, 128, 64, 4, 2, 2},
        Case{192, 128, 128, 64, 4, 2, 2}, Case{256, 128, 128, 64, 4, 2, 2},
        Case{64, 256, 64, 128, 2, 4, 2}, Case{256, 32, 128, 64, 4, 2, 2}}) {
    AttentionSpec s = backwardSpec(k.dqk);
    s.headDimV = k.dv;
    const std::string name = std::to_string(k.dqk) + "/" + std::to_string(k.dv);
    const TileConfig c = defaultTileConfig(s, Arch::Sm90a, Family::Sm90);
    ASSERT_TRUE(validate(c, s, Arch::Sm90a).isOk())
        << name << ": " << validate(c, s, Arch::Sm90a).message();
    EXPECT_EQ(c.warps, 8) << name;
    EXPECT_EQ(c.blockN, 64) << name;
    EXPECT_EQ(c.stages, k.stages) << name;
    EXPECT_EQ(defaultTileConfig(s, Arch::Sm90a).family, Family::Sm90) << name;
    const BackwardSm90Layout l = backwardLayoutSm90(s, c);
    EXPECT_TRUE(l.splitColumns) << name;
    EXPECT_TRUE(l.dqSplitsColumns) << name;
    EXPECT_EQ(l.dqBuffers, 1) << name;
    EXPECT_EQ(l.dkN, k.dkN) << name;
    EXPECT_EQ(l.dvN, k.dvN) << name;
    EXPECT_EQ(l.storedBoxesQK, k.storedQK) << name;
    EXPECT_EQ(l.storedBoxesV, k.storedV) << name;
    // K holds the padded boxes (dQ reads them), V only the real ones.
    EXPECT_EQ(l.vOffset - l.kOffset, k.storedQK * 64 * 128) << name;
    EXPECT_EQ(l.qOffset - l.vOffset, (k.dv + 63) / 64 * 64 * 128) << name;
    EXPECT_EQ(l.dOOffset - l.qOffset, k.stages * k.storedQK * 64 * 128) << name;
    EXPECT_EQ(l.dSOffset - l.dOOffset, k.stages * k.storedV * 64 * 128) << name;
    // dQ's rows hold both warpgroups' columns.
    EXPECT_GE(l.dqRowFloats, 2 * k.dkN) << name;
    EXPECT_EQ(l.subSteps, k.dkN + k.dvN > 192 ? 4 : 2) << name;
    EXPECT_LE(l.sharedMemBytes, maxSharedMemoryPerBlock(Arch::Sm90a)) << name;
    if (k.stages == 1) {
      TileConfig twoStages = c;
      twoStages.stages = 2;
      EXPECT_TRUE(contains(validate(twoStages, s, Arch::Sm90a).message(),
                           "shared memory"))
          << name;
    }
    TileConfig wideTile = c;
    wideTile.blockN = 128;
    EXPECT_TRUE(contains(validate(wideTile, s, Arch::Sm90a).message(),
                         "block_n must be 64 past head dim 128"))
        << name;
  }
}
