//===- Runtime.h - flashjit's C++ API: compile, cache and launch ----------===//
//
// Plain C++ (no cuda.h, no MLIR). A Runtime owns the driver, one device's
// primary context and the kernel caches; attentionForward() specialises,
// compiles (once per specialisation), and launches on the caller's stream.
//
//   auto rt = flashjit::Runtime::create();
//   if (!rt) { report(rt.message()); return; }
//   flashjit::ForwardProblem p;
//   p.dtype = flashjit::DType::BF16; p.batch = 4; p.headsQ = p.headsKV = 16;
//   p.seqlenQ = p.seqlenK = 4096; p.headDimQK = p.headDimV = 80;
//   p.setDenseBSHD();
//   p.q = q; p.k = k; p.v = v; p.o = o;
//   if (flashjit::Status s = (*rt)->attentionForward(p, stream); !s) ...
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_RUNTIME_RUNTIME_H
#define FLASHJIT_RUNTIME_RUNTIME_H

#include "flashjit/kernels/AttentionParams.h"
#include "flashjit/kernels/Backward.h"
#include "flashjit/kernels/BackwardParams.h"
#include "flashjit/kernels/Decode.h"
#include "flashjit/kernels/Forward.h"
#include "flashjit/runtime/Device.h"
#include "flashjit/runtime/ModuleCache.h"
#include "flashjit/runtime/TuneDatabase.h"

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace flashjit {

/// One forward call: the problem (sizes, strides in elements, dtype, mask,
/// scale) plus device pointers. The last dimension of every tensor is
/// contiguous. Batch and sequence lengths are run-time arguments: changing
/// them never recompiles.
struct ForwardProblem : AttentionParams {
  const void *q = nullptr;
  const void *k = nullptr;
  const void *v = nullptr;
  void *o = nullptr;
  /// Optional float32 log-sum-exp output (natural log); null: not written.
  float *lse = nullptr;
  /// BiasMode::Tensor: the bias (dtype of Q, laid out by biasShape).
  const void *biasData = nullptr;
  /// BiasMode::Alibi: float32 slopes (see alibiBatchStride).
  const float *alibiSlopes = nullptr;
  /// Device copies of varlen->cuSeqlensQ/K and of keyLengths (int32). The
  /// host copies in AttentionParams are what validation checks before the
  /// launch; they must hold the same values.
  const int32_t *deviceCuSeqlensQ = nullptr;
  const int32_t *deviceCuSeqlensK = nullptr;
  const int32_t *deviceKeyLengths = nullptr;
  /// The device copies are trusted where the host copies are empty: such
  /// values are neither read nor checked (nothing synchronises), seqlenQ /
  /// seqlenK must bound every sequence and totalQ / totalK the packed rows,
  /// as FlashAttention trusts max_seqlen (CUDA graphs, frameworks). Key
  /// lengths are then on when deviceKeyLengths is set.
  bool trustDeviceLengths = false;
  /// Overrides the tuned or per-arch default tile config.
  std::optional<TileConfig> tile;

  // ---- decode: a paged KV cache, the append path, split-KV (Decode.h) ----
  /// AttentionParams::paged: the device copy of the block table (int32
  /// [batch, maxPagesPerSeq]); deviceKeyLengths holds the cache lengths.
  const int32_t *deviceBlockTable = nullptr;
  /// AttentionParams::newKeys > 0: the new K/V rows (dtype of Q, laid out
  /// by kNewStrides / vNewStrides), written into their pages by the same
  /// call before the attention.
  const void *kNew = nullptr;
  const void *vNew = nullptr;
  /// Split-KV (flash-decoding): the CTAs of a row block split its keys and
  /// a combine kernel merges their float32 partials. 0: the runtime chooses
  /// for decode-like problems (a row block of at most kDecodeMaxTileRows
  /// rows, or a paged cache) from the SM count and the grid (chooseSplits),
  /// and takes 1 for others; 1: no split; n: n splits (at most kMaxSplits,
  /// and batch x n at most 65535). Results differ only by float32 rounding.
  int numSplits = 0;

  // ---- scratch (both directions) -----------------------------------------
  /// Device scratch of the call's kernels, used by its launch only: a split
  /// forward's float32 partials, the backward's float32 row arrays and dQ
  /// sums. At least Runtime::forwardWorkspaceBytes (0 for a forward that
  /// does not split) or Runtime::backwardWorkspaceBytes bytes, 16-byte
  /// aligned; workspaceBytes is its size, checked against the need. Null:
  /// the runtime keeps one per stream, grown as needed (growing synchronises
  /// the stream, which a CUDA-graph capture refuses: pass one there).
  void *workspace = nullptr;
  size_t workspaceBytes = 0;

  /// Key lengths are given (host copies, or trusted device values).
  bool hasKeyLengths() const {
    return !keyLengths.empty() || (trustDeviceLengths && deviceKeyLengths);
  }
};

/// Checks every argument; the message names the argument and the accepted
/// range ("heads_q (12) must be a multiple of heads_kv (5)").
Status validate(const ForwardProblem &problem);

/// The compile-time facts a problem needs: dtype, head dims, mask, GQA
/// group, LSE on/off, bias kind, softcap, varlen, key lengths and the widest
/// alignment that its pointers and strides allow. Assumes validate(problem)
/// passed.
AttentionSpec specFor(const ForwardProblem &problem);

/// Where a plan's tile config came from.
enum class ConfigSource {
  Explicit, ///< ForwardProblem::tile
  Tuned,    ///< the tune database's entry for the problem's bucket
  Default,  ///< defaultTileConfig, the per-arch heuristic
};
std::string_view toString(ConfigSource source);

/// A validated, specialised and compiled forward call, ready to launch.
struct ForwardPlan {
  AttentionSpec spec;
  TileConfig config;
  ConfigSource source = ConfigSource::Default;
  ModuleCache::Kernel kernel;
  unsigned grid[3] = {1, 1, 1};
  ForwardKernelArgs args{};
  /// Threads, shared memory and tensor maps of the kernel (its family's
  /// LaunchFacts for spec and config).
  LaunchFacts launch;
  /// The TMA tensor maps (CUtensorMap) passed after args, by value.
  struct alignas(64) TensorMap {
    unsigned char bytes[128];
  };
  static constexpr int kMaxTensorMaps = 4; ///< Q, K, V, dO
  TensorMap tensorMaps[kMaxTensorMaps];
  int tensorMapCount = 0;

  // ---- decode (spec.pagedKV, spec.splitKV) --------------------------------
  /// Passed after args when the spec has pagedKV or splitKV; the launch
  /// fills in the partials' addresses.
  DecodeKernelArgs decode{};
  /// Splits of every row block (grid[2] is batch x numSplits); 1: none.
  int numSplits = 1;
  /// The workspace this call needs (bytes; 0: none) and the caller's
  /// (ForwardProblem::workspace), or null for the runtime's own: a split
  /// forward's partials (PartialLayout), or the backward's arrays
  /// (BackwardPlan::workspaceLayout).
  size_t workspaceBytes = 0;
  void *workspace = nullptr;
  /// Where the split partials' LSE starts in the workspace (bytes).
  size_t partialLseOffset = 0;
  /// The combine kernel (splits > 1): args (partials filled in at launch)
  /// and grid x.
  CombineKernelArgs combine{};
  unsigned combineGrid = 0;
  /// The append kernel (newKeys > 0): args and grid (x, batch).
  AppendKernelArgs append{};
  unsigned appendGrid[2] = {0, 0};
};

/// One backward call: its forward call (q, k, v; o the forward's output and
/// lse its log-sum-exp, both required; the same mask, scale, bias, softcap,
/// varlen and key lengths) plus dO and where the gradients go. dQ, dK, dV
/// have the extents of Q, K, V and their own strides (last dimension
/// contiguous); dK and dV of a K/V head sum its GQA group's query heads;
/// key padding rows (past key lengths) get zero gradients.
struct BackwardProblem : ForwardProblem {
  const void *dO = nullptr;
  void *dQ = nullptr, *dK = nullptr, *dV = nullptr;
  Strides dOStrides, dQStrides, dKStrides, dVStrides;
  /// dQ summed without float atomics: the same bits on every run.
  bool deterministic = false;
  /// With a full [batch, heads_q, seqlen_q, seqlen_k] bias tensor: also
  /// write dBias (dtype of Q, element (b, h, i, j) at b * batch + h * head
  /// + i * row + j of dBiasStrides; under varlen too, positions within each
  /// sequence as the bias's). Pairs no query of a sequence reaches are 0.
  bool biasGrad = false;
  void *dBias = nullptr;
  Strides dBiasStrides;
  // The workspace is ForwardProblem's (workspace, workspaceBytes).

  /// The math problem (AttentionParams and the gradients' strides).
  BackwardParams params() const;
  /// Every stride dense BSHD, the gradients like their tensors, dBias
  /// dense [batch, heads_q, seqlen_q, seqlen_k].
  void setDenseBSHD();
};

/// validate(ForwardProblem) with the LSE required, plus dO and the
/// gradients (validateBackwardParams).
Status validate(const BackwardProblem &problem);
/// The backward spec of a problem: specFor of its forward, direction
/// backward, deterministic when asked.
AttentionSpec specFor(const BackwardProblem &problem);

/// A validated, specialised and compiled backward call: the main kernel's
/// plan (`main`: spec, config, kernel, grid and ForwardKernelArgs) and the
/// module's other two entries (Backward.h), launched in order by
/// Runtime::launch. The workspace is main's (workspace, workspaceBytes): the
/// launch fills in args.workspace, the caller's or the runtime's.
struct BackwardPlan {
  ForwardPlan main;
  void *preprocess = nullptr; ///< CUfunction of <name>_pre
  void *convert = nullptr;    ///< CUfunction of <name>_dq
  unsigned auxGrid[3] = {1, 1, 1};
  BackwardKernelArgs args{};
  /// Where the backward's arrays lie in the workspace.
  BackwardWorkspace workspaceLayout;
};

/// Where kernels came from, since this Runtime was created.
struct CacheStats {
  uint64_t memoryHits = 0; ///< found loaded in memory
  uint64_t diskHits = 0;   ///< loaded from a valid disk entry
  uint64_t compiles = 0;   ///< generated, JIT-compiled and loaded
  /// Quick forms compiled to stand in on cold misses (RuntimeOptions::
  /// quickFirst); the full kernels that replace them count above.
  uint64_t quickCompiles = 0;
  /// Where the compiles' time went (wall clock, summed over threads):
  /// spec -> PTX in flashjit's pipeline, PTX -> cubin in the driver's JIT.
  /// Every attempt counts, including ones that failed or did not load, so
  /// the time per compile is an upper bound when errors occurred.
  double generateMs = 0;
  double jitMs = 0;
};

struct RuntimeOptions {
  /// CUDA device ordinal.
  int device = 0;
  /// Keep compiled kernels on disk across processes.
  bool diskCache = true;
  /// Disk cache location; empty: DiskCache::defaultDirectory().
  std::string cacheDirectory;
  /// Take tile configs from the tune database (tune.json in the cache
  /// directory) where it has one for the problem's bucket.
  bool useTuned = true;
  /// On a cold miss (the kernel neither in memory nor on disk) of a default
  /// or tuned config, compile the kernel's quick form first (TileConfig::
  /// quick: bitwise the same results, about half the compile time), launch
  /// that, and compile the full kernel in the background; later plans get
  /// the full kernel once it is loaded. Explicit tile configs (autotune)
  /// always get exactly the kernel they name. Off: a cold miss waits for
  /// the full kernel.
  bool quickFirst = true;
  /// The kernel family of every plan without an explicit tile config;
  /// empty: the best family per arch and problem (preferredFamily).
  std::optional<Family> family;
};

class Runtime;

/// Device memory owned by a Runtime; freed on destruction.
class DeviceBuffer {
public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer &&other) noexcept { *this = std::move(other); }
  DeviceBuffer &operator=(DeviceBuffer &&other) noexcept;
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;
  ~DeviceBuffer() { reset(); }

  void *data() const { return ptr_; }
  size_t size() const { return bytes_; }
  void reset();

private:
  friend class Runtime;
  Runtime *owner_ = nullptr;
  void *ptr_ = nullptr;
  size_t bytes_ = 0;
};

class Runtime {
public:
  /// Loads the driver, picks the device, retains its primary context and
  /// opens the caches. Fails with the reason on machines without a driver,
  /// without that device or with an unsupported GPU.
  static Expected<std::unique_ptr<Runtime>>
  create(const RuntimeOptions &options = {});
  ~Runtime();
  Runtime(const Runtime &) = delete;
  Runtime &operator=(const Runtime &) = delete;

  const DeviceInfo &device() const;
  Arch arch() const;
  int driverVersion() const;
  /// The disk cache directory, or empty when the disk cache is off.
  const std::string &cacheDirectory() const;

  /// softmax(scale * Q K^T, mask) V into problem.o (and LSE into
  /// problem.lse), launched on `stream` (a CUstream; null: the legacy default
  /// stream). Compiles on the first call for a specialisation.
  Status attentionForward(const ForwardProblem &problem,
                          void *stream = nullptr);

  /// The steps of attentionForward, for callers that launch one plan many
  /// times (benchmarks) or want compile errors apart from launch errors.
  /// After a cold miss the plan may hold the quick form (kernel->source is
  /// Quick); `fullKernel` waits for the full kernel instead (benchmarks,
  /// which launch one plan many times).
  Expected<ForwardPlan> planForward(const ForwardProblem &problem,
                                    bool fullKernel = false);
  Status launch(const ForwardPlan &plan, void *stream = nullptr);

  /// The forward's workspace bytes (0 when it does not split: the
  /// split-KV partials), from the same choices as planForward, without
  /// compiling.
  Expected<size_t> forwardWorkspaceBytes(const ForwardProblem &problem);
  /// dQ, dK, dV of `problem` (the gradients of sum(O * dO)), launched on
  /// `stream`. The sm80 family builds it on every arch (on sm_90a too: no
  /// Hopper backward yet). Compiles on the first call for a specialisation.
  Status attentionBackward(const BackwardProblem &problem,
                           void *stream = nullptr);
  /// The steps of attentionBackward (as planForward and launch).
  Expected<BackwardPlan> planBackward(const BackwardProblem &problem);
  Status launch(const BackwardPlan &plan, void *stream = nullptr);
  /// The backward's workspace bytes (its float32 row arrays and dQ sums).
  /// Compiles and loads its kernels if need be: also the backward's
  /// prepare.
  Expected<size_t> backwardWorkspaceBytes(const BackwardProblem &problem);

  // ---- tuning -----------------------------------------------------------------
  /// The tune database key of a problem on this GPU, driver and version
  /// (a backward problem's names its backward spec).
  TuneKey tuneKey(const ForwardProblem &problem) const;
  TuneKey tuneKey(const BackwardProblem &problem) const;
  /// The tuned config the runtime would use for `problem`, if any (checked
  /// against the spec and arch: an entry that does not validate is ignored).
  std::optional<TuneEntry> tunedEntry(const ForwardProblem &problem);
  std::optional<TuneEntry> tunedEntry(const BackwardProblem &problem);
  /// Stores an entry in the tune database; later plans in this Runtime use
  /// it. Returns the database's path.
  Expected<std::string> storeTuned(const TuneKey &key, const TuneEntry &entry);

  CacheStats cacheStats() const;
  /// Waits until the full kernels being compiled in the background (behind
  /// their quick forms) are loaded, or have failed with a warning.
  void finishCompiles();
  /// Forgets the loaded kernels (the disk cache stays): the next call for a
  /// specialisation goes to disk, as a new process would.
  void clearMemoryCache();

  // ---- memory and timing helpers (tests, CLI, benchmarks) ------------------
  Expected<DeviceBuffer> allocate(size_t bytes);
  Status copyToDevice(void *dst, const void *src, size_t bytes);
  Status copyToHost(void *dst, const void *src, size_t bytes);
  /// Sets `count` 16-bit (32-bit) words at `dst` to `value`, on `stream`.
  Status fill16(void *dst, uint16_t value, size_t count,
                void *stream = nullptr);
  Status fill32(void *dst, uint32_t value, size_t count,
                void *stream = nullptr);
  Status synchronize(void *stream = nullptr);
  /// GPU time in milliseconds of the work `enqueue` puts on `stream`,
  /// measured with CUDA events (waits for it to finish).
  Expected<float> timeMs(const std::function<Status()> &enqueue,
                         void *stream = nullptr);

private:
  struct Impl;
  explicit Runtime(std::unique_ptr<Impl> impl);
  friend class DeviceBuffer;
  Status free(void *ptr);
  /// Validates `problem` and fills in the plan's spec, tile config, its
  /// source, the split count, the grid and the workspace (nothing is
  /// compiled).
  Status choosePlan(const ForwardProblem &problem, ForwardPlan &plan);
  /// `specKey`: the spec's packed in-memory key (Runtime.cpp). `allowQuick`:
  /// a cold miss may return the quick form (RuntimeOptions::quickFirst).
  Expected<ModuleCache::Kernel> kernelFor(const AttentionSpec &spec,
                                          const TileConfig &config,
                                          const std::string &specKey,
                                          bool allowQuick);
  std::optional<TuneEntry> tunedEntryFor(const TuneKey &key);
  /// A plan's config, where it came from, and the split count a tuned
  /// decode entry ran with (0: none).
  struct ConfigChoice {
    TileConfig config;
    ConfigSource source = ConfigSource::Default;
    int splits = 0;
  };
  /// The config of a plan that names none: the tuned one for `key`, else
  /// the default of `family` (preferredFamily's when null); remembered per
  /// spec and shape bucket.
  ConfigChoice chosenConfig(const AttentionSpec &spec,
                            const std::string &specKey, const TuneKey &key,
                            const Family *family);

  std::unique_ptr<Impl> impl_;
};

} // namespace flashjit

#endif // FLASHJIT_RUNTIME_RUNTIME_H
