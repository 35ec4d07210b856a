//===- compile_latency.cpp - Cold compile latency, spec -> PTX -------------===//
//
// For each head_dim x dtype x mask of the matrix, times compile()
// in-process after a first compile has warmed MLIR's global state (dialect
// registration, LLVM target init). `--first` times only the first compile of
// a fresh process (run it once per process; the table's script does that).
//
//===----------------------------------------------------------------------===//
#include "flashjit/compiler/Pipeline.h"
#include "flashjit/kernels/Forward.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

using namespace flashjit;

namespace {
std::string dumpDir;

double compileMs(const AttentionSpec &spec, Arch arch, size_t *ptxBytes) {
  auto t0 = std::chrono::steady_clock::now();
  auto art = compile(spec, defaultTileConfig(spec, arch), arch);
  auto t1 = std::chrono::steady_clock::now();
  if (!art) {
    std::fprintf(stderr, "compile failed: %s\n", art.message().c_str());
    std::exit(1);
  }
  if (ptxBytes)
    *ptxBytes = art->ptx.size();
  if (!dumpDir.empty()) {
    std::string path = dumpDir + "/" + art->kernelName + ".ptx";
    if (FILE *f = std::fopen(path.c_str(), "w")) {
      std::fwrite(art->ptx.data(), 1, art->ptx.size(), f);
      std::fclose(f);
    }
  }
  return std::chrono::duration<double, std::milli>(t1 - t0).count();
}
} // namespace

int main(int argc, char **argv) {
  registerKernelFamilies();
  Arch arch = Arch::Sm90a;
  bool firstOnly = false;
  int headDimFirst = 128;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--first"))
      firstOnly = true;
    else if (!std::strncmp(argv[i], "--arch=", 7))
      arch = parseArch(argv[i] + 7).value_or(Arch::Sm90a);
    else if (!std::strncmp(argv[i], "--dump-ptx=", 11))
      dumpDir = argv[i] + 11;
    else if (!std::strncmp(argv[i], "--head-dim=", 11))
      headDimFirst = std::atoi(argv[i] + 11);
  }
  if (firstOnly) {
    AttentionSpec spec;
    spec.headDimQK = spec.headDimV = headDimFirst;
    std::printf("%.1f\n", compileMs(spec, arch, nullptr));
    return 0;
  }
  AttentionSpec warm;
  compileMs(warm, arch, nullptr);
  const int dims[] = {1, 16, 32, 33, 64, 72, 80, 96, 100, 128, 160, 192, 256};
  std::printf("| head_dim | dtype | mask | compile ms | PTX KiB |\n|---|---|---|---|---|\n");
  std::vector<double> all;
  for (int d : dims)
    for (DType dt : {DType::F16, DType::BF16})
      for (MaskMode m : {MaskMode::None, MaskMode::Causal}) {
        AttentionSpec spec;
        spec.headDimQK = spec.headDimV = d;
        spec.dtype = dt;
        spec.mask = m;
        spec.globalAlignElems = alignmentElems({d});
        size_t bytes = 0;
        double ms = compileMs(spec, arch, &bytes);
        all.push_back(ms);
        std::printf("| %d | %s | %s | %.1f | %.0f |\n", d,
                    std::string(toString(dt)).c_str(),
                    std::string(toString(m)).c_str(), ms, bytes / 1024.0);
      }
  std::sort(all.begin(), all.end());
  std::printf("\nkernels: %zu, median %.1f ms, max %.1f ms (arch %s)\n",
              all.size(), all[all.size() / 2], all.back(),
              std::string(toString(arch)).c_str());
  return 0;
}
