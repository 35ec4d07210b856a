//===- Autotune.cpp - Compile in parallel, check, time, rank, store -------===//
#include "flashjit/runtime/Autotune.h"

#include "Files.h"

#include "flashjit/kernels/Reference.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <ctime>
#include <mutex>
#include <thread>

namespace flashjit {

namespace {
using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// Largest difference from the baseline's output that a correct config may
/// show: different tilings sum in different orders, then round to the
/// output dtype. A few units in the last place of the largest output.
double outputTolerance(DType dtype, double largest) {
  const double ulp = dtype == DType::BF16 ? 1.0 / 128 : 1.0 / 1024;
  return 4 * ulp * std::max(largest, 1.0);
}

/// Output and LSE of one run of a candidate, as the host sees them.
struct Outputs {
  std::vector<uint16_t> o;
  std::vector<float> lse;
};

Expected<Outputs> runOnce(Runtime &rt, const ForwardPlan &plan,
                          const ForwardProblem &p) {
  Outputs out;
  out.o.resize(p.oElements());
  out.lse.resize(p.lse ? p.lseElements() : 0);
  Status s = rt.fill16(p.o, kPoison16, out.o.size());
  if (s && p.lse)
    s = rt.fill32(p.lse, kPoison32, out.lse.size());
  if (s)
    s = rt.launch(plan);
  if (s)
    s = rt.synchronize();
  if (s)
    s = rt.copyToHost(out.o.data(), p.o, out.o.size() * sizeof(uint16_t));
  if (s && p.lse)
    s = rt.copyToHost(out.lse.data(), p.lse, out.lse.size() * sizeof(float));
  if (!s)
    return s;
  return out;
}

/// Empty when `got` matches `want`; otherwise what differs. Poisoned words
/// (never written) match only where the baseline left them too (gaps of a
/// strided layout).
std::string compareOutputs(const Outputs &got, const Outputs &want,
                           DType dtype) {
  double largest = 0;
  for (uint16_t w : want.o)
    if (w != kPoison16)
      largest = std::max(largest, std::fabs(double(fromBits(w, dtype))));
  const double tol = outputTolerance(dtype, largest);
  double worst = 0;
  for (size_t i = 0; i < want.o.size(); ++i) {
    if ((got.o[i] == kPoison16) != (want.o[i] == kPoison16))
      return "output element " + std::to_string(i) +
             (got.o[i] == kPoison16 ? " was not written" : " was written")
             + " (baseline differs)";
    if (got.o[i] == kPoison16)
      continue;
    const double d = std::fabs(double(fromBits(got.o[i], dtype)) -
                               double(fromBits(want.o[i], dtype)));
    if (!(d <= tol)) // NaN fails too
      return "output element " + std::to_string(i) + " differs from the "
             "baseline by " + std::to_string(d) + " (tolerance " +
             std::to_string(tol) + ")";
    worst = std::max(worst, d);
  }
  for (size_t i = 0; i < want.lse.size(); ++i) {
    const float g = got.lse[i], w = want.lse[i];
    if (std::isinf(w) && g == w)
      continue;
    if (!(std::fabs(g - w) <= 1e-3f * std::max(1.0f, std::fabs(w))))
      return "lse element " + std::to_string(i) + " is " + std::to_string(g) +
             ", the baseline's " + std::to_string(w);
  }
  return {};
}

/// Plans of every candidate for every workspace (the kernel compiles for
/// the first; the others are memory hits). Runs on many threads.
struct Compiled {
  std::vector<ForwardPlan> plans; ///< one per workspace; empty: failed
};
} // namespace

int workspacesToRotate(size_t bytesPerWorkspace, int64_t l2Bytes) {
  if (bytesPerWorkspace == 0)
    return 1;
  // At least two, so that no run starts with what the previous one left
  // in L2 of its own inputs.
  const double n = std::ceil(2.0 * double(l2Bytes) / double(bytesPerWorkspace));
  return int(std::clamp(n, 2.0, 8.0));
}

Expected<AutotuneResult> autotune(Runtime &rt,
                                  const std::vector<ForwardProblem> &workspaces,
                                  const AutotuneOptions &options) {
  if (workspaces.empty())
    return Status::error("autotune needs at least one workspace");
  const ForwardProblem &first = workspaces.front();
  for (size_t i = 0; i < workspaces.size(); ++i) {
    const ForwardProblem &w = workspaces[i];
    if (Status s = validate(w); !s)
      return s;
    if (specFor(w) != specFor(first) || w.batch != first.batch ||
        w.headsQ != first.headsQ || w.headsKV != first.headsKV ||
        w.seqlenQ != first.seqlenQ || w.seqlenK != first.seqlenK)
      return Status::error("autotune: workspace " + std::to_string(i) +
                           " is not the problem of workspace 0 (its sizes, "
                           "features or alignment differ)");
  }
  AutotuneResult result;
  result.spec = specFor(first);
  result.key = rt.tuneKey(first);
  result.workspaces = int(workspaces.size());
  const SearchSpace space =
      forwardSearchSpace(result.spec, rt.arch(), options.knobs);
  result.enumerated = space.enumerated;
  result.pruned = space.pruned;
  const int n = int(space.candidates.size());
  std::vector<CandidateResult> candidates(n);
  std::vector<Compiled> compiled(n);
  for (int i = 0; i < n; ++i)
    candidates[i].config = space.candidates[i];

  // ---- compile on every CPU thread ------------------------------------------
  const auto compileStart = Clock::now();
  {
    const int threads = std::clamp(
        options.compileThreads > 0
            ? options.compileThreads
            : int(std::max(1u, std::thread::hardware_concurrency())),
        1, n);
    std::atomic<int> next{0}, done{0};
    std::mutex progressMutex;
    auto worker = [&] {
      for (int i; (i = next++) < n;) {
        for (const ForwardProblem &w : workspaces) {
          ForwardProblem p = w;
          p.tile = candidates[i].config;
          auto plan = rt.planForward(p);
          if (!plan) {
            candidates[i].failure = "compile: " + plan.message();
            compiled[i].plans.clear();
            break;
          }
          compiled[i].plans.push_back(std::move(*plan));
        }
        std::lock_guard<std::mutex> guard(progressMutex);
        if (options.progress)
          options.progress("compile", ++done, n);
      }
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t)
      pool.emplace_back(worker);
    worker();
    for (std::thread &t : pool)
      t.join();
  }
  result.compileSeconds = secondsSince(compileStart);

  // ---- check and time, one candidate at a time --------------------------------
  const auto measureStart = Clock::now();
  std::optional<Outputs> baselineOutputs;
  for (int i = 0; i < n; ++i) {
    CandidateResult &c = candidates[i];
    const auto &plans = compiled[i].plans;
    if (c.ok()) {
      c.registers = plans.front().kernel->registers;
      c.localBytes = plans.front().kernel->localBytes;
      auto out = runOnce(rt, plans.front(), first);
      if (!out) {
        c.failure = "launch: " + out.message();
      } else if (!baselineOutputs) {
        baselineOutputs = std::move(*out); // the first valid one
      } else if (std::string diff =
                     compareOutputs(*out, *baselineOutputs, first.dtype);
                 !diff.empty()) {
        c.failure = "check: " + diff;
      }
    }
    std::vector<float> times;
    for (int r = 0; c.ok() && r < options.warmup + options.repeats; ++r) {
      const ForwardPlan &plan = plans[r % plans.size()];
      if (r < options.warmup) {
        if (Status s = rt.launch(plan); !s)
          c.failure = "launch: " + s.message();
        continue;
      }
      auto ms = rt.timeMs([&] { return rt.launch(plan); });
      if (!ms)
        c.failure = "launch: " + ms.message();
      else
        times.push_back(*ms);
    }
    if (c.ok() && !times.empty()) {
      std::sort(times.begin(), times.end());
      c.ms = times[times.size() / 2];
      c.minMs = times.front();
    }
    if (options.progress)
      options.progress("measure", i + 1, n);
  }
  result.measureSeconds = secondsSince(measureStart);
  result.baseline = candidates.front();

  result.ranked = std::move(candidates);
  std::stable_sort(result.ranked.begin(), result.ranked.end(),
                   [](const CandidateResult &a, const CandidateResult &b) {
                     return a.ms < b.ms;
                   });
  const CandidateResult &best = result.ranked.front();
  if (options.store && best.ok()) {
    TuneEntry entry;
    entry.config = best.config;
    entry.ms = best.ms;
    if (result.ranked.size() > 1 && result.ranked[1].ok()) {
      entry.runnerUp = result.ranked[1].config;
      entry.runnerUpMs = result.ranked[1].ms;
    }
    if (result.baseline.ok()) {
      entry.defaultConfig = result.baseline.config;
      entry.defaultMs = result.baseline.ms;
    }
    entry.candidates = n;
    entry.tunedAtUtc = files::utcTime(std::time(nullptr));
    auto stored = rt.storeTuned(result.key, entry);
    if (!stored)
      return stored.status();
    result.storedIn = *stored;
  }
  return result;
}

} // namespace flashjit
