//===- Autotune.cpp - Compile in parallel, check, time, rank, store -------===//
#include "flashjit/runtime/Autotune.h"

#include "Files.h"

#include "flashjit/kernels/Reference.h"
#include "flashjit/kernels/ReferenceBackward.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <functional>
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

/// A candidate in messages: its config, and its split count when it has one.
std::string candidateText(const CandidateResult &c) {
  return canonicalText(c.config) +
         (c.splits ? " splits=" + std::to_string(c.splits) : "");
}

/// Candidates held to the float64 reference, fastest first, before the
/// search gives up on storing a winner.
constexpr int kOracleAttempts = 3;

/// The outputs of one run of a candidate, as the host sees them: the 16-bit
/// tensors (O; or dQ, dK, dV and dBias) and the float32 LSE of a forward.
struct Outputs {
  std::vector<std::vector<uint16_t>> tensors;
  std::vector<float> lse;
};

/// One device output of a search's first workspace.
struct OutputBuffer {
  std::string name; ///< "output", "dQ", ...
  void *data = nullptr;
  int64_t elements = 0;
};

/// What the search needs of one direction: compile a candidate for every
/// workspace, launch it, name and read back its outputs, and hold them to
/// the float64 reference.
class Target {
public:
  virtual ~Target() = default;
  /// Workspace 0's problem: the sizes and dtype every workspace shares.
  virtual const ForwardProblem &first() const = 0;
  virtual int workspaces() const = 0;
  /// Makes the plans of `candidate` (one per workspace) with `splits`
  /// split-KV CTAs per row block (0: the runtime's choice); called from
  /// several threads at once, for different candidates.
  virtual Status compile(int candidate, const TileConfig &config,
                         int splits) = 0;
  virtual void forget(int candidate) = 0;
  virtual const LoadedKernel &kernel(int candidate) const = 0;
  /// After every compile, before any launch.
  virtual Status prepare() { return Status::ok(); }
  /// The split-KV count `candidate`'s plans launch (1: none).
  virtual int splitsRun(int candidate) const { return 1; }
  virtual Status launch(int candidate, int workspace) = 0;
  /// Workspace 0's 16-bit outputs, and its LSE when the kernel writes one.
  virtual std::vector<OutputBuffer> outputs() const = 0;
  virtual OutputBuffer lse() const { return {}; }
  /// PASS or FAIL of `out` (workspace 0's) against the float64 reference on
  /// up to `slices` sampled slices, and the check's summary.
  virtual Expected<std::pair<bool, std::string>>
  oracle(Runtime &rt, const Outputs &out, int slices) = 0;
};

/// Poisons every output of workspace 0, runs `candidate` there and reads
/// the outputs back.
Expected<Outputs> runOnce(Runtime &rt, Target &target, int candidate) {
  const std::vector<OutputBuffer> buffers = target.outputs();
  const OutputBuffer lse = target.lse();
  Status s = Status::ok();
  for (const OutputBuffer &b : buffers)
    if (s)
      s = rt.fill16(b.data, kPoison16, size_t(b.elements));
  if (s && lse.data)
    s = rt.fill32(lse.data, kPoison32, size_t(lse.elements));
  if (s)
    s = target.launch(candidate, 0);
  if (s)
    s = rt.synchronize();
  Outputs out;
  for (const OutputBuffer &b : buffers) {
    out.tensors.emplace_back(size_t(b.elements));
    if (s)
      s = rt.copyToHost(out.tensors.back().data(), b.data,
                        size_t(b.elements) * sizeof(uint16_t));
  }
  out.lse.resize(lse.data ? size_t(lse.elements) : 0);
  if (s && lse.data)
    s = rt.copyToHost(out.lse.data(), lse.data,
                      size_t(lse.elements) * sizeof(float));
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

/// Plans of one direction (ForwardPlan or BackwardPlan), per candidate one
/// per workspace; empty when its compile failed.
template <class Problem, class Plan> class PlannedTarget : public Target {
public:
  PlannedTarget(Runtime &rt, const std::vector<Problem> &problems, int n)
      : rt_(rt), problems_(problems), plans_(n) {}
  const ForwardProblem &first() const override { return problems_.front(); }
  int workspaces() const override { return int(problems_.size()); }
  Status compile(int candidate, const TileConfig &config,
                 int splits) override {
    std::vector<Plan> plans;
    for (const Problem &w : problems_) {
      Problem p = w;
      p.tile = config;
      if (splits > 0)
        p.numSplits = splits;
      auto plan = plan_(p);
      if (!plan)
        return plan.status();
      plans.push_back(std::move(*plan));
    }
    plans_[candidate] = std::move(plans);
    return Status::ok();
  }
  void forget(int candidate) override { plans_[candidate].clear(); }

protected:
  virtual Expected<Plan> plan_(const Problem &p) = 0;
  Runtime &rt_;
  std::vector<Problem> problems_;
  std::vector<std::vector<Plan>> plans_;
};

class ForwardTarget final : public PlannedTarget<ForwardProblem, ForwardPlan> {
public:
  using PlannedTarget::PlannedTarget;
  const LoadedKernel &kernel(int candidate) const override {
    return *plans_[candidate].front().kernel;
  }
  int splitsRun(int candidate) const override {
    return plans_[candidate].front().numSplits;
  }
  Status launch(int candidate, int workspace) override {
    return rt_.launch(plans_[candidate][workspace]);
  }
  std::vector<OutputBuffer> outputs() const override {
    return {{"output", first().o, first().oElements()}};
  }
  OutputBuffer lse() const override {
    if (!first().lse)
      return {};
    return {"lse", first().lse, first().lseElements()};
  }
  Expected<std::pair<bool, std::string>>
  oracle(Runtime &rt, const Outputs &out, int slices) override {
    auto host = downloadInputs(rt, first());
    if (!host)
      return host.status();
    const CheckResult r = checkForward(
        first(), host->inputs(), out.tensors[0].data(),
        first().lse ? out.lse.data() : nullptr,
        sampleSlices(first(), slices, /*seed=*/0));
    return std::pair{r.pass, r.summary()};
  }

private:
  Expected<ForwardPlan> plan_(const ForwardProblem &p) override {
    return rt_.planForward(p);
  }
};

class BackwardTarget final
    : public PlannedTarget<BackwardProblem, BackwardPlan> {
public:
  using PlannedTarget::PlannedTarget;
  const LoadedKernel &kernel(int candidate) const override {
    return *plans_[candidate].front().main.kernel;
  }
  /// One scratch per workspace, for the candidate that needs the most (the
  /// deterministic dQ splits depend on block_n).
  Status prepare() override {
    size_t bytes = 0;
    for (const auto &plans : plans_)
      for (const BackwardPlan &p : plans)
        bytes = std::max(bytes, p.main.workspaceBytes);
    scratch_.clear();
    for (size_t w = 0; w < problems_.size() && bytes; ++w) {
      auto buffer = rt_.allocate(bytes);
      if (!buffer)
        return buffer.status();
      scratch_.push_back(std::move(*buffer));
    }
    for (auto &plans : plans_)
      for (size_t w = 0; w < plans.size(); ++w)
        plans[w].main.workspace = scratch_[w].data();
    return Status::ok();
  }
  Status launch(int candidate, int workspace) override {
    return rt_.launch(plans_[candidate][workspace]);
  }
  std::vector<OutputBuffer> outputs() const override {
    const BackwardProblem &p = problems_.front();
    std::vector<OutputBuffer> out = {{"dQ", p.dQ, p.qElements()},
                                     {"dK", p.dK, p.kElements()},
                                     {"dV", p.dV, p.vElements()}};
    if (p.biasGrad)
      out.push_back({"dBias", p.dBias, p.params().dBiasElements()});
    return out;
  }
  Expected<std::pair<bool, std::string>>
  oracle(Runtime &rt, const Outputs &out, int slices) override {
    const BackwardProblem &p = problems_.front();
    auto host = downloadInputs(rt, p);
    if (!host)
      return host.status();
    std::vector<uint16_t> dO(p.oElements());
    if (Status s = rt.copyToHost(dO.data(), p.dO, dO.size() * sizeof(uint16_t));
        !s)
      return s;
    const BackwardParams params = p.params();
    const BackwardCheckResult r = checkBackward(
        params, host->inputs(), dO.data(), out.tensors[0].data(),
        out.tensors[1].data(), out.tensors[2].data(),
        p.biasGrad ? out.tensors[3].data() : nullptr,
        sampleBackwardSlices(params, slices, /*seed=*/0));
    return std::pair{r.pass, r.summary()};
  }

private:
  Expected<BackwardPlan> plan_(const BackwardProblem &p) override {
    return rt_.planBackward(p);
  }
  std::vector<DeviceBuffer> scratch_;
};

/// Empty when `got` matches `want`; otherwise what differs. Poisoned words
/// (never written) match only where the baseline left them too (gaps of a
/// strided layout, rows no sequence owns).
std::string compareOutputs(const Outputs &got, const Outputs &want,
                           const std::vector<OutputBuffer> &names,
                           DType dtype) {
  for (size_t t = 0; t < want.tensors.size(); ++t) {
    const std::vector<uint16_t> &g = got.tensors[t], &w = want.tensors[t];
    const std::string &name = names[t].name;
    double largest = 0;
    for (uint16_t x : w)
      if (x != kPoison16)
        largest = std::max(largest, std::fabs(double(fromBits(x, dtype))));
    for (size_t i = 0; i < w.size(); ++i) {
      if ((g[i] == kPoison16) != (w[i] == kPoison16))
        return name + " element " + std::to_string(i) +
               (g[i] == kPoison16 ? " was not written" : " was written") +
               " (the baseline's was " +
               (w[i] == kPoison16 ? "not)" : "written)");
      if (g[i] == kPoison16)
        continue;
      const double want = fromBits(w[i], dtype);
      const double d = std::fabs(double(fromBits(g[i], dtype)) - want);
      const double tol = outputTolerance(dtype, want, largest);
      if (!(d <= tol)) // NaN fails too
        return name + " element " + std::to_string(i) +
               " differs from the baseline by " + std::to_string(d) +
               " (tolerance " + std::to_string(tol) + ")";
    }
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

/// Median and fastest of `repeats` CUDA-event timed calls of `launch(r)`
/// after `warmup` untimed ones (r counts every call).
Expected<Timing> timeLaunches(Runtime &rt,
                              const std::function<Status(int)> &launch,
                              int warmup, int repeats, int backToBack = 1) {
  if (repeats < 1 || backToBack < 1)
    return Status::error("timing needs at least one repeat of one launch");
  for (int r = 0; r < warmup; ++r)
    if (Status s = launch(r); !s)
      return s;
  std::vector<float> times;
  int next = warmup;
  for (int r = 0; r < repeats; ++r) {
    auto ms = rt.timeMs([&] {
      for (int i = 0; i < backToBack; ++i)
        if (Status s = launch(next++); !s)
          return s;
      return Status::ok();
    });
    if (!ms)
      return ms.status();
    times.push_back(*ms / float(backToBack));
  }
  std::sort(times.begin(), times.end());
  return Timing{times[times.size() / 2], times.front()};
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
                           int warmup, int repeats, int backToBack) {
  if (plans.empty())
    return Status::error("timePlans needs a plan and at least one repeat");
  return timeLaunches(
      rt, [&](int r) { return rt.launch(plans[r % plans.size()]); }, warmup,
      repeats, backToBack);
}

namespace {

/// Compiles, checks, times and ranks the candidates of `result.space` for
/// `target`, holds the fastest to the float64 reference and stores the
/// winner under `result.key`.
Expected<AutotuneResult> search(Runtime &rt, Target &target,
                                AutotuneResult result,
                                const AutotuneOptions &options) {
  const ForwardProblem &first = target.first();
  result.workspaces = target.workspaces();
  const SearchSpace &space = result.space;
  const int n = int(space.candidates.size());
  std::vector<CandidateResult> candidates(n);
  for (int i = 0; i < n; ++i) {
    candidates[i].config = space.candidates[i];
    candidates[i].splits = space.splitsOf(i);
  }

  // ---- compile on every CPU thread ------------------------------------------
  const auto compileStart = Clock::now();
  {
    const int threads = std::clamp(
        options.compileThreads > 0
            ? options.compileThreads
            : int(std::max(1u, std::thread::hardware_concurrency())),
        1, std::max(n, 1));
    std::atomic<int> next{0}, done{0};
    std::mutex progressMutex;
    if (options.progress)
      options.progress("compile", 0, n);
    auto worker = [&] {
      for (int i; (i = next++) < n;) {
        Status s = Status::ok();
        try {
          s = target.compile(i, candidates[i].config, candidates[i].splits);
        } catch (const std::exception &e) { // bad_alloc: this one fails
          s = Status::error(e.what());
        }
        if (!s) {
          candidates[i].failure = "compile: " + s.message();
          target.forget(i);
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
  if (Status s = target.prepare(); !s)
    return s;

  // ---- check and time, one candidate at a time --------------------------------
  const auto measureStart = Clock::now();
  const std::vector<OutputBuffer> outputNames = target.outputs();
  std::optional<Outputs> baselineOutputs;
  // A fault (an illegal address) poisons the CUDA context: nothing after it
  // can be measured, and nothing measured is stored.
  std::string contextLost;
  if (options.progress)
    options.progress("measure", 0, n);
  for (int i = 0; i < n; ++i) {
    CandidateResult &c = candidates[i];
    if (c.ok() && !contextLost.empty())
      c.failure = "not measured: " + contextLost;
    if (c.ok()) {
      c.registers = target.kernel(i).registers;
      c.localBytes = target.kernel(i).localBytes;
      c.splitsRun = target.splitsRun(i);
      auto out = runOnce(rt, target, i);
      if (!out) {
        c.failure = "launch: " + out.message();
      } else if (!baselineOutputs) {
        baselineOutputs = std::move(*out); // the first valid one
      } else if (std::string diff = compareOutputs(*out, *baselineOutputs,
                                                   outputNames, first.dtype);
                 !diff.empty()) {
        c.failure = "check: " + diff;
      }
    }
    if (c.ok()) {
      const int w = target.workspaces();
      if (auto t = timeLaunches(
              rt, [&](int r) { return target.launch(i, r % w); },
              options.warmup, options.repeats)) {
        c.ms = t->ms;
        c.minMs = t->minMs;
      } else {
        c.failure = "launch: " + t.message();
      }
    }
    if (!c.ok() && contextLost.empty() && c.failure.rfind("launch: ", 0) == 0) {
      if (Status s = rt.synchronize(); !s)
        contextLost = "the CUDA context was lost after " +
                      candidateText(c) + " (" + s.message() + ")";
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
    for (int tried = 0; tried < std::min(n, kOracleAttempts); ++tried) {
      CandidateResult &c = candidates[order[tried]];
      if (!c.ok())
        break;
      auto out = runOnce(rt, target, order[tried]);
      if (!out) {
        oracleFailure = "launch: " + out.message();
        c.failure = oracleFailure;
      } else {
        auto verdict =
            target.oracle(rt, *out, std::max(1, options.oracleSlices));
        if (!verdict) {
          oracleFailure = "the inputs could not be read back for the "
                          "float64 check: " + verdict.message();
          break;
        }
        const auto &[pass, summary] = *verdict;
        if (pass) {
          result.oracleCheck = candidateText(c) + ": " + summary;
          checkedWinner = true;
          break;
        }
        oracleFailure = candidateText(c) + ": " + summary;
        c.failure = "oracle: " + summary;
      }
      c.ms = c.minMs = std::numeric_limits<double>::infinity();
    }
    rank();
  }
  if (n > 0)
    result.baseline = candidates.front();
  for (int i : order)
    result.ranked.push_back(candidates[i]);
  if (result.ranked.empty())
    return Status::error("autotune: the search space of " +
                         canonicalText(result.spec) + " is empty");

  const CandidateResult &best = result.ranked.front();
  if (options.store && !contextLost.empty()) {
    result.storeError = "nothing stored: " + contextLost;
  } else if (options.store && !checkedWinner && best.ok()) {
    result.storeError = "nothing stored: the fastest candidates failed the "
                        "float64 check (" + oracleFailure + ")";
  } else if (options.store && best.ok()) {
    TuneEntry entry;
    entry.config = best.config;
    entry.splits = best.splits;
    entry.ms = best.ms;
    if (result.ranked.size() > 1 && result.ranked[1].ok()) {
      entry.runnerUp = result.ranked[1].config;
      entry.runnerUpSplits = result.ranked[1].splits;
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

/// The checks every search starts with: options in range, and workspaces
/// that all hold one problem (`same`: its sizes, features and alignment).
template <class Problem>
Status checkWorkspaces(const std::vector<Problem> &workspaces,
                       const AutotuneOptions &options) {
  if (workspaces.empty())
    return Status::error("autotune needs at least one workspace");
  for (size_t i = 0; i < workspaces.size(); ++i)
    if (workspaces[i].numSplits != 0)
      return Status::error(
          "autotune chooses the split count itself (decode problems search "
          "it): workspace " + std::to_string(i) + " asks for num_splits " +
          std::to_string(workspaces[i].numSplits) + "; leave it 0");
  if (options.repeats < 1 || options.warmup < 0)
    return Status::error("autotune: repeats must be >= 1 and warmup >= 0, got " +
                         std::to_string(options.repeats) + " and " +
                         std::to_string(options.warmup));
  const Problem &first = workspaces.front();
  for (size_t i = 0; i < workspaces.size(); ++i) {
    const Problem &w = workspaces[i];
    if (Status s = validate(w); !s)
      return s;
    if (specFor(w) != specFor(first) || w.batch != first.batch ||
        w.headsQ != first.headsQ || w.headsKV != first.headsKV ||
        w.seqlenQ != first.seqlenQ || w.seqlenK != first.seqlenK)
      return Status::error("autotune: workspace " + std::to_string(i) +
                           " is not the problem of workspace 0 (its sizes, "
                           "features or alignment differ)");
  }
  return Status::ok();
}

/// A search of `TargetT` over the space `spaceOf` gives the workspaces'
/// spec on the runtime's arch.
template <class TargetT, class Problem, class SpaceOf>
Expected<AutotuneResult> tuneWorkspaces(Runtime &rt,
                                        const std::vector<Problem> &workspaces,
                                        const AutotuneOptions &options,
                                        SpaceOf spaceOf) {
  if (Status s = checkWorkspaces(workspaces, options); !s)
    return s;
  AutotuneResult result;
  result.spec = specFor(workspaces.front());
  result.key = rt.tuneKey(workspaces.front());
  result.space = spaceOf(result.spec, rt.arch());
  TargetT target(rt, workspaces, int(result.space.candidates.size()));
  return search(rt, target, std::move(result), options);
}

} // namespace

SearchSpace forwardSearchSpaceFor(const ForwardProblem &p,
                                  const AttentionSpec &spec, Arch arch,
                                  const AutotuneOptions &options) {
  const auto &families = options.knobs.families;
  const bool sm80Searched =
      families.empty() || std::find(families.begin(), families.end(),
                                    Family::Sm80) != families.end();
  if (sm80Searched && isDecodeLike(p)) {
    SearchSpace decode = decodeSearchSpace(spec, arch, decodeTileRows(p),
                                           p.seqlenK, p.batch,
                                           options.decodeKnobs);
    if (!decode.candidates.empty())
      return decode;
  }
  return forwardSearchSpace(spec, arch, options.knobs);
}

Expected<AutotuneResult> autotune(Runtime &rt,
                                  const std::vector<ForwardProblem> &workspaces,
                                  const AutotuneOptions &options) {
  return tuneWorkspaces<ForwardTarget>(
      rt, workspaces, options, [&](const AttentionSpec &spec, Arch arch) {
        return forwardSearchSpaceFor(workspaces.front(), spec, arch, options);
      });
}

Expected<AutotuneResult>
autotuneBackward(Runtime &rt, const std::vector<BackwardProblem> &workspaces,
                 const AutotuneOptions &options) {
  return tuneWorkspaces<BackwardTarget>(
      rt, workspaces, options, [&](const AttentionSpec &spec, Arch arch) {
        return backwardSearchSpace(spec, arch, options.backwardKnobs);
      });
}

} // namespace flashjit
