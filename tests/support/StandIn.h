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

/// What the stand-in recorded of one cuTensorMapEncodeTiled call.
struct StandInTensorMap {
  unsigned rank = 0;
  unsigned long long dims[5] = {}, strides[4] = {}, box[5] = {};
};

/// Tensor maps encoded so far (-1 without the stand-in), and map `i`.
inline long standInTensorMaps() {
  void *lib = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  auto count = lib ? reinterpret_cast<long (*)()>(
                         ::dlsym(lib, "flashjit_standin_tensor_maps"))
                   : nullptr;
  return count ? count() : -1;
}
inline std::optional<StandInTensorMap> standInTensorMap(long i) {
  void *lib = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  auto read = lib ? reinterpret_cast<unsigned (*)(long, unsigned long long *)>(
                        ::dlsym(lib, "flashjit_standin_tensor_map"))
                  : nullptr;
  unsigned long long v[14];
  if (!read)
    return std::nullopt;
  StandInTensorMap m;
  m.rank = read(i, v);
  if (m.rank == 0)
    return std::nullopt;
  for (int j = 0; j < 5; ++j) {
    m.dims[j] = v[j];
    m.box[j] = v[9 + j];
  }
  for (int j = 0; j < 4; ++j)
    m.strides[j] = v[5 + j];
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
