//===- StandIn.h - Tests against the stand-in libcuda (tests only) --------===//
//
// tests/standin/StandInDriver.cpp builds a libcuda.so.1 that accepts every
// call. In-process tests (suite names StandIn*, ctest unit-standin) find it
// through LD_LIBRARY_PATH; CLI tests put it on the child's LD_LIBRARY_PATH.
// These helpers say whether it is the driver in use and read the launches
// it recorded.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_TESTS_SUPPORT_STANDIN_H
#define FLASHJIT_TESTS_SUPPORT_STANDIN_H

#include "flashjit/runtime/Device.h"

#include <dlfcn.h>

#include <cstdint>
#include <optional>
#include <string>

namespace flashjit::test_support {

/// The directory holding the stand-in libcuda.so.1.
inline std::string standInDir() {
#ifdef FLASHJIT_STANDIN_DIR
  return FLASHJIT_STANDIN_DIR;
#else
  return "";
#endif
}

/// Whether this process loaded the stand-in as its CUDA driver.
inline bool standInLoaded() {
  auto device = queryDevice(0);
  return device && device->name.find("stand-in") != std::string::npos;
}

/// What the stand-in recorded of one launch.
struct StandInLaunch {
  std::string kernel;
  unsigned grid[3], block[3], sharedBytes;
};

/// Launches so far, and the last one (nullopt without the stand-in).
inline long standInLaunches() {
  void *lib = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  auto count = lib ? reinterpret_cast<long (*)()>(
                         ::dlsym(lib, "flashjit_standin_launches"))
                   : nullptr;
  return count ? count() : -1;
}
inline std::optional<StandInLaunch> standInLastLaunch() {
  void *lib = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  auto last = lib ? reinterpret_cast<const char *(*)(unsigned *)>(
                        ::dlsym(lib, "flashjit_standin_last_launch"))
                  : nullptr;
  if (!last)
    return std::nullopt;
  unsigned v[7];
  StandInLaunch l;
  l.kernel = last(v);
  for (int i = 0; i < 3; ++i) {
    l.grid[i] = v[i];
    l.block[i] = v[3 + i];
  }
  l.sharedBytes = v[6];
  return l;
}

/// The last tensor map the stand-in encoded (cuTensorMapEncodeTiled).
struct StandInTensorMap {
  uint64_t address = 0, rank = 0, dims[4] = {}, strides[3] = {}, box[4] = {};
};
inline std::optional<StandInTensorMap> standInLastTensorMap() {
  void *lib = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  auto last = lib ? reinterpret_cast<void (*)(uint64_t *)>(
                        ::dlsym(lib, "flashjit_standin_last_tensor_map"))
                  : nullptr;
  if (!last)
    return std::nullopt;
  uint64_t v[13];
  last(v);
  StandInTensorMap m;
  m.address = v[0], m.rank = v[1];
  for (int i = 0; i < 4; ++i)
    m.dims[i] = v[2 + i], m.box[i] = v[9 + i];
  for (int i = 0; i < 3; ++i)
    m.strides[i] = v[6 + i];
  return m;
}

} // namespace flashjit::test_support

/// In a StandIn* test: skip (which ctest unit-standin counts as a failure)
/// unless the stand-in driver is the one loaded.
#define FLASHJIT_REQUIRE_STANDIN()                                             \
  do {                                                                         \
    if (!::flashjit::test_support::standInLoaded())                            \
      GTEST_SKIP() << "needs the stand-in driver: run ctest -R unit-standin "  \
                      "(LD_LIBRARY_PATH="                                      \
                   << ::flashjit::test_support::standInDir() << ")";           \
  } while (0)

#endif
