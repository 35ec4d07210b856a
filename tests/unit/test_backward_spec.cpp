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

#include <gtest/gtest.h>

#include <string>

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
        EXPECT_EQ(c.family, Family::Sm80) << toString(arch);
        Status v = validate(c, s, arch);
        EXPECT_TRUE(v.isOk()) << "d=" << d << " dv=" << dv << " "
                              << toString(arch) << ": " << v.message();
        EXPECT_LE(backwardLayoutSm80(s, c).sharedMemBytes,
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
  c = defaultTileConfig(s, Arch::Sm90a);
  c.family = Family::Sm90;
  EXPECT_TRUE(contains(validate(c, s, Arch::Sm90a).message(),
                       "builds no backward kernels"));
}

TEST(BackwardLayout, TilesAreDisjointAndAligned) {
  AttentionSpec s = backwardSpec(100);
  s.headDimV = 72;
  const TileConfig c = defaultTileConfig(s, Arch::Sm80);
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
