//===- ModuleCache.h - Loaded kernels in memory, built once per key -------===//
//
// No CUDA here: the driver handles are opaque, and what builds a kernel is a
// function the caller passes in, so the once-per-key behaviour is tested
// without a GPU.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_RUNTIME_MODULECACHE_H
#define FLASHJIT_RUNTIME_MODULECACHE_H

#include "flashjit/compiler/Diagnostics.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace flashjit {

/// A kernel loaded into a context, ready to launch. Whoever builds it
/// decides, through the shared_ptr's deleter, how its module is unloaded.
struct LoadedKernel {
  /// Quick: the kernel's quick form (TileConfig::quick), compiled on a cold
  /// miss to stand in, with bitwise the same results, until the full kernel
  /// is loaded.
  enum class Source { Compiled, Disk, Quick };

  std::string name;
  void *module = nullptr;   ///< CUmodule
  void *function = nullptr; ///< CUfunction
  /// The decode helpers of the same module (Decode.h), null where absent.
  void *combineFunction = nullptr;
  void *appendFunction = nullptr;
  int threadsPerBlock = 0;
  int sharedMemBytes = 0;
  int blockM = 0;
  int registers = 0;  ///< per thread, as the driver's JIT allocated
  int localBytes = 0; ///< per thread; nonzero means register spills
  Source source = Source::Compiled;
};

class ModuleCache {
public:
  using Kernel = std::shared_ptr<const LoadedKernel>;
  using Builder = std::function<Expected<Kernel>()>;

  /// The kernel for `key`. On a miss exactly one caller runs `build`; others
  /// asking for the same key meanwhile wait for its result. A failure is
  /// handed to every waiter and then forgotten, so a later call retries.
  Expected<Kernel> getOrBuild(const std::string &key, const Builder &build);

  /// Makes `kernel` the one for `key` from now on (a full kernel replacing
  /// its quick form); launches holding the old one keep it alive.
  void put(const std::string &key, Kernel kernel);

  /// Number of keys present (built or being built).
  size_t size() const;
  /// Lookups answered without running a builder.
  uint64_t hits() const { return hits_; }
  /// Builders run.
  uint64_t builds() const { return builds_; }
  /// Drops every kernel (the deleters unload them once no launch holds one).
  void clear();

private:
  struct Slot {
    std::shared_future<Expected<Kernel>> result;
    uint64_t id = 0; ///< tells a failed build's slot from a later retry's
  };
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Slot> map_;
  uint64_t nextId_ = 0;
  std::atomic<uint64_t> hits_{0};
  std::atomic<uint64_t> builds_{0};
};

} // namespace flashjit

#endif // FLASHJIT_RUNTIME_MODULECACHE_H
