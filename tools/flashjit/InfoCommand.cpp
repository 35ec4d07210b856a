//===- InfoCommand.cpp - flashjit info: versions, cache, driver, devices --===//
//
// Prints what needs no GPU first, so that a machine without a driver still
// gets versions and the cache directory, then fails with the driver's reason.
//
//===----------------------------------------------------------------------===//
#include "Commands.h"

#include "flashjit/compiler/Pipeline.h"
#include "flashjit/runtime/Device.h"
#include "flashjit/runtime/DiskCache.h"

#include <CLI/CLI.hpp>

#include <cstdio>

namespace flashjit::cli {

namespace {
int info() {
  std::printf("flashjit:  %s\n", flashjitVersion().c_str());
  std::printf("LLVM:      %s\n", llvmVersion().c_str());
  auto dir = DiskCache::defaultDirectory();
  std::printf("cache:     %s\n", dir ? dir->c_str() : dir.message().c_str());

  auto version = driverVersion();
  if (!version) {
    std::fprintf(stderr, "flashjit info: %s\n", version.message().c_str());
    return 1;
  }
  std::printf("driver:    CUDA %s (%d)\n", formatCudaVersion(*version).c_str(),
              *version);
  std::printf("assembler: %s\n", assemblerDescription(*version).c_str());
  auto count = deviceCount();
  if (!count) {
    std::fprintf(stderr, "flashjit info: %s\n", count.message().c_str());
    return 1;
  }
  if (*count == 0) {
    std::fprintf(stderr, "flashjit info: the CUDA driver sees no devices\n");
    return 1;
  }
  for (int i = 0; i < *count; ++i) {
    auto dev = queryDevice(i);
    if (!dev) {
      std::fprintf(stderr, "flashjit info: device %d: %s\n", i,
                   dev.message().c_str());
      return 1;
    }
    auto arch = archForComputeCapability(dev->ccMajor, dev->ccMinor);
    std::printf("device %d:  %s, compute capability %d.%d (%s), %d SMs, "
                "%d KiB shared memory per block (opt-in), %.1f GiB\n",
                i, dev->name.c_str(), dev->ccMajor, dev->ccMinor,
                arch ? std::string(toString(*arch)).c_str() : "unsupported",
                dev->smCount, dev->maxSharedMemPerBlockOptin / 1024,
                dev->totalMemBytes / double(1ull << 30));
  }
  return 0;
}
} // namespace

void addInfoCommand(CLI::App &app, int &exitCode) {
  app.add_subcommand("info",
                     "Show the flashjit and LLVM versions, the kernel cache "
                     "directory, the CUDA driver and every GPU it sees "
                     "(exit 1 without a usable driver or device)")
      ->callback([&exitCode] { exitCode = info(); });
}

} // namespace flashjit::cli
