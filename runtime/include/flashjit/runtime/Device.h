//===- Device.h - The CUDA driver and the devices it sees -----------------===//
//
// Plain C++ (no cuda.h): the driver is loaded at first use, and on a machine
// without one every function returns a Status that says so instead of
// failing to link or crashing.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_RUNTIME_DEVICE_H
#define FLASHJIT_RUNTIME_DEVICE_H

#include "flashjit/compiler/AttentionSpec.h"

#include <cstdint>
#include <string>

namespace flashjit {

/// Ok when libcuda.so.1 loads and initialises; otherwise why not ("no CUDA
/// driver found (libcuda.so.1: ...)" or the driver's own error).
Status driverStatus();

/// The driver's CUDA version as the driver reports it (12080 for 12.8).
/// Works without a device, as long as the library loads.
Expected<int> driverVersion();
/// 12080 -> "12.8".
std::string formatCudaVersion(int version);

/// What flashjit needs to know about one GPU.
struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int ccMajor = 0;
  int ccMinor = 0;
  int smCount = 0;
  /// Dynamic shared memory a block may opt into (cuFuncSetAttribute).
  int maxSharedMemPerBlockOptin = 0;
  int l2CacheBytes = 0;
  int64_t totalMemBytes = 0;
};

Expected<int> deviceCount();
Expected<DeviceInfo> queryDevice(int ordinal);

/// The kernel target for a compute capability: 9.0 -> sm_90a, 8.0 -> sm_80,
/// 8.6 -> sm_86, 8.9 -> sm_89; any other is an error naming it.
Expected<Arch> archForComputeCapability(int major, int minor);

} // namespace flashjit

#endif // FLASHJIT_RUNTIME_DEVICE_H
