//===- AttentionSpec.h - What a generated attention kernel is specialised for -===//
//
// Plain C++ (no MLIR, no CUDA): shared by the compiler, the runtime, the CLI
// and the tests. An AttentionSpec holds every fact baked into a kernel at
// compile time; a TileConfig holds the tiling knobs; an Arch names the target.
// Everything that is a run-time argument (pointers, strides, batch, heads,
// sequence lengths, softmax scale) lives in the runtime's launch parameters.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_COMPILER_ATTENTIONSPEC_H
#define FLASHJIT_COMPILER_ATTENTIONSPEC_H

#include "flashjit/compiler/Diagnostics.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace flashjit {

enum class DType { F16, BF16 };
/// Which (query, key) pairs a row may see. Causal and Window are aligned to
/// the bottom-right corner (FlashAttention 2.1+); Window takes its left and
/// right extents as run-time arguments (either may be unbounded), so causal
/// is also Window with (unbounded, 0), kept apart for its simpler kernel.
enum class MaskMode { None, Causal, Window };
/// What is added to the scaled (and capped) scores before the softmax: a
/// tensor broadcastable to [batch, heads_q, seqlen_q, seqlen_k] in the input
/// dtype, or ALiBi (-slope[h] * |i + seqlen_k - seqlen_q - j|, slopes float32
/// per head, computed in the kernel).
enum class BiasMode { None, Tensor, Alibi };
/// A kernel's target, named after the GPUs that run it (the PTX .target).
/// Every one runs the sm_80 family (cp.async + mma.sync); only sm_90a adds
/// the arch-specific instructions (wgmma, setmaxnreg) of the Hopper family.
/// Runtime devices map onto these in archForComputeCapability (Device.h).
enum class Arch { Sm80, Sm86, Sm87, Sm89, Sm90, Sm90a, Sm100, Sm120 };
/// Kernel families: how a kernel is built (KernelFamily.h). sm80:
/// FlashAttention-2 (cp.async, ldmatrix, mma.sync), runs on sm_80 and every
/// later GPU. sm90: FlashAttention-3 (TMA, wgmma, warp specialisation),
/// sm_90a only.
enum class Family { Sm80, Sm90 };
/// What a kernel computes: the forward pass (O and LSE from Q, K, V), or the
/// backward pass (dQ, dK, dV from Q, K, V, O, dO and the forward's LSE: a
/// module of several kernels, see kernels/include/flashjit/kernels/
/// Backward.h).
enum class Direction { Forward, Backward };

/// Accepted head dimension range (both Q/K and V).
inline constexpr int kMinHeadDim = 1;
inline constexpr int kMaxHeadDim = 256;

/// Compile-time facts of one attention kernel (forward, or the backward's
/// kernels).
struct AttentionSpec {
  DType dtype = DType::BF16;
  int headDimQK = 128;
  int headDimV = 128;
  MaskMode mask = MaskMode::None;
  /// heads_q / heads_kv (1 = MHA, heads_q = MQA).
  int gqaGroup = 1;
  /// Write the float32 log-sum-exp of each query row (the backward reads
  /// it: always true there).
  bool writeLse = true;
  /// Elements by which every global row start (pointers and row, head and
  /// batch strides) is known to be aligned: 1, 2, 4 or 8. Wider lets the
  /// kernel copy 16 bytes at a time; the runtime picks the widest valid one.
  int globalAlignElems = 8;
  BiasMode bias = BiasMode::None;
  /// Scores become softcap * tanh(scores / softcap) (Gemma 2); the cap is a
  /// run-time argument.
  bool softcap = false;
  /// Packed variable-length batches: Q/K/V/O rows of sequence b start at
  /// cu_seqlens_q[b] / cu_seqlens_k[b] (int32 prefix sums, run-time).
  bool varlen = false;
  /// Padded batches: only the first key_lengths[b] keys of sequence b are
  /// real (int32 per batch, run-time; FlashAttention's seqused_k).
  bool keyLengths = false;
  /// Paged KV cache: K/V row j of sequence b is row j % page_size of page
  /// block_table[b][j / page_size] (page size, block table and page strides
  /// are run-time arguments); keyLengths holds the cache lengths.
  bool pagedKV = false;
  /// Split-KV (flash-decoding): the CTAs of a row block split its K/V range
  /// (grid z = batch x splits, the split count a run-time argument), each
  /// writing a float32 partial O and LSE; a combine kernel in the same
  /// module merges them into O and LSE.
  bool splitKV = false;
  Direction direction = Direction::Forward;
  /// Backward: dQ accumulated without float atomics (per-split partial sums
  /// added in a fixed order), the same bits on every run.
  bool deterministic = false;
  /// Backward with a bias tensor: also write dBias (a full
  /// [batch, heads_q, seqlen_q, seqlen_k] tensor).
  bool biasGrad = false;

  bool operator==(const AttentionSpec &o) const;
  bool operator!=(const AttentionSpec &o) const { return !(*this == o); }
};

/// Tiling knobs of a forward kernel: the family that builds it and that
/// family's knobs.
struct TileConfig {
  int blockM = 128; ///< query rows per CTA
  int blockN = 64;  ///< key rows per K/V tile
  /// sm80: warps per CTA (each owns blockM / warps query rows). sm90: the
  /// consumer warps (4 per consumer warpgroup of 64 rows; one producer
  /// warpgroup comes on top).
  int warps = 4;
  int stages = 2;   ///< K/V shared-memory buffers of the load pipeline
  /// GQA: one CTA takes the query rows of every head of a K/V group
  /// (row r is query r / group of head r % group), so each K/V tile is read
  /// once per group instead of once per query head.
  bool packGqa = false;
  /// The quick-to-compile form of the same kernel, the runtime's first tier
  /// on a cold compile: each K/V tile is visited in 16-key slices in
  /// run-time loops, Q K^T twice (once for the row maximum, once for the
  /// softmax and P V), by warps of 16 query rows each (more warps than
  /// `warps` where the config's have more rows, up to 256 threads). Its
  /// results are bitwise those of the full kernel (each row's operations in
  /// the same order), its PTX a fraction of the size.
  bool quick = false;
  Family family = Family::Sm80;
  /// sm90: two consumer warpgroups take turns (named barriers), so that one's
  /// softmax runs while the other's GEMMs do.
  bool pingpong = false;
  /// sm90: each consumer warpgroup issues the next tile's Q K^T before the
  /// softmax of the current one (two score tiles live).
  bool overlap = false;
  /// sm80 backward: the main kernel's products as float32 FMA loops over
  /// shared memory (its first version, kept to check the mma.sync kernel
  /// against) instead of mma.sync. Backward specs only.
  bool scalar = false;

  bool operator==(const TileConfig &o) const;
  bool operator!=(const TileConfig &o) const { return !(*this == o); }
};

// ---- names -----------------------------------------------------------------
std::string_view toString(DType d);
std::string_view toString(MaskMode m);
std::string_view toString(BiasMode b);
std::string_view toString(Arch a);
std::string_view toString(Family f);
std::string_view toString(Direction d);
std::optional<DType> parseDType(std::string_view s);
std::optional<MaskMode> parseMaskMode(std::string_view s);
std::optional<BiasMode> parseBiasMode(std::string_view s);
std::optional<Arch> parseArch(std::string_view s);
std::optional<Family> parseFamily(std::string_view s);
std::optional<Direction> parseDirection(std::string_view s);
/// Accepted spellings, for error messages and --help ("fp16|bf16").
std::string dtypeChoices();
std::string maskChoices();
std::string biasChoices();
std::string archChoices();
std::string familyChoices();
std::string directionChoices();

int elementBytes(DType d);
/// Compute capability as an integer (80, 86, 87, 89, 90, 100, 120); sm_90a
/// -> 90.
int computeCapability(Arch a);
/// Architecture-specific instructions (wgmma, setmaxnreg) are available.
bool hasArchSpecificFeatures(Arch a);
/// Largest dynamic shared memory a CTA may opt into on this architecture.
int maxSharedMemoryPerBlock(Arch a);
/// The PTX ISA version we emit for this architecture (e.g. 80 for 8.0).
int ptxIsaVersion(Arch a);
/// That version as an LLVM NVPTX target feature ("+ptx80").
std::string ptxFeature(Arch a);

/// The widest alignment (in elements, 8/4/2/1) dividing every given value.
int alignmentElems(const std::vector<int64_t> &values);
/// Whether TMA can address the spec's tensors: base addresses and strides
/// multiples of 16 bytes. TMA also refuses (an illegal instruction, not an
/// encode error) a box whose innermost coordinate is not a multiple of 16
/// bytes, which is what heads off 16 bytes would need (docs/MLIR-NOTES.md).
bool rowsTmaAligned(const AttentionSpec &spec);

// ---- validation --------------------------------------------------------------
/// Checks ranges and consistency; the message names the argument and the
/// accepted range ("head_dim_qk must be in [1, 256], got 300").
Status validate(const AttentionSpec &spec);
/// Checks the tile config for the spec on the arch (shapes, warp count,
/// shared memory that fits, register budget estimates).
Status validate(const TileConfig &config, const AttentionSpec &spec, Arch arch);

/// The limits a tile config in range can still exceed for a spec on an arch.
enum class TileLimit {
  Shape,        ///< block_m not a multiple of 16 rows per warp
  SharedMemory, ///< more than the arch's per-block opt-in maximum
  Registers,    ///< estimated registers per thread above 255
  RegisterFile, ///< estimated registers x threads above one SM's file
};
/// The first limit `config` exceeds, or nullopt: the resource checks of
/// validate(TileConfig), which says the same in words.
std::optional<TileLimit> exceededLimit(const TileConfig &config,
                                       const AttentionSpec &spec, Arch arch);

// ---- identity ------------------------------------------------------------------
/// Canonical, stable text of the spec (one key=value list, fixed order):
/// the input of the cache key.
std::string canonicalText(const AttentionSpec &spec);
std::string canonicalText(const TileConfig &config);
/// Readable identifier of a specialisation, usable as a kernel symbol and a
/// directory name: fwd_bf16_hqk80_hv80_causal_g1_lse_a8_bm128_bn64_w4_s2_sm90a
/// (features off by default appear only when on: _alibi, _softcap, ...);
/// backward specs start with bwd_ (and add _det, _dbias).
std::string kernelName(const AttentionSpec &spec, const TileConfig &config,
                       Arch arch);

} // namespace flashjit

#endif // FLASHJIT_COMPILER_ATTENTIONSPEC_H
