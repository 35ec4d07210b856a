//===- Module.cpp - cuLink, cuModuleLoadData and function attributes ------===//
#include "Module.h"

#include "flashjit/kernels/Decode.h"
#include "flashjit/kernels/Forward.h"

#include <cstdint>
#include <iterator>
#include <vector>

namespace flashjit::driver {

namespace {
/// Above this a kernel must opt into dynamic shared memory explicitly.
constexpr int kDefaultDynamicSharedBytes = 48 * 1024;
constexpr size_t kJitLogBytes = 64 * 1024;

std::string trimmed(const std::vector<char> &log) {
  std::string s(log.data());
  while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
    s.pop_back();
  return s;
}
} // namespace

Expected<std::string> linkPtx(const Api &cu, const std::string &ptx,
                              const std::string &name, int optLevel) {
  std::vector<char> infoLog(kJitLogBytes, '\0'), errorLog(kJitLogBytes, '\0');
  CUjit_option options[] = {
      CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
      CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
      CU_JIT_OPTIMIZATION_LEVEL};
  // Below ptxas's default only: the JIT's own default is its highest level.
  const unsigned numOptions = optLevel < kPtxasOptLevel
                                  ? std::size(options)
                                  : std::size(options) - 1;
  void *values[] = {
      infoLog.data(), reinterpret_cast<void *>(uintptr_t(kJitLogBytes - 1)),
      errorLog.data(), reinterpret_cast<void *>(uintptr_t(kJitLogBytes - 1)),
      reinterpret_cast<void *>(uintptr_t(optLevel))};
  CUlinkState state = nullptr;
  if (Status s = check(cu.cuLinkCreate_v2(numOptions, options, values, &state),
                       "cuLinkCreate");
      !s)
    return s;
  auto failed = [&](const Status &s) {
    cu.cuLinkDestroy(state);
    std::string message =
        "PTX JIT compilation of " + name + " failed: " + s.message();
    if (std::string log = trimmed(errorLog); !log.empty())
      message += "\n" + log;
    return Status::error(message);
  };
  // The size includes the terminating NUL, as cuLinkAddData expects for PTX.
  if (Status s = check(cu.cuLinkAddData_v2(state, CU_JIT_INPUT_PTX,
                                           const_cast<char *>(ptx.c_str()),
                                           ptx.size() + 1, name.c_str(), 0,
                                           nullptr, nullptr),
                       "cuLinkAddData");
      !s)
    return failed(s);
  void *cubin = nullptr;
  size_t bytes = 0;
  if (Status s =
          check(cu.cuLinkComplete(state, &cubin, &bytes), "cuLinkComplete");
      !s)
    return failed(s);
  std::string out(static_cast<const char *>(cubin), bytes); // freed with state
  cu.cuLinkDestroy(state);
  return out;
}

Expected<ModuleCache::Kernel> loadKernel(const Api &cu, CUcontext ctx,
                                         const std::string &cubin,
                                         const KernelMeta &meta,
                                         LoadedKernel::Source source) {
  CUmodule module = nullptr;
  if (Status s =
          check(cu.cuModuleLoadData(&module, cubin.data()), "cuModuleLoadData");
      !s)
    return Status::error("loading " + meta.kernelName + ": " + s.message());
  auto failed = [&](const Status &s) {
    cu.cuModuleUnload(module);
    return Status::error("loading " + meta.kernelName + ": " + s.message());
  };
  CUfunction function = nullptr;
  if (Status s = check(
          cu.cuModuleGetFunction(&function, module, meta.kernelName.c_str()),
          "cuModuleGetFunction");
      !s)
    return failed(s);
  if (meta.sharedMemBytes > kDefaultDynamicSharedBytes)
    if (Status s =
            check(cu.cuFuncSetAttribute(
                      function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                      meta.sharedMemBytes),
                  "cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)");
        !s)
      return failed(s);
  int maxThreads = 0, registers = 0, localBytes = 0, staticSharedBytes = 0;
  for (auto [attribute, into] :
       {std::pair{CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, &maxThreads},
        std::pair{CU_FUNC_ATTRIBUTE_NUM_REGS, &registers},
        std::pair{CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES, &localBytes},
        std::pair{CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, &staticSharedBytes}})
    if (Status s = check(cu.cuFuncGetAttribute(into, attribute, function),
                         "cuFuncGetAttribute");
        !s)
      return failed(s);
  if (maxThreads < meta.threadsPerBlock)
    return failed(Status::error(
        "it needs " + std::to_string(meta.threadsPerBlock) +
        " threads per block, but at " + std::to_string(registers) +
        " registers per thread the device runs at most " +
        std::to_string(maxThreads) + " (use fewer warps or a smaller tile)"));

  // The opt-in above covers dynamic shared memory only; static bytes on
  // top would make a 48 KiB kernel fail at every launch.
  if (staticSharedBytes != 0)
    return failed(Status::error(
        "it declares " + std::to_string(staticSharedBytes) +
        " bytes of static shared memory; flashjit kernels use dynamic shared "
        "memory only (a stale or foreign cache entry?)"));

  // The decode helpers built into the same module (Decode.h), looked up
  // only where the key says they are (a failed lookup is an API error that
  // compute-sanitizer reports).
  CUfunction helpers[2] = {nullptr, nullptr};
  const bool present[2] = {meta.combineEntry, meta.appendEntry};
  const std::string helperNames[2] = {combineKernelName(meta.kernelName),
                                      appendKernelName(meta.kernelName)};
  for (int i = 0; i < 2; ++i)
    if (present[i])
      if (Status s = check(cu.cuModuleGetFunction(&helpers[i], module,
                                                  helperNames[i].c_str()),
                           ("cuModuleGetFunction(" + helperNames[i] + ")")
                               .c_str());
          !s)
        return failed(s);

  auto *kernel = new LoadedKernel;
  kernel->combineFunction = helpers[0];
  kernel->appendFunction = helpers[1];
  kernel->name = meta.kernelName;
  kernel->module = module;
  kernel->function = function;
  kernel->threadsPerBlock = meta.threadsPerBlock;
  kernel->sharedMemBytes = meta.sharedMemBytes;
  kernel->blockM = meta.blockM;
  kernel->registers = registers;
  kernel->localBytes = localBytes;
  kernel->source = source;
  const Api *api = &cu;
  return ModuleCache::Kernel(kernel, [api, ctx](const LoadedKernel *k) {
    ScopedContext scope(*api, ctx);
    api->cuModuleUnload(static_cast<CUmodule>(k->module));
    delete k;
  });
}

} // namespace flashjit::driver
