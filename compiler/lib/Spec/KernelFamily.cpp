//===- KernelFamily.cpp - The registry of kernel families -----------------===//
#include "flashjit/compiler/KernelFamily.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <mutex>
#include <vector>

namespace flashjit {

KernelFamily::~KernelFamily() = default;

namespace {
constexpr Family kFamilies[] = {Family::Sm80, Family::Sm90};
/// Lookups are lock-free (every compile asks); registration, rare, locks.
std::array<std::atomic<const KernelFamily *>, std::size(kFamilies)>
    registered{};
std::mutex ownedMutex;
std::vector<std::unique_ptr<KernelFamily>> &owned() {
  static std::vector<std::unique_ptr<KernelFamily>> families;
  return families;
}
} // namespace

void registerFamily(std::unique_ptr<KernelFamily> family) {
  std::lock_guard<std::mutex> guard(ownedMutex);
  registered[static_cast<size_t>(family->id())].store(family.get());
  // A replaced family stays alive: a compile may still hold it.
  owned().push_back(std::move(family));
}

const KernelFamily *findFamily(Family id) {
  return registered[static_cast<size_t>(id)].load();
}

Expected<const KernelFamily *> familyOf(Family id) {
  if (const KernelFamily *f = findFamily(id))
    return f;
  return Status::error("kernel family " + std::string(toString(id)) +
                       " is not registered (call "
                       "flashjit::registerKernelFamilies() first)");
}

Family preferredFamily(const AttentionSpec &spec, Arch arch) {
  const KernelFamily *sm90 = findFamily(Family::Sm90);
  if (!sm90 || !sm90->supports(spec, arch))
    return Family::Sm80;
  // Every forward it serves, rows TMA cannot address included (copied by
  // its producer warpgroup: 1.35-1.40x the sm80 family at d = 100,
  // bench/results/2026-12-05-h100-sm90-copies-split-ws.md).
  if (spec.direction == Direction::Forward)
    return Family::Sm90;
  // The sm90 backward from d = 64: 1.02-1.59x the sm80 one on an H200 and
  // 0.92x at d = 32 causal (2026-12-05-h200-sm90-backward-tma.md); with a
  // softcap 1.45-2.06x, past d = 128 (split columns) 1.05-1.56x on an H100
  // (2026-12-05-h100-sm90-copies-split-ws.md); both in bench/results/.
  return std::max(spec.headDimQK, spec.headDimV) >= 64 ? Family::Sm90
                                                        : Family::Sm80;
}

TileConfig defaultTileConfig(const AttentionSpec &spec, Arch arch) {
  return defaultTileConfig(spec, arch, preferredFamily(spec, arch));
}

TileConfig defaultTileConfig(const AttentionSpec &spec, Arch arch,
                             Family family) {
  if (const KernelFamily *f = findFamily(family))
    return f->defaultConfig(spec, arch);
  TileConfig unregistered; // validate() says why it cannot be used
  unregistered.family = family;
  return unregistered;
}

LaunchFacts launchFacts(const AttentionSpec &spec, const TileConfig &config) {
  if (const KernelFamily *f = findFamily(config.family))
    return f->launchFacts(spec, config);
  return {};
}

} // namespace flashjit
