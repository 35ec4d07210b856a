//===- BenchCommand.cpp - flashjit bench: TFLOP/s of shapes or a sweep -----===//
//
// Times the forward kernel on given shapes, or on a sweep over head dims
// and sequence lengths, with the config the runtime picks (tuned where the
// tune database has the bucket, else the per-arch default) or the one
// given, and prints a table or JSON.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"
#include "Problem.h"

#include "flashjit/runtime/Autotune.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

namespace flashjit::cli {

namespace {
struct BenchOptions {
  ProblemOptions problem;
  std::vector<std::string> headDims; ///< parsed by parseIntList
  std::vector<std::string> seqlens;
  uint64_t seed = 0;
  int warmup = 5;
  int repeats = 20;
  int backToBack = 1;
  bool json = false;
  bool backward = false;
};

constexpr const char *kCommand = "bench";

struct Row {
  ForwardProblem shape;
  AttentionSpec spec;
  std::string failure;
  TileConfig config;
  ConfigSource source = ConfigSource::Default;
  std::string kernel;
  double ms = 0, minMs = 0, tflops = 0;
  double kvGBps = 0; ///< K+V bytes read / time
  int numSplits = 1;
};

/// Times one shape with the runtime's choice of config.
Status benchOne(Runtime &rt, const BenchOptions &o, Row &row) {
  auto uploaded = uploadWorkspaces(rt, row.shape, row.spec, o.seed);
  if (!uploaded)
    return uploaded.status();
  std::vector<DeviceProblem> &inputs = *uploaded;
  auto tile = explicitTile(o.problem, inputs.front().problem, rt.arch());
  if (!tile)
    return tile.status();
  std::vector<ForwardPlan> plans;
  for (DeviceProblem &d : inputs) {
    d.problem.tile = *tile;
    auto plan = rt.planForward(d.problem, /*fullKernel=*/true);
    if (!plan)
      return plan.status();
    plans.push_back(std::move(*plan));
  }
  row.config = plans.front().config;
  row.source = plans.front().source;
  row.kernel = plans.front().kernel->name;
  row.numSplits = plans.front().numSplits;
  auto timing = timePlans(rt, plans, o.warmup, o.repeats, o.backToBack);
  if (!timing)
    return timing.status();
  row.ms = timing->ms;
  row.minMs = timing->minMs;
  row.tflops = forwardFlops(row.shape) / (row.ms * 1e-3) / 1e12;
  row.kvGBps = kvBytes(row.shape) / (row.ms * 1e-3) / 1e9;
  return Status::ok();
}

int bench(const BenchOptions &o) {
  // Every shape of the sweep is described (and its usage errors found)
  // before looking for a GPU.
  if (!o.seqlens.empty() &&
      (!o.problem.seqlensQ.empty() || !o.problem.seqlensK.empty()))
    return failWith(kCommand,
                    "--seqlens sweeps dense sequence lengths; it cannot be "
                    "combined with --seqlens-q/--seqlens-k (varlen)",
                    2);
  if (!o.headDims.empty() && o.problem.spec.headDimV)
    return failWith(kCommand,
                    "--head-dims sweeps head_dim_qk = head_dim_v; it cannot "
                    "be combined with --head-dim-v",
                    2);
  if (o.backward && o.json)
    return failWith(kCommand, "--json does not apply to --backward yet", 2);
  if (o.backward && o.backToBack != 1)
    return failWith(kCommand,
                    "--back-to-back does not apply to --backward yet (each "
                    "backward call is timed alone)",
                    2);
  auto headDims = parseIntList("--head-dims", o.headDims, kMinHeadDim,
                               kMaxHeadDim);
  if (!headDims)
    return failWith(kCommand, headDims.message(), 2);
  auto seqlens = parseIntList("--seqlens", o.seqlens, 1, 2147483647);
  if (!seqlens)
    return failWith(kCommand, seqlens.message(), 2);
  std::vector<Row> rows;
  const std::vector<int64_t> dims =
      headDims->empty() ? std::vector<int64_t>{o.problem.spec.headDim}
                        : *headDims;
  std::vector<std::optional<int64_t>> lengths;
  for (int64_t s : *seqlens)
    lengths.push_back(s);
  if (lengths.empty())
    lengths.push_back(std::nullopt);
  for (int64_t d : dims) {
    for (const auto &len : lengths) {
      ProblemOptions po = o.problem;
      po.spec.headDim = static_cast<int>(d);
      if (len && o.problem.decode) { // decode sweeps the cache length
        po.seqlenK = *len;
      } else if (len) {
        po.seqlen = *len;
        po.seqlenQ.reset();
        po.seqlenK.reset();
      }
      if (o.backward) { // one report per shape, as run --backward prints
        if (int rc = runBackward(kCommand, po, o.seed, /*check=*/false, 0,
                                 o.warmup, o.repeats))
          return rc;
        continue;
      }
      Row row;
      Arch unusedArch;
      if (Status s = po.spec.resolve(row.spec, unusedArch); !s)
        return failWith(kCommand, s.message(), 2);
      if (Status s = describeProblem(po, row.spec, row.shape); !s)
        return failWith(kCommand, s.message(), 2);
      if (Status s = checkTileOptions(po, row.shape); !s)
        return failWith(kCommand, s.message(), 2);
      rows.push_back(std::move(row));
    }
  }
  if (o.backward)
    return 0;
  auto created = Runtime::create();
  if (!created)
    return failWith(kCommand, created.message());
  Runtime &rt = **created;
  const DeviceInfo &dev = rt.device();
  int failures = 0;
  for (Row &row : rows)
    if (Status s = benchOne(rt, o, row); !s) {
      row.failure = s.message();
      ++failures;
    }

  if (o.json) {
    nlohmann::json j;
    j["device"] = dev.name;
    j["cuda_driver"] = formatCudaVersion(rt.driverVersion());
    j["back_to_back"] = o.backToBack;
    j["rows"] = nlohmann::json::array();
    for (const Row &r : rows) {
      nlohmann::json e = {
          {"problem", problemText(r.shape, o.problem.layout, r.spec.writeLse)},
          {"head_dim_qk", r.shape.headDimQK}, {"head_dim_v", r.shape.headDimV},
          {"seqlen_q", r.shape.seqlenQ},      {"seqlen_k", r.shape.seqlenK},
          {"batch", r.shape.batch},           {"heads_q", r.shape.headsQ},
          {"mask", std::string(toString(r.shape.mask))},
          {"dtype", std::string(toString(r.shape.dtype))}};
      if (r.failure.empty())
        e.update({{"config", configText(r.config)},
                  {"config_source", std::string(toString(r.source))},
                  {"kernel", r.kernel},
                  {"ms", r.ms},
                  {"min_ms", r.minMs},
                  {"tflops", r.tflops},
                  {"kv_gbps", r.kvGBps},
                  {"splits", r.numSplits}});
      else
        e["failure"] = r.failure;
      j["rows"].push_back(std::move(e));
    }
    std::printf("%s\n", j.dump(2).c_str());
    return failures ? 1 : 0;
  }
  std::printf("device: %s\n", deviceText(rt).c_str());
  const std::string launches =
      o.backToBack > 1 ? " of " + std::to_string(o.backToBack) +
                             " launches back to back (time per launch)"
                       : "";
  std::printf("median of %d runs%s after %d warm-up; TFLOP/s count only the "
              "work the mask keeps\n\n",
              o.repeats, launches.c_str(), o.warmup);
  const bool decode = o.problem.decode;
  std::printf("%8s %8s %8s %-7s %-5s %-40s %-8s %10s %8s%s\n", "head_dim",
              "seqlen_q", "seqlen_k", "mask", "dtype", "config", "source",
              "median ms", "TFLOP/s",
              decode ? "   splits  K+V GB/s" : "");
  for (const Row &r : rows) {
    const std::string dim =
        r.shape.headDimQK == r.shape.headDimV
            ? std::to_string(r.shape.headDimQK)
            : std::to_string(r.shape.headDimQK) + "/" +
                  std::to_string(r.shape.headDimV);
    if (!r.failure.empty()) {
      std::printf("%8s %8lld %8lld %-7s %-5s FAILED: %s\n", dim.c_str(),
                  (long long)r.shape.seqlenQ, (long long)r.shape.seqlenK,
                  std::string(toString(r.shape.mask)).c_str(),
                  std::string(toString(r.shape.dtype)).c_str(),
                  r.failure.c_str());
      continue;
    }
    char decodeColumns[64] = "";
    if (decode)
      std::snprintf(decodeColumns, sizeof decodeColumns, " %8d %9.1f",
                    r.numSplits, r.kvGBps);
    std::printf("%8s %8lld %8lld %-7s %-5s %-40s %-8s %10.4f %8.1f%s\n",
                dim.c_str(), (long long)r.shape.seqlenQ,
                (long long)r.shape.seqlenK,
                std::string(toString(r.shape.mask)).c_str(),
                std::string(toString(r.shape.dtype)).c_str(),
                configText(r.config).c_str(),
                std::string(toString(r.source)).c_str(), r.ms, r.tflops,
                decodeColumns);
  }
  return failures ? 1 : 0;
}
} // namespace

void addBenchCommand(CLI::App &app, int &exitCode) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App *cmd = app.add_subcommand(
      "bench",
      "Time the forward kernel (TFLOP/s; with --decode also its K+V GB/s) or "
      "with --backward the backward's, on one shape or a sweep over head "
      "dims and sequence lengths, with the config the runtime picks: tuned "
      "(from `flashjit autotune`) where the tune database has the shape's "
      "bucket, else the per-arch default; or the tile options given");
  o->problem.addTo(*cmd);
  cmd->add_option("--head-dims", o->headDims,
                  "Sweep: comma-separated head dims, 1..256 (replaces "
                  "--head-dim)");
  cmd->add_option("--seqlens", o->seqlens,
                  "Sweep: comma-separated sequence lengths, used for both "
                  "queries and keys (replaces --seqlen); with --decode the "
                  "cache lengths (seqlen_k)");
  addSeedOption(*cmd, o->seed, "Seed of the random normal inputs");
  cmd->add_option("--warmup", o->warmup, "Untimed runs per shape")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  cmd->add_option("--repeats", o->repeats,
                  "Timed runs per shape (CUDA events); the median is reported")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  cmd->add_option("--back-to-back", o->backToBack,
                  "Launches queued at once per timed run, the time per "
                  "launch reported: the sustained rate of a caller launching "
                  "in a loop (clocks under that load); 1: each launch alone")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "Print the results as JSON");
  cmd->add_flag("--backward", o->backward,
                "Time the backward's kernels instead (FLOPs counted as 2.5x "
                "the forward's), per shape as `run --backward` reports");
  cmd->callback([o, &exitCode] { exitCode = bench(*o); });
}

} // namespace flashjit::cli
