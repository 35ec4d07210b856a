//===- AutotuneCommand.cpp - flashjit autotune: measure configs, keep best -===//
//
// Compiles every tile config the search space keeps for the problem (in
// parallel), times each on the GPU, checks each against the default
// config's output and the winner against the float64 reference, prints the
// ranking and stores the winner in the tune database, where run, bench and
// the APIs find it.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"
#include "Problem.h"
#include "Progress.h"

#include "flashjit/runtime/Autotune.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>

namespace flashjit::cli {

namespace {
struct AutotuneCliOptions {
  ProblemOptions problem;
  uint64_t seed = 0;
  int warmup = 3;
  int repeats = 15;
  int threads = 0;
  int top = 10;
  bool json = false;
  bool noStore = false;
  bool listSpace = false;
  bool backward = false;
  std::string arch = "sm_90a"; ///< --list-space only
};

constexpr const char *kCommand = "autotune";

void printSpace(const SearchSpace &space) {
  std::printf("search:  %d configs enumerated, %d pruned before compiling",
              space.enumerated, space.prunedCount());
  for (const auto &[reason, count] : space.pruned)
    std::printf("; %d %s", count, std::string(toString(reason)).c_str());
  std::printf("\n");
}

/// "enumerated" and "pruned" (count per reason) of a search space.
nlohmann::json spaceJson(const SearchSpace &space) {
  nlohmann::json j = {{"enumerated", space.enumerated},
                      {"pruned", nlohmann::json::object()}};
  for (const auto &[reason, n] : space.pruned)
    j["pruned"][std::string(toString(reason))] = n;
  return j;
}

int autotuneCommand(const AutotuneCliOptions &cli) {
  AutotuneCliOptions o = cli;
  if (o.backward)
    o.problem.spec.direction = "backward";
  AttentionSpec spec;
  Arch unusedArch;
  if (Status s = o.problem.spec.resolve(spec, unusedArch); !s)
    return failWith(kCommand, s.message(), 2);
  // --scalar picks whose tiles a backward search takes; the rest is tuned.
  BackwardKnobs backwardKnobs;
  if (o.problem.spec.scalar) {
    if (!o.backward)
      return failWith(kCommand, "--scalar applies to autotune --backward only",
                      2);
    backwardKnobs.scalar = *o.problem.spec.scalar == "on";
  }
  SpecOptions tileOptions = o.problem.spec;
  tileOptions.scalar.reset();
  if (tileOptions.hasTileOptions())
    return failWith(kCommand, "autotune chooses the tile config itself; drop "
                    "--block-m, --block-n, --warps, --stages and --pack-gqa",
                    2);
  if (o.problem.numSplits != 0)
    return failWith(kCommand, "autotune chooses the split count itself (a "
                    "decode problem searches it); drop --splits", 2);
  ForwardProblem shape;
  if (Status s = describeProblem(o.problem, spec, shape); !s)
    return failWith(kCommand, s.message(), 2);

  if (o.listSpace) {
    auto arch = parseArch(o.arch);
    if (!arch)
      return failWith(kCommand,
                      "--arch must be one of " + archChoices() + ", got '" +
                          o.arch + "'",
                      2);
    const SearchSpace space =
        o.backward ? backwardSearchSpace(spec, *arch, backwardKnobs)
                   : forwardSearchSpaceFor(shape, spec, *arch);
    if (o.json) {
      nlohmann::json j = spaceJson(space);
      j["arch"] = o.arch;
      j["candidates"] = nlohmann::json::array();
      for (size_t i = 0; i < space.candidates.size(); ++i) {
        nlohmann::json c = toJson(space.candidates[i]);
        if (space.splitsOf(i))
          c["splits"] = space.splitsOf(i);
        j["candidates"].push_back(std::move(c));
      }
      std::printf("%s\n", j.dump(2).c_str());
      return 0;
    }
    printSpace(space);
    std::printf("candidates (%zu, the %s default first):\n",
                space.candidates.size(), o.arch.c_str());
    for (size_t i = 0; i < space.candidates.size(); ++i)
      std::printf("  %s\n",
                  candidateText(space.candidates[i], space.splitsOf(i)).c_str());
    return 0;
  }

  auto created = Runtime::create();
  if (!created)
    return failWith(kCommand, created.message());
  Runtime &rt = **created;
  const auto start = std::chrono::steady_clock::now();
  const std::string problem =
      problemText(shape, o.problem.layout, spec.writeLse) +
      (o.backward ? std::string(" backward") +
                        (spec.deterministic ? " deterministic" : "") +
                        (spec.biasGrad ? " dbias" : "")
                  : "");
  if (!o.json) {
    std::printf("device:  %s\n", deviceText(rt).c_str());
    std::printf("problem: %s\n", problem.c_str());
  }

  auto inputs = uploadWorkspaces(rt, shape, spec, o.seed);
  if (!inputs)
    return failWith(kCommand, inputs.message());

  AutotuneOptions options;
  options.backwardKnobs = backwardKnobs;
  options.warmup = o.warmup;
  options.repeats = o.repeats;
  options.compileThreads = o.threads;
  options.store = !o.noStore;
  Progress progress(stderr);
  options.progress = [&](std::string_view phase, int done, int total) {
    progress.update(phase, done, total);
  };
  Expected<AutotuneResult> tuned = Status::error("not tuned");
  if (o.backward) {
    // Each workspace's forward runs first, for its O and LSE.
    std::vector<DeviceBackwardProblem> backward;
    for (size_t i = 0; i < inputs->size(); ++i) {
      auto b = uploadBackward(rt, (*inputs)[i], spec, o.seed + i);
      if (!b)
        return failWith(kCommand, b.message());
      backward.push_back(std::move(*b));
    }
    std::vector<BackwardProblem> workspaces;
    for (const DeviceBackwardProblem &d : backward)
      workspaces.push_back(d.problem);
    tuned = autotuneBackward(rt, workspaces, options);
  } else {
    std::vector<ForwardProblem> workspaces;
    for (const DeviceProblem &d : *inputs)
      workspaces.push_back(d.problem);
    tuned = autotune(rt, workspaces, options);
  }
  progress.finish();
  if (!tuned)
    return failWith(kCommand, tuned.message());
  const AutotuneResult &r = *tuned;
  const double wall = std::chrono::duration<double>(
                          std::chrono::steady_clock::now() - start)
                          .count();
  // The backward's FLOPs: 2.5x the forward's (five products to its two).
  const double flops = (o.backward ? 2.5 : 1.0) * forwardFlops(shape);
  auto tflops = [&](double ms) {
    return std::isfinite(ms) ? flops / (ms * 1e-3) / 1e12 : 0.0;
  };
  const CandidateResult &best = r.ranked.front();
  auto isBaseline = [&](const CandidateResult &c) {
    return c.config == r.baseline.config && c.splits == r.baseline.splits;
  };
  const int failed = int(std::count_if(r.ranked.begin(), r.ranked.end(),
                                       [](auto &c) { return !c.ok(); }));

  if (o.json) {
    nlohmann::json j = spaceJson(r.space);
    j["device"] = rt.device().name;
    j["problem"] = problem;
    j["direction"] = o.backward ? "backward" : "forward";
    j["key"] = r.key.text();
    j["workspaces"] = r.workspaces;
    j["compile_s"] = r.compileSeconds;
    j["measure_s"] = r.measureSeconds;
    j["wall_s"] = wall;
    j["stored_in"] = r.storedIn;
    j["oracle_check"] = r.oracleCheck;
    if (!r.storeError.empty())
      j["store_error"] = r.storeError;
    for (const CandidateResult &c : r.ranked) {
      nlohmann::json e = {{"config", toJson(c.config)},
                          {"default", isBaseline(c)},
                          {"registers", c.registers},
                          {"local_bytes", c.localBytes}};
      if (c.splits)
        e["splits"] = c.splits;
      if (c.ok())
        e["splits_run"] = c.splitsRun;
      if (c.ok())
        e.update({{"ms", c.ms}, {"min_ms", c.minMs}, {"tflops", tflops(c.ms)}});
      else
        e["failure"] = c.failure;
      j["candidates"].push_back(std::move(e));
    }
    std::printf("%s\n", j.dump(2).c_str());
    return best.ok() && !r.oracleCheck.empty() && r.storeError.empty() ? 0
                                                                       : 1;
  }

  printSpace(r.space);
  std::printf("timing:  %d candidates, %d warm-up + median of %d runs each, "
              "inputs rotated among %d workspaces\n\n",
              int(r.ranked.size()), o.warmup, o.repeats, r.workspaces);
  std::printf("%4s  %-40s %10s %10s %8s %9s %5s %s\n", "rank", "config",
              "median ms", "min ms", "TFLOP/s", "vs default", "regs", "");
  int shown = 0;
  for (const CandidateResult &c : r.ranked) {
    if (!c.ok() || shown >= o.top)
      continue;
    ++shown;
    const bool isDefault = isBaseline(c);
    const std::string note =
        isDefault && c.localBytes ? "default, spills"
        : isDefault               ? "default"
        : c.localBytes            ? "spills"
                                  : "";
    std::printf("%4d  %-40s %10.4f %10.4f %8.1f %8.2fx %5d %s\n", shown,
                candidateText(c.config, c.splits).c_str(), c.ms, c.minMs, tflops(c.ms),
                r.baseline.ok() ? r.baseline.ms / c.ms : 0.0, c.registers,
                note.c_str());
  }
  if (failed) {
    std::printf("\n%d candidates failed (scored as infinitely slow):\n",
                failed);
    for (const CandidateResult &c : r.ranked)
      if (!c.ok())
        std::printf("  %-40s %s\n", candidateText(c.config, c.splits).c_str(),
                    c.failure.substr(0, 160).c_str());
  }
  std::printf("\ntuned in %.1f s (compile %.1f s, measure %.1f s)\n", wall,
              r.compileSeconds, r.measureSeconds);
  if (!best.ok())
    return failWith(kCommand, "every candidate failed; nothing stored");
  std::printf("best:    %s  %.4f ms  %.1f TFLOP/s",
              candidateText(best.config, best.splits).c_str(),
              best.ms, tflops(best.ms));
  if (r.baseline.ok())
    std::printf("  (default %s: %.4f ms, %.1f TFLOP/s; %.2fx)",
                candidateText(r.baseline.config, r.baseline.splits).c_str(),
                r.baseline.ms,
                tflops(r.baseline.ms), r.baseline.ms / best.ms);
  std::printf("\n");
  if (!r.oracleCheck.empty()) {
    std::printf("checked: the winner against the float64 reference:\n");
    std::istringstream lines(r.oracleCheck.substr(r.oracleCheck.find(": ") + 2));
    for (std::string line; std::getline(lines, line);)
      std::printf("         %s\n", line.c_str());
  }
  if (!r.storedIn.empty())
    std::printf("stored:  %s (bucket %s)\n", r.storedIn.c_str(),
                toString(r.key.bucket).c_str());
  if (!r.storeError.empty())
    return failWith(kCommand,
                    "the ranking above was not stored: " + r.storeError);
  if (r.oracleCheck.empty())
    return failWith(kCommand, "no candidate passed the float64 check (see "
                              "the failures above)");
  return 0;
}
} // namespace

void addAutotuneCommand(CLI::App &app, int &exitCode) {
  auto o = std::make_shared<AutotuneCliOptions>();
  CLI::App *cmd = app.add_subcommand(
      "autotune",
      "Find the fastest tile config for a problem on this GPU: compile every "
      "candidate in parallel, time each (CUDA events, median), check each "
      "against the default config's output and the winner against the "
      "float64 reference (the 2x rule), and store the winner in the "
      "tune database (tune.json in the cache directory), which run, bench "
      "and the APIs then use for problems of the same shape bucket");
  o->problem.addTo(*cmd);
  addSeedOption(*cmd, o->seed, "Seed of the random normal inputs");
  cmd->add_option("--warmup", o->warmup, "Untimed runs of each candidate")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  cmd->add_option("--repeats", o->repeats,
                  "Timed runs of each candidate; the median ranks it")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_option("--threads", o->threads,
                  "Compile threads (default: one per CPU thread)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--top", o->top, "Configs shown in the table")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_flag("--json", o->json,
                "Print every candidate's result as JSON instead of the table");
  cmd->add_flag("--no-store", o->noStore,
                "Do not write the winner to the tune database");
  cmd->add_flag("--backward", o->backward,
                "Tune the backward's main kernel instead (its block_m, "
                "block_n, warps): each workspace runs the forward first for O "
                "and LSE, candidates are checked on dQ, dK, dV (and dBias), "
                "the winner against the float64 backward; planBackward then "
                "uses it");
  cmd->add_flag("--list-space", o->listSpace,
                "Only print the search space for --arch (candidates and "
                "pruning counts); needs no GPU");
  cmd->add_option("--arch", o->arch,
                  "--list-space: target GPU, " + archChoices())
      ->capture_default_str();
  cmd->callback([o, &exitCode] { exitCode = autotuneCommand(*o); });
}

} // namespace flashjit::cli
