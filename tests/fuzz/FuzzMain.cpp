//===- FuzzMain.cpp - libFuzzer entry point over the fuzz targets ---------===//
//
//   FLASHJIT_FUZZ_TARGET=meta-json flashjit-fuzz -max_total_time=30 \
//       <scratch-corpus-dir> tests/fuzz/corpus/meta-json
//
// A finding aborts with the target's message; libFuzzer saves the input.
//
//===----------------------------------------------------------------------===//
#include "FuzzTargets.h"

#include <cstdio>
#include <cstdlib>

using namespace flashjit::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const Target *target = [] {
    const char *name = std::getenv("FLASHJIT_FUZZ_TARGET");
    const Target *t = name ? findTarget(name) : nullptr;
    if (!t) {
      std::fprintf(stderr, "set FLASHJIT_FUZZ_TARGET to one of:");
      for (const Target &each : targets())
        std::fprintf(stderr, " %s", each.name);
      std::fprintf(stderr, "\n");
      std::exit(2);
    }
    return t;
  }();
  const Finding f = target->run(data, size);
  if (!f.empty()) {
    std::fprintf(stderr, "flashjit-fuzz %s: %s\n", target->name, f.c_str());
    std::abort();
  }
  return 0;
}
