//===- Problem.cpp - Problem options and device inputs --------------------===//
#include "Problem.h"

#include "flashjit/kernels/Reference.h"
#include "flashjit/runtime/Autotune.h"

#include <CLI/CLI.hpp>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

namespace flashjit::cli {

namespace {
constexpr int64_t kMaxGrid = 65535;
constexpr int64_t kMaxSeqlen = 2147483647;

/// List option values as int32 (already range-checked).
std::vector<int32_t> toInt32(const std::vector<int64_t> &v) {
  return std::vector<int32_t>(v.begin(), v.end());
}

/// A validation message in the words of the command line: the problem's
/// field names replaced by the options that set them ("seqlen_q must be
/// ..." -> "--seqlen-q must be ...").
std::string inOptionTerms(std::string message) {
  static const std::pair<const char *, const char *> kNames[] = {
      {"cu_seqlens_q", "--seqlens-q"},   {"cu_seqlens_k", "--seqlens-k"},
      {"key_lengths", "--key-lengths"},  {"seqlen_q", "--seqlen-q"},
      {"seqlen_k", "--seqlen-k"},        {"heads_q", "--heads-q"},
      {"heads_kv", "--heads-kv"},        {"head_dim_qk", "--head-dim"},
      {"head_dim_v", "--head-dim-v"},    {"softmax_scale", "--scale"},
      {"softcap", "--softcap"},          {"window_left", "--window-left"},
      {"window_right", "--window-right"}};
  auto isWordChar = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  };
  for (auto [field, option] : kNames) {
    const size_t n = std::strlen(field);
    for (size_t at = message.find(field); at != std::string::npos;
         at = message.find(field, at + 1)) {
      const bool whole = (at == 0 || !isWordChar(message[at - 1])) &&
                         (at + n == message.size() ||
                          !isWordChar(message[at + n]));
      if (whole)
        message.replace(at, n, option);
    }
  }
  return message;
}

std::string featureText(const ForwardProblem &p) {
  std::string out;
  auto side = [](int64_t w) {
    return w == kUnboundedWindow ? std::string("inf") : std::to_string(w);
  };
  if (p.mask == MaskMode::Window)
    out += " window=(" + side(p.windowLeft) + "," + side(p.windowRight) + ")";
  if (p.bias == BiasMode::Tensor)
    out += " bias=[" + std::to_string(p.biasShape.batch) + "," +
           std::to_string(p.biasShape.heads) + ",sq,sk]";
  if (p.bias == BiasMode::Alibi)
    out += " bias=alibi";
  if (p.softcap > 0)
    out += " softcap=" + std::to_string(p.softcap);
  if (p.varlen)
    out += " varlen(total_q=" + std::to_string(p.varlen->totalQ) +
           ",total_k=" + std::to_string(p.varlen->totalK) + ")";
  if (!p.keyLengths.empty())
    out += p.paged ? " cache_lengths" : " key_lengths";
  if (p.paged)
    out += " paged(page_size=" + std::to_string(p.paged->pageSize) +
           ",pages=" + std::to_string(p.paged->numPages) + ")";
  if (p.numSplits > 0)
    out += " splits=" + std::to_string(p.numSplits);
  return out;
}

} // namespace

Expected<std::vector<int64_t>> parseIntList(const std::string &option,
                                            const std::vector<std::string> &args,
                                            int64_t lo, int64_t hi) {
  std::vector<int64_t> values;
  for (const std::string &arg : args) {
    size_t start = 0;
    while (true) {
      const size_t end = std::min(arg.find(',', start), arg.size());
      const std::string item = arg.substr(start, end - start);
      const std::string where = "entry " + std::to_string(values.size() + 1) +
                                " of '" + arg + "'";
      if (item.empty())
        return Status::error(option + ": " + where +
                             " is empty (a comma-separated list of integers)");
      int64_t v = 0;
      auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
      if (ec == std::errc::result_out_of_range ||
          (ec == std::errc() && ptr == item.data() + item.size() &&
           (v < lo || v > hi)))
        return Status::error(option + ": " + where + " must be in [" +
                             std::to_string(lo) + ", " + std::to_string(hi) +
                             "], got " + item);
      if (ec != std::errc() || ptr != item.data() + item.size())
        return Status::error(option + ": " + where + " ('" + item +
                             "') is not an integer");
      values.push_back(v);
      if (end == arg.size())
        break;
      start = end + 1;
    }
  }
  return values;
}

void ProblemOptions::addTo(CLI::App &cmd) {
  spec.addTo(cmd, /*forCompile=*/false);
  const int64_t maxGrid = kMaxGrid, maxSeqlen = kMaxSeqlen;
  cmd.add_option("--batch", batch, "Batch size")
      ->check(CLI::Range(int64_t(1), maxGrid))
      ->capture_default_str();
  cmd.footer(
      "--align N (N < 8) places every tensor N elements past an aligned "
      "address, so that the runtime selects the N-element-aligned kernel.\n");
  cmd.add_option("--seqlen", seqlen,
                  "Sequence length of both queries and keys")
      ->check(CLI::Range(int64_t(1), maxSeqlen))
      ->capture_default_str();
  cmd.add_option("--seqlen-q", seqlenQ,
                  "Query sequence length (default: --seqlen)")
      ->check(CLI::Range(int64_t(1), maxSeqlen));
  cmd.add_option("--seqlen-k", seqlenK,
                  "Key/value sequence length (default: --seqlen); causal masks "
                  "align to the bottom-right corner when it differs")
      ->check(CLI::Range(int64_t(1), maxSeqlen));
  cmd.add_option("--scale", scale,
                  "Softmax scale (default: 1/sqrt(head_dim))");
  cmd.add_option("--window-left", windowLeft,
                  "--mask window: keys up to this many before the diagonal "
                  "(-1: unbounded)")
      ->check(CLI::Range(int64_t(-1), maxSeqlen));
  cmd.add_option("--window-right", windowRight,
                  "--mask window: keys up to this many after the diagonal "
                  "(-1: unbounded; 0 with a left window: causal sliding window)")
      ->check(CLI::Range(int64_t(-1), maxSeqlen));
  cmd.add_option("--bias-shape", biasShape,
                  "--bias tensor: its batch and heads extents, each 1 "
                  "(broadcast) or the full size (default: batch,heads_q)");
  cmd.add_option("--seqlens-q", seqlensQ,
                  "Varlen: comma-separated query lengths, one per sequence "
                  "(packed, sets --batch; default: --seqlens-k)");
  cmd.add_option("--seqlens-k", seqlensK,
                  "Varlen: comma-separated key lengths, one per sequence "
                  "(default: --seqlens-q)");
  cmd.add_option("--key-lengths", keyLengths,
                  "Padded batches: comma-separated real key counts, one per "
                  "batch entry; the keys past them are masked");
  cmd.add_flag("--decode", decode,
               "Decode: --seqlen-q defaults to 1 and every sequence's KV "
               "cache holds --seqlen-k keys (or --key-lengths: the cache "
               "lengths); see --page-size, --splits and docs/DECODE.md");
  cmd.add_option("--page-size", pageSize,
                  "K/V in a paged KV cache of pages of N rows (a block table "
                  "scatters every sequence's pages over the pool); needs "
                  "--decode or --key-lengths")
      ->check(CLI::Range(int64_t(1), kMaxPageSize));
  cmd.add_option("--splits", numSplits,
                  "Split-KV: the CTAs of a row block split its keys in N "
                  "(0: the runtime's choice, 1: no split)")
      ->check(CLI::Range(0, kMaxSplits))
      ->capture_default_str();
  cmd.add_option("--layout", layout,
                  "Memory layout of q, k, v, o: bshd or bhsd (varlen: packed "
                  "[total, heads, dim] or [heads, total, dim])")
      ->capture_default_str();
}

Status describeProblem(const ProblemOptions &o, const AttentionSpec &spec,
                       ForwardProblem &p) {
  p.dtype = spec.dtype;
  p.mask = spec.mask;
  p.bias = spec.bias;
  p.softcap = o.spec.softcap;
  p.batch = o.batch;
  p.headsQ = o.spec.headsQ;
  p.headsKV = o.spec.kvHeads();
  p.seqlenQ = o.seqlenQ.value_or(o.decode ? 1 : o.seqlen);
  p.seqlenK = o.seqlenK.value_or(o.seqlen);
  p.headDimQK = spec.headDimQK;
  p.headDimV = spec.headDimV;
  p.softmaxScale = o.scale;
  p.windowLeft = o.windowLeft;
  p.windowRight = o.windowRight;
  if (spec.mask == MaskMode::Window && o.windowLeft == kUnboundedWindow &&
      o.windowRight == kUnboundedWindow)
    return Status::error("--mask window needs --window-left and/or "
                         "--window-right (>= 0)");
  auto seqlensQ = parseIntList("--seqlens-q", o.seqlensQ, 0, kMaxSeqlen);
  auto seqlensK = parseIntList("--seqlens-k", o.seqlensK, 0, kMaxSeqlen);
  auto keyLengths = parseIntList("--key-lengths", o.keyLengths, 0, kMaxSeqlen);
  auto biasShape = parseIntList("--bias-shape", o.biasShape, 1, kMaxGrid);
  for (const auto *list : {&seqlensQ, &seqlensK, &keyLengths, &biasShape})
    if (!*list)
      return list->status();
  if (biasShape->size() > 2)
    return Status::error("--bias-shape takes 1 or 2 extents (batch, heads), "
                         "got " + std::to_string(biasShape->size()));
  if (!seqlensQ->empty() || !seqlensK->empty()) {
    const bool qGiven = !seqlensQ->empty(), kGiven = !seqlensK->empty();
    const auto &lq = qGiven ? *seqlensQ : *seqlensK;
    const auto &lk = kGiven ? *seqlensK : *seqlensQ;
    if (lq.size() != lk.size())
      return Status::error("--seqlens-q and --seqlens-k must list as many "
                           "sequences, got " + std::to_string(lq.size()) +
                           " and " + std::to_string(lk.size()));
    if (int64_t(lq.size()) > kMaxGrid)
      return Status::error(std::string(qGiven ? "--seqlens-q" : "--seqlens-k") +
                           " lists " + std::to_string(lq.size()) +
                           " sequences; at most " + std::to_string(kMaxGrid));
    VarlenSeqs seqs;
    seqs.cuSeqlensQ = {0};
    seqs.cuSeqlensK = {0};
    // The packed rows are numbered in int32 (cu_seqlens): the sums must fit.
    int64_t sumQ = 0, sumK = 0;
    for (size_t b = 0; b < lq.size(); ++b) {
      sumQ += lq[b];
      sumK += lk[b];
      for (auto [sum, option] : {std::pair{sumQ, qGiven ? "--seqlens-q"
                                                         : "--seqlens-k"},
                                 std::pair{sumK, kGiven ? "--seqlens-k"
                                                        : "--seqlens-q"}})
        if (sum > kMaxSeqlen)
          return Status::error(
              std::string(option) + " must add up to at most " +
              std::to_string(kMaxSeqlen) +
              " rows (the packed total is numbered in int32), but its first " +
              std::to_string(b + 1) + " lengths add up to " +
              std::to_string(sum));
      seqs.cuSeqlensQ.push_back(int32_t(sumQ));
      seqs.cuSeqlensK.push_back(int32_t(sumK));
    }
    seqs.totalQ = std::max<int64_t>(1, seqs.cuSeqlensQ.back());
    seqs.totalK = std::max<int64_t>(1, seqs.cuSeqlensK.back());
    p.batch = int64_t(lq.size());
    p.seqlenQ = std::max<int64_t>(1, *std::max_element(lq.begin(), lq.end()));
    p.seqlenK = std::max<int64_t>(1, *std::max_element(lk.begin(), lk.end()));
    p.varlen = std::move(seqs);
  }
  if (!keyLengths->empty()) {
    if (int64_t(keyLengths->size()) != p.batch)
      return Status::error("--key-lengths must list one length per batch "
                           "entry (" + std::to_string(p.batch) + "), got " +
                           std::to_string(keyLengths->size()));
    p.keyLengths = toInt32(*keyLengths);
  } else if (o.decode) {
    // --seqlen-k is at most 2^31 - 1 (its option's range).
    p.keyLengths.assign(p.batch, int32_t(p.seqlenK));
  }
  p.numSplits = o.numSplits;
  if (o.pageSize > 0) {
    if (p.keyLengths.empty())
      return Status::error("--page-size needs --decode or --key-lengths (a "
                           "paged cache's keys are its cache lengths)");
    if (o.layout != "bshd")
      return Status::error("--page-size needs --layout bshd (pages of "
                           "[page_size, heads_kv, head_dim])");
    PagedKV pg;
    pg.pageSize = o.pageSize;
    pg.maxPagesPerSeq = (p.seqlenK + o.pageSize - 1) / o.pageSize;
    int64_t used = 0;
    for (int32_t len : p.keyLengths)
      used += (len + o.pageSize - 1) / o.pageSize;
    pg.numPages = std::max<int64_t>(1, used);
    // Every sequence's pages scattered over the pool: a fixed permutation,
    // so that one shape always reads the same pages.
    std::vector<int32_t> ids(pg.numPages);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), std::mt19937_64(0x9e3779b9));
    pg.blockTable.assign(p.batch * pg.maxPagesPerSeq, 0);
    size_t next = 0;
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t i = 0; i * o.pageSize < p.keyLengths[b]; ++i)
        pg.blockTable[b * pg.maxPagesPerSeq + i] = ids[next++];
    p.paged = std::move(pg);
  }
  if (o.layout == "bshd") {
    p.setDenseBSHD();
  } else if (o.layout == "bhsd") {
    const int64_t rowsQ = p.varlen ? p.varlen->totalQ : p.seqlenQ;
    const int64_t rowsK = p.varlen ? p.varlen->totalK : p.seqlenK;
    p.setDenseBSHD(); // the LSE strides
    p.qStrides = bhsdStrides(p.headsQ, rowsQ, p.headDimQK);
    p.kStrides = bhsdStrides(p.headsKV, rowsK, p.headDimQK);
    p.vStrides = bhsdStrides(p.headsKV, rowsK, p.headDimV);
    p.oStrides = bhsdStrides(p.headsQ, rowsQ, p.headDimV);
  } else {
    return Status::error("--layout must be bshd or bhsd, got '" + o.layout +
                         "'");
  }
  if (spec.bias == BiasMode::Tensor) {
    p.biasShape.batch = biasShape->empty() ? p.batch : (*biasShape)[0];
    p.biasShape.heads = biasShape->size() < 2 ? p.headsQ : (*biasShape)[1];
    p.setDenseBias();
  } else if (!biasShape->empty()) {
    return Status::error("--bias-shape needs --bias tensor");
  }
  if (spec.bias == BiasMode::Alibi)
    p.alibiBatchStride = 0;
  if (Status s = validateParams(p); !s)
    return Status::error(inOptionTerms(s.message()));
  return Status::ok();
}

Expected<std::optional<TileConfig>>
explicitTile(const ProblemOptions &o, const ForwardProblem &problem,
             Arch arch) {
  if (!o.spec.hasTileOptions())
    return std::optional<TileConfig>();
  if (Status s = validate(problem); !s) // specFor needs a valid problem
    return s;
  TileConfig tile;
  if (Status s = o.spec.resolveTile(specFor(problem), arch, tile); !s)
    return s;
  return std::optional<TileConfig>(tile);
}

Status checkTileOptions(const ProblemOptions &o, const ForwardProblem &problem) {
  if (!o.spec.hasTileOptions())
    return Status::ok();
  // Pointers are not set yet; strides alone decide the alignment here.
  const AttentionSpec spec = specFor(problem);
  // Without --family, the GPU's preferred family, or the sm80 family, which
  // every GPU runs, may take the options.
  SpecOptions sm80 = o.spec;
  if (!sm80.family)
    sm80.family = std::string(toString(Family::Sm80));
  const SpecOptions *const choices[] = {&o.spec, &sm80};
  TileConfig tile;
  for (Arch arch : {Arch::Sm90a, Arch::Sm89, Arch::Sm86, Arch::Sm80})
    for (const SpecOptions *options : choices)
      if (options->resolveTile(spec, arch, tile))
        return Status::ok();
  // Refused everywhere: why, for that family on the GPU that allows most.
  return sm80.resolveTile(spec, Arch::Sm90a, tile);
}
void addSeedOption(CLI::App &cmd, uint64_t &seed, const std::string &help) {
  cmd.add_option("--seed", seed, help)
      ->check(CLI::Validator(
          [](const std::string &v) -> std::string {
            return v.find('-') == std::string::npos
                       ? ""
                       : "must be an integer in [0, 2^64 - 1], got " + v;
          },
          "SEED"))
      ->capture_default_str();
}

ProblemBytes problemBytes(const ForwardProblem &p, bool writeLse) {
  auto add = [](uint64_t a, uint64_t b) {
    uint64_t r;
    return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
  };
  auto mul = [](uint64_t a, uint64_t b) {
    uint64_t r;
    return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
  };
  const uint64_t eb = elementBytes(p.dtype);
  const uint64_t inputs =
      mul(add(add(uint64_t(p.qElements()), uint64_t(p.kElements())),
              add(uint64_t(p.vElements()),
                  p.bias == BiasMode::Tensor ? uint64_t(p.biasElements())
                                             : 0)),
          eb);
  const uint64_t outputs =
      add(mul(uint64_t(p.oElements()), eb),
          writeLse ? mul(uint64_t(p.lseElements()), sizeof(float)) : 0);
  // Small ones (slopes, cu_seqlens, key lengths) and alignment shifts.
  const uint64_t small = mul(add(uint64_t(p.batch), uint64_t(p.headsQ)), 64);
  ProblemBytes b;
  b.device = add(add(inputs, outputs), small);
  b.host = add(add(inputs, mul(outputs, 2)), small);
  return b;
}

Status checkProblemFits(const ForwardProblem &p, bool writeLse,
                        uint64_t deviceBytes) {
  const ProblemBytes need = problemBytes(p, writeLse);
  auto gib = [](uint64_t bytes) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f GiB", double(bytes) / double(1 << 30));
    return std::string(buf);
  };
  if (need.device > deviceBytes)
    return Status::error("the problem needs " + gib(need.device) +
                         " of device memory for its tensors; the GPU has " +
                         gib(deviceBytes) +
                         " (use a smaller batch, fewer heads or shorter "
                         "sequences)");
  const long pages = ::sysconf(_SC_PHYS_PAGES), pageBytes = ::sysconf(_SC_PAGESIZE);
  const uint64_t hostBytes =
      pages > 0 && pageBytes > 0 ? uint64_t(pages) * uint64_t(pageBytes)
                                 : UINT64_MAX;
  if (need.host > hostBytes)
    return Status::error("the problem needs " + gib(need.host) +
                         " of host memory for the copies of its inputs and "
                         "outputs; this machine has " +
                         gib(hostBytes) +
                         " (use a smaller batch, fewer heads or shorter "
                         "sequences)");
  return Status::ok();
}

std::string problemText(const ForwardProblem &p, const std::string &layout,
                        bool writeLse) {
  char line[512];
  std::snprintf(line, sizeof line,
                "batch=%lld heads_q=%lld heads_kv=%lld (gqa group %lld) "
                "seqlen_q=%lld seqlen_k=%lld head_dim=%lld/%lld %s %s mask=%s "
                "scale=%.6g lse=%s",
                (long long)p.batch, (long long)p.headsQ, (long long)p.headsKV,
                (long long)p.gqaGroup(),
                (long long)p.seqlenQ, (long long)p.seqlenK,
                (long long)p.headDimQK, (long long)p.headDimV,
                std::string(toString(p.dtype)).c_str(), layout.c_str(),
                std::string(toString(p.mask)).c_str(), p.scale(),
                writeLse ? "yes" : "no");
  return line + featureText(p);
}

double kvBytes(const ForwardProblem &p) {
  double keys = 0;
  for (int64_t b = 0; b < p.batch; ++b)
    keys += double(p.seqlenKOf(b));
  return keys * double(p.headsKV) * double(p.headDimQK + p.headDimV) *
         double(elementBytes(p.dtype));
}

double forwardFlops(const ForwardProblem &p) {
  // Only the work the mask keeps counts (causal: about half).
  return 2.0 * p.headsQ * double(visiblePairs(p)) *
         double(p.headDimQK + p.headDimV);
}

std::string candidateText(const TileConfig &c, int splits) {
  return configText(c) + (splits ? " splits=" + std::to_string(splits) : "");
}

std::string configText(const TileConfig &c) {
  return "block_m=" + std::to_string(c.blockM) +
         " block_n=" + std::to_string(c.blockN) +
         " warps=" + std::to_string(c.warps) +
          " stages=" + std::to_string(c.stages) + (c.packGqa ? " pack_gqa" : "") +
         (c.quick ? " quick" : "") + " family=" + std::string(toString(c.family)) +
         (c.pingpong ? " pingpong" : "") + (c.overlap ? " overlap" : "") +
         (c.scalar ? " scalar" : "");
}

Expected<DeviceProblem> uploadProblem(Runtime &rt, const ForwardProblem &shape,
                                      const AttentionSpec &spec,
                                      uint64_t seed) {
  // Before the first allocation, host or device.
  if (Status s = checkProblemFits(shape, spec.writeLse,
                                  uint64_t(rt.device().totalMemBytes));
      !s)
    return s;
  DeviceProblem d;
  ForwardProblem &p = d.problem;
  p = shape;
  const size_t eb = elementBytes(p.dtype);
  d.q.resize(p.qElements());
  d.k.resize(p.kElements());
  d.v.resize(p.vElements());
  fillNormal(d.q.data(), d.q.size(), p.dtype, seed * 5 + 0);
  fillNormal(d.k.data(), d.k.size(), p.dtype, seed * 5 + 1);
  fillNormal(d.v.data(), d.v.size(), p.dtype, seed * 5 + 2);
  d.bias.resize(p.bias == BiasMode::Tensor ? p.biasElements() : 0);
  fillNormal(d.bias.data(), d.bias.size(), p.dtype, seed * 5 + 3);
  d.alibiSlopes.resize(p.bias == BiasMode::Alibi ? p.headsQ : 0);
  for (size_t h = 0; h < d.alibiSlopes.size(); ++h) // the ALiBi paper's slopes
    d.alibiSlopes[h] =
        std::exp2(-8.0 * double(h + 1) / double(d.alibiSlopes.size()));
  const size_t shift =
      spec.globalAlignElems < 8 ? spec.globalAlignElems * eb : 0;
  auto upload = [&](const void *data, size_t bytes, size_t offset,
                    void *&device) -> Status {
    auto b = rt.allocate(bytes + offset);
    if (!b)
      return b.status();
    device = static_cast<char *>(b->data()) + offset;
    d.buffers.push_back(std::move(*b));
    d.deviceBytes += bytes + offset;
    return data ? rt.copyToDevice(device, data, bytes) : Status::ok();
  };
  void *dq = nullptr, *dk = nullptr, *dv = nullptr, *dout = nullptr,
       *dlse = nullptr, *dbias = nullptr, *dslopes = nullptr, *dcuq = nullptr,
       *dcuk = nullptr, *dklen = nullptr, *dtable = nullptr;
  Status up = upload(d.q.data(), d.q.size() * eb, shift, dq);
  if (up) up = upload(d.k.data(), d.k.size() * eb, shift, dk);
  if (up) up = upload(d.v.data(), d.v.size() * eb, shift, dv);
  if (up) up = upload(nullptr, p.oElements() * eb, shift, dout);
  if (up && spec.writeLse)
    up = upload(nullptr, p.lseElements() * sizeof(float), 0, dlse);
  if (up && !d.bias.empty())
    up = upload(d.bias.data(), d.bias.size() * eb, 0, dbias);
  if (up && !d.alibiSlopes.empty())
    up = upload(d.alibiSlopes.data(), d.alibiSlopes.size() * sizeof(float), 0,
                dslopes);
  if (up && p.varlen) {
    up = upload(p.varlen->cuSeqlensQ.data(),
                p.varlen->cuSeqlensQ.size() * sizeof(int32_t), 0, dcuq);
    if (up)
      up = upload(p.varlen->cuSeqlensK.data(),
                  p.varlen->cuSeqlensK.size() * sizeof(int32_t), 0, dcuk);
  }
  if (up && !p.keyLengths.empty())
    up = upload(p.keyLengths.data(), p.keyLengths.size() * sizeof(int32_t), 0,
                dklen);
  if (up && p.paged)
    up = upload(p.paged->blockTable.data(),
                p.paged->blockTable.size() * sizeof(int32_t), 0, dtable);
  if (!up)
    return up;
  p.deviceBlockTable = static_cast<const int32_t *>(dtable);
  p.q = dq;
  p.k = dk;
  p.v = dv;
  p.o = dout;
  p.lse = static_cast<float *>(dlse);
  p.biasData = dbias;
  p.alibiSlopes = static_cast<const float *>(dslopes);
  p.deviceCuSeqlensQ = static_cast<const int32_t *>(dcuq);
  p.deviceCuSeqlensK = static_cast<const int32_t *>(dcuk);
  p.deviceKeyLengths = static_cast<const int32_t *>(dklen);
  return d;
}

Expected<std::vector<DeviceProblem>>
uploadWorkspaces(Runtime &rt, const ForwardProblem &shape,
                 const AttentionSpec &spec, uint64_t seed) {
  std::vector<DeviceProblem> workspaces;
  auto first = uploadProblem(rt, shape, spec, seed);
  if (!first)
    return first.status();
  workspaces.push_back(std::move(*first));
  const int count = workspacesToRotate(workspaces.front().deviceBytes,
                                       rt.device().l2CacheBytes);
  for (int i = 1; i < count; ++i) {
    auto more = uploadProblem(rt, shape, spec, seed + i);
    if (!more)
      return more.status();
    // Only the first workspace's host copies are ever checked against.
    more->q = more->k = more->v = more->bias = {};
    more->alibiSlopes = {};
    workspaces.push_back(std::move(*more));
  }
  return workspaces;
}

Expected<DeviceBackwardProblem> uploadBackward(Runtime &rt,
                                               const DeviceProblem &forward,
                                               const AttentionSpec &spec,
                                               uint64_t seed) {
  ForwardProblem fwd = forward.problem;
  if (Status s = rt.attentionForward(fwd); !s)
    return Status::error("the forward: " + s.message());
  DeviceBackwardProblem d;
  BackwardProblem &p = d.problem;
  static_cast<ForwardProblem &>(p) = fwd;
  p.tile.reset();
  p.deterministic = spec.deterministic;
  p.biasGrad = spec.biasGrad;
  p.dOStrides = p.oStrides, p.dQStrides = p.qStrides;
  p.dKStrides = p.kStrides, p.dVStrides = p.vStrides;
  const size_t eb = elementBytes(p.dtype);
  d.dO.resize(p.oElements());
  fillNormal(d.dO.data(), int64_t(d.dO.size()), p.dtype, seed * 5 + 4);
  auto allocate = [&](size_t bytes, void *&ptr) -> Status {
    auto b = rt.allocate(bytes);
    if (!b)
      return b.status();
    ptr = b->data();
    d.buffers.push_back(std::move(*b));
    return Status::ok();
  };
  void *dO = nullptr;
  Status s = allocate(d.dO.size() * eb, dO);
  if (s)
    s = rt.copyToDevice(dO, d.dO.data(), d.dO.size() * eb);
  if (s)
    s = allocate(p.qElements() * eb, p.dQ);
  if (s)
    s = allocate(p.kElements() * eb, p.dK);
  if (s)
    s = allocate(p.vElements() * eb, p.dV);
  if (s && p.biasGrad) {
    p.dBiasStrides = {p.headsQ * p.seqlenQ * p.seqlenK, p.seqlenQ * p.seqlenK,
                      p.seqlenK};
    s = allocate(p.params().dBiasElements() * eb, p.dBias);
  }
  if (!s)
    return s;
  p.dO = dO;
  return d;
}

std::string deviceText(const Runtime &rt) {
  const DeviceInfo &dev = rt.device();
  return dev.name + " (" + std::string(toString(rt.arch())) + ", " +
         std::to_string(dev.smCount) + " SMs, " +
         std::to_string(dev.l2CacheBytes >> 20) + " MB L2), CUDA driver " +
         formatCudaVersion(rt.driverVersion());
}

} // namespace flashjit::cli
