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
/// What turns PTX into cubins under a driver of `driverVersion`: "ptxas
/// 13.0" (the toolkit's compiler, preferred), "nvJitLink 13.0", or "driver
/// JIT (why not the others)". $FLASHJIT_ASSEMBLER and $FLASHJIT_PTXAS /
/// $FLASHJIT_NVJITLINK choose; see runtime/lib/Assembler.h.
std::string assemblerDescription(int driverVersion);

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

/// The device of the calling thread's current CUDA context (one a
/// framework made current); an error when the thread has none.
Expected<int> currentDevice();

/// The kernel target for a compute capability: 9.0 -> sm_90a, and the
/// GPUs that run the sm_80 family their own target (8.0, 8.6, 8.7, 8.9,
/// 10.0, 12.0 -> sm_80 ... sm_120); any other is an error naming it.
Expected<Arch> archForComputeCapability(int major, int minor);

} // namespace flashjit

#endif // FLASHJIT_RUNTIME_DEVICE_H
