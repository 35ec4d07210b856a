//===- FuzzTargets.h - The text flashjit parses, as fuzz targets ----------===//
//
// One function per kind of input the project reads: CLI option values,
// meta.json of a cache entry, tune.json, names in the cache directory
// (and the spellings of dtypes, masks, biases, archs and stages), and the
// tile dialect's attributes. Each takes arbitrary bytes, must neither crash
// nor hang, and checks what must hold of whatever it accepted. The same
// targets run under libFuzzer (flashjit-fuzz, clang builds) and under the
// seeded mutation loop of the unit tests (test_fuzz.cpp).
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_TESTS_FUZZ_FUZZTARGETS_H
#define FLASHJIT_TESTS_FUZZ_FUZZTARGETS_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace flashjit::fuzz {

/// What an input broke ("" when nothing): an accepted input that violates
/// an invariant of its parser.
using Finding = std::string;

struct Target {
  const char *name; ///< also the corpus folder: tests/fuzz/corpus/<name>
  Finding (*run)(const uint8_t *data, size_t size);
};

/// Every target, by name.
const std::vector<Target> &targets();
const Target *findTarget(const std::string &name);

/// Defined in TileAttrFuzz.cpp (built without RTTI, as MLIR is).
Finding fuzzTileAttributes(const uint8_t *data, size_t size);

} // namespace flashjit::fuzz

#endif
