//===- GpuTestSupport.h - Shared runtime, skip rule and forward runs ------===//
//
// Every GPU test starts with FLASHJIT_REQUIRE_GPU(): without a usable GPU it
// skips with "no CUDA GPU: <reason>", which the gtest summary counts as
// skipped and ctest's SKIP_REGULAR_EXPRESSION recognises.
//
// Kernels are cached in $FLASHJIT_TEST_CACHE_DIR when set (reused across
// runs), else in a fresh temporary directory removed at exit.
// $FLASHJIT_TEST_FAMILY (sm80|sm90) makes every plan without an explicit
// tile config use that kernel family (RuntimeOptions::family): on an H100 or
// H200 the suite runs once per family.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_TESTS_GPU_GPUTESTSUPPORT_H
#define FLASHJIT_TESTS_GPU_GPUTESTSUPPORT_H

#include "flashjit/kernels/Reference.h"
#include "flashjit/runtime/Runtime.h"

#include "Subprocess.h" // test_support::TempDir

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace flashjit::test {

/// The process-wide runtime, or why there is none.
struct GpuEnv {
  Runtime *runtime = nullptr;
  std::string whyNot;
  std::string cacheDir;
};

inline const GpuEnv &gpuEnv() {
  static const GpuEnv env = [] {
    GpuEnv e;
    if (const char *dir = std::getenv("FLASHJIT_TEST_CACHE_DIR"); dir && *dir) {
      e.cacheDir = dir;
    } else {
      static const test_support::TempDir tmp("flashjit-gpu-test");
      e.cacheDir = tmp.path().string();
    }
    RuntimeOptions options;
    options.cacheDirectory = e.cacheDir;
    // The suite checks the full kernels; the quick forms have tests of
    // their own (explicit TileConfig::quick, and a runtime with it on).
    options.quickFirst = false;
    if (const char *f = std::getenv("FLASHJIT_TEST_FAMILY"); f && *f) {
      options.family = parseFamily(f);
      if (!options.family) {
        e.whyNot = std::string("FLASHJIT_TEST_FAMILY must be one of ") +
                   familyChoices() + ", got '" + f + "'";
        std::fprintf(stderr, "%s\n", e.whyNot.c_str());
        std::abort(); // a misspelt family must not turn into skips
      }
    }
    auto rt = Runtime::create(options);
    if (rt)
      e.runtime = rt->release(); // lives until exit; the driver cleans up then
    else
      e.whyNot = rt.message();
    return e;
  }();
  return env;
}

#define FLASHJIT_REQUIRE_GPU()                                                 \
  do {                                                                         \
    if (!::flashjit::test::gpuEnv().runtime)                                   \
      GTEST_SKIP() << "no CUDA GPU: " << ::flashjit::test::gpuEnv().whyNot;    \
  } while (0)

inline Runtime &runtime() { return *gpuEnv().runtime; }

/// The default config the suite's runtime gives `p` (its family, forced
/// by $FLASHJIT_TEST_FAMILY or the preferred one), for tests that edit it.
inline TileConfig suiteDefault(const ForwardProblem &p) {
  const char *f = std::getenv("FLASHJIT_TEST_FAMILY");
  if (auto family = f ? parseFamily(f) : std::nullopt)
    return defaultTileConfig(specFor(p), runtime().arch(), *family);
  return defaultTileConfig(specFor(p), runtime().arch());
}

/// Host inputs and outputs of one forward run on the GPU.
struct ForwardRun {
  ForwardProblem problem; ///< device pointers filled in by runForward
  std::vector<uint16_t> q, k, v, o, bias;
  std::vector<float> lse, alibiSlopes;
  DeviceBuffer dq, dk, dv, dout, dlse, dbias, dslopes, dcuq, dcuk, dklen,
      dtable;

  HostInputs inputs() const {
    return {q.data(), k.data(), v.data(), bias.empty() ? nullptr : bias.data(),
            alibiSlopes.empty() ? nullptr : alibiSlopes.data()};
  }
};

/// Allocates `bytes` (+ `shift`) and copies `host` there (when given).
inline Status upload(DeviceBuffer &buffer, const void *host, size_t bytes,
                     size_t shift = 0) {
  auto b = runtime().allocate(bytes + shift);
  if (!b)
    return b.status();
  buffer = std::move(*b);
  if (!host || bytes == 0)
    return Status::ok();
  return runtime().copyToDevice(static_cast<char *>(buffer.data()) + shift,
                                host, bytes);
}

/// Fills q, k, v (and a bias tensor or ALiBi slopes) with fresh values from
/// `seed`, lets `prepare` adjust the host data, uploads it (q, k, v, o at
/// `shiftElems` past an aligned address; varlen prefix sums and key lengths
/// from the problem's host copies), poisons O and LSE, launches, and copies
/// the outputs back. `problem` carries sizes and strides; its LSE is written
/// when `withLse`.
inline Status
runForward(const ForwardProblem &problem, uint64_t seed, bool withLse,
           ForwardRun &run, int64_t shiftElems = 0,
           const std::function<void(ForwardRun &)> &prepare = nullptr) {
  Runtime &rt = runtime();
  run.problem = problem;
  ForwardProblem &p = run.problem;
  const size_t eb = elementBytes(p.dtype);
  const size_t shift = shiftElems * eb;
  run.q.resize(p.qElements());
  run.k.resize(p.kElements());
  run.v.resize(p.vElements());
  fillNormal(run.q.data(), run.q.size(), p.dtype, seed * 3 + 0);
  fillNormal(run.k.data(), run.k.size(), p.dtype, seed * 3 + 1);
  fillNormal(run.v.data(), run.v.size(), p.dtype, seed * 3 + 2);
  run.o.assign(p.oElements(), 0);
  run.lse.assign(withLse ? p.lseElements() : 0, 0.f);

  // Bias values and ALiBi slopes are fresh too; tests that need special
  // values (-inf rows) set problem-independent ones through `prepare`.
  if (p.bias == BiasMode::Tensor) {
    run.bias.resize(p.biasElements());
    fillNormal(run.bias.data(), run.bias.size(), p.dtype, seed * 3 + 7);
  }
  if (p.bias == BiasMode::Alibi) {
    run.alibiSlopes.resize((p.alibiBatchStride ? p.batch : 1) * p.headsQ);
    for (size_t h = 0; h < run.alibiSlopes.size(); ++h)
      run.alibiSlopes[h] = float(std::exp2(-8.0 * double(h % p.headsQ + 1) /
                                           double(p.headsQ)) *
                                 (1.0 + 0.1 * double(h / p.headsQ)));
  }
  if (prepare)
    prepare(run);

  struct Upload {
    DeviceBuffer *buffer;
    size_t bytes;
    const void *host;
    size_t shift;
  } uploads[] = {
      {&run.dq, run.q.size() * eb, run.q.data(), shift},
      {&run.dk, run.k.size() * eb, run.k.data(), shift},
      {&run.dv, run.v.size() * eb, run.v.data(), shift},
      {&run.dout, run.o.size() * eb, nullptr, shift},
      {&run.dbias, run.bias.size() * eb, run.bias.data(), 0},
      {&run.dslopes, run.alibiSlopes.size() * sizeof(float),
       run.alibiSlopes.data(), 0},
      {&run.dcuq, p.varlen ? p.varlen->cuSeqlensQ.size() * 4 : 0,
       p.varlen ? p.varlen->cuSeqlensQ.data() : nullptr, 0},
      {&run.dcuk, p.varlen ? p.varlen->cuSeqlensK.size() * 4 : 0,
       p.varlen ? p.varlen->cuSeqlensK.data() : nullptr, 0},
      {&run.dklen, p.keyLengths.size() * 4, p.keyLengths.data(), 0},
      {&run.dtable, p.paged ? p.paged->blockTable.size() * 4 : 0,
       p.paged ? p.paged->blockTable.data() : nullptr, 0}};
  for (Upload &u : uploads)
    if (u.bytes)
      if (Status s = upload(*u.buffer, u.host, u.bytes, u.shift); !s)
        return s;
  auto at = [&](DeviceBuffer &b) {
    return static_cast<char *>(b.data()) + shift;
  };
  p.q = at(run.dq);
  p.k = at(run.dk);
  p.v = at(run.dv);
  p.o = at(run.dout);
  p.biasData = run.dbias.data();
  p.alibiSlopes = static_cast<const float *>(run.dslopes.data());
  p.deviceCuSeqlensQ = static_cast<const int32_t *>(run.dcuq.data());
  p.deviceCuSeqlensK = static_cast<const int32_t *>(run.dcuk.data());
  p.deviceKeyLengths = static_cast<const int32_t *>(run.dklen.data());
  p.deviceBlockTable = static_cast<const int32_t *>(run.dtable.data());
  p.lse = nullptr;
  if (withLse) {
    if (Status s = upload(run.dlse, nullptr, run.lse.size() * sizeof(float));
        !s)
      return s;
    p.lse = static_cast<float *>(run.dlse.data());
    if (Status s = rt.fill32(p.lse, kPoison32, run.lse.size()); !s)
      return s;
  }
  if (Status s = rt.fill16(p.o, kPoison16, run.o.size()); !s)
    return s;
  if (Status s = rt.attentionForward(p); !s)
    return s;
  if (Status s = rt.synchronize(); !s)
    return s;
  if (Status s = rt.copyToHost(run.o.data(), p.o, run.o.size() * eb); !s)
    return s;
  if (withLse)
    if (Status s = rt.copyToHost(run.lse.data(), p.lse,
                                 run.lse.size() * sizeof(float));
        !s)
      return s;
  return Status::ok();
}

/// Checks a run by the 2x rule: all slices, or `maxSlices` sampled ones
/// (every slice is still scanned for unwritten elements).
inline CheckResult check(const ForwardRun &run, int maxSlices = 1 << 20,
                         uint64_t seed = 0) {
  return checkForward(run.problem, run.inputs(), run.o.data(),
                      run.lse.empty() ? nullptr : run.lse.data(),
                      sampleSlices(run.problem, maxSlices, seed));
}

/// A dense BSHD problem.
inline ForwardProblem denseProblem(DType dtype, MaskMode mask, int64_t batch,
                                   int64_t headsQ, int64_t headsKV,
                                   int64_t seqlenQ, int64_t seqlenK,
                                   int64_t headDimQK, int64_t headDimV) {
  ForwardProblem p;
  p.dtype = dtype;
  p.mask = mask;
  p.batch = batch;
  p.headsQ = headsQ;
  p.headsKV = headsKV;
  p.seqlenQ = seqlenQ;
  p.seqlenK = seqlenK;
  p.headDimQK = headDimQK;
  p.headDimV = headDimV;
  p.setDenseBSHD();
  return p;
}

} // namespace flashjit::test

#endif // FLASHJIT_TESTS_GPU_GPUTESTSUPPORT_H
