//===- test_cache_key.cpp - What the cache key does and does not depend on
#include "flashjit/compiler/Pipeline.h"
#include "flashjit/runtime/DiskCache.h"
#include "flashjit/runtime/Runtime.h"

#include <gtest/gtest.h>

#include <functional>
#include <set>
#include <tuple>

using namespace flashjit;

namespace {
CacheKey baseKey() {
  CacheKey key;
  key.spec.dtype = DType::BF16;
  key.spec.headDimQK = key.spec.headDimV = 128;
  key.config = {128, 64, 4, 2};
  key.arch = Arch::Sm90a;
  key.flashjitVersion = "0.1.0";
  key.llvmVersion = "22.1.8";
  key.driverVersion = 12080;
  key.assembler = "nvJitLink 13.0";
  return key;
}

/// A device-pointer-looking address, 256-byte aligned like cuMemAlloc's.
const void *fakePtr(uintptr_t n) {
  return reinterpret_cast<const void *>(n << 20);
}

ForwardProblem problem(int64_t batch, int64_t seqlenQ, int64_t seqlenK) {
  ForwardProblem p;
  p.batch = batch;
  p.headsQ = 8;
  p.headsKV = 2;
  p.seqlenQ = seqlenQ;
  p.seqlenK = seqlenK;
  p.headDimQK = p.headDimV = 64;
  p.mask = MaskMode::Causal;
  p.setDenseBSHD();
  p.q = fakePtr(1);
  p.k = fakePtr(2);
  p.v = fakePtr(3);
  p.o = const_cast<void *>(fakePtr(4));
  p.lse = static_cast<float *>(const_cast<void *>(fakePtr(5)));
  return p;
}
} // namespace

// Pinned values: a change of the key's text or hash function moves every
// user's cache entries, so it must be deliberate (and change these). The
// hash is `xxhsum -H3` of the text.
TEST(CacheKey, TextAndHashArePinned) {
  EXPECT_EQ(baseKey().text(),
            "spec=kind=fwd;dtype=bf16;head_dim_qk=128;head_dim_v=128;"
            "mask=none;gqa_group=1;lse=1;align=8;bias=none;softcap=0;"
            "varlen=0;key_lengths=0\n"
            "config=block_m=128;block_n=64;warps=4;stages=2;pack_gqa=0;"
            "quick=0;family=sm80;pingpong=0;overlap=0\n"
            "arch=sm_90a\nflashjit=0.1.0\nllvm=22.1.8\ncuda_driver=12080\n"
            "assembler=nvJitLink 13.0\n");
  EXPECT_EQ(baseKey().hash(), "d2b41352174d3f4c");
  EXPECT_EQ(baseKey().entryName(),
            "fwd_bf16_hqk128_hv128_none_g1_lse_a8_bm128_bn64_w4_s2_sm90a-"
            "d2b41352174d3f4c");
}

TEST(CacheKey, ChangesWithEveryInput) {
  const std::vector<std::pair<const char *, std::function<void(CacheKey &)>>>
      changes = {
          {"dtype", [](CacheKey &k) { k.spec.dtype = DType::F16; }},
          {"head_dim_qk", [](CacheKey &k) { k.spec.headDimQK = 96; }},
          {"head_dim_v", [](CacheKey &k) { k.spec.headDimV = 64; }},
          {"mask", [](CacheKey &k) { k.spec.mask = MaskMode::Causal; }},
          {"gqa", [](CacheKey &k) { k.spec.gqaGroup = 4; }},
          {"lse", [](CacheKey &k) { k.spec.writeLse = !k.spec.writeLse; }},
          {"align", [](CacheKey &k) { k.spec.globalAlignElems = 2; }},
          {"paged_kv",
           [](CacheKey &k) { k.spec.keyLengths = k.spec.pagedKV = true; }},
          {"split_kv", [](CacheKey &k) { k.spec.splitKV = true; }},
          {"direction",
           [](CacheKey &k) { k.spec.direction = Direction::Backward; }},
          {"deterministic",
           [](CacheKey &k) {
             k.spec.direction = Direction::Backward;
             k.spec.deterministic = true;
           }},
          {"block_m", [](CacheKey &k) { k.config.blockM = 64; }},
          {"block_n", [](CacheKey &k) { k.config.blockN = 32; }},
          {"warps", [](CacheKey &k) { k.config.warps = 8; }},
          {"stages", [](CacheKey &k) { k.config.stages = 3; }},
          {"quick", [](CacheKey &k) { k.config.quick = true; }},
          {"arch", [](CacheKey &k) { k.arch = Arch::Sm80; }},
          {"flashjit version",
           [](CacheKey &k) { k.flashjitVersion = "0.1.1"; }},
          {"llvm version", [](CacheKey &k) { k.llvmVersion = "22.1.9"; }},
          {"driver version", [](CacheKey &k) { k.driverVersion = 13000; }},
          {"assembler", [](CacheKey &k) { k.assembler = "driver JIT"; }},
      };
  std::set<std::string> hashes = {baseKey().hash()};
  for (const auto &[what, change] : changes) {
    CacheKey key = baseKey();
    change(key);
    EXPECT_NE(key.hash(), baseKey().hash()) << what;
    EXPECT_TRUE(hashes.insert(key.hash()).second) << what << " collides";
  }
}

// Kernels cached by an older generator of the same release must not be
// reused: the version in every key carries the codegen revision.
TEST(CacheKey, VersionCarriesTheCodegenRevision) {
  const std::string v = flashjitVersion();
  const std::string suffix = "+cg" + std::to_string(kCodegenRevision);
  ASSERT_GE(v.size(), suffix.size());
  EXPECT_EQ(v.substr(v.size() - suffix.size()), suffix) << v;
  CacheKey older = baseKey(), newer = baseKey();
  older.flashjitVersion = "0.1.0+cg1";
  newer.flashjitVersion = "0.1.0+cg2";
  EXPECT_NE(older.hash(), newer.hash());
}

TEST(CacheKey, DoesNotDependOnBatchOrSequenceLengths) {
  // The key is built from specFor(problem): run-time sizes must not reach it.
  const AttentionSpec a = specFor(problem(1, 128, 128));
  for (auto p :
       {problem(7, 128, 128), problem(1, 1000, 17), problem(3, 1, 4096)}) {
    ASSERT_TRUE(validate(p).isOk()) << validate(p).message();
    EXPECT_EQ(canonicalText(specFor(p)), canonicalText(a));
  }
  CacheKey k1 = baseKey(), k2 = baseKey();
  k1.spec = a;
  k2.spec = specFor(problem(16, 4096, 333));
  EXPECT_EQ(k1.hash(), k2.hash());
}

TEST(CacheKey, SpecForReadsTheProblem) {
  ForwardProblem p = problem(2, 100, 200);
  AttentionSpec s = specFor(p);
  EXPECT_EQ(s.gqaGroup, 4);
  EXPECT_TRUE(s.writeLse);
  EXPECT_EQ(s.mask, MaskMode::Causal);
  EXPECT_EQ(s.globalAlignElems, 8);

  p.lse = nullptr;
  EXPECT_FALSE(specFor(p).writeLse);

  // An odd head count makes the BSHD row stride (heads * dim) only as
  // aligned as dim: 3 * 36 = 108 elements -> 4.
  ForwardProblem odd = problem(2, 100, 200);
  odd.headsQ = odd.headsKV = 3;
  odd.headDimQK = odd.headDimV = 36;
  odd.setDenseBSHD();
  EXPECT_EQ(specFor(odd).globalAlignElems, 4);

  // A pointer one element past an aligned one allows scalar access only.
  ForwardProblem shifted = problem(2, 100, 200);
  shifted.k = static_cast<const char *>(shifted.k) + 2;
  EXPECT_EQ(specFor(shifted).globalAlignElems, 1);

  // Strides of size-1 dimensions never move a row: they do not count.
  ForwardProblem single = problem(1, 1, 1);
  single.qStrides.batch = 3;
  single.qStrides.row = 5;
  EXPECT_EQ(specFor(single).globalAlignElems, 8);
}

// The backward copies dO and stores dQ, dK, dV with the spec's vector
// width: their pointers and strides bound it as Q's do (a dO one element
// off would fault on 16-byte copies).
TEST(CacheKey, BackwardSpecAlignmentCountsTheGradients) {
  const uintptr_t base = 1 << 20; // never dereferenced: 16-byte aligned
  BackwardProblem b;
  static_cast<ForwardProblem &>(b) = problem(2, 128, 256);
  b.setDenseBSHD();
  b.dO = b.dQ = b.dK = b.dV = reinterpret_cast<void *>(base);
  EXPECT_EQ(specFor(b).globalAlignElems, 8);
  BackwardProblem shifted = b;
  shifted.dO = reinterpret_cast<void *>(base + 2);
  EXPECT_EQ(specFor(shifted).globalAlignElems, 1);
  shifted = b;
  shifted.dK = reinterpret_cast<void *>(base + 4);
  EXPECT_EQ(specFor(shifted).globalAlignElems, 2);
  shifted = b;
  shifted.dVStrides.row = 130; // rows 260 bytes apart
  EXPECT_EQ(specFor(shifted).globalAlignElems, 2);
  // A head stride never moves a row with one head.
  shifted = b;
  shifted.headsQ = shifted.headsKV = 1;
  shifted.setDenseBSHD();
  shifted.dQStrides.head = 3;
  EXPECT_EQ(specFor(shifted).globalAlignElems, 8);
}

// Heads that start below 16-byte alignment (BSHD with head_dim 100: heads
// 200 bytes apart): the spec's alignment is what every pointer and moving
// stride allows, which decides how the sm90 family loads them (TMA needs
// 16 bytes; its cp.async copies take 4 and more).
TEST(CacheKey, SpecForAlignsToEveryPointerAndMovingStride) {
  ForwardProblem bshd = problem(2, 100, 200);
  bshd.headDimQK = bshd.headDimV = 100;
  bshd.setDenseBSHD();
  EXPECT_EQ(specFor(bshd).globalAlignElems, 4);
  // BHSD: rows of one head, 200 bytes apart.
  ForwardProblem bhsd = bshd;
  for (auto [strides, heads, rows] :
       {std::tuple{&bhsd.qStrides, bhsd.headsQ, bhsd.seqlenQ},
        std::tuple{&bhsd.kStrides, bhsd.headsKV, bhsd.seqlenK},
        std::tuple{&bhsd.vStrides, bhsd.headsKV, bhsd.seqlenK}})
    *strides = {heads * rows * 100, rows * 100, 100};
  EXPECT_EQ(specFor(bhsd).globalAlignElems, 4);
  // Heads 102 apart in rows of 208.
  ForwardProblem gaps = bshd;
  gaps.headsQ = gaps.headsKV = 2;
  for (Strides *st : {&gaps.qStrides, &gaps.kStrides, &gaps.vStrides})
    *st = {gaps.seqlenK * 208, 102, 208};
  gaps.qStrides.batch = gaps.seqlenQ * 208;
  EXPECT_EQ(specFor(gaps).globalAlignElems, 2);
  // A base 2 bytes past alignment.
  ForwardProblem shifted = bshd;
  shifted.v = static_cast<const char *>(shifted.v) + 2;
  EXPECT_EQ(specFor(shifted).globalAlignElems, 1);
  // Padded to 16 bytes (heads 104 apart), O too: TMA's.
  ForwardProblem padded = gaps;
  for (Strides *st : {&padded.qStrides, &padded.kStrides, &padded.vStrides,
                      &padded.oStrides})
    *st = {padded.seqlenK * 208, 104, 208};
  padded.qStrides.batch = padded.oStrides.batch = padded.seqlenQ * 208;
  EXPECT_EQ(specFor(padded).globalAlignElems, 8);
  EXPECT_EQ(specFor(gaps).globalAlignElems, 2); // O's 100 apart as before
}
