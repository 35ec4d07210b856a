//===- RunCommand.cpp - flashjit run: one kernel on random inputs ---------===//
//
// Compiles (or fetches) the kernel for the given problem, runs it on fresh
// normal inputs with a poisoned output, reports the median CUDA-event time
// and TFLOP/s, and with --check compares against the CPU float64 reference
// by the 2x rule.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"
#include "SpecOptions.h"

#include "flashjit/kernels/Reference.h"
#include "flashjit/runtime/Runtime.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

namespace flashjit::cli {

namespace {
struct RunOptions {
  SpecOptions spec;
  int64_t batch = 1;
  int64_t seqlen = 1024;
  std::optional<int64_t> seqlenQ, seqlenK;
  std::optional<double> scale;
  int64_t windowLeft = kUnboundedWindow, windowRight = kUnboundedWindow;
  std::vector<int64_t> seqlensQ, seqlensK; ///< varlen
  std::vector<int64_t> keyLengths;         ///< padded batches
  std::vector<int64_t> biasShape;          ///< bias extents {batch, heads}
  std::string layout = "bshd";
  uint64_t seed = 0;
  bool check = false;
  int checkSlices = 0;
  int warmup = 3;
  int repeats = 10;
};

/// Multiply-adds in a CPU reference slice beyond which --check samples
/// (batch, head) slices instead of checking all: a few seconds per check.
constexpr double kCheckBudget = 4e10;

int failWith(const std::string &message) {
  std::fflush(stdout); // keep the report in order when both go to one pipe
  std::fprintf(stderr, "flashjit run: %s\n", message.c_str());
  return 1;
}

/// Comma-separated list option values as int32 (already range-checked).
std::vector<int32_t> toInt32(const std::vector<int64_t> &v) {
  return std::vector<int32_t>(v.begin(), v.end());
}

/// The problem of the options: sizes, layout, mask window, bias, softcap,
/// varlen sequences and key lengths (strides set, pointers not).
Status describeProblem(const RunOptions &o, const AttentionSpec &spec,
                       ForwardProblem &p) {
  p.dtype = spec.dtype;
  p.mask = spec.mask;
  p.bias = spec.bias;
  p.softcap = o.spec.softcap;
  p.batch = o.batch;
  p.headsQ = o.spec.headsQ;
  p.headsKV = o.spec.headsKV;
  p.seqlenQ = o.seqlenQ.value_or(o.seqlen);
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
  if (!o.seqlensQ.empty() || !o.seqlensK.empty()) {
    const auto &lq = o.seqlensQ.empty() ? o.seqlensK : o.seqlensQ;
    const auto &lk = o.seqlensK.empty() ? o.seqlensQ : o.seqlensK;
    if (lq.size() != lk.size())
      return Status::error("--seqlens-q and --seqlens-k must list as many "
                           "sequences, got " + std::to_string(lq.size()) +
                           " and " + std::to_string(lk.size()));
    VarlenSeqs seqs;
    seqs.cuSeqlensQ = {0};
    seqs.cuSeqlensK = {0};
    for (size_t b = 0; b < lq.size(); ++b) {
      seqs.cuSeqlensQ.push_back(int32_t(seqs.cuSeqlensQ.back() + lq[b]));
      seqs.cuSeqlensK.push_back(int32_t(seqs.cuSeqlensK.back() + lk[b]));
    }
    seqs.totalQ = std::max<int64_t>(1, seqs.cuSeqlensQ.back());
    seqs.totalK = std::max<int64_t>(1, seqs.cuSeqlensK.back());
    p.batch = int64_t(lq.size());
    p.seqlenQ = std::max<int64_t>(1, *std::max_element(lq.begin(), lq.end()));
    p.seqlenK = std::max<int64_t>(1, *std::max_element(lk.begin(), lk.end()));
    p.varlen = std::move(seqs);
  }
  if (!o.keyLengths.empty()) {
    if (int64_t(o.keyLengths.size()) != p.batch)
      return Status::error("--key-lengths must list one length per batch "
                           "entry (" + std::to_string(p.batch) + "), got " +
                           std::to_string(o.keyLengths.size()));
    p.keyLengths = toInt32(o.keyLengths);
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
    p.biasShape.batch = o.biasShape.empty() ? p.batch : o.biasShape[0];
    p.biasShape.heads = o.biasShape.size() < 2 ? p.headsQ : o.biasShape[1];
    p.setDenseBias();
  } else if (!o.biasShape.empty()) {
    return Status::error("--bias-shape needs --bias tensor");
  }
  if (spec.bias == BiasMode::Alibi)
    p.alibiBatchStride = 0;
  return validateParams(p);
}

/// " window=(L,R) softcap=C bias=..." for the problem line.
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
    out += " key_lengths";
  return out;
}

int run(const RunOptions &o) {
  AttentionSpec spec;
  Arch unusedArch; // run compiles for the GPU it finds
  if (Status s = o.spec.resolve(spec, unusedArch); !s)
    return failWith(s.message());

  // Bad sizes, windows, bias shapes or sequence lists are usage errors,
  // found before looking for a GPU.
  ForwardProblem p;
  if (Status s = describeProblem(o, spec, p); !s) {
    failWith(s.message());
    return 2;
  }
  auto created = Runtime::create();
  if (!created)
    return failWith(created.message());
  Runtime &rt = **created;
  const DeviceInfo &dev = rt.device();
  std::printf("device:  %s (%s, %d SMs), CUDA driver %s\n", dev.name.c_str(),
              std::string(toString(rt.arch())).c_str(), dev.smCount,
              formatCudaVersion(rt.driverVersion()).c_str());
  std::printf("problem: batch=%lld heads_q=%lld heads_kv=%lld seqlen_q=%lld "
              "seqlen_k=%lld head_dim=%lld/%lld %s %s mask=%s scale=%.6g "
              "lse=%s%s\n",
              (long long)p.batch, (long long)p.headsQ, (long long)p.headsKV,
              (long long)p.seqlenQ, (long long)p.seqlenK,
              (long long)p.headDimQK, (long long)p.headDimV,
              std::string(toString(p.dtype)).c_str(), o.layout.c_str(),
              std::string(toString(p.mask)).c_str(), p.scale(),
              spec.writeLse ? "yes" : "no", featureText(p).c_str());

  // ---- inputs ---------------------------------------------------------------
  const size_t eb = elementBytes(p.dtype);
  std::vector<uint16_t> hq(p.qElements()), hk(p.kElements()), hv(p.vElements());
  fillNormal(hq.data(), hq.size(), p.dtype, o.seed * 5 + 0);
  fillNormal(hk.data(), hk.size(), p.dtype, o.seed * 5 + 1);
  fillNormal(hv.data(), hv.size(), p.dtype, o.seed * 5 + 2);
  std::vector<uint16_t> hbias(p.bias == BiasMode::Tensor ? p.biasElements() : 0);
  fillNormal(hbias.data(), hbias.size(), p.dtype, o.seed * 5 + 3);
  std::vector<float> hslopes(p.bias == BiasMode::Alibi ? p.headsQ : 0);
  for (size_t h = 0; h < hslopes.size(); ++h) // the ALiBi paper's geometric slopes
    hslopes[h] = std::exp2(-8.0 * double(h + 1) / double(hslopes.size()));
  // --align N < 8 starts every tensor N elements past an aligned address, so
  // that the runtime picks (and this run exercises) the narrower kernel.
  const size_t shift =
      spec.globalAlignElems < 8 ? spec.globalAlignElems * eb : 0;
  std::vector<DeviceBuffer> buffers;
  auto upload = [&](const void *data, size_t bytes, size_t offset,
                    void *&device) -> Status {
    auto b = rt.allocate(bytes + offset);
    if (!b)
      return b.status();
    device = static_cast<char *>(b->data()) + offset;
    buffers.push_back(std::move(*b));
    return data ? rt.copyToDevice(device, data, bytes) : Status::ok();
  };
  void *dq = nullptr, *dk = nullptr, *dv = nullptr, *dout = nullptr,
       *dlse = nullptr, *dbias = nullptr, *dslopes = nullptr, *dcuq = nullptr,
       *dcuk = nullptr, *dklen = nullptr;
  Status up = upload(hq.data(), hq.size() * eb, shift, dq);
  if (up) up = upload(hk.data(), hk.size() * eb, shift, dk);
  if (up) up = upload(hv.data(), hv.size() * eb, shift, dv);
  if (up) up = upload(nullptr, p.oElements() * eb, shift, dout);
  if (up && spec.writeLse)
    up = upload(nullptr, p.lseElements() * sizeof(float), 0, dlse);
  if (up && !hbias.empty())
    up = upload(hbias.data(), hbias.size() * eb, 0, dbias);
  if (up && !hslopes.empty())
    up = upload(hslopes.data(), hslopes.size() * sizeof(float), 0, dslopes);
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
  if (!up)
    return failWith(up.message());
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

  if (o.spec.hasTileOptions()) {
    if (Status s = validate(p); !s)
      return failWith(s.message());
    TileConfig tile;
    if (Status s = o.spec.resolveTile(specFor(p), rt.arch(), tile); !s)
      return failWith(s.message());
    p.tile = tile;
  }

  // ---- compile or fetch -----------------------------------------------------
  const auto start = std::chrono::steady_clock::now();
  auto plan = rt.planForward(p);
  if (!plan)
    return failWith(plan.message());
  const double prepareMs = std::chrono::duration<double, std::milli>(
                               std::chrono::steady_clock::now() - start)
                               .count();
  const LoadedKernel &k = *plan->kernel;
  std::printf("kernel:  %s (%s in %.1f ms)\n", k.name.c_str(),
              k.source == LoadedKernel::Source::Disk
                  ? "loaded from the disk cache"
                  : "compiled",
              prepareMs);
  const std::string spills =
      k.localBytes ? " local=" + std::to_string(k.localBytes) + " B (spills)"
                   : "";
  std::printf("config:  block_m=%d block_n=%d warps=%d stages=%d%s threads=%d "
              "smem=%d B grid=(%u,%u,%u) registers=%d%s\n",
              plan->config.blockM, plan->config.blockN, plan->config.warps,
              plan->config.stages, plan->config.packGqa ? " pack_gqa" : "",
              k.threadsPerBlock, k.sharedMemBytes,
              plan->grid[0], plan->grid[1], plan->grid[2], k.registers,
              spills.c_str());

  // ---- time
  // ------------------------------------------------------------------- Poison
  // before every run so that --check sees only what the last run wrote.
  auto poison = [&]() -> Status {
    Status s = rt.fill16(p.o, kPoison16, p.oElements());
    if (s && p.lse)
      s = rt.fill32(p.lse, kPoison32, p.lseElements());
    return s;
  };
  for (int i = 0; i < o.warmup; ++i) {
    Status s = poison();
    if (s)
      s = rt.launch(*plan);
    if (!s)
      return failWith(s.message());
  }
  std::vector<float> times;
  for (int i = 0; i < o.repeats; ++i) {
    if (Status s = poison(); !s)
      return failWith(s.message());
    auto ms = rt.timeMs([&] { return rt.launch(*plan); });
    if (!ms)
      return failWith(ms.message());
    times.push_back(*ms);
  }
  if (Status s = rt.synchronize(); !s)
    return failWith(s.message());
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  // Only the work the mask keeps counts (causal: about half).
  const double flops = 2.0 * p.headsQ * double(visiblePairs(p)) *
                       double(p.headDimQK + p.headDimV);
  std::printf("time:    %.4f ms median of %d (min %.4f ms), %.1f TFLOP/s\n",
              median, o.repeats, times.front(), flops / (median * 1e-3) / 1e12);

  if (!o.check)
    return 0;
  // ---- check ----------------------------------------------------------------
  std::vector<uint16_t> ho(p.oElements());
  std::vector<float> hlse(p.lse ? p.lseElements() : 0);
  if (Status s = rt.copyToHost(ho.data(), p.o, ho.size() * eb); !s)
    return failWith(s.message());
  if (p.lse)
    if (Status s =
            rt.copyToHost(hlse.data(), p.lse, hlse.size() * sizeof(float));
        !s)
      return failWith(s.message());
  const double perSlice =
      double(p.seqlenQ) * p.seqlenK * double(p.headDimQK + p.headDimV);
  const int slices =
      o.checkSlices > 0
          ? o.checkSlices
          : int(std::clamp(kCheckBudget / perSlice, 2.0, double(1 << 20)));
  auto chosen = sampleSlices(p, slices, o.seed);
  const CheckResult result =
      checkForward(p,
                   {hq.data(), hk.data(), hv.data(),
                    hbias.empty() ? nullptr : hbias.data(),
                    hslopes.empty() ? nullptr : hslopes.data()},
                   ho.data(), p.lse ? hlse.data() : nullptr, chosen);
  std::printf("check:   %lld of %lld (batch, head) slices\n%s\n",
              (long long)chosen.size(), (long long)(p.batch * p.headsQ),
              result.summary().c_str());
  return result.pass ? 0 : 1;
}
} // namespace

void addRunCommand(CLI::App &app, int &exitCode) {
  auto o = std::make_shared<RunOptions>();
  CLI::App *cmd = app.add_subcommand(
      "run", "Run one forward kernel on random inputs: compile it (or fetch it "
             "from the cache), time it and, with --check, compare it with the "
             "CPU float64 reference");
  o->spec.addTo(*cmd, /*forCompile=*/false);
  const int64_t maxGrid = 65535, maxSeqlen = 2147483647;
  cmd->add_option("--batch", o->batch, "Batch size")
      ->check(CLI::Range(int64_t(1), maxGrid))
      ->capture_default_str();
  cmd->footer(
      "--align N (N < 8) places every tensor N elements past an aligned "
      "address, so that the runtime selects the N-element-aligned kernel.\n");
  cmd->add_option("--seqlen", o->seqlen,
                  "Sequence length of both queries and keys")
      ->check(CLI::Range(int64_t(1), maxSeqlen))
      ->capture_default_str();
  cmd->add_option("--seqlen-q", o->seqlenQ,
                  "Query sequence length (default: --seqlen)")
      ->check(CLI::Range(int64_t(1), maxSeqlen));
  cmd->add_option("--seqlen-k", o->seqlenK,
                  "Key/value sequence length (default: --seqlen); causal masks "
                  "align to the bottom-right corner when it differs")
      ->check(CLI::Range(int64_t(1), maxSeqlen));
  cmd->add_option("--scale", o->scale,
                  "Softmax scale (default: 1/sqrt(head_dim))");
  cmd->add_option("--window-left", o->windowLeft,
                  "--mask window: keys up to this many before the diagonal "
                  "(-1: unbounded)")
      ->check(CLI::Range(int64_t(-1), maxSeqlen));
  cmd->add_option("--window-right", o->windowRight,
                  "--mask window: keys up to this many after the diagonal "
                  "(-1: unbounded; 0 with a left window: causal sliding window)")
      ->check(CLI::Range(int64_t(-1), maxSeqlen));
  cmd->add_option("--bias-shape", o->biasShape,
                  "--bias tensor: its batch and heads extents, each 1 "
                  "(broadcast) or the full size (default: batch,heads_q)")
      ->delimiter(',')
      ->expected(1, 2);
  cmd->add_option("--seqlens-q", o->seqlensQ,
                  "Varlen: comma-separated query lengths, one per sequence "
                  "(packed, sets --batch; default: --seqlens-k)")
      ->delimiter(',')
      ->check(CLI::Range(int64_t(0), maxSeqlen));
  cmd->add_option("--seqlens-k", o->seqlensK,
                  "Varlen: comma-separated key lengths, one per sequence "
                  "(default: --seqlens-q)")
      ->delimiter(',')
      ->check(CLI::Range(int64_t(0), maxSeqlen));
  cmd->add_option("--key-lengths", o->keyLengths,
                  "Padded batches: comma-separated real key counts, one per "
                  "batch entry; the keys past them are masked")
      ->delimiter(',')
      ->check(CLI::Range(int64_t(0), maxSeqlen));
  cmd->add_option("--layout", o->layout,
                  "Memory layout of q, k, v, o: bshd or bhsd (varlen: packed "
                  "[total, heads, dim] or [heads, total, dim])")
      ->capture_default_str();
  cmd->add_option("--seed", o->seed,
                  "Seed of the random normal inputs (same seed, same inputs)")
      ->capture_default_str();
  cmd->add_flag(
      "--check", o->check,
      "Compare with the CPU float64 reference: pass when the max error "
      "is at most 2x that of a plain fp32 implementation and every "
      "output element was written; exit 1 on FAIL");
  cmd->add_option("--check-slices", o->checkSlices,
                  "(batch, head) slices to check (default: all that fit a few "
                  "seconds of CPU time, at least 2)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--warmup", o->warmup, "Untimed runs before timing")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  cmd->add_option("--repeats", o->repeats,
                  "Timed runs (CUDA events); the median is reported")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  cmd->callback([o, &exitCode] { exitCode = run(*o); });
}

} // namespace flashjit::cli
