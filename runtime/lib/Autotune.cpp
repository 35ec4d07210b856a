//===- Autotune.cpp - Compile in parallel, check, time, rank, store -------===//
#include "flashjit/runtime/Autotune.h"

#include "Files.h"

#include "flashjit/kernels/Reference.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <mutex>
#include <numeric>
#include <system_error>
#include <thread>

namespace flashjit {

namespace {
using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// Largest difference from the baseline's element `want` that a correct
/// config may show. Tilings differ in where the running max is taken, so
/// the probabilities rounded to the dtype before P.V differ by up to half
/// an ulp each (noise of a small fraction of an ulp of the largest output
/// after averaging over the keys), and the final rounding of O differs by
/// up to an ulp of the element. A skipped or doubled K/V tile moves outputs
/// by more than that.
double outputTolerance(DType dtype, double want, double largest) {
  const double eps = dtype == DType::BF16 ? 1.0 / 128 : 1.0 / 1024;
  return eps * (2 * std::fabs(want) + largest / 2);
}

/// LSE is float32 throughout: only summation order differs.
constexpr double kLseTolerance = 1e-4;

/// Candidates held to the float64 reference, fastest first, before the
/// search gives up on storing a winner.
constexpr int kOracleAttempts = 3;

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

/// Host copies of the inputs of `p` (16-bit patterns; ALiBi slopes as
/// float), for the float64 reference.
struct HostCopies {
  std::vector<uint16_t> q, k, v, bias;
  std::vector<float> slopes;
  HostInputs inputs() const {
    return {q.data(), k.data(), v.data(), bias.empty() ? nullptr : bias.data(),
            slopes.empty() ? nullptr : slopes.data()};
  }
};

Expected<HostCopies> downloadInputs(Runtime &rt, const ForwardProblem &p) {
  HostCopies h;
  const size_t eb = elementBytes(p.dtype);
  h.q.resize(p.qElements());
  h.k.resize(p.kElements());
  h.v.resize(p.vElements());
  if (p.bias == BiasMode::Tensor)
    h.bias.resize(p.biasElements());
  if (p.bias == BiasMode::Alibi)
    h.slopes.resize((p.batch - 1) * p.alibiBatchStride + p.headsQ);
  const struct {
    void *to;
    const void *from;
    size_t bytes;
  } copies[] = {{h.q.data(), p.q, h.q.size() * eb},
                {h.k.data(), p.k, h.k.size() * eb},
                {h.v.data(), p.v, h.v.size() * eb},
                {h.bias.data(), p.biasData, h.bias.size() * eb},
                {h.slopes.data(), p.alibiSlopes, h.slopes.size() * 4}};
  for (const auto &c : copies)
    if (c.bytes)
      if (Status s = rt.copyToHost(c.to, c.from, c.bytes); !s)
        return s;
  return h;
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
  for (size_t i = 0; i < want.o.size(); ++i) {
    if ((got.o[i] == kPoison16) != (want.o[i] == kPoison16))
      return "output element " + std::to_string(i) +
             (got.o[i] == kPoison16 ? " was not written" : " was written") +
             " (the baseline's was " +
             (want.o[i] == kPoison16 ? "not)" : "written)");
    if (got.o[i] == kPoison16)
      continue;
    const double w = fromBits(want.o[i], dtype);
    const double d = std::fabs(double(fromBits(got.o[i], dtype)) - w);
    const double tol = outputTolerance(dtype, w, largest);
    if (!(d <= tol)) // NaN fails too
      return "output element " + std::to_string(i) + " differs from the "
             "baseline by " + std::to_string(d) + " (tolerance " +
             std::to_string(tol) + ")";
  }
  for (size_t i = 0; i < want.lse.size(); ++i) {
    const float g = got.lse[i], w = want.lse[i];
    uint32_t gBits, wBits;
    std::memcpy(&gBits, &g, 4);
    std::memcpy(&wBits, &w, 4);
    if (gBits == wBits) // equal, both -inf, or both never written
      continue;
    if ((gBits == kPoison32) != (wBits == kPoison32))
      return "lse element " + std::to_string(i) +
             (gBits == kPoison32 ? " was not written" : " was written") +
             " (the baseline's differs)";
    if (!(std::fabs(g - w) <= kLseTolerance * std::max(1.0f, std::fabs(w))))
      return "lse element " + std::to_string(i) + " is " + std::to_string(g) +
             ", the baseline's " + std::to_string(w);
  }
  return {};
}
} // namespace

int workspacesToRotate(size_t bytesPerWorkspace, int64_t l2Bytes) {
  if (bytesPerWorkspace == 0)
    return 1;
  // At least two, so that no run starts with what the previous one left
  // in L2 of its own inputs.
  const double n = std::ceil(2.0 * double(l2Bytes) / double(bytesPerWorkspace));
  return int(std::clamp(n, 2.0, double(kMaxWorkspaces)));
}

Expected<Timing> timePlans(Runtime &rt, const std::vector<ForwardPlan> &plans,
                           int warmup, int repeats) {
  if (plans.empty() || repeats < 1)
    return Status::error("timePlans needs a plan and at least one repeat");
  for (int r = 0; r < warmup; ++r)
    if (Status s = rt.launch(plans[r % plans.size()]); !s)
      return s;
  std::vector<float> times;
  for (int r = 0; r < repeats; ++r) {
    const ForwardPlan &plan = plans[(warmup + r) % plans.size()];
    auto ms = rt.timeMs([&] { return rt.launch(plan); });
    if (!ms)
      return ms.status();
    times.push_back(*ms);
  }
  std::sort(times.begin(), times.end());
  return Timing{times[times.size() / 2], times.front()};
}

Expected<AutotuneResult> autotune(Runtime &rt,
                                  const std::vector<ForwardProblem> &workspaces,
                                  const AutotuneOptions &options) {
  if (workspaces.empty())
    return Status::error("autotune needs at least one workspace");
  if (options.repeats < 1 || options.warmup < 0)
    return Status::error("autotune: repeats must be >= 1 and warmup >= 0, got " +
                         std::to_string(options.repeats) + " and " +
                         std::to_string(options.warmup));
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
  result.space = forwardSearchSpace(result.spec, rt.arch(), options.knobs);
  const SearchSpace &space = result.space;
  const int n = int(space.candidates.size());
  std::vector<CandidateResult> candidates(n);
  // Per candidate, one plan per workspace (the kernel compiles for the
  // first; the others are memory hits); empty when it failed.
  std::vector<std::vector<ForwardPlan>> compiled(n);
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
    if (options.progress)
      options.progress("compile", 0, n);
    auto compileOne = [&](int i) {
      for (const ForwardProblem &w : workspaces) {
        ForwardProblem p = w;
        p.tile = candidates[i].config;
        auto plan = rt.planForward(p);
        if (!plan) {
          candidates[i].failure = "compile: " + plan.message();
          compiled[i].clear();
          return;
        }
        compiled[i].push_back(std::move(*plan));
      }
    };
    auto worker = [&] {
      for (int i; (i = next++) < n;) {
        try {
          compileOne(i);
        } catch (const std::exception &e) { // bad_alloc: this one fails
          candidates[i].failure = std::string("compile: ") + e.what();
          compiled[i].clear();
        }
        std::lock_guard<std::mutex> guard(progressMutex);
        if (options.progress)
          options.progress("compile", ++done, n);
      }
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) {
      try {
        pool.emplace_back(worker);
      } catch (const std::system_error &) {
        break; // fewer threads than asked: the others take the work
      }
    }
    worker();
    for (std::thread &t : pool)
      t.join();
  }
  result.compileSeconds = secondsSince(compileStart);

  // ---- check and time, one candidate at a time --------------------------------
  const auto measureStart = Clock::now();
  std::optional<Outputs> baselineOutputs;
  // A fault (an illegal address) poisons the CUDA context: nothing after it
  // can be measured, and nothing measured is stored.
  std::string contextLost;
  if (options.progress)
    options.progress("measure", 0, n);
  for (int i = 0; i < n; ++i) {
    CandidateResult &c = candidates[i];
    const auto &plans = compiled[i];
    if (c.ok() && !contextLost.empty())
      c.failure = "not measured: " + contextLost;
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
    if (c.ok()) {
      if (auto t = timePlans(rt, plans, options.warmup, options.repeats)) {
        c.ms = t->ms;
        c.minMs = t->minMs;
      } else {
        c.failure = "launch: " + t.message();
      }
    }
    if (!c.ok() && contextLost.empty() && c.failure.rfind("launch: ", 0) == 0) {
      if (Status s = rt.synchronize(); !s)
        contextLost = "the CUDA context was lost after " +
                      canonicalText(c.config) + " (" + s.message() + ")";
    }
    if (options.progress)
      options.progress("measure", i + 1, n);
  }
  result.measureSeconds = secondsSince(measureStart);

  // ---- the winner against the float64 reference ---------------------------
  // Candidates were checked against the baseline only, which a bug shared by
  // every config passes: the fastest is held to the 2x rule on sampled
  // slices (the rest scanned for unwritten elements) before it can win. One
  // that fails drops out and the next is checked, a few times at most.
  std::vector<int> order(n);
  auto rank = [&] {
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return candidates[a].ms < candidates[b].ms;
    });
  };
  rank();
  bool checkedWinner = false;
  std::string oracleFailure;
  if (n > 0 && contextLost.empty() && candidates[order.front()].ok()) {
    auto host = downloadInputs(rt, first);
    if (!host)
      oracleFailure = "the inputs could not be read back for the float64 "
                      "check: " + host.message();
    const auto slices =
        sampleSlices(first, std::max(1, options.oracleSlices), /*seed=*/0);
    for (int tried = 0; host && tried < std::min(n, kOracleAttempts); ++tried) {
      CandidateResult &c = candidates[order[tried]];
      if (!c.ok())
        break;
      auto out = runOnce(rt, compiled[order[tried]].front(), first);
      if (!out) {
        oracleFailure = "launch: " + out.message();
        c.failure = oracleFailure;
      } else {
        const CheckResult r = checkForward(
            first, host->inputs(), out->o.data(),
            first.lse ? out->lse.data() : nullptr, slices);
        if (r.pass) {
          result.oracleCheck = canonicalText(c.config) + ": " + r.summary();
          checkedWinner = true;
          break;
        }
        oracleFailure = canonicalText(c.config) + ": " + r.summary();
        c.failure = "oracle: " + r.summary();
      }
      c.ms = c.minMs = std::numeric_limits<double>::infinity();
    }
    rank();
  }
  result.baseline = candidates.front();
  for (int i : order)
    result.ranked.push_back(candidates[i]);

  const CandidateResult &best = result.ranked.front();
  if (options.store && !contextLost.empty()) {
    result.storeError = "nothing stored: " + contextLost;
  } else if (options.store && !checkedWinner && best.ok()) {
    result.storeError = "nothing stored: the fastest candidates failed the "
                        "float64 check (" + oracleFailure + ")";
  } else if (options.store && best.ok()) {
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
    if (stored)
      result.storedIn = *stored;
    else
      result.storeError = stored.message();
  }
  return result;
}

} // namespace flashjit
