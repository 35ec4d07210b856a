//===- Assembler.cpp - nvJitLink through dlopen, else the driver's JIT ----===//
#include "Assembler.h"

#include "Module.h"

#include "flashjit/runtime/Device.h"

#include <cstdlib>
#include <dlfcn.h>
#include <mutex>
#include <vector>

namespace flashjit::driver {

// nvJitLink's C API (nvJitLink.h), declared here so that building needs no
// CUDA toolkit; the library itself is optional at run time.
using NvJitLinkHandle = void *;
struct NvJitLinkApi {
  int (*create)(NvJitLinkHandle *, uint32_t, const char **) = nullptr;
  int (*destroy)(NvJitLinkHandle *) = nullptr;
  int (*addData)(NvJitLinkHandle, int, const void *, size_t, const char *) = nullptr;
  int (*complete)(NvJitLinkHandle) = nullptr;
  int (*cubinSize)(NvJitLinkHandle, size_t *) = nullptr;
  int (*cubin)(NvJitLinkHandle, void *) = nullptr;
  int (*errorLogSize)(NvJitLinkHandle, size_t *) = nullptr;
  int (*errorLog)(NvJitLinkHandle, char *) = nullptr;
  int (*version)(unsigned *, unsigned *) = nullptr;
};

namespace {
using Handle = NvJitLinkHandle;
constexpr int kInputPtx = 2; // NVJITLINK_INPUT_PTX (CUBIN is 1)
using NvJitLink = NvJitLinkApi;

/// Resolves every entry point of `lib`, or says which is missing.
std::string resolve(void *lib, NvJitLink &n) {
  auto sym = [&](auto &fn, const char *name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(
        dlsym(lib, name));
    return fn != nullptr;
  };
  if (!sym(n.create, "nvJitLinkCreate") || !sym(n.destroy, "nvJitLinkDestroy") ||
      !sym(n.addData, "nvJitLinkAddData") ||
      !sym(n.complete, "nvJitLinkComplete") ||
      !sym(n.cubinSize, "nvJitLinkGetLinkedCubinSize") ||
      !sym(n.cubin, "nvJitLinkGetLinkedCubin") ||
      !sym(n.errorLogSize, "nvJitLinkGetErrorLogSize") ||
      !sym(n.errorLog, "nvJitLinkGetErrorLog") ||
      !sym(n.version, "nvJitLinkVersion"))
    return "lacks an nvJitLink entry point";
  return "";
}

} // namespace

Assembler chooseAssembler(int driverVersion) {
  Assembler c;
  c.name = "driver JIT";
  const char *force = std::getenv("FLASHJIT_ASSEMBLER");
  if (force && std::string(force) == "driver") {
    c.why = "FLASHJIT_ASSEMBLER=driver";
    return c;
  }
  std::vector<std::string> candidates;
  if (const char *path = std::getenv("FLASHJIT_NVJITLINK"); path && *path)
    candidates = {path};
  else {
    candidates = {"libnvJitLink.so.13", "libnvJitLink.so.12"};
    if (const char *home = std::getenv("CUDA_HOME"); home && *home)
      candidates.push_back(std::string(home) + "/lib64/libnvJitLink.so");
    candidates.push_back("/usr/local/cuda/lib64/libnvJitLink.so");
  }
  std::string tried;
  // A library once opened is never closed: nvJitLink allocates at load time
  // and unloading it would leak that (LeakSanitizer sees it) for nothing.
  for (const std::string &path : candidates) {
    void *lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      tried += (tried.empty() ? "" : ", ") + path + " (not found)";
      continue;
    }
    NvJitLink n;
    if (std::string missing = resolve(lib, n); !missing.empty()) {
      tried += (tried.empty() ? "" : ", ") + path + " (" + missing + ")";
      continue;
    }
    unsigned major = 0, minor = 0;
    n.version(&major, &minor);
    const int libraryVersion = int(major) * 1000 + int(minor) * 10;
    const std::string name = "nvJitLink " + std::to_string(major) + "." +
                             std::to_string(minor);
    if (libraryVersion > driverVersion) {
      tried += (tried.empty() ? "" : ", ") + path + " (" + name +
               ", newer than the driver)";
      continue;
    }
    // The library stays loaded for the process.
    return {name, "", true, std::make_shared<const NvJitLinkApi>(n)};
  }
  c.why = "no usable libnvJitLink: " + tried;
  return c;
}

const Assembler &assembler(int driverVersion) {
  static const Assembler a = chooseAssembler(driverVersion);
  return a;
}

namespace {

Expected<std::string> assembleWithNvJitLink(const NvJitLink &n,
                                            const std::string &ptx,
                                            const std::string &name, Arch arch,
                                            int optLevel) {
  const std::string archOption = "-arch=" + std::string(toString(arch));
  const std::string optOption = "-Xptxas=-O" + std::to_string(optLevel);
  const char *options[] = {archOption.c_str(), optOption.c_str()};
  Handle h = nullptr;
  if (int r = n.create(&h, 2, options); r != 0)
    return Status::error("nvJitLinkCreate for " + name + " failed (" +
                         std::to_string(r) + ")");
  auto fail = [&](const char *what, int r) {
    std::string message = std::string(what) + " for " + name + " failed (" +
                          std::to_string(r) + ")";
    size_t size = 0;
    if (n.errorLogSize(h, &size) == 0 && size > 1) {
      std::string log(size, '\0');
      if (n.errorLog(h, log.data()) == 0)
        message += "\n" + std::string(log.c_str());
    }
    n.destroy(&h);
    return Status::error(message);
  };
  // The size excludes the terminating NUL: nvJitLink takes the bytes.
  if (int r = n.addData(h, kInputPtx, ptx.data(), ptx.size(), name.c_str());
      r != 0)
    return fail("nvJitLinkAddData", r);
  if (int r = n.complete(h); r != 0)
    return fail("nvJitLinkComplete", r);
  size_t size = 0;
  if (int r = n.cubinSize(h, &size); r != 0)
    return fail("nvJitLinkGetLinkedCubinSize", r);
  std::string cubin(size, '\0');
  if (int r = n.cubin(h, cubin.data()); r != 0)
    return fail("nvJitLinkGetLinkedCubin", r);
  n.destroy(&h);
  return cubin;
}
} // namespace

Expected<std::string> assembleWithToolkit(const Assembler &a,
                                          const std::string &ptx,
                                          const std::string &name, Arch arch,
                                          int optLevel) {
  if (!a.toolkit || !a.nvJitLink)
    return Status::error("no nvJitLink to assemble " + name + ": " + a.why);
  return assembleWithNvJitLink(*a.nvJitLink, ptx, name, arch, optLevel);
}

Expected<std::string> assemble(const Api &cu, int driverVersion,
                               const std::string &ptx, const std::string &name,
                               Arch arch, int optLevel) {
  const Assembler &a = assembler(driverVersion);
  if (a.toolkit)
    return assembleWithToolkit(a, ptx, name, arch, optLevel);
  return linkPtx(cu, ptx, name, optLevel);
}

} // namespace flashjit::driver

std::string flashjit::assemblerDescription(int driverVersion) {
  const driver::Assembler a = driver::chooseAssembler(driverVersion);
  return a.why.empty() ? a.name : a.name + " (" + a.why + ")";
}
