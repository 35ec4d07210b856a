//===- Driver.cpp - dlopen libcuda once and resolve the entry points ------===//
#include "Driver.h"

#include <dlfcn.h>

#include <atomic>
#include <string>

namespace flashjit::driver {

namespace {
// check() runs inside load() too (for cuInit), before the table is
// published: it reads the two error-text entry points from here instead.
std::atomic<decltype(&::cuGetErrorName)> gErrorName{nullptr};
std::atomic<decltype(&::cuGetErrorString)> gErrorString{nullptr};

struct Loaded {
  Api api;
  Status libraryStatus; ///< libcuda opened and every symbol found
  Status initStatus;    ///< and cuInit succeeded
};

Loaded load() {
  Loaded l;
  // The soname with its major version: the unversioned libcuda.so is a
  // development symlink that driver-only installs do not have.
  constexpr const char *kLibrary = "libcuda.so.1";
  void *lib = dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    // dlerror() usually starts with the file name already: say it once.
    const char *err = dlerror();
    std::string why = err ? err : "not found";
    const std::string prefix = std::string(kLibrary) + ": ";
    if (why.rfind(prefix, 0) == 0)
      why.erase(0, prefix.size());
    l.libraryStatus =
        Status::error("no CUDA driver found (" + prefix + why + ")");
    l.initStatus = l.libraryStatus;
    return l;
  }
  std::string missing;
  auto resolve = [&](const char *symbol) {
    void *p = dlsym(lib, symbol);
    if (!p)
      missing += (missing.empty() ? "" : ", ") + std::string(symbol);
    return p;
  };
#define FLASHJIT_DRIVER_RESOLVE(name)                                          \
  l.api.name = reinterpret_cast<decltype(l.api.name)>(resolve(#name));
  FLASHJIT_DRIVER_FUNCTIONS(FLASHJIT_DRIVER_RESOLVE)
#undef FLASHJIT_DRIVER_RESOLVE
  void *elapsed = dlsym(lib, "cuEventElapsedTime_v2");
  if (!elapsed)
    elapsed = resolve("cuEventElapsedTime");
  l.api.eventElapsedTime =
      reinterpret_cast<decltype(l.api.eventElapsedTime)>(elapsed);
  l.api.tensorMapEncodeTiled =
      reinterpret_cast<decltype(l.api.tensorMapEncodeTiled)>(
          dlsym(lib, "cuTensorMapEncodeTiled"));
  gErrorName = l.api.cuGetErrorName;
  gErrorString = l.api.cuGetErrorString;
  if (!missing.empty()) {
    l.libraryStatus = Status::error(
        "the CUDA driver (libcuda.so.1) is too old: it lacks " + missing);
    l.initStatus = l.libraryStatus;
    return l;
  }
  if (Status s = check(l.api.cuInit(0), "cuInit"); !s)
    l.initStatus =
        Status::error("the CUDA driver failed to initialise: " + s.message());
  return l;
}

const Loaded &loaded() {
  static const Loaded l = load(); // thread-safe, once per process
  return l;
}
} // namespace

Expected<const Api *> api() {
  const Loaded &l = loaded();
  if (!l.initStatus)
    return l.initStatus;
  return &l.api;
}

Expected<const Api *> library() {
  const Loaded &l = loaded();
  if (!l.libraryStatus)
    return l.libraryStatus;
  return &l.api;
}

Status check(CUresult result, const char *what) {
  if (result == CUDA_SUCCESS)
    return Status::ok();
  const char *name = nullptr, *description = nullptr;
  if (auto getName = gErrorName.load())
    getName(result, &name);
  if (auto getString = gErrorString.load())
    getString(result, &description);
  std::string message = std::string(what) + ": ";
  message += name ? name : "CUDA error " + std::to_string(result);
  if (description)
    message += std::string(" (") + description + ")";
  return Status::error(message);
}

} // namespace flashjit::driver
