//===- RunCommand.cpp - flashjit run: one kernel on random inputs ---------===//
//
// Compiles (or fetches) the kernel for the given problem (on a cold miss
// the quick form first, launched once, then the full kernel), runs it on fresh
// normal inputs with a poisoned output, reports the median CUDA-event time
// and TFLOP/s, and with --check compares against the CPU float64 reference
// by the 2x rule (and the quick form's output with the full kernel's, bit
// for bit).
//
//===----------------------------------------------------------------------===//
#include "Commands.h"
#include "Problem.h"

#include "flashjit/kernels/Reference.h"
#include "flashjit/kernels/ReferenceBackward.h"
#include "flashjit/runtime/Runtime.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace flashjit::cli {

namespace {
struct RunOptions {
  ProblemOptions problem;
  uint64_t seed = 0;
  bool check = false;
  int checkSlices = 0;
  int warmup = 3;
  int repeats = 10;
  bool backward = false;
};

/// How the kernel's tiles reach shared memory: TMA boxes (rows 16-byte
/// aligned, sm90) or cp.async copies.
const char *loadsText(const LaunchFacts &launch) {
  return launch.usesTma() ? "tma" : "cp.async";
}

/// Multiply-adds in a CPU reference slice beyond which --check samples
/// (batch, head) slices instead of checking all: a few seconds per check.
constexpr double kCheckBudget = 4e10;

constexpr const char *kCommand = "run";

/// Sets O (and LSE) to the poison pattern, so that a check sees only what
/// the next launch writes.
Status poisonOutputs(Runtime &rt, const ForwardProblem &p) {
  Status s = rt.fill16(p.o, kPoison16, p.oElements());
  if (s && p.lse)
    s = rt.fill32(p.lse, kPoison32, p.lseElements());
  return s;
}

/// O and LSE (empty without one) on the host, after the launches so far.
Status copyOutputs(Runtime &rt, const ForwardProblem &p,
                   std::vector<uint16_t> &o, std::vector<float> &lse) {
  o.assign(p.oElements(), 0);
  lse.assign(p.lse ? p.lseElements() : 0, 0.f);
  Status s = rt.copyToHost(o.data(), p.o, o.size() * elementBytes(p.dtype));
  if (s && p.lse)
    s = rt.copyToHost(lse.data(), p.lse, lse.size() * sizeof(float));
  return s;
}

/// Elements whose bits differ.
template <typename T>
size_t mismatches(const std::vector<T> &a, const std::vector<T> &b) {
  size_t n = 0;
  for (size_t i = 0; i < a.size(); ++i)
    n += std::memcmp(&a[i], &b[i], sizeof(T)) != 0;
  return n;
}

int run(const RunOptions &o) {
  if (o.backward)
    return runBackward(kCommand, o.problem, o.seed, o.check, o.checkSlices,
                       o.warmup, o.repeats);
  // Bad specs, sizes, windows, bias shapes, sequence lists or tile options
  // are usage errors (exit 2), found before looking for a GPU.
  AttentionSpec spec;
  Arch unusedArch; // run compiles for the GPU it finds
  if (Status s = o.problem.spec.resolve(spec, unusedArch); !s)
    return failWith(kCommand, s.message(), 2);
  ForwardProblem p;
  if (Status s = describeProblem(o.problem, spec, p); !s)
    return failWith(kCommand, s.message(), 2);
  if (Status s = checkTileOptions(o.problem, p); !s)
    return failWith(kCommand, s.message(), 2);
  auto created = Runtime::create();
  if (!created)
    return failWith(kCommand, created.message());
  Runtime &rt = **created;
  std::printf("device:  %s\n", deviceText(rt).c_str());
  std::printf("problem: %s\n",
              problemText(p, o.problem.layout, spec.writeLse).c_str());

  // ---- inputs ---------------------------------------------------------------
  auto inputs = uploadProblem(rt, p, spec, o.seed);
  if (!inputs)
    return failWith(kCommand, inputs.message());
  p = inputs->problem;

  auto tile = explicitTile(o.problem, p, rt.arch());
  if (!tile) // the options do not fit this GPU
    return failWith(kCommand, tile.message(), 2);
  p.tile = *tile;

  // ---- compile or fetch -----------------------------------------------------
  // As a caller's first call would: on a cold miss the runtime returns the
  // quick form (launchable at once) and compiles the full kernel meanwhile.
  // Then the full kernel, which is what gets timed and checked.
  const auto start = std::chrono::steady_clock::now();
  auto sinceStart = [&] {
    return std::chrono::duration<double, std::milli>(
               std::chrono::steady_clock::now() - start)
        .count();
  };
  auto plan = rt.planForward(p);
  if (!plan)
    return failWith(kCommand, plan.message());
  const double firstMs = sinceStart();
  // The quick form's output, kept for --check's bitwise comparison.
  std::vector<uint16_t> quickO;
  std::vector<float> quickLse;
  if (plan->kernel->source == LoadedKernel::Source::Quick) {
    Status s = poisonOutputs(rt, p);
    if (s)
      s = rt.launch(*plan);
    if (s && o.check)
      s = copyOutputs(rt, p, quickO, quickLse);
    if (!s)
      return failWith(kCommand, s.message());
    plan = rt.planForward(p, /*fullKernel=*/true);
    if (!plan)
      return failWith(kCommand, plan.message());
  }
  const double fullMs = sinceStart();
  const LoadedKernel &k = *plan->kernel;
  const CacheStats st = rt.cacheStats();
  if (k.source == LoadedKernel::Source::Disk) {
    std::printf("kernel:  %s (loaded from the disk cache in %.1f ms)\n",
                k.name.c_str(), fullMs);
  } else if (st.quickCompiles > 0) {
    std::printf("kernel:  %s (cold miss: the quick form was launchable after "
                "%.1f ms, the full kernel after %.1f ms; both compiled at "
                "once: generate %.1f ms, assemble %.1f ms in all)\n",
                k.name.c_str(), firstMs, fullMs, st.generateMs, st.jitMs);
  } else {
    std::printf("kernel:  %s (compiled in %.1f ms: generate %.1f ms, "
                "assemble %.1f ms)\n",
                k.name.c_str(), fullMs, st.generateMs, st.jitMs);
  }
  const std::string spills =
      k.localBytes ? " local=" + std::to_string(k.localBytes) + " B (spills)"
                   : "";
  const std::string splits =
      plan->numSplits > 1
          ? " splits=" + std::to_string(plan->numSplits) + " (workspace " +
                std::to_string(plan->workspaceBytes) + " B)"
          : "";
  std::printf("config:  %s (%s) loads=%s threads=%d smem=%d B "
              "grid=(%u,%u,%u) registers=%d%s%s\n",
              configText(plan->config).c_str(),
              std::string(toString(plan->source)).c_str(),
              loadsText(plan->launch), k.threadsPerBlock,
              k.sharedMemBytes, plan->grid[0], plan->grid[1], plan->grid[2],
              k.registers, spills.c_str(), splits.c_str());

  // ---- time -----------------------------------------------------------------
  // Poison before every run so that --check sees only what the last run
  // wrote.
  auto poison = [&] { return poisonOutputs(rt, p); };
  for (int i = 0; i < o.warmup; ++i) {
    Status s = poison();
    if (s)
      s = rt.launch(*plan);
    if (!s)
      return failWith(kCommand, s.message());
  }
  std::vector<float> times;
  for (int i = 0; i < o.repeats; ++i) {
    if (Status s = poison(); !s)
      return failWith(kCommand, s.message());
    auto ms = rt.timeMs([&] { return rt.launch(*plan); });
    if (!ms)
      return failWith(kCommand, ms.message());
    times.push_back(*ms);
  }
  if (Status s = rt.synchronize(); !s)
    return failWith(kCommand, s.message());
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  const double flops = forwardFlops(p);
  std::printf("time:    %.4f ms median of %d (min %.4f ms), %.1f TFLOP/s, "
              "K+V %.1f GB/s\n",
              median, o.repeats, times.front(), flops / (median * 1e-3) / 1e12,
              kvBytes(p) / (median * 1e-3) / 1e9);

  if (!o.check)
    return 0;
  // ---- check ----------------------------------------------------------------
  std::vector<uint16_t> ho;
  std::vector<float> hlse;
  if (Status s = copyOutputs(rt, p, ho, hlse); !s)
    return failWith(kCommand, s.message());
  bool quickEqual = true;
  if (!quickO.empty()) {
    // Same operations in the same order: equal bit for bit, not just close.
    const size_t oDiffer = mismatches(quickO, ho);
    const size_t lseDiffer = mismatches(quickLse, hlse);
    quickEqual = oDiffer == 0 && lseDiffer == 0;
    std::printf("quick:   %s\n",
                quickEqual
                    ? "the quick form's output and LSE equal the full "
                      "kernel's bit for bit"
                    : ("FAIL: the quick form differs from the full kernel in " +
                       std::to_string(oDiffer) + " output and " +
                       std::to_string(lseDiffer) + " LSE elements")
                          .c_str());
  }
  const double perSlice =
      double(p.seqlenQ) * p.seqlenK * double(p.headDimQK + p.headDimV);
  const int slices =
      o.checkSlices > 0
          ? o.checkSlices
          : int(std::clamp(kCheckBudget / perSlice, 2.0, double(1 << 20)));
  auto chosen = sampleSlices(p, slices, o.seed);
  const CheckResult result =
      checkForward(p,
                   {inputs->q.data(), inputs->k.data(), inputs->v.data(),
                    inputs->bias.empty() ? nullptr : inputs->bias.data(),
                    inputs->alibiSlopes.empty() ? nullptr
                                                : inputs->alibiSlopes.data()},
                   ho.data(), p.lse ? hlse.data() : nullptr, chosen);
  std::printf("check:   %lld of %lld (batch, head) slices\n%s\n",
              (long long)chosen.size(), (long long)(p.batch * p.headsQ),
              result.summary().c_str());
  return result.pass && quickEqual ? 0 : 1;
}
} // namespace

int runBackward(const char *kCommand, const ProblemOptions &problem,
                uint64_t seed, bool check, int checkSlices, int warmup,
                int repeats) {
  struct {
    uint64_t seed;
    bool check;
    int checkSlices, warmup, repeats;
  } o{seed, check, checkSlices, warmup, repeats};
  ProblemOptions options = problem;
  options.spec.direction = "backward";
  // --decode is a shape (one query, cache lengths); pages and splits are
  // forward kernels' inputs.
  if (options.pageSize > 0 || options.numSplits > 1)
    return failWith(kCommand,
                    "--page-size and --splits apply to the forward (decode); "
                    "--backward takes contiguous K/V without splits",
                    2);
  AttentionSpec spec;
  Arch unusedArch;
  if (Status s = options.spec.resolve(spec, unusedArch); !s)
    return failWith(kCommand, s.message(), 2);
  ForwardProblem shape;
  if (Status s = describeProblem(options, spec, shape); !s)
    return failWith(kCommand, s.message(), 2);
  auto created = Runtime::create();
  if (!created)
    return failWith(kCommand, created.message());
  Runtime &rt = **created;
  std::printf("device:  %s\n", deviceText(rt).c_str());
  std::printf("problem: %s backward%s%s\n",
              problemText(shape, options.layout, true).c_str(),
              spec.deterministic ? " deterministic" : "",
              spec.biasGrad ? " dbias" : "");
  auto inputs = uploadProblem(rt, shape, spec, o.seed);
  if (!inputs)
    return failWith(kCommand, inputs.message());
  auto backward = uploadBackward(rt, *inputs, spec, o.seed);
  if (!backward)
    return failWith(kCommand, backward.message());
  BackwardProblem &p = backward->problem;
  const std::vector<uint16_t> &hdO = backward->dO;
  const size_t eb = elementBytes(p.dtype);
  std::vector<DeviceBuffer> &buffers = backward->buffers;
  auto allocate = [&](size_t bytes, void *&ptr) -> Status {
    auto b = rt.allocate(bytes);
    if (!b)
      return b.status();
    ptr = b->data();
    buffers.push_back(std::move(*b));
    return Status::ok();
  };
  if (options.spec.hasTileOptions()) {
    TileConfig tile;
    if (Status t = options.spec.resolveTile(spec, rt.arch(), tile); !t)
      return failWith(kCommand, t.message(), 2);
    p.tile = tile;
  }

  const auto start = std::chrono::steady_clock::now();
  auto plan = rt.planBackward(p);
  if (!plan)
    return failWith(kCommand, plan.message());
  const double planMs = std::chrono::duration<double, std::milli>(
                            std::chrono::steady_clock::now() - start)
                            .count();
  void *workspace = nullptr;
  if (Status w = allocate(plan->main.workspaceBytes, workspace); !w)
    return failWith(kCommand, w.message());
  plan->main.workspace = workspace;
  const LoadedKernel &k = *plan->main.kernel;
  std::printf("kernel:  %s (ready in %.1f ms)\n", k.name.c_str(), planMs);
  const std::string spills =
      k.localBytes ? " local=" + std::to_string(k.localBytes) + " B (spills)"
                   : "";
  std::printf("config:  %s (%s) loads=%s threads=%d smem=%d B "
              "grid=(%u,%u,%u) registers=%d%s workspace=%lld B\n",
              configText(plan->main.config).c_str(),
              std::string(toString(plan->main.source)).c_str(),
              loadsText(plan->main.launch), k.threadsPerBlock,
              k.sharedMemBytes, plan->main.grid[0], plan->main.grid[1],
              plan->main.grid[2], k.registers, spills.c_str(),
              (long long)plan->main.workspaceBytes);

  auto poison = [&] {
    Status st = rt.fill16(p.dQ, kPoison16, p.qElements());
    if (st)
      st = rt.fill16(p.dK, kPoison16, p.kElements());
    if (st)
      st = rt.fill16(p.dV, kPoison16, p.vElements());
    if (st && p.biasGrad)
      st = rt.fill16(p.dBias, kPoison16, p.params().dBiasElements());
    return st;
  };
  auto copyGradients = [&](std::vector<uint16_t> &dq, std::vector<uint16_t> &dk,
                           std::vector<uint16_t> &dv) {
    dq.assign(p.qElements(), 0);
    dk.assign(p.kElements(), 0);
    dv.assign(p.vElements(), 0);
    Status st = rt.copyToHost(dq.data(), p.dQ, dq.size() * eb);
    if (st)
      st = rt.copyToHost(dk.data(), p.dK, dk.size() * eb);
    if (st)
      st = rt.copyToHost(dv.data(), p.dV, dv.size() * eb);
    return st;
  };
  // The first run's gradients: --deterministic compares every later run's
  // with them.
  std::vector<uint16_t> firstDQ, firstDK, firstDV;
  if (Status st = poison(); !st)
    return failWith(kCommand, st.message());
  if (Status st = rt.launch(*plan); !st)
    return failWith(kCommand, st.message());
  if (Status st = copyGradients(firstDQ, firstDK, firstDV); !st)
    return failWith(kCommand, st.message());
  size_t differing = 0;
  std::vector<float> times;
  std::vector<uint16_t> hq, hk, hv;
  for (int i = 0; i < o.warmup + o.repeats; ++i) {
    if (Status st = poison(); !st)
      return failWith(kCommand, st.message());
    auto ms = rt.timeMs([&] { return rt.launch(*plan); });
    if (!ms)
      return failWith(kCommand, ms.message());
    if (i >= o.warmup)
      times.push_back(*ms);
    if (spec.deterministic && o.check) {
      if (Status st = copyGradients(hq, hk, hv); !st)
        return failWith(kCommand, st.message());
      differing += mismatches(hq, firstDQ) + mismatches(hk, firstDK) +
                   mismatches(hv, firstDV);
    }
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  // The backward's FLOPs: 2.5x the forward's (five products to its two).
  const double flops = 2.5 * forwardFlops(p);
  std::printf("time:    %.4f ms median of %d (min %.4f ms), %.1f TFLOP/s\n",
              median, o.repeats, times.front(),
              flops / (median * 1e-3) / 1e12);
  if (!o.check)
    return 0;

  if (Status st = copyGradients(hq, hk, hv); !st)
    return failWith(kCommand, st.message());
  std::vector<uint16_t> hdBias;
  if (p.biasGrad) {
    hdBias.assign(p.params().dBiasElements(), 0);
    if (Status st = rt.copyToHost(hdBias.data(), p.dBias, hdBias.size() * eb);
        !st)
      return failWith(kCommand, st.message());
  }
  bool repeatable = true;
  if (spec.deterministic) {
    repeatable = differing == 0 && mismatches(hq, firstDQ) == 0;
    std::printf("repeat:  %s\n",
                repeatable ? "every run's dQ, dK, dV equal the first's bit "
                             "for bit"
                           : ("FAIL: " + std::to_string(differing) +
                              " gradient elements differ between runs")
                                 .c_str());
  }
  const BackwardParams params = p.params();
  const double perSlice = double(p.seqlenQ) * p.seqlenK *
                          double(p.headDimQK + p.headDimV) * p.gqaGroup();
  const int slices =
      o.checkSlices > 0
          ? o.checkSlices
          : int(std::clamp(kCheckBudget / (3 * perSlice), 2.0,
                           double(1 << 20)));
  auto chosen = sampleBackwardSlices(params, slices, o.seed);
  const BackwardCheckResult result = checkBackward(
      params,
      {inputs->q.data(), inputs->k.data(), inputs->v.data(),
       inputs->bias.empty() ? nullptr : inputs->bias.data(),
       inputs->alibiSlopes.empty() ? nullptr : inputs->alibiSlopes.data()},
      hdO.data(), hq.data(), hk.data(), hv.data(),
      p.biasGrad ? hdBias.data() : nullptr, chosen);
  std::printf("check:   %lld of %lld (batch, K/V head) slices\n%s\n",
              (long long)result.slices, (long long)(p.batch * p.headsKV),
              result.summary().c_str());
  return result.pass && repeatable ? 0 : 1;
}

void addRunCommand(CLI::App &app, int &exitCode) {
  auto o = std::make_shared<RunOptions>();
  CLI::App *cmd = app.add_subcommand(
      "run", "Run one attention call on random inputs: the forward (with "
             "--decode at a decode shape: split-KV, a paged KV cache), or "
             "with --backward the gradients; compile it (or fetch it from "
             "the cache), time it and, with --check, compare it with the "
             "CPU float64 reference");
  o->problem.addTo(*cmd);
  cmd->add_flag("--backward", o->backward,
                "Run the backward instead (after one forward for O and LSE): "
                "dQ, dK, dV of a random dO; --check compares them with the "
                "float64 reference's gradients (2x rule each)");
  addSeedOption(*cmd, o->seed,
                "Seed of the random normal inputs (same seed, same inputs)");
  cmd->add_flag(
      "--check", o->check,
      "Compare with the CPU float64 reference: pass when the max error "
      "is at most 2x that of a plain fp32 implementation and every "
      "output element was written; after a cold miss, also that the quick "
      "form's output equals the full kernel's bit for bit; exit 1 on FAIL");
  cmd->add_option("--check-slices", o->checkSlices,
                  "(batch, head) slices to check (default: all that fit a few "
                  "seconds of CPU time, at least 2)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--warmup", o->warmup, "Untimed runs before timing")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  cmd->add_option("--repeats", o->repeats,
                  "Timed runs (CUDA events); the median is reported")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  cmd->callback([o, &exitCode] { exitCode = run(*o); });
}

} // namespace flashjit::cli
