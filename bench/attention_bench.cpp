//===- attention_bench.cpp - Forward throughput and cache latency on a GPU --===//
//
// Times flashjit's forward kernels on the shapes peers_bench.py uses (bf16,
// BHSD, B*S = 16384 tokens, H = 2048 / D), checks each kernel's output on a
// few (batch, head) slices against the float64 reference first, and measures
// the kernel cache: memory hit, disk hit in a fresh process, cold compile
// (the quick form a cold miss launches first, and the full kernel behind it).
//
//   flashjit-bench-gpu [--dims 64,80,...] [--seqlens 4096] [--causal both|0|1]
//                      [--repeats 30] [--json FILE]
//                      [--cache-latency] [--latency-dims 64,80,...]
//
// The cache latencies are taken after the throughput rows (at least one
// kernel compiled): the process has its MLIR, LLVM and the driver's JIT
// loaded, as when an application meets a new head size. The first compile
// of the process, which loads them, is printed on its own line.
//
//===----------------------------------------------------------------------===//
#include "flashjit/kernels/Reference.h"
#include "flashjit/runtime/Runtime.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

using namespace flashjit;

namespace {
std::vector<int> parseList(const char *s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    out.push_back(std::atoi(item.c_str()));
  return out;
}

[[noreturn]] void die(const std::string &what) {
  std::fprintf(stderr, "flashjit-bench-gpu: %s\n", what.c_str());
  std::exit(1);
}

template <typename T> T check(Expected<T> v, const char *what) {
  if (!v)
    die(std::string(what) + ": " + v.message());
  return std::move(*v);
}
void check(const Status &s, const char *what) {
  if (!s)
    die(std::string(what) + ": " + s.message());
}

struct Row {
  int d, s;
  bool causal;
  double ms, tflops;
  std::string config;
  bool pass;
  double relErr;
};

ForwardProblem makeProblem(int d, int s, bool causal, int64_t tokens,
                           int hd) {
  ForwardProblem p;
  p.dtype = DType::BF16;
  p.mask = causal ? MaskMode::Causal : MaskMode::None;
  p.batch = std::max<int64_t>(1, tokens / s);
  p.headsQ = p.headsKV = d >= 64 ? std::max(1, hd / d) : 32;
  p.seqlenQ = p.seqlenK = s;
  p.headDimQK = p.headDimV = d;
  // BHSD, as the peers' torch tensors.
  p.qStrides = bhsdStrides(p.headsQ, s, d);
  p.kStrides = bhsdStrides(p.headsKV, s, d);
  p.vStrides = bhsdStrides(p.headsKV, s, d);
  p.oStrides = bhsdStrides(p.headsQ, s, d);
  p.lseBatchStride = p.headsQ * s;
  p.lseHeadStride = s;
  return p;
}

/// A small problem whose tensors are allocated (planForward checks pointers).
struct SmallProblem {
  ForwardProblem p;
  std::vector<DeviceBuffer> buffers;
};
SmallProblem smallProblem(Runtime &rt, int d, bool causal) {
  SmallProblem sp;
  sp.p = makeProblem(d, 128, causal, 128, 2048);
  const int64_t maxSeq = 256; // room for the varied sequence lengths below
  ForwardProblem big = makeProblem(d, maxSeq, false, maxSeq, 2048);
  for (int64_t n : {big.qElements(), big.kElements(), big.vElements(),
                    big.oElements()})
    sp.buffers.push_back(check(rt.allocate(n * 2), "alloc"));
  sp.p.q = sp.buffers[0].data();
  sp.p.k = sp.buffers[1].data();
  sp.p.v = sp.buffers[2].data();
  sp.p.o = sp.buffers[3].data();
  return sp;
}

/// Probe run in a fresh process: the kernel is on disk, not in memory.
int diskHitProbe(int d, bool causal) {
  auto rt = check(Runtime::create(), "runtime");
  SmallProblem sp = smallProblem(*rt, d, causal);
  ForwardProblem &p = sp.p;
  auto t0 = std::chrono::steady_clock::now();
  auto plan = check(rt->planForward(p), "plan");
  auto t1 = std::chrono::steady_clock::now();
  CacheStats st = rt->cacheStats();
  std::printf("%.3f %llu\n", std::chrono::duration<double, std::milli>(t1 - t0).count(),
              static_cast<unsigned long long>(st.diskHits));
  return 0;
}

/// One row of the latency table: cold compile (the quick form, then the
/// full kernel behind it), memory hit, disk hit.
void latencyRow(const char *self, int d, bool causal) {
  auto rt = check(Runtime::create(), "runtime");
  SmallProblem sp = smallProblem(*rt, d, causal);
  ForwardProblem &p = sp.p;
  auto t0 = std::chrono::steady_clock::now();
  auto coldPlan = check(rt->planForward(p), "cold plan");
  auto t1 = std::chrono::steady_clock::now();
  double coldMs = std::chrono::duration<double, std::milli>(t1 - t0).count();
  // A family without a quick form (sm90) compiles the full kernel at once.
  const bool quickFirst = coldPlan.kernel->source == LoadedKernel::Source::Quick;
  if (quickFirst ? rt->cacheStats().quickCompiles != 1
                 : coldPlan.kernel->source != LoadedKernel::Source::Compiled)
    die("a cold miss gave neither the quick form nor the full kernel");
  // The full kernel, compiled in the background, is ready (and on disk).
  rt->finishCompiles();
  double fullMs = std::chrono::duration<double, std::milli>(
                      std::chrono::steady_clock::now() - t0)
                      .count();
  const CacheStats full = rt->cacheStats();
  if (check(rt->planForward(p), "full plan").kernel->source !=
      LoadedKernel::Source::Compiled)
    die("the full kernel did not replace the quick form");
  // Memory hit: the whole lookup path of a call (validate, specialise,
  // key, map lookup), averaged.
  const int n = 20000;
  auto t2 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    p.seqlenQ = p.seqlenK = 128 - (i & 7); // new shapes: still no compile
    check(rt->planForward(p), "hot plan");
  }
  auto t3 = std::chrono::steady_clock::now();
  double hitUs = std::chrono::duration<double, std::micro>(t3 - t2).count() / n;
  if (rt->cacheStats().compiles != 1)
    die("a new sequence length recompiled");
  std::string cmd = std::string(self) + " --disk-hit-probe " +
                    std::to_string(d) + (causal ? " 1" : " 0");
  FILE *pipe = popen(cmd.c_str(), "r");
  double diskMs = -1;
  unsigned long long diskHits = 0;
  if (pipe) {
    if (std::fscanf(pipe, "%lf %llu", &diskMs, &diskHits) != 2)
      diskMs = -1;
    pclose(pipe);
  }
  if (diskHits != 1)
    die("the probe process did not hit the disk cache");
  char quickMs[64];
  if (quickFirst)
    std::snprintf(quickMs, sizeof quickMs, "%.1f", coldMs);
  else
    std::snprintf(quickMs, sizeof quickMs, "- (%s: no quick form)",
                  std::string(toString(coldPlan.config.family)).c_str());
  std::printf("| %d | %s | %s | %.1f | %.1f | %.1f | %.2f | %.2f |\n", d,
              causal ? "causal" : "none", quickMs, fullMs,
              full.generateMs, full.jitMs, diskMs, hitUs);
  std::fflush(stdout);
}

void cacheLatency(const char *self, const std::vector<int> &dims,
                  const std::vector<bool> &causals) {
  namespace fs = std::filesystem;
  std::string dir = (fs::temp_directory_path() / "flashjit-bench-cache").string();
  fs::remove_all(dir);
  setenv("FLASHJIT_CACHE_DIR", dir.c_str(), 1);
  // The two forms compile on two threads at once: their generation and JIT
  // times are summed over both.
  std::printf("\n| D | mask | cold compile: quick form ready (ms) | full "
              "kernel ready (ms) | generate, both (ms) | assemble, both (ms) "
              "| disk hit, new process (ms) | memory hit (us) |\n"
              "|---|---|---|---|---|---|---|---|\n");
  for (int d : dims)
    for (bool causal : causals)
      latencyRow(self, d, causal);
  fs::remove_all(dir);
}
} // namespace

int main(int argc, char **argv) {
  std::vector<int> dims = {64, 80, 96, 100, 128, 160, 256};
  std::vector<int> seqlens = {4096};
  std::vector<bool> causals = {false, true};
  int repeats = 30;
  int64_t tokens = 16384;
  int hd = 2048;
  const char *jsonPath = nullptr;
  bool cacheBench = false;
  std::vector<int> latencyDims = {64, 80, 96, 100, 128, 160, 192, 256};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> const char * {
      if (i + 1 >= argc)
        die("missing value after " + a);
      return argv[++i];
    };
    if (a == "--disk-hit-probe") {
      const int d = std::atoi(next());
      return diskHitProbe(d, std::string(next()) == "1");
    }
    if (a == "--dims")
      dims = parseList(next());
    else if (a == "--seqlens")
      seqlens = parseList(next());
    else if (a == "--causal") {
      std::string c = next();
      causals = c == "both" ? std::vector<bool>{false, true}
                            : std::vector<bool>{c == "1"};
    } else if (a == "--repeats")
      repeats = std::atoi(next());
    else if (a == "--json")
      jsonPath = next();
    else if (a == "--cache-latency")
      cacheBench = true;
    else if (a == "--latency-dims")
      latencyDims = parseList(next());
    else
      die("unknown argument " + a);
  }

  auto rt = check(Runtime::create(), "runtime");
  std::printf("device: %s, arch %s\n", rt->device().name.c_str(),
              std::string(toString(rt->arch())).c_str());
  std::vector<Row> rows;
  for (int d : dims)
    for (int s : seqlens) {
      ForwardProblem base = makeProblem(d, s, false, tokens, hd);
      const int64_t qn = base.qElements(), kn = base.kElements(),
                    vn = base.vElements(), on = base.oElements();
      std::vector<uint16_t> hq(qn), hk(kn), hv(vn), ho(on);
      fillNormal(hq.data(), qn, DType::BF16, 1000 + d);
      fillNormal(hk.data(), kn, DType::BF16, 2000 + d);
      fillNormal(hv.data(), vn, DType::BF16, 3000 + d);
      auto dq = check(rt->allocate(qn * 2), "alloc q");
      auto dk = check(rt->allocate(kn * 2), "alloc k");
      auto dv = check(rt->allocate(vn * 2), "alloc v");
      auto dO = check(rt->allocate(on * 2), "alloc o");
      auto dl = check(rt->allocate(base.lseElements() * 4), "alloc lse");
      check(rt->copyToDevice(dq.data(), hq.data(), qn * 2), "copy q");
      check(rt->copyToDevice(dk.data(), hk.data(), kn * 2), "copy k");
      check(rt->copyToDevice(dv.data(), hv.data(), vn * 2), "copy v");
      for (bool causal : causals) {
        ForwardProblem p = makeProblem(d, s, causal, tokens, hd);
        p.q = dq.data();
        p.k = dk.data();
        p.v = dv.data();
        p.o = dO.data();
        p.lse = static_cast<float *>(dl.data());
        const auto planStart = std::chrono::steady_clock::now();
        // The full kernel (a cold miss would otherwise hand out its quick
        // form), compiled directly.
        auto plan = check(rt->planForward(p, /*fullKernel=*/true), "plan");
        if (rows.empty()) {
          const CacheStats st = rt->cacheStats();
          const double ms = std::chrono::duration<double, std::milli>(
                                std::chrono::steady_clock::now() - planStart)
                                .count();
          if (st.compiles == 0)
            std::printf("first kernel of this process: %.1f ms (a disk hit)\n",
                        ms);
          else
            std::printf("first compile of this process: %.1f ms (generate "
                        "%.1f ms, assemble %.1f ms)\n",
                        ms, st.generateMs, st.jitMs);
        }
        // Numerics first: poisoned output, a few slices vs float64.
        check(rt->fill16(dO.data(), kPoison16, on), "poison");
        check(rt->launch(plan), "launch");
        check(rt->synchronize(), "sync");
        check(rt->copyToHost(ho.data(), dO.data(), on * 2), "copy o");
        HostInputs in{hq.data(), hk.data(), hv.data()};
        CheckResult cr = checkForward(p, in, ho.data(), nullptr,
                                      sampleSlices(p, 2, 7 + d));
        std::vector<float> times;
        for (int w = 0; w < 3; ++w)
          check(rt->launch(plan), "warmup");
        for (int r = 0; r < repeats; ++r)
          times.push_back(check(rt->timeMs([&] { return rt->launch(plan); }),
                                "time"));
        std::sort(times.begin(), times.end());
        double ms = times[times.size() / 2];
        double flops = 4.0 * p.batch * p.headsQ * double(s) * s * d *
                       (causal ? 0.5 : 1.0);
        std::ostringstream cfg;
        cfg << plan.config.blockM << "x" << plan.config.blockN << " w"
            << plan.config.warps << " s" << plan.config.stages;
        rows.push_back({d, s, causal, ms, flops / ms / 1e9, cfg.str(), cr.pass,
                        cr.out.relative()});
        std::printf("D=%d S=%d causal=%d: %.3f ms, %.1f TFLOP/s, %s, check %s "
                    "(rel err %.2e)\n",
                    d, s, int(causal), ms, flops / ms / 1e9, cfg.str().c_str(),
                    cr.pass ? "PASS" : "FAIL", cr.out.relative());
        std::fflush(stdout);
      }
    }
  std::printf("\n| D | S | causal | config | ms | TFLOP/s | check |\n|---|---|---|---|---|---|---|\n");
  for (const Row &r : rows)
    std::printf("| %d | %d | %s | %s | %.3f | %.1f | %s |\n", r.d, r.s,
                r.causal ? "yes" : "no", r.config.c_str(), r.ms, r.tflops,
                r.pass ? "pass" : "FAIL");
  if (jsonPath) {
    if (FILE *f = std::fopen(jsonPath, "w")) {
      std::fprintf(f, "[\n");
      for (size_t i = 0; i < rows.size(); ++i)
        std::fprintf(f,
                     "  {\"D\": %d, \"S\": %d, \"causal\": %s, \"config\": "
                     "\"%s\", \"ms\": %.4f, \"tflops\": %.2f, \"pass\": %s, "
                     "\"rel_err\": %.3e}%s\n",
                     rows[i].d, rows[i].s, rows[i].causal ? "true" : "false",
                     rows[i].config.c_str(), rows[i].ms, rows[i].tflops,
                     rows[i].pass ? "true" : "false", rows[i].relErr,
                     i + 1 < rows.size() ? "," : "");
      std::fprintf(f, "]\n");
      std::fclose(f);
    }
  }
  if (cacheBench)
    cacheLatency(argv[0], latencyDims, causals);
  bool allPass = std::all_of(rows.begin(), rows.end(), [](const Row &r) { return r.pass; });
  return allPass ? 0 : 1;
}
