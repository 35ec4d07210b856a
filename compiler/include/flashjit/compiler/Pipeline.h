//===- Pipeline.h - spec -> MLIR -> PTX, the one compile entry point -------===//
//
// The runtime knows the compiler through this header alone. It includes no
// MLIR: the stages are named here and built in compiler/lib/Pipeline.cpp.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_COMPILER_PIPELINE_H
#define FLASHJIT_COMPILER_PIPELINE_H

#include "flashjit/compiler/AttentionSpec.h"
#include "flashjit/compiler/KernelFamily.h"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace flashjit {

/// Pipeline stages, in order. Names are shared by the CLI's --emit, the
/// files of --dump-dir and the lit test folders.
enum class Stage { Tile, Gpu, Nvvm, Llvm, Ptx };
inline constexpr Stage kAllStages[] = {Stage::Tile, Stage::Gpu, Stage::Nvvm,
                                       Stage::Llvm, Stage::Ptx};
std::string_view toString(Stage s);
std::optional<Stage> parseStage(std::string_view s);
std::string stageChoices();
/// File name of a stage's text in a dump directory (kernel.tile.mlir, ...).
std::string stageFileName(Stage s);

struct CompileOptions {
  /// Stop after this stage (its text is in Artifact::stageText).
  Stage stopAfter = Stage::Ptx;
  /// Keep the text of every stage up to stopAfter (for --dump-dir).
  bool keepAllStages = false;
};

/// What a compile produces: the PTX plus what the launcher needs.
struct Artifact {
  std::string kernelName;
  std::string ptx;           ///< empty when stopped before Stage::Ptx
  /// Threads, shared memory, rows per CTA, ptxas level, tensor maps: the
  /// family's launchFacts(spec, config).
  LaunchFacts launch;
  /// Text of the kept stages, in pipeline order.
  std::vector<std::pair<Stage, std::string>> stageText;
  /// Wall time of each stage that ran, in milliseconds, in pipeline order.
  std::vector<std::pair<Stage, double>> stageMillis;
  const std::string *text(Stage s) const;
};

/// Compiles one kernel. Validates spec and config first; every failure,
/// including one inside MLIR or LLVM, comes back as a Status with the
/// diagnostics in its message.
Expected<Artifact> compile(const AttentionSpec &spec, const TileConfig &config,
                           Arch arch, const CompileOptions &options = {});

/// Bumped whenever the generated code or the kernel ABI changes. It is part
/// of flashjitVersion(), so kernels and tuned configs cached by an older
/// build of the same release are not reused (2: register fixes, in
/// bench/results/2026-12-02-h200-sm80-tuning.md; 3: rescale on a new maximum, O staged through shared memory; 4: the
/// FlashAttention-2 order for one stage; 5: causal CTAs longest first; 6:
/// swizzled shared-memory rows; 7: unpadded rows with an XOR swizzle of up
/// to 3 bits, no static shared memory; 8: padded rows again for 4-warp tiles
/// short of registers; 9: run-time loops for the prologue's copies and the
/// epilogue's stores, a lean LLVM middle end instead of O3; 10: nvvm.mma.sync
/// on scalar accumulators, a 32-bit division in the causal CTA order,
/// rcp.approx for 1 / l; 11: Q K^T as a run-time loop at d = 121-128 with a
/// mask; 12: row sums add 16-key slices in order, as the quick form does;
/// 13: kernel families, the sm90 family the default on sm_90a; 14: a paged
/// cache's rows looked up once per warp and shuffled to the copying lanes;
/// 15: the backward's short steps copy LSE' and D into shared memory; 16:
/// the sm90 overlap keeps the previous P live to its P V's wait; 17: the
/// sm90 backward loads by TMA and adds dQ by bulk reductions; 18: its
/// split dQ columns add 64 columns per warpgroup; 19: a bias tensor's
/// index in another order, the sm90 backward's bias and softcap; 20: the
/// sm90 forward's copying producer keeps 40 registers, its consumers' 232
/// fitting the CTA's 168 x 384: 48 hung setmaxnreg.inc).
inline constexpr int kCodegenRevision = 20;

/// Version strings that identify the code the compiler emits (cache keys):
/// flashjit's is the release plus "+cg<kCodegenRevision>".
std::string flashjitVersion();
std::string llvmVersion();

} // namespace flashjit

#endif // FLASHJIT_COMPILER_PIPELINE_H
