//===- AttentionParams.cpp - Checks on the math problem of a call ---------===//
#include "flashjit/kernels/AttentionParams.h"
#include "flashjit/kernels/Decode.h"

#include "flashjit/kernels/Forward.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

namespace flashjit {

namespace {
/// CUDA's limit on gridDim.y and gridDim.z (heads and batch).
constexpr int64_t kMaxGridYZ = 65535;
/// Sequence lengths and row indices are int32 in the kernel and in cu_seqlens.
constexpr int64_t kMaxSeqlen = std::numeric_limits<int32_t>::max();

template <typename Int> std::string str(Int v) {
  static_assert(std::is_integral_v<Int>);
  return std::to_string(v);
}
std::string real(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

Status outOfRange(const std::string &name, int64_t lo, int64_t hi,
                  int64_t got) {
  return Status::error(name + " must be in [" + str(lo) + ", " + str(hi) +
                       "], got " + str(got));
}

Status checkSizes(const AttentionParams &p) {
  if (p.dtype != DType::F16 && p.dtype != DType::BF16)
    return Status::error("dtype must be one of " + dtypeChoices());
  if (p.mask != MaskMode::None && p.mask != MaskMode::Causal &&
      p.mask != MaskMode::Window)
    return Status::error("mask must be one of " + maskChoices());
  if (p.bias != BiasMode::None && p.bias != BiasMode::Tensor &&
      p.bias != BiasMode::Alibi)
    return Status::error("bias must be one of " + biasChoices());
  struct {
    const char *name;
    int64_t value, lo, hi;
  } ranges[] = {
      {"batch", p.batch, 1, kMaxGridYZ},
      {"heads_q", p.headsQ, 1, kMaxGridYZ},
      {"heads_kv", p.headsKV, 1, std::max<int64_t>(1, p.headsQ)},
      {"seqlen_q", p.seqlenQ, 1, kMaxSeqlen},
      {"seqlen_k", p.seqlenK, 1, kMaxSeqlen},
      {"head_dim_qk", p.headDimQK, kMinHeadDim, kMaxHeadDim},
      {"head_dim_v", p.headDimV, kMinHeadDim, kMaxHeadDim},
  };
  for (const auto &r : ranges)
    if (r.value < r.lo || r.value > r.hi)
      return outOfRange(r.name, r.lo, r.hi, r.value);
  if (p.headsQ % p.headsKV != 0)
    return Status::error("heads_q (" + str(p.headsQ) +
                         ") must be a multiple of heads_kv (" + str(p.headsKV) +
                         ")");
  return Status::ok();
}

/// One dimension of a strided tensor: its extent and stride (in elements),
/// with the names a message uses for them.
struct Dim {
  int64_t extent, stride;
  std::string strideName; ///< "o_head_stride"
  std::string extentName; ///< "heads_q"
};

/// The largest offset + 1 of a tensor whose last dimension is `inner`
/// contiguous elements, or nullopt when it does not fit in int64.
std::optional<int64_t> span(const std::vector<Dim> &dims, int64_t inner) {
  int64_t total = inner;
  for (const Dim &d : dims) {
    int64_t step;
    if (d.extent > 1 && (__builtin_mul_overflow(d.extent - 1, d.stride, &step) ||
                         __builtin_add_overflow(total, step, &total)))
      return std::nullopt;
  }
  return total;
}

/// The tensor `name` spans at most kMaxTensorBytes.
Status checkExtent(const std::string &name, const std::vector<Dim> &dims,
                   int64_t inner, int64_t elemBytes) {
  std::optional<int64_t> elems = span(dims, inner);
  int64_t bytes;
  if (elems && !__builtin_mul_overflow(*elems, elemBytes, &bytes) &&
      bytes <= kMaxTensorBytes)
    return Status::ok();
  std::string what;
  for (const Dim &d : dims)
    what += (what.empty() ? "" : ", ") + d.strideName + " = " + str(d.stride) +
            " over " + d.extentName + " = " + str(d.extent);
  return Status::error(name + " is too large: it spans more than 2^63 - 1 "
                              "bytes (offsets are int64) with " +
                       what);
}

/// No two elements of the output `name` share an address (two CTAs writing
/// one element race): with the dimensions of extent > 1 sorted by stride,
/// each stride is at least what the smaller ones span. Assumes the extent
/// fits (checkExtent).
Status checkNoOverlap(const std::string &name, std::vector<Dim> dims,
                      int64_t inner, const std::string &innerName) {
  dims.erase(std::remove_if(dims.begin(), dims.end(),
                            [](const Dim &d) { return d.extent <= 1; }),
             dims.end());
  std::sort(dims.begin(), dims.end(), [](const Dim &a, const Dim &b) {
    return a.stride != b.stride ? a.stride < b.stride
                                : a.strideName < b.strideName;
  });
  int64_t covered = inner; // elements spanned by the dimensions so far
  std::string coveredBy = innerName;
  for (const Dim &d : dims) {
    if (d.stride == 0)
      return Status::error(d.strideName + " is 0 with " + d.extentName + " = " +
                           str(d.extent) + ": every index would write the "
                           "same elements of " + name +
                           " (outputs must not overlap)");
    if (d.stride < covered)
      return Status::error(d.strideName + " must be >= " + str(covered) +
                           " (what " + coveredBy + " span" +
                           ") so that " + name +
                           " does not overlap itself, got " + str(d.stride));
    covered += (d.extent - 1) * d.stride;
    coveredBy += " and " + d.extentName;
  }
  return Status::ok();
}

Status checkStrides(const AttentionParams &p, bool writesLse) {
  const int64_t rowsQ = p.varlen ? p.varlen->totalQ : p.seqlenQ;
  // A paged cache's K/V are pages of page_size rows (PagedKV).
  const int64_t rowsK = p.paged     ? p.paged->pageSize
                        : p.varlen ? p.varlen->totalK
                                   : p.seqlenK;
  const char *rowsKName =
      p.paged ? "page_size" : p.varlen ? "total_k" : "seqlen_k";
  // Varlen addresses rows through cu_seqlens: no batch dimension.
  const int64_t batches = p.varlen ? 1 : p.batch;
  const int64_t kvBatches = p.paged ? p.paged->numPages : batches;
  const struct {
    const char *name;
    const Strides &strides;
    int64_t batches;
    const char *batchesName;
    int64_t heads;
    const char *headsName;
    int64_t rows;
    const char *rowsName;
    int64_t dim;
    const char *dimName;
  } tensors[] = {
      {"q", p.qStrides, batches, "batch", p.headsQ, "heads_q", rowsQ,
       p.varlen ? "total_q" : "seqlen_q", p.headDimQK, "head_dim_qk"},
      {"k", p.kStrides, kvBatches, p.paged ? "num_pages" : "batch", p.headsKV,
       "heads_kv", rowsK, rowsKName, p.headDimQK, "head_dim_qk"},
      {"v", p.vStrides, kvBatches, p.paged ? "num_pages" : "batch", p.headsKV,
       "heads_kv", rowsK, rowsKName, p.headDimV, "head_dim_v"},
      {"o", p.oStrides, batches, "batch", p.headsQ, "heads_q", rowsQ,
       p.varlen ? "total_q" : "seqlen_q", p.headDimV, "head_dim_v"}};
  const int64_t eb = elementBytes(p.dtype);
  for (const auto &t : tensors) {
    const std::string n = t.name;
    const std::vector<Dim> dims = {
        {t.batches, p.varlen && !p.paged ? 0 : t.strides.batch,
         n + "_batch_stride", t.batchesName},
        {t.heads, t.strides.head, n + "_head_stride", t.headsName},
        {t.rows, t.strides.row, n + "_row_stride", t.rowsName}};
    for (const Dim &d : dims)
      if (d.stride < 0)
        return Status::error(d.strideName + " must be >= 0, got " +
                             str(d.stride));
    if (Status s = checkExtent(n, dims, t.dim, eb); !s)
      return s;
    if (n == "o")
      if (Status s = checkNoOverlap(n, dims, t.dim,
                                    std::string("the ") + t.dimName +
                                        " contiguous columns");
          !s)
        return s;
  }
  if (writesLse) {
    const int64_t batchStride = p.varlen ? 0 : p.lseBatchStride;
    if (batchStride < 0 || p.lseHeadStride < 0)
      return Status::error("lse_batch_stride and lse_head_stride must be >= "
                           "0, got " +
                           str(batchStride) + " and " + str(p.lseHeadStride));
    const std::vector<Dim> dims = {
        {batches, batchStride, "lse_batch_stride", "batch"},
        {p.headsQ, p.lseHeadStride, "lse_head_stride", "heads_q"}};
    if (Status s = checkExtent("lse", dims, rowsQ, sizeof(float)); !s)
      return s;
    if (Status s = checkNoOverlap(
            "lse", dims, rowsQ,
            std::string("the ") + (p.varlen ? "total_q" : "seqlen_q") +
                " contiguous rows");
        !s)
      return s;
  }
  return Status::ok();
}

Status checkScores(const AttentionParams &p) {
  // The kernel keeps the running row max of scale * S as scale * max(S),
  // which holds only for a positive scale.
  if (!std::isfinite(p.scale()) || p.scale() <= 0)
    return Status::error("softmax_scale must be finite and > 0, got " +
                         real(p.scale()));
  // What the kernel computes with are float32 values derived from these
  // (ForwardKernelArgs::scaleLog2, softcap * log2(e), their ratio): each
  // must be a normal float, neither rounded to inf nor to 0.
  const float scaleLog2 = static_cast<float>(p.scale() * kLog2e);
  if (!std::isnormal(scaleLog2))
    return Status::error(
        "softmax_scale must be in [" +
        real(std::numeric_limits<float>::min() / kLog2e) + ", " +
        real(std::numeric_limits<float>::max() / kLog2e) +
        "] (times log2(e), the kernel's float32 scale), got " +
        real(p.scale()));
  for (auto [name, value] : {std::pair{"window_left", p.windowLeft},
                             std::pair{"window_right", p.windowRight}}) {
    if (value < kUnboundedWindow)
      return Status::error(std::string(name) +
                           " must be >= 0, or -1 for unbounded, got " +
                           str(value));
    if (value != kUnboundedWindow && p.mask != MaskMode::Window)
      return Status::error(std::string(name) + " (" + str(value) +
                           ") applies only to a sliding window: use "
                           "mask=window (mask is " +
                           std::string(toString(p.mask)) + ")");
  }
  if (!std::isfinite(p.softcap) || p.softcap < 0)
    return Status::error("softcap must be finite and >= 0 (0: off), got " +
                         real(p.softcap));
  if (p.softcap > 0) {
    // As the kernel derives them: softcap * log2(e), then scale / softcap.
    const float capLog2 =
        static_cast<float>(p.softcap) * static_cast<float>(kLog2e);
    if (!std::isnormal(capLog2))
      return Status::error(
          "softcap must be 0 (off) or in [" +
          real(std::numeric_limits<float>::min() / kLog2e) + ", " +
          real(std::numeric_limits<float>::max() / kLog2e) +
          "] (times log2(e), the kernel's float32 cap), got " +
          real(p.softcap));
    const float inner = scaleLog2 / capLog2;
    if (!std::isnormal(inner) ||
        !std::isfinite(inner * static_cast<float>(2 * kLog2e)))
      return Status::error("softmax_scale / softcap must be a normal float32 "
                           "number, got " +
                           real(p.scale()) + " / " + real(p.softcap));
  }
  if (p.bias == BiasMode::Tensor) {
    const BiasShape &s = p.biasShape;
    if ((s.batch != 1 && s.batch != p.batch) ||
        (s.heads != 1 && s.heads != p.headsQ))
      return Status::error(
          "bias shape [" + str(s.batch) + ", " + str(s.heads) +
          ", seqlen_q, seqlen_k] does not broadcast to [batch=" + str(p.batch) +
          ", heads_q=" + str(p.headsQ) +
          ", seqlen_q, seqlen_k]: bias_batch must be 1 or " + str(p.batch) +
          " and bias_heads 1 or " + str(p.headsQ));
    // A size-1 (broadcast) dimension never moves, whatever its stride.
    const std::pair<const char *, int64_t> strides[] = {
        {"bias_batch_stride", s.batch == 1 ? 0 : s.strides.batch},
        {"bias_head_stride", s.heads == 1 ? 0 : s.strides.head},
        {"bias_row_stride", s.strides.row}};
    for (auto [name, value] : strides)
      if (value < 0)
        return Status::error(std::string(name) + " must be >= 0, got " +
                             str(value));
    if (Status st = checkExtent(
            "bias",
            {{s.batch, strides[0].second, "bias_batch_stride", "bias_batch"},
             {s.heads, strides[1].second, "bias_head_stride", "bias_heads"},
             {p.seqlenQ, s.strides.row, "bias_row_stride", "seqlen_q"}},
            p.seqlenK, elementBytes(p.dtype));
        !st)
      return st;
  }
  if (p.bias == BiasMode::Alibi) {
    if (p.alibiBatchStride < 0)
      return Status::error("alibi_batch_stride must be >= 0 (0: slopes shared "
                           "by every batch), got " +
                           str(p.alibiBatchStride));
    if (Status st = checkExtent(
            "alibi_slopes",
            {{p.batch, p.alibiBatchStride, "alibi_batch_stride", "batch"}},
            p.headsQ, sizeof(float));
        !st)
      return st;
  }
  return Status::ok();
}

/// One prefix-sum array: batch + 1 entries from >= 0, non-decreasing, ending
/// within the packed buffer, each sequence no longer than `maxLen`.
Status checkCuSeqlens(const std::vector<int32_t> &cu, const char *name,
                      int64_t batch, int64_t total, const char *totalName,
                      int64_t maxLen, const char *maxName) {
  if (static_cast<int64_t>(cu.size()) != batch + 1)
    return Status::error(std::string(name) + " must have batch + 1 = " +
                         str(batch + 1) + " entries, got " + str(cu.size()));
  if (cu[0] < 0)
    return Status::error(std::string(name) + "[0] must be >= 0, got " +
                         str(cu[0]));
  for (int64_t b = 1; b <= batch; ++b) {
    if (cu[b] < cu[b - 1])
      return Status::error(std::string(name) + " decreases at index " + str(b) +
                           ": " + str(cu[b - 1]) + " -> " + str(cu[b]));
    const int64_t len = int64_t(cu[b]) - cu[b - 1];
    if (len > maxLen)
      return Status::error(
          "sequence " + str(b - 1) + " has length " + str(len) + " (" + name +
          "[" + str(b) + "] - " + name + "[" + str(b - 1) + "]), more than " +
          maxName + " = " + str(maxLen) + " (the longest sequence)");
  }
  if (cu[batch] > total)
    return Status::error(std::string(name) + "[" + str(batch) +
                         "] = " + str(cu[batch]) + " exceeds " + totalName +
                         " = " + str(total));
  return Status::ok();
}

Status checkSequences(const AttentionParams &p, bool trustMissing) {
  // Prefix sums that only the device has (trusted) are checked no further.
  auto checked = [&](const std::vector<int32_t> &cu) {
    return !trustMissing || !cu.empty();
  };
  if (p.varlen) {
    const VarlenSeqs &v = *p.varlen;
    if (v.totalQ < 1 || v.totalQ > kMaxSeqlen)
      return outOfRange("total_q", 1, kMaxSeqlen, v.totalQ);
    // A paged cache addresses keys through its block table.
    if (!p.paged && (v.totalK < 1 || v.totalK > kMaxSeqlen))
      return outOfRange("total_k", 1, kMaxSeqlen, v.totalK);
    if (checked(v.cuSeqlensQ))
      if (Status s = checkCuSeqlens(v.cuSeqlensQ, "cu_seqlens_q", p.batch,
                                    v.totalQ, "total_q", p.seqlenQ, "seqlen_q");
          !s)
        return s;
    if (!p.paged && checked(v.cuSeqlensK))
      if (Status s = checkCuSeqlens(v.cuSeqlensK, "cu_seqlens_k", p.batch,
                                    v.totalK, "total_k", p.seqlenK, "seqlen_k");
          !s)
        return s;
  }
  if (!p.keyLengths.empty()) {
    if (static_cast<int64_t>(p.keyLengths.size()) != p.batch)
      return Status::error("key_lengths must have batch = " + str(p.batch) +
                           " entries, got " + str(p.keyLengths.size()));
    const bool perSequence =
        !p.paged && p.varlen && !p.varlen->cuSeqlensK.empty();
    // Appended keys come on top of the cache lengths.
    const int64_t room = p.seqlenK - p.newKeys;
    for (int64_t b = 0; b < p.batch; ++b) {
      const int64_t keys =
          perSequence ? p.varlen->cuSeqlensK[b + 1] - p.varlen->cuSeqlensK[b]
                      : room;
      if (p.keyLengths[b] < 0 || p.keyLengths[b] > keys)
        return Status::error(
            "key_lengths[" + str(b) + "] must be in [0, " + str(keys) +
            "] (the keys of " +
            (perSequence ? "sequence " + str(b)
             : p.newKeys ? "seqlen_k - new_keys" : std::string("seqlen_k")) +
            "), got " + str(p.keyLengths[b]));
    }
  }
  return Status::ok();
}

/// The paged cache's sizes (before the key lengths are checked against them).
Status checkPagedSizes(const AttentionParams &p) {
  if (!p.paged) {
    if (p.newKeys != 0)
      return Status::error("new_keys (" + str(p.newKeys) +
                           ") needs a paged KV cache: the append path writes "
                           "new K/V rows into their pages");
    return Status::ok();
  }
  const PagedKV &pg = *p.paged;
  if (pg.pageSize < 1 || pg.pageSize > kMaxPageSize)
    return outOfRange("page_size", 1, kMaxPageSize, pg.pageSize);
  if (pg.numPages < 1 || pg.numPages > kMaxSeqlen)
    return outOfRange("num_pages", 1, kMaxSeqlen, pg.numPages);
  if (pg.maxPagesPerSeq < 1 || pg.maxPagesPerSeq > kMaxSeqlen)
    return outOfRange("max_pages_per_seq", 1, kMaxSeqlen, pg.maxPagesPerSeq);
  const int64_t capacity = pg.maxPagesPerSeq * pg.pageSize;
  if (p.seqlenK > capacity)
    return Status::error("seqlen_k (" + str(p.seqlenK) +
                         ") must be at most max_pages_per_seq x page_size (" +
                         str(pg.maxPagesPerSeq) + " x " + str(pg.pageSize) +
                         " = " + str(capacity) +
                         "): the keys one block table row addresses");
  if (p.newKeys < 0 || p.newKeys > p.seqlenK)
    return outOfRange("new_keys", 0, p.seqlenK, p.newKeys);
  for (auto [name, strides] : {std::pair{"k_new", &p.kNewStrides},
                               std::pair{"v_new", &p.vNewStrides}})
    if (p.newKeys > 0 &&
        (strides->batch < 0 || strides->head < 0 || strides->row < 0))
      return Status::error(std::string(name) +
                           " strides must be >= 0, got {" +
                           str(strides->batch) + ", " + str(strides->head) +
                           ", " + str(strides->row) + "}");
  return Status::ok();
}

/// The block table (after the key lengths): the page ids of every page
/// that holds keys, and appended rows that land on distinct cache rows.
Status checkBlockTable(const AttentionParams &p, bool trustMissing) {
  if (!p.paged)
    return Status::ok();
  const PagedKV &pg = *p.paged;
  if (p.keyLengths.empty()) {
    if (trustMissing)
      return Status::ok(); // device-only lengths and table: trusted
    return Status::error("a paged KV cache needs key_lengths: the number of "
                         "keys in each sequence's cache");
  }
  if (pg.blockTable.empty()) {
    if (trustMissing)
      return Status::ok();
    return Status::error("a paged KV cache needs the block table's host copy "
                         "(block_table_host) to check it before the launch, "
                         "or trusted device values");
  }
  if (static_cast<int64_t>(pg.blockTable.size()) !=
      p.batch * pg.maxPagesPerSeq)
    return Status::error("block_table must have batch x max_pages_per_seq = " +
                         str(p.batch * pg.maxPagesPerSeq) + " entries, got " +
                         str(pg.blockTable.size()));
  // Appended rows of two sequences on one cache row would race.
  std::unordered_map<int64_t, std::pair<int64_t, int64_t>> appended;
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t keys = p.keyLengths[b] + p.newKeys;
    const int64_t pages = (keys + pg.pageSize - 1) / pg.pageSize;
    const int32_t *row = &pg.blockTable[b * pg.maxPagesPerSeq];
    for (int64_t i = 0; i < pages; ++i)
      if (row[i] < 0 || row[i] >= pg.numPages)
        return Status::error(
            "block_table[" + str(b) + "][" + str(i) + "] = " + str(row[i]) +
            " is not a page id in [0, num_pages = " + str(pg.numPages) +
            ") (sequence " + str(b) + " has " + str(keys) + " keys in " +
            str(pages) + " pages of " + str(pg.pageSize) + ")");
    for (int64_t j = 0; j < p.newKeys; ++j) {
      const int64_t key = p.keyLengths[b] + j;
      const int64_t cacheRow =
          int64_t(row[key / pg.pageSize]) * pg.pageSize + key % pg.pageSize;
      auto [it, fresh] = appended.emplace(cacheRow, std::pair{b, j});
      if (!fresh)
        return Status::error(
            "block_table sends new key " + str(j) + " of sequence " + str(b) +
            " and new key " + str(it->second.second) + " of sequence " +
            str(it->second.first) + " to the same cache row (page " +
            str(cacheRow / pg.pageSize) + ", row " +
            str(cacheRow % pg.pageSize) + "): the appends would race");
    }
  }
  return Status::ok();
}
} // namespace

Status validateSizes(const AttentionParams &params) {
  return checkSizes(params);
}

Status validateParams(const AttentionParams &params, bool writesLse,
                      bool trustMissingLengths) {
  // Sizes first: the later checks index by batch and divide by heads.
  if (Status s = checkSizes(params); !s)
    return s;
  if (Status s = checkPagedSizes(params); !s) // the pages' extents
    return s;
  if (Status s = checkStrides(params, writesLse); !s)
    return s;
  if (Status s = checkScores(params); !s)
    return s;
  if (Status s = checkSequences(params, trustMissingLengths); !s)
    return s;
  return checkBlockTable(params, trustMissingLengths);
}

} // namespace flashjit
