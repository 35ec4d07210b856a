//===- Device.cpp - Driver status and device queries ----------------------===//
#include "flashjit/runtime/Device.h"

#include "Driver.h"

#include <utility>

namespace flashjit {

Status driverStatus() {
  auto api = driver::api();
  return api ? Status::ok() : api.status();
}

Expected<int> driverVersion() {
  auto api = driver::library();
  if (!api)
    return api.status();
  int version = 0;
  if (Status s = driver::check((*api)->cuDriverGetVersion(&version),
                               "cuDriverGetVersion");
      !s)
    return s;
  return version;
}

std::string formatCudaVersion(int version) {
  return std::to_string(version / 1000) + "." +
         std::to_string(version % 1000 / 10);
}

Expected<int> deviceCount() {
  auto api = driver::api();
  if (!api)
    return api.status();
  int count = 0;
  if (Status s =
          driver::check((*api)->cuDeviceGetCount(&count), "cuDeviceGetCount");
      !s)
    return s;
  return count;
}

Expected<DeviceInfo> queryDevice(int ordinal) {
  auto count = deviceCount();
  if (!count)
    return count.status();
  if (ordinal < 0 || ordinal >= *count)
    return Status::error("device must be in [0, " + std::to_string(*count - 1) +
                         "] (" + std::to_string(*count) +
                         " CUDA devices found), got " +
                         std::to_string(ordinal));
  const driver::Api &cu = **driver::api();
  CUdevice dev;
  if (Status s = driver::check(cu.cuDeviceGet(&dev, ordinal), "cuDeviceGet");
      !s)
    return s;
  DeviceInfo info;
  info.ordinal = ordinal;
  char name[256] = {};
  if (Status s = driver::check(cu.cuDeviceGetName(name, sizeof name - 1, dev),
                               "cuDeviceGetName");
      !s)
    return s;
  info.name = name;
  struct {
    CUdevice_attribute attribute;
    int *into;
  } attributes[] = {
      {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, &info.ccMajor},
      {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, &info.ccMinor},
      {CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, &info.smCount},
      {CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
       &info.maxSharedMemPerBlockOptin},
      {CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, &info.l2CacheBytes},
  };
  for (auto &a : attributes)
    if (Status s =
            driver::check(cu.cuDeviceGetAttribute(a.into, a.attribute, dev),
                          "cuDeviceGetAttribute");
        !s)
      return s;
  size_t bytes = 0;
  if (Status s = driver::check(cu.cuDeviceTotalMem_v2(&bytes, dev),
                               "cuDeviceTotalMem");
      !s)
    return s;
  info.totalMemBytes = static_cast<int64_t>(bytes);
  return info;
}

Expected<int> currentDevice() {
  auto api = driver::api();
  if (!api)
    return api.status();
  const driver::Api &cu = **api;
  CUcontext context = nullptr;
  if (Status s = driver::check(cu.cuCtxGetCurrent(&context), "cuCtxGetCurrent");
      !s)
    return s;
  if (!context)
    return Status::error("this thread has no current CUDA context");
  CUdevice device = 0;
  if (Status s = driver::check(cu.cuCtxGetDevice(&device), "cuCtxGetDevice");
      !s)
    return s;
  return static_cast<int>(device);
}

Expected<Arch> archForComputeCapability(int major, int minor) {
  // THE device -> target table. sm_90a rather than sm_90: wgmma and
  // setmaxnreg exist only in the arch-specific target, and a 9.0 device runs
  // it. The others run the sm_80 family, compiled for their own target (a
  // cubin and a cache entry per target; the driver JITs the PTX for the
  // device). sm_90a PTX does not run on 10.x or 12.x.
  constexpr std::pair<int, Arch> kTargets[] = {
      {80, Arch::Sm80},  {86, Arch::Sm86},  {87, Arch::Sm87},
      {89, Arch::Sm89},  {90, Arch::Sm90a}, {100, Arch::Sm100},
      {120, Arch::Sm120}};
  std::string supported;
  for (auto [cc, arch] : kTargets) {
    if (cc == major * 10 + minor)
      return arch;
    supported += (supported.empty() ? "" : ", ") + std::to_string(cc / 10) +
                 "." + std::to_string(cc % 10);
  }
  return Status::error("compute capability " + std::to_string(major) + "." +
                       std::to_string(minor) +
                       " is not supported (supported: " + supported + ")");
}

} // namespace flashjit
