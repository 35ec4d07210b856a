//===- Autotune.h - Measure the tile configs of a problem, keep the best --===//
//
// Plain C++ over the public Runtime API. For one problem: enumerate and
// prune the search space, compile the candidates on every CPU thread, time
// each on the GPU (CUDA events, warm-up, median of repeats, inputs rotated
// among workspaces that together exceed L2), check each one's output
// against the first valid candidate (the per-arch default), rank them,
// check the winner against the float64 reference (the 2x rule: a bug that
// every config shares passes the first check, not this one) and store it in
// the tune database. A candidate that fails to compile, launch or match
// scores as infinitely slow; it never stops the run.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_RUNTIME_AUTOTUNE_H
#define FLASHJIT_RUNTIME_AUTOTUNE_H

#include "flashjit/kernels/SearchSpace.h"
#include "flashjit/runtime/Runtime.h"
#include "flashjit/runtime/TuneDatabase.h"

#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace flashjit {

struct AutotuneOptions {
  int warmup = 3;
  int repeats = 15;
  /// Compile threads; 0: one per CPU thread.
  int compileThreads = 0;
  /// Store the winner in the runtime's tune database.
  bool store = true;
  /// (batch, head) slices of the winner's output recomputed in float64
  /// (sampleSlices: the first, the last and random ones) before it wins;
  /// every other slice is scanned for unwritten and non-finite elements.
  int oracleSlices = 3;
  ForwardKnobs knobs;
  /// Decode-like problems (seqlen_q x GQA group <= kDecodeMaxTileRows).
  DecodeKnobs decodeKnobs;
  BackwardKnobs backwardKnobs;
  /// Called after each step, one call at a time: phase ("compile" or
  /// "measure"), steps done and total in that phase.
  std::function<void(std::string_view phase, int done, int total)> progress;
};

struct CandidateResult {
  TileConfig config;
  /// Decode: split-KV CTAs per row block it was planned with (0: the
  /// runtime's heuristic), and the count its plans launched (1: none).
  int splits = 0;
  int splitsRun = 1;
  /// Median and fastest time of the timed runs; infinity when it failed.
  double ms = std::numeric_limits<double>::infinity();
  double minMs = std::numeric_limits<double>::infinity();
  /// Why it failed (compile, launch or output check); empty when it ran.
  std::string failure;
  int registers = 0;
  int localBytes = 0; ///< spills
  bool ok() const { return failure.empty(); }
};

struct AutotuneResult {
  AttentionSpec spec;
  TuneKey key;
  /// What was enumerated, pruned (with reasons) and compiled.
  SearchSpace space;
  /// Fastest first; failed candidates last.
  std::vector<CandidateResult> ranked;
  /// The per-arch default's result (also in `ranked`).
  CandidateResult baseline;
  int workspaces = 0;
  double compileSeconds = 0;
  double measureSeconds = 0;
  /// Where the winner was stored; empty when it was not (see storeError).
  std::string storedIn;
  /// Why the winner was not stored, when storing was asked for and failed
  /// (the ranking is still valid), or no candidate passed the float64 check.
  std::string storeError;
  /// The winner's config and its check against the float64 reference
  /// (CheckResult::summary); empty when none passed (see the candidates'
  /// failures: "oracle: ...").
  std::string oracleCheck;
};

/// How many workspaces of `bytesPerWorkspace` (inputs and outputs of one
/// call) the timing rotates among so that no run finds its inputs in an L2
/// of `l2Bytes`: together at least twice L2, and at least two.
int workspacesToRotate(size_t bytesPerWorkspace, int64_t l2Bytes);
/// A bound on workspacesToRotate for problems of a few bytes.
inline constexpr int kMaxWorkspaces = 4096;

/// Median and fastest CUDA-event time of one plan.
struct Timing {
  double ms = 0;
  double minMs = 0;
};
/// Launches `warmup` untimed runs, then times `repeats` runs one by one
/// (CUDA events), rotating among `plans` (one per workspace). repeats >= 1.
/// A run is `backToBack` launches queued at once, timed together and
/// divided: 1 times each launch alone; more, the rate of a caller that
/// launches in a loop (the GPU never idles, its clocks under that load).
Expected<Timing> timePlans(Runtime &runtime,
                           const std::vector<ForwardPlan> &plans, int warmup,
                           int repeats, int backToBack = 1);

/// What autotune searches for `problem` (of spec `spec`) on `arch`: for a
/// decode-like problem (seqlen_q x GQA group <= kDecodeMaxTileRows, where
/// the sm80 family is searched) the decode table's neighbourhood with split
/// counts (decodeSearchSpace), the runtime's own choice first; otherwise
/// the forward families' tiles (forwardSearchSpace).
SearchSpace forwardSearchSpaceFor(const ForwardProblem &problem,
                                  const AttentionSpec &spec, Arch arch,
                                  const AutotuneOptions &options = {});

/// Tunes the problem of `workspaces` (the same sizes, strides and features
/// over different buffers, all inputs filled; `tile` is ignored).
Expected<AutotuneResult> autotune(Runtime &runtime,
                                  const std::vector<ForwardProblem> &workspaces,
                                  const AutotuneOptions &options = {});
/// Tunes the backward's main kernel for the problem of `workspaces` (each
/// with its forward's O and LSE, and dO, filled; `tile` and `workspace`
/// are ignored: the search allocates the scratch its largest candidate
/// needs). The winner is stored under the backward spec's key, where
/// planBackward finds it.
Expected<AutotuneResult>
autotuneBackward(Runtime &runtime,
                 const std::vector<BackwardProblem> &workspaces,
                 const AutotuneOptions &options = {});

} // namespace flashjit

#endif // FLASHJIT_RUNTIME_AUTOTUNE_H
