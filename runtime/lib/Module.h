//===- Module.h - PTX -> cubin -> loaded function, through the driver -----===//
//
// Private to runtime/lib. Both functions expect the target context to be
// current on the calling thread.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_RUNTIME_LIB_MODULE_H
#define FLASHJIT_RUNTIME_LIB_MODULE_H

#include "Driver.h"

#include "flashjit/runtime/DiskCache.h"
#include "flashjit/runtime/ModuleCache.h"

#include <string>

namespace flashjit::driver {

/// Compiles PTX to a cubin for the current context's device with the
/// driver's cuLink API at ptxas level `optLevel` (0-3, as `ptxas -O<n>`).
/// On failure the message holds the JIT error log.
Expected<std::string> linkPtx(const Api &cu, const std::string &ptx,
                              const std::string &name, int optLevel);

/// Loads a cubin into `ctx`, finds meta.kernelName, opts it into
/// meta.sharedMemBytes of dynamic shared memory and checks that its register
/// use allows meta.threadsPerBlock. The returned kernel unloads its module
/// (with `ctx` made current) when the last reference goes.
Expected<ModuleCache::Kernel> loadKernel(const Api &cu, CUcontext ctx,
                                         const std::string &cubin,
                                         const KernelMeta &meta,
                                         LoadedKernel::Source source);

} // namespace flashjit::driver

#endif // FLASHJIT_RUNTIME_LIB_MODULE_H
