//===- Driver.h - The CUDA driver API, resolved from libcuda at run time --===//
//
// Private to runtime/lib: the only header that includes cuda.h. libcuda.so.1
// is opened with dlopen at first use so that flashjit links and runs on
// machines without a driver; every entry point we call sits in one table.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_RUNTIME_LIB_DRIVER_H
#define FLASHJIT_RUNTIME_LIB_DRIVER_H

#include "flashjit/compiler/Diagnostics.h"

#include <cuda.h>

namespace flashjit::driver {

// Each member is named after the exact symbol it is resolved from: the
// versioned one where cuda.h maps the plain name to it (cuMemAlloc_v2), so
// that call sites show which ABI they use.
#define FLASHJIT_DRIVER_FUNCTIONS(X)                                           \
  X(cuGetErrorName)                                                            \
  X(cuGetErrorString)                                                          \
  X(cuInit)                                                                    \
  X(cuDriverGetVersion)                                                        \
  X(cuDeviceGetCount)                                                          \
  X(cuDeviceGet)                                                               \
  X(cuDeviceGetName)                                                           \
  X(cuDeviceGetAttribute)                                                      \
  X(cuDeviceTotalMem_v2)                                                       \
  X(cuDevicePrimaryCtxRetain)                                                  \
  X(cuDevicePrimaryCtxRelease_v2)                                              \
  X(cuCtxSetCurrent)                                                           \
  X(cuCtxGetCurrent)                                                           \
  X(cuCtxGetDevice)                                                            \
  X(cuCtxSynchronize)                                                          \
  X(cuModuleLoadData)                                                          \
  X(cuModuleLoadDataEx)                                                        \
  X(cuModuleUnload)                                                            \
  X(cuModuleGetFunction)                                                       \
  X(cuLinkCreate_v2)                                                           \
  X(cuLinkAddData_v2)                                                          \
  X(cuLinkComplete)                                                            \
  X(cuLinkDestroy)                                                             \
  X(cuFuncSetAttribute)                                                        \
  X(cuFuncGetAttribute)                                                        \
  X(cuLaunchKernel)                                                            \
  X(cuMemAlloc_v2)                                                             \
  X(cuMemFree_v2)                                                              \
  X(cuMemcpyHtoD_v2)                                                           \
  X(cuMemcpyDtoH_v2)                                                           \
  X(cuMemsetD8_v2)                                                             \
  X(cuMemsetD16Async)                                                          \
  X(cuMemsetD32Async)                                                          \
  X(cuEventCreate)                                                             \
  X(cuEventDestroy_v2)                                                         \
  X(cuEventRecord)                                                             \
  X(cuEventSynchronize)                                                        \
  X(cuStreamCreate)                                                            \
  X(cuStreamDestroy_v2)                                                        \
  X(cuStreamSynchronize)

/// The resolved entry points. eventElapsedTime comes from
/// cuEventElapsedTime_v2 where the driver has it (CUDA 12.8+), else from the
/// original symbol: both have the same signature.
struct Api {
#define FLASHJIT_DRIVER_MEMBER(name) decltype(&::name) name = nullptr;
  FLASHJIT_DRIVER_FUNCTIONS(FLASHJIT_DRIVER_MEMBER)
#undef FLASHJIT_DRIVER_MEMBER
  CUresult (*eventElapsedTime)(float *, CUevent, CUevent) = nullptr;
  /// cuTensorMapEncodeTiled (CUDA 12.0+), only for kernels that take TMA
  /// tensor maps: null on older drivers, which can still run the others.
  decltype(&::cuTensorMapEncodeTiled) tensorMapEncodeTiled = nullptr;
};

/// The driver, loaded and initialised (cuInit) once per process. Without a
/// usable driver: "no CUDA driver found (libcuda.so.1: <dlerror>)" or the
/// driver's own cuInit error.
Expected<const Api *> api();

/// The driver library alone, without cuInit: enough for the driver version
/// on a machine whose driver has no device.
Expected<const Api *> library();

/// Ok, or "<what>: CUDA_ERROR_NAME (driver's description)".
Status check(CUresult result, const char *what);

/// Makes `ctx` current on this thread for the guard's lifetime, then gives
/// back the caller's own context (a framework's) if it had one. A thread
/// with none keeps ours: the next call then needs no switch at all.
class ScopedContext {
public:
  ScopedContext(const Api &cu, CUcontext ctx) : cu_(cu) {
    cu_.cuCtxGetCurrent(&previous_);
    if (previous_ != ctx)
      cu_.cuCtxSetCurrent(ctx);
    if (previous_ == ctx)
      previous_ = nullptr;
  }
  ~ScopedContext() {
    if (previous_)
      cu_.cuCtxSetCurrent(previous_);
  }
  ScopedContext(const ScopedContext &) = delete;
  ScopedContext &operator=(const ScopedContext &) = delete;

private:
  const Api &cu_;
  CUcontext previous_ = nullptr; ///< to restore, or null
};

} // namespace flashjit::driver

#endif // FLASHJIT_RUNTIME_LIB_DRIVER_H
