//===- Assembler.h - PTX -> cubin: the toolkit's nvJitLink or the driver --===//
//
// Private to runtime/lib. Three compilers can turn PTX into a cubin, and
// they do not produce the same code. nvJitLink and the driver's cuLink JIT
// compile PTX as relocatable code (`ptxas -c`), and in that mode ptxas 13.0
// spills sm90 kernels that raise their registers with setmaxnreg: 40-152
// bytes per thread on an H200 (bench/results/2026-12-04-h200-backward-decode-
// assembler.md) where the ptxas binary, compiling the whole program, spills
// none. The runtime therefore prefers the toolkit's ptxas binary, then
// libnvJitLink in process, then the driver's JIT: the first found that the
// driver can load the output of.
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

/// An assembler: the toolkit's ptxas binary, its nvJitLink (with its entry
/// points) or the driver's JIT.
struct Assembler {
  /// What the cache key records: "ptxas 13.0", "nvJitLink 13.0" or
  /// "driver JIT".
  std::string name;
  /// Where the toolkit's compilers were looked for and why they were not
  /// used (empty when the first is), for `flashjit info`.
  std::string why;
  bool toolkit = false; ///< ptxas or nvJitLink
  /// The ptxas binary's path; empty for nvJitLink and the driver's JIT.
  std::string ptxas;
  /// nvJitLink's entry points when `toolkit` and not ptxas; the library
  /// stays loaded.
  std::shared_ptr<const NvJitLinkApi> nvJitLink;
};

/// Looks for the toolkit's compilers as below, every call (tests,
/// `flashjit info`).
Assembler chooseAssembler(int driverVersion);

/// The process's assembler, chosen once (by the first caller's driver
/// version, which is the process's). $FLASHJIT_ASSEMBLER=driver, =nvjitlink
/// or =ptxas takes only that one (the driver's JIT when it is not found).
/// ptxas: $FLASHJIT_PTXAS, else $CUDA_HOME/bin/ptxas,
/// /usr/local/cuda/bin/ptxas, the PATH's, then $FLASHJIT_BUNDLED_PTXAS (the
/// Python package sets it to Triton's). nvJitLink: $FLASHJIT_NVJITLINK, else the
/// sonames libnvJitLink.so.13 and .12 (found beside torch and in the
/// loader's path), then $CUDA_HOME/lib64 and /usr/local/cuda/lib64. A
/// compiler newer than the driver (`driverVersion`, as cuDriverGetVersion)
/// is not used: the driver could not load its cubins.
const Assembler &assembler(int driverVersion);

/// Assembles `ptx` with the toolkit's ptxas or nvJitLink (`a.toolkit` must
/// hold).
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
