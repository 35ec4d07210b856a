//===- Decode.h - Split-KV and paged KV caches: ABI and planning ----------===//
//
// Plain C++: what the decode features (AttentionSpec::pagedKV, splitKV) add
// to a forward kernel's parameters, the two helper kernels a decode module
// holds beside it (combine: split partials -> O and LSE; append: new K/V
// rows -> their pages), and the planning that the runtime and the tests
// share: the decode tile table, the number of splits, the partials'
// workspace and the page-size divisor.
//
// A module built for a spec with splitKV holds `<name>_combine`, one with
// pagedKV `<name>_append`, next to the forward kernel `<name>`.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_DECODE_H
#define FLASHJIT_KERNELS_DECODE_H

#include "flashjit/compiler/AttentionSpec.h"
#include "flashjit/compiler/KernelFamily.h"
#include "flashjit/kernels/AttentionParams.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace flashjit {

/// Parameters a forward kernel of a spec with pagedKV or splitKV takes after
/// ForwardKernelArgs (and before any tensor maps), in this order. Under
/// pagedKV the K/V batch strides of ForwardKernelArgs are page strides and
/// keyLengths holds the cache lengths.
struct DecodeKernelArgs {
  const int32_t *blockTable; ///< pagedKV: [batch, blockTableStride] page ids
  float *partialO;   ///< splitKV: [splits][partialEntries][partialPitch]
  float *partialLse; ///< splitKV: [splits][partialEntries], natural log
  int64_t blockTableStride; ///< pagedKV: max pages per sequence
  /// splitKV: rows x heads_q, where a row is (batch, query), batch x
  /// seqlen_q of them (total_q under varlen); entry (row, head) is
  /// row * heads_q + head.
  int64_t partialEntries;
  int32_t pageSize; ///< pagedKV: rows per page
  /// pagedKV: key / pageSize = (key * pageDivMul) >> pageDivShift
  /// (pageDivisor), as unsigned 64-bit arithmetic.
  uint32_t pageDivMul;
  int32_t pageDivShift;
  int32_t numSplits; ///< splitKV: >= 1 (grid z is batch x numSplits)
  int32_t headsQ;    ///< splitKV
  /// Rows appended to every sequence before the launch (the append path):
  /// the kernel sees keyLengths[b] + newKeys keys.
  int32_t newKeys;
};
inline constexpr int kDecodeKernelArgCount = 11;

/// The combine kernel's parameters: for every (row, head) entry, the
/// log-sum-exp merge of its partials over the splits, written to O (and
/// LSE when the spec writes it); an entry whose every split is empty
/// writes O = 0 and LSE = -inf. O and LSE strides as in ForwardKernelArgs
/// (batch strides 0 under varlen, where a row is the packed row).
struct CombineKernelArgs {
  const float *partialO, *partialLse;
  void *o;
  float *lse;
  const int32_t *cuSeqlensQ; ///< varlen: rows past cuSeqlensQ[batch] idle
  int64_t partialEntries;
  int64_t oBatchStride, oHeadStride, oRowStride;
  int64_t lseBatchStride, lseHeadStride;
  int32_t numSplits, headsQ, seqlenQ, batch;
};
inline constexpr int kCombineKernelArgCount = 15;
/// Threads of a combine CTA: one warp per (row, head) entry.
inline constexpr int kCombineThreads = 128;

/// The append kernel's parameters: row j of head h of sequence b of kNew
/// (vNew) goes to cache row cacheLengths[b] + j of K (V), through the block
/// table. Grid (x, batch); the CTAs of a sequence stride over its
/// newKeys x headsKV rows in 16-byte (or narrower) chunks.
struct AppendKernelArgs {
  const void *kNew, *vNew;
  void *kCache, *vCache;
  const int32_t *blockTable, *cacheLengths;
  int64_t kNewBatchStride, kNewHeadStride, kNewRowStride;
  int64_t vNewBatchStride, vNewHeadStride, vNewRowStride;
  int64_t kPageStride, kHeadStride, kRowStride;
  int64_t vPageStride, vHeadStride, vRowStride;
  int64_t blockTableStride;
  int32_t newKeys, headsKV, pageSize;
  uint32_t pageDivMul;
  int32_t pageDivShift;
};
inline constexpr int kAppendKernelArgCount = 24;
inline constexpr int kAppendThreads = 128;

/// The helper kernels' names in a decode module.
std::string combineKernelName(const std::string &forwardName);
std::string appendKernelName(const std::string &forwardName);

// ---- planning -----------------------------------------------------------------
/// Largest page size: a page's rows are indexed in 32 bits with the divisor
/// below; 2^20 rows is far past any engine's pages.
inline constexpr int64_t kMaxPageSize = int64_t(1) << 20;
/// floor(n / d) = (n * mul) >> shift for every 0 <= n < 2^31 (Granlund and
/// Montgomery's round-up method: shift = 31 + ceil(log2 d), mul = ceil(2^shift
/// / d), which fits 32 bits), so that the kernel divides key indices by a
/// run-time page size with one 32x32->64-bit multiply.
struct PageDivisor {
  uint32_t mul = 0;
  int32_t shift = 0;
  int64_t divide(int64_t n) const {
    return static_cast<int64_t>((static_cast<uint64_t>(n) * mul) >> shift);
  }
};
PageDivisor pageDivisor(int64_t divisor); ///< divisor in [1, kMaxPageSize]

/// Tile rows of a decode-like problem at most: a problem whose row blocks
/// (seqlen_q, times the GQA group when packed) fit this many rows takes
/// the decode tile table.
inline constexpr int64_t kDecodeMaxTileRows = 64;
/// The rows of one (batch, K/V group) row block: seqlen_q x the GQA group.
inline int64_t decodeTileRows(const AttentionParams &p) {
  return p.seqlenQ * std::max<int64_t>(1, p.gqaGroup());
}
/// Decode-like: its row blocks fit kDecodeMaxTileRows rows (the runtime
/// plans it from the decode table, autotune searches that table, and its
/// tune entries are apart from prefills').
inline bool isDecodeLike(const AttentionParams &p) {
  return decodeTileRows(p) <= kDecodeMaxTileRows;
}
/// The sm80 family's config for a problem of `tileRows` rows per (batch,
/// K/V group) (seqlen_q x the GQA group), THE decode table: one m16 tile
/// per warp and as few warps as the rows need (padding rows cost MMAs,
/// which at one query per head are the kernel's only compute), K/V tiles
/// deep enough to keep HBM busy. nullopt when the problem is not
/// decode-like (tileRows > kDecodeMaxTileRows) or no config fits.
std::optional<TileConfig> decodeTileConfig(const AttentionSpec &spec,
                                           Arch arch, int64_t tileRows);

/// Most splits of one row block (and the workspace grows with them).
inline constexpr int kMaxSplits = 128;
/// Grid z of a split launch (batch x splits) at most.
inline constexpr int64_t kMaxGridZ = 65535;
/// CTAs of `facts` that one SM of `arch` holds at once (shared memory and
/// threads; registers are not known before the JIT).
int ctasPerSm(const LaunchFacts &facts, Arch arch);
/// The number of splits for `ctas` CTAs (row blocks x heads x batch) over
/// `keyBlocks` K/V tiles each on `smCount` SMs of `perSm` CTAs each:
/// FlashAttention-2's heuristic on CTA slots. Grids of two waves or more
/// take 1; otherwise the fewest splits whose wave efficiency (filled slots
/// of the last wave) is within 85% of the best, never more than the key
/// blocks, kMaxSplits or what grid z (batch x splits <= 65535) allows.
/// Deterministic in its arguments.
int chooseSplits(int64_t ctas, int64_t keyBlocks, int64_t batch, int smCount,
                 int perSm);

/// The float32 workspace of split partials: O [splits][entries][pitch]
/// then LSE [splits][entries], 256-byte aligned.
struct PartialLayout {
  int64_t entries = 0; ///< rows x heads_q
  int64_t pitch = 0;   ///< floats per partial O row: head_dim_v rounded to 4
  size_t oBytes = 0;   ///< where LSE starts
  size_t bytes = 0;    ///< the workspace
};
PartialLayout partialLayout(int64_t rows, int64_t headsQ, int64_t headDimV,
                            int numSplits);
/// Floats per partial O row.
inline int64_t partialPitch(int64_t headDimV) { return (headDimV + 3) / 4 * 4; }

} // namespace flashjit

#endif // FLASHJIT_KERNELS_DECODE_H
