//===- Problem.h - Problem options and device inputs for run/bench/autotune -===//
//
// The options that size a forward call (batch, sequence lengths, window,
// varlen lists, key lengths, bias shape, layout) on top of SpecOptions, the
// ForwardProblem they describe, and its random inputs on the GPU.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_TOOLS_PROBLEM_H
#define FLASHJIT_TOOLS_PROBLEM_H

#include "SpecOptions.h"

#include "flashjit/runtime/Runtime.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace flashjit::cli {

struct ProblemOptions {
  SpecOptions spec;
  int64_t batch = 1;
  int64_t seqlen = 1024;
  std::optional<int64_t> seqlenQ, seqlenK;
  std::optional<double> scale;
  int64_t windowLeft = kUnboundedWindow, windowRight = kUnboundedWindow;
  /// The list options as typed: comma-separated integers, possibly over
  /// several arguments; describeProblem parses them (parseIntList).
  std::vector<std::string> seqlensQ, seqlensK; ///< varlen
  std::vector<std::string> keyLengths;         ///< padded batches
  std::vector<std::string> biasShape;          ///< bias extents {batch, heads}
  std::string layout = "bshd";
  /// Decode: seqlen_q defaults to 1 and every sequence's cache holds
  /// seqlen_k keys unless --key-lengths says otherwise (the cache lengths).
  bool decode = false;
  /// > 0: K/V in a paged cache of pages of this many rows, every
  /// sequence's pages scattered over the pool (a fixed permutation).
  int64_t pageSize = 0;
  /// Split-KV: 0 the runtime's choice, 1 none, n splits.
  int numSplits = 0;

  /// Registers the spec options (run flavour) and the size options.
  void addTo(CLI::App &cmd);
};

/// The integers of list option `option` ("--seqlens-q"): every argument
/// split at commas, each entry an integer in [lo, hi]. An empty entry
/// ("1,,2"), a non-number or a value out of range is an error naming the
/// option.
Expected<std::vector<int64_t>> parseIntList(const std::string &option,
                                            const std::vector<std::string> &args,
                                            int64_t lo, int64_t hi);

/// The problem of the options for `spec`: sizes, layout, mask window,
/// bias, softcap, varlen sequences, key lengths, the paged cache and its
/// block table (host copy) and the split count (strides set, pointers not).
/// Errors are usage errors naming the option.
Status describeProblem(const ProblemOptions &o, const AttentionSpec &spec,
                       ForwardProblem &p);

/// The tile config the tile options (--block-m ...) ask for on top of the
/// arch's default, checked for `problem`; nullopt when none was given.
Expected<std::optional<TileConfig>>
explicitTile(const ProblemOptions &o, const ForwardProblem &problem, Arch arch);

/// Before any GPU is looked for: the tile options fit `problem` on at least
/// one architecture the runtime supports (otherwise no GPU could run them,
/// a usage error). explicitTile checks them for the GPU's own.
Status checkTileOptions(const ProblemOptions &o, const ForwardProblem &problem);

/// --seed: the seed of the random inputs, a 64-bit unsigned integer ("-1"
/// is refused, not wrapped).
void addSeedOption(CLI::App &cmd, uint64_t &seed, const std::string &help);

/// Bytes a problem takes: its tensors on the device, and the host copies
/// of its inputs and outputs (with --check, O and LSE twice: the quick
/// form's and the full kernel's). Saturates rather than overflowing.
struct ProblemBytes {
  uint64_t device = 0;
  uint64_t host = 0;
};
ProblemBytes problemBytes(const ForwardProblem &p, bool writeLse);

/// A clear error when the problem cannot fit this machine's memory
/// (`deviceBytes` of the GPU, physical host memory): checked before
/// anything is allocated.
Status checkProblemFits(const ForwardProblem &p, bool writeLse,
                        uint64_t deviceBytes);

/// "batch=4 heads_q=16 heads_kv=4 (gqa group 4) ... mask=causal
/// scale=0.0884 lse=yes window=..."
std::string problemText(const ForwardProblem &p, const std::string &layout,
                        bool writeLse);

/// Multiply-adds the mask keeps, times two: the FLOP count of TFLOP/s.
double forwardFlops(const ForwardProblem &p);

/// Bytes of K and V a call must read: every real key of every sequence
/// and K/V head once (the decode bandwidth's numerator).
double kvBytes(const ForwardProblem &p);

/// A problem's random inputs in device memory (and on the host, for the
/// reference), with its pointers set. Owns the buffers.
struct DeviceProblem {
  ForwardProblem problem;
  std::vector<uint16_t> q, k, v, bias; ///< host copies, dtype bits
  std::vector<float> alibiSlopes;
  std::vector<DeviceBuffer> buffers;
  size_t deviceBytes = 0;
};

/// Fresh normal inputs from `seed` (same seed, same inputs). With
/// spec.globalAlignElems < 8 each tensor starts that many elements past an
/// aligned address, so that the runtime picks the narrower kernel.
Expected<DeviceProblem> uploadProblem(Runtime &rt, const ForwardProblem &shape,
                                      const AttentionSpec &spec, uint64_t seed);

/// Fresh inputs in as many workspaces as timing must rotate among so that
/// no run finds its inputs in L2 (workspacesToRotate), seeds seed, seed+1...
/// Only the first keeps its host copies.
Expected<std::vector<DeviceProblem>>
uploadWorkspaces(Runtime &rt, const ForwardProblem &shape,
                 const AttentionSpec &spec, uint64_t seed);

/// A backward call on the inputs of `forward`: the forward run for O and
/// LSE, a random dO from `seed` (its host copy kept), and gradient buffers
/// laid out like their tensors (dBias dense [batch, heads_q, seqlen_q,
/// seqlen_k] with spec.biasGrad). No tile, no workspace.
struct DeviceBackwardProblem {
  BackwardProblem problem;
  std::vector<uint16_t> dO; ///< host copy, dtype bits
  std::vector<DeviceBuffer> buffers;
};
Expected<DeviceBackwardProblem> uploadBackward(Runtime &rt,
                                               const DeviceProblem &forward,
                                               const AttentionSpec &spec,
                                               uint64_t seed);

/// "NVIDIA H100 80GB HBM3 (sm_90a, 132 SMs, 50 MB L2), CUDA driver 13.0".
std::string deviceText(const Runtime &rt);

/// "block_m=128 block_n=64 warps=4 stages=2[ pack_gqa]".
std::string configText(const TileConfig &c);
/// An autotune candidate: its config, and its split count when it has one.
std::string candidateText(const TileConfig &c, int splits);

} // namespace flashjit::cli

#endif
