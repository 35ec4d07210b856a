//===- GpuTestSupport.h - Shared runtime, skip rule and forward runs ------===//
//
// Every GPU test starts with FLASHJIT_REQUIRE_GPU(). The suite skips only
// where no GPU exists: no CUDA driver (libcuda.so.1 does not load), cuInit
// reporting CUDA_ERROR_NO_DEVICE, or a driver that counts no device. Each
// test then skips with "no CUDA GPU: <reason>", and main() (GpuTestMain.cpp)
// exits with kSkipExitCode when nothing failed, which ctest reports as
// Skipped. Any other failure (a driver that does not initialise, an
// unsupported GPU, a context that cannot be created) fails every test.
//
// Outputs live in guarded allocations: poison bytes before and after every
// tensor. Before every launch each output allocation is poisoned whole;
// after it the outputs are fetched, and every byte the kernel does not own
// (the guards, gaps between strided rows, varlen slack rows) must still be
// poison. Every kernel launched must use no local memory (spills).
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

#include <cuda.h> // CUresult values only: the driver is dlopen'ed
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace flashjit::test {

// ---- whether the suite runs, skips or fails ------------------------------------

/// Exit code of a suite whose every test skipped for want of a GPU (ctest's
/// SKIP_RETURN_CODE). Never returned when a test failed.
inline constexpr int kSkipExitCode = 77;

/// The one skip decision: whether this machine has a CUDA GPU at all.
struct GpuPresence {
  bool absent = false; ///< no driver, or no device: skip
  std::string why;     ///< the reason, when absent
};

/// Asks the driver directly (by its result codes, not by message texts):
/// absent when libcuda.so.1 does not load, cuInit returns
/// CUDA_ERROR_NO_DEVICE, or cuDeviceGetCount counts 0. Any other driver
/// failure is not absence: Runtime::create then reports it and the suite
/// fails.
inline GpuPresence probeGpuPresence() {
  GpuPresence g;
  void *lib = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *err = ::dlerror();
    g.absent = true;
    g.why = std::string("no CUDA driver (") + (err ? err : "libcuda.so.1") +
            ")";
    return g;
  }
  using InitFn = CUresult (*)(unsigned);
  using CountFn = CUresult (*)(int *);
  auto init = reinterpret_cast<InitFn>(::dlsym(lib, "cuInit"));
  auto count = reinterpret_cast<CountFn>(::dlsym(lib, "cuDeviceGetCount"));
  if (!init || !count)
    return g; // a broken driver: Runtime::create says how, the suite fails
  const CUresult initResult = init(0);
  if (initResult == CUDA_ERROR_NO_DEVICE) {
    g.absent = true;
    g.why = "cuInit: CUDA_ERROR_NO_DEVICE";
    return g;
  }
  int devices = 0;
  if (initResult == CUDA_SUCCESS && count(&devices) == CUDA_SUCCESS &&
      devices == 0) {
    g.absent = true;
    g.why = "the CUDA driver counts no device";
  }
  return g; // the library stays loaded: the runtime opens it next
}

/// The process-wide runtime, or why there is none.
struct GpuEnv {
  Runtime *runtime = nullptr;
  GpuPresence presence;
  std::string failure; ///< a GPU exists but the runtime failed to start
  std::string cacheDir;
};

inline const GpuEnv &gpuEnv() {
  static const GpuEnv env = [] {
    GpuEnv e;
    e.presence = probeGpuPresence();
    if (e.presence.absent)
      return e;
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
        std::fprintf(stderr, "FLASHJIT_TEST_FAMILY must be one of %s, got '%s'\n",
                     familyChoices().c_str(), f);
        std::abort(); // a misspelt family must not turn into skips
      }
    }
    auto rt = Runtime::create(options);
    if (rt)
      e.runtime = rt->release(); // lives until exit; the driver cleans up then
    else
      e.failure = rt.message();
    return e;
  }();
  return env;
}

/// The skip text, exactly: "no CUDA GPU: <reason>".
inline std::string noGpuMessage() {
  return "no CUDA GPU: " + gpuEnv().presence.why;
}

#define FLASHJIT_REQUIRE_GPU()                                                 \
  do {                                                                         \
    const ::flashjit::test::GpuEnv &env_ = ::flashjit::test::gpuEnv();         \
    if (env_.presence.absent)                                                  \
      GTEST_SKIP() << ::flashjit::test::noGpuMessage();                        \
    if (!env_.runtime)                                                         \
      FAIL() << "a CUDA GPU is present but the runtime did not start: "        \
             << env_.failure;                                                  \
  } while (0)

/// Asserts that a Status-returning expression succeeded, printing its
/// message when it did not.
#define FLASHJIT_ASSERT_OK(expr)                                               \
  do {                                                                         \
    const ::flashjit::Status status_ = (expr);                                 \
    ASSERT_TRUE(status_.isOk()) << #expr << ": " << status_.message();         \
  } while (0)

/// main()'s exit code from RUN_ALL_TESTS()'s: a failure stays a failure;
/// a clean run on a machine without a GPU is kSkipExitCode, with the count.
inline int suiteExitCode(int gtestResult) {
  if (gtestResult != 0)
    return gtestResult;
  if (!gpuEnv().presence.absent)
    return 0;
  const ::testing::UnitTest &u = *::testing::UnitTest::GetInstance();
  std::printf("%d of %d GPU tests skipped: %s\n", u.skipped_test_count(),
              u.test_to_run_count(), noGpuMessage().c_str());
  return kSkipExitCode;
}

inline Runtime &runtime() { return *gpuEnv().runtime; }

/// The default config the suite's runtime gives `p` (its family, forced
/// by $FLASHJIT_TEST_FAMILY or the preferred one), for tests that edit it.
inline TileConfig suiteDefault(const ForwardProblem &p) {
  const char *f = std::getenv("FLASHJIT_TEST_FAMILY");
  if (auto family = f ? parseFamily(f) : std::nullopt)
    return defaultTileConfig(specFor(p), runtime().arch(), *family);
  return defaultTileConfig(specFor(p), runtime().arch());
}

// ---- guarded outputs ---------------------------------------------------------------

/// Poison bytes before and after every output tensor: a store past either
/// end of a tensor (a row too many, a negative offset) lands in them.
inline constexpr size_t kGuardBytes = 64 * 1024;

/// One output tensor in a guarded device allocation: [guard | shift |
/// tensor | guard], all of it poisoned before a launch. `owned` marks the
/// elements the kernel writes; every other byte must stay poison.
struct GuardedOutput {
  std::string name;
  DeviceBuffer buffer;
  size_t elementBytes = 0; ///< 2 (O: kPoison16) or 4 (LSE: kPoison32)
  size_t elements = 0;     ///< the tensor's span
  size_t shiftBytes = 0;   ///< tensor start past the aligned guard
  std::vector<bool> owned;
  std::vector<uint8_t> host; ///< the whole allocation, as last fetched

  size_t tensorOffset() const { return kGuardBytes + shiftBytes; }
  void *data() const {
    return static_cast<char *>(buffer.data()) + tensorOffset();
  }
  bool allocated() const { return buffer.data() != nullptr; }
};

/// Allocates `out` for `elements` of `elementBytes` starting `shiftBytes`
/// past an aligned address, with guards on both sides.
inline Status allocateGuarded(GuardedOutput &out, std::string name,
                              size_t elements, size_t elementBytes,
                              size_t shiftBytes = 0) {
  out.name = std::move(name);
  out.elements = elements;
  out.elementBytes = elementBytes;
  out.shiftBytes = shiftBytes;
  out.owned.assign(elements, false);
  auto b = runtime().allocate(2 * kGuardBytes + shiftBytes +
                              elements * elementBytes);
  if (!b)
    return b.status();
  out.buffer = std::move(*b);
  return Status::ok();
}

/// Sets every byte of the allocation, guards included, to the poison of
/// its element size (both patterns are all-ones bytes).
inline Status poison(GuardedOutput &out) {
  static_assert(kPoison16 == 0xffff && kPoison32 == 0xffffffffu);
  return runtime().fill16(out.buffer.data(), kPoison16,
                          out.buffer.size() / 2);
}

/// Copies the whole allocation back (after a synchronize) and checks that
/// every byte outside the owned elements is still poison.
inline Status fetchAndCheckUnowned(GuardedOutput &out) {
  out.host.resize(out.buffer.size());
  if (Status s = runtime().copyToHost(out.host.data(), out.buffer.data(),
                                      out.host.size());
      !s)
    return s;
  const size_t begin = out.tensorOffset();
  const size_t end = begin + out.elements * out.elementBytes;
  int64_t stray = 0, first = -1;
  for (size_t byte = 0; byte < out.host.size(); ++byte) {
    const bool inTensor = byte >= begin && byte < end;
    if (inTensor && out.owned[(byte - begin) / out.elementBytes])
      continue;
    if (out.host[byte] != 0xff && stray++ == 0)
      first = int64_t(byte) - int64_t(begin);
  }
  if (stray == 0)
    return Status::ok();
  std::string where =
      first < 0 ? std::to_string(-first) + " bytes before the tensor"
      : size_t(first) >= end - begin
          ? std::to_string(size_t(first) - (end - begin)) +
                " bytes past its end"
          : "element " + std::to_string(size_t(first) / out.elementBytes) +
                " (owned by no row)";
  return Status::error(out.name + ": " + std::to_string(stray) +
                       " bytes outside the kernel's elements were written, "
                       "the first " + where);
}

// ---- forward runs ---------------------------------------------------------------

/// Host inputs and outputs of one forward run on the GPU.
struct ForwardRun {
  ForwardProblem problem; ///< device pointers filled in by runForward
  std::vector<uint16_t> q, k, v, o, bias;
  std::vector<float> lse, alibiSlopes;
  DeviceBuffer dq, dk, dv, dbias, dslopes, dcuq, dcuk, dklen, dtable;
  GuardedOutput out, outLse; ///< O and (when written) LSE

  HostInputs inputs() const {
    return {q.data(), k.data(), v.data(), bias.empty() ? nullptr : bias.data(),
            alibiSlopes.empty() ? nullptr : alibiSlopes.data()};
  }
  /// Every output allocation (backward runs add their gradients here).
  std::vector<GuardedOutput *> outputs() {
    std::vector<GuardedOutput *> all = {&out};
    if (outLse.allocated())
      all.push_back(&outLse);
    return all;
  }
};

/// Poisons every output of `run`, guards included: the one place that
/// prepares outputs for a launch.
inline Status poisonOutputs(ForwardRun &run) {
  for (GuardedOutput *g : run.outputs())
    if (Status s = poison(*g); !s)
      return s;
  return Status::ok();
}

/// After a launch: synchronizes, fetches every output, checks that nothing
/// outside the kernel's elements was written, and copies O and LSE into
/// run.o and run.lse.
inline Status fetchOutputs(ForwardRun &run) {
  if (Status s = runtime().synchronize(); !s)
    return s;
  for (GuardedOutput *g : run.outputs())
    if (Status s = fetchAndCheckUnowned(*g); !s)
      return s;
  run.o.resize(run.out.elements);
  std::memcpy(run.o.data(), run.out.host.data() + run.out.tensorOffset(),
              run.o.size() * sizeof(uint16_t));
  run.lse.resize(run.outLse.allocated() ? run.outLse.elements : 0);
  if (!run.lse.empty())
    std::memcpy(run.lse.data(),
                run.outLse.host.data() + run.outLse.tensorOffset(),
                run.lse.size() * sizeof(float));
  return Status::ok();
}

/// Launches `plan` after checking that its kernel uses no local memory
/// (CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES: spills or a stack frame).
inline Status launchChecked(Runtime &rt, const ForwardPlan &plan) {
  if (plan.kernel->localBytes != 0)
    return Status::error(plan.kernel->name + " uses " +
                         std::to_string(plan.kernel->localBytes) +
                         " bytes of local memory per thread (spills)");
  return rt.launch(plan);
}

/// One checked launch of run.problem through `rt`: poison every output,
/// plan, launch (no local memory), fetch and check the unowned bytes.
/// `source` receives where the plan's kernel came from.
inline Status launchOnce(Runtime &rt, ForwardRun &run,
                         LoadedKernel::Source *source = nullptr) {
  if (Status s = poisonOutputs(run); !s)
    return s;
  auto plan = rt.planForward(run.problem);
  if (!plan)
    return plan.status();
  if (source)
    *source = plan->kernel->source;
  if (Status s = launchChecked(rt, *plan); !s)
    return s;
  return fetchOutputs(run);
}

/// Marks the elements of O and LSE that the kernel writes: head_dim_v
/// columns of every row of every sequence, and one LSE per row.
inline void markOwned(ForwardRun &run) {
  const ForwardProblem &p = run.problem;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.headsQ; ++h)
      for (int64_t i = 0; i < p.seqlenQOf(b); ++i) {
        for (int64_t d = 0; d < p.headDimV; ++d)
          run.out.owned[p.oOffset(b, h, i) + d] = true;
        if (run.outLse.allocated())
          run.outLse.owned[p.lseOffset(b, h, i)] = true;
      }
}

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
/// from the problem's host copies), allocates guarded outputs and makes one
/// checked launch (launchOnce). `problem` carries sizes and strides; its
/// LSE is written when `withLse`.
inline Status
runForward(const ForwardProblem &problem, uint64_t seed, bool withLse,
           ForwardRun &run, int64_t shiftElems = 0,
           const std::function<void(ForwardRun &)> &prepare = nullptr) {
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
  if (Status s = allocateGuarded(run.out, "O", p.oElements(), eb, shift); !s)
    return s;
  run.outLse = GuardedOutput{};
  if (withLse)
    if (Status s = allocateGuarded(run.outLse, "LSE", p.lseElements(),
                                   sizeof(float));
        !s)
      return s;
  markOwned(run);
  p.q = at(run.dq);
  p.k = at(run.dk);
  p.v = at(run.dv);
  p.o = run.out.data();
  p.lse = withLse ? static_cast<float *>(run.outLse.data()) : nullptr;
  p.biasData = run.dbias.data();
  p.alibiSlopes = static_cast<const float *>(run.dslopes.data());
  p.deviceCuSeqlensQ = static_cast<const int32_t *>(run.dcuq.data());
  p.deviceCuSeqlensK = static_cast<const int32_t *>(run.dcuk.data());
  p.deviceKeyLengths = static_cast<const int32_t *>(run.dklen.data());
  p.deviceBlockTable = static_cast<const int32_t *>(run.dtable.data());
  return launchOnce(runtime(), run);
}

/// Checks a run by the 2x rule: all slices, or `maxSlices` sampled ones
/// (every slice is still scanned for unwritten elements).
inline CheckResult check(const ForwardRun &run, int maxSlices = 1 << 20,
                         uint64_t seed = 0) {
  return checkForward(run.problem, run.inputs(), run.o.data(),
                      run.lse.empty() ? nullptr : run.lse.data(),
                      sampleSlices(run.problem, maxSlices, seed));
}

/// Elements where two outputs differ bit for bit (NaN payloads included),
/// and the first of them; empty when they are equal.
template <typename T>
std::string bitwiseDifference(const std::vector<T> &a,
                              const std::vector<T> &b) {
  if (a.size() != b.size())
    return "sizes " + std::to_string(a.size()) + " and " +
           std::to_string(b.size());
  size_t count = 0, first = 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0 && count++ == 0)
      first = i;
  return count ? std::to_string(count) + " of " + std::to_string(a.size()) +
                     " elements differ, the first at " + std::to_string(first)
               : "";
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
