//===- Assembler.h - PTX -> cubin: the toolkit's nvJitLink or the driver --===//
//
// Private to runtime/lib. The driver's cuLink JIT and the CUDA toolkit's
// ptxas can be different compilers under one version number: on an H200
// with driver 580.159 the JIT spilled 40-128 bytes per thread in sm90
// kernels that ptxas 13.0 assembles without a spill
// (bench/results/2026-12-03-h200-sm90-family.md). The tests prove the PTX
// spill-free with the toolkit's ptxas, so the runtime assembles with the
// same compiler, in process through libnvJitLink, wherever one is found
// that the driver can load the output of; otherwise with the driver's JIT.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_RUNTIME_LIB_ASSEMBLER_H
#define FLASHJIT_RUNTIME_LIB_ASSEMBLER_H

#include "Driver.h"

#include "flashjit/compiler/AttentionSpec.h"

#include <memory>
#include <string>

namespace flashjit::driver {

struct NvJitLinkApi;

/// An assembler: the toolkit's nvJitLink (with its entry points) or the
/// driver's JIT.
struct Assembler {
  /// What the cache key records: "nvJitLink 13.0" or "driver JIT".
  std::string name;
  /// Where nvJitLink was looked for and why it was not used (empty when it
  /// is), for `flashjit info`.
  std::string why;
  bool toolkit = false;
  /// nvJitLink's entry points when `toolkit`; the library stays loaded.
  std::shared_ptr<const NvJitLinkApi> nvJitLink;
};

/// Looks for nvJitLink as below, every call (tests, `flashjit info`).
Assembler chooseAssembler(int driverVersion);

/// The process's assembler, chosen once (by the first caller's driver
/// version, which is the process's): $FLASHJIT_ASSEMBLER=driver forces the driver's
/// JIT; $FLASHJIT_NVJITLINK names a libnvJitLink to use; else the sonames
/// libnvJitLink.so.13 and .12 (found beside torch and in the loader's
/// path), then $CUDA_HOME/lib64 and /usr/local/cuda/lib64. A library newer
/// than the driver (`driverVersion`, as cuDriverGetVersion) is not used:
/// the driver could not load its cubins.
const Assembler &assembler(int driverVersion);

/// Assembles `ptx` with nvJitLink (`a.toolkit` must hold).
Expected<std::string> assembleWithToolkit(const Assembler &a,
                                          const std::string &ptx,
                                          const std::string &name, Arch arch,
                                          int optLevel);

/// Assembles `ptx` for `arch` at ptxas level `optLevel` (0-3) with the
/// process's assembler. The driver's JIT needs the target context current.
/// On failure the message holds the compiler's error log.
Expected<std::string> assemble(const Api &cu, int driverVersion,
                               const std::string &ptx, const std::string &name,
                               Arch arch, int optLevel);

} // namespace flashjit::driver

#endif // FLASHJIT_RUNTIME_LIB_ASSEMBLER_H
