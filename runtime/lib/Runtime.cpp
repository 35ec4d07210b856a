//===- Runtime.cpp - Validate, specialise, fetch from cache, launch -------===//
#include "flashjit/runtime/Runtime.h"

#include "Assembler.h"
#include "Driver.h"
#include "Module.h"
#include "TensorMaps.h"

#include "flashjit/compiler/Pipeline.h"
#include "flashjit/runtime/DiskCache.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <future>
#include <limits>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace flashjit {

// ---- problem -> spec --------------------------------------------------------
namespace {
constexpr int64_t kMaxSeqlen = std::numeric_limits<int32_t>::max();
/// CUDA's limit on gridDim.x.
constexpr int64_t kMaxGridX = std::numeric_limits<int32_t>::max();

std::string hexAddress(const void *p) {
  std::ostringstream os;
  os << p;
  return os.str();
}

/// Strides of a tensor with its name, for messages and alignment.
struct NamedStrides {
  const char *name;
  const Strides &strides;
  int64_t heads, rows;
};
} // namespace

Status validate(const ForwardProblem &p) {
  if (Status s = validateParams(p, /*writesLse=*/p.lse != nullptr,
                                p.trustDeviceLengths);
      !s)
    return s;
  const int64_t eb = elementBytes(p.dtype);
  struct {
    const char *name;
    const void *ptr;
    int64_t align;
    bool required;
  } pointers[] = {
      {"q", p.q, eb, true},
      {"k", p.k, eb, true},
      {"v", p.v, eb, true},
      {"o", p.o, eb, true},
      {"lse", p.lse, 4, false},
      {"bias", p.biasData, eb, p.bias == BiasMode::Tensor},
      {"alibi_slopes", p.alibiSlopes, 4, p.bias == BiasMode::Alibi},
      {"cu_seqlens_q", p.deviceCuSeqlensQ, 4, p.varlen.has_value()},
      {"cu_seqlens_k", p.deviceCuSeqlensK, 4, p.varlen.has_value()},
      {"key_lengths", p.deviceKeyLengths, 4, p.hasKeyLengths()},
  };
  for (const auto &ptr : pointers) {
    if (!ptr.ptr && ptr.required)
      return Status::error(std::string(ptr.name) +
                           " must be a device pointer, got null");
    if (reinterpret_cast<uintptr_t>(ptr.ptr) % ptr.align != 0)
      return Status::error(std::string(ptr.name) + " (" + hexAddress(ptr.ptr) +
                           ") must be aligned to " + std::to_string(ptr.align) +
                           " bytes");
  }
  return Status::ok();
}

AttentionSpec specFor(const ForwardProblem &p) {
  AttentionSpec spec;
  spec.dtype = p.dtype;
  spec.headDimQK = static_cast<int>(p.headDimQK);
  spec.headDimV = static_cast<int>(p.headDimV);
  spec.mask = p.mask;
  spec.gqaGroup = static_cast<int>(p.gqaGroup());
  spec.writeLse = p.lse != nullptr;
  spec.bias = p.bias;
  spec.softcap = p.softcap > 0;
  spec.varlen = p.varlen.has_value();
  spec.keyLengths = p.hasKeyLengths();
  // Row starts are aligned to the widest power of two dividing every
  // pointer (in elements) and every stride the kernel multiplies by a
  // nonzero index: a stride of a size-1 dimension never moves a row, and
  // varlen ignores batch strides.
  const int64_t eb = elementBytes(p.dtype);
  std::vector<int64_t> values;
  for (const void *ptr : {p.q, p.k, p.v, static_cast<const void *>(p.o)})
    values.push_back(
        static_cast<int64_t>(reinterpret_cast<uintptr_t>(ptr) / eb));
  const int64_t rowsQ = p.varlen ? p.varlen->totalQ : p.seqlenQ;
  const int64_t rowsK = p.varlen ? p.varlen->totalK : p.seqlenK;
  const NamedStrides tensors[] = {{"q", p.qStrides, p.headsQ, rowsQ},
                                  {"k", p.kStrides, p.headsKV, rowsK},
                                  {"v", p.vStrides, p.headsKV, rowsK},
                                  {"o", p.oStrides, p.headsQ, rowsQ}};
  for (const auto &t : tensors) {
    if (p.batch > 1 && !p.varlen)
      values.push_back(t.strides.batch);
    if (t.heads > 1)
      values.push_back(t.strides.head);
    if (t.rows > 1)
      values.push_back(t.strides.row);
  }
  spec.globalAlignElems = alignmentElems(values);
  return spec;
}

// ---- backward problems -----------------------------------------------------
BackwardParams BackwardProblem::params() const {
  BackwardParams b;
  static_cast<AttentionParams &>(b) = *this;
  b.dOStrides = dOStrides, b.dQStrides = dQStrides;
  b.dKStrides = dKStrides, b.dVStrides = dVStrides;
  b.deterministic = deterministic;
  b.biasGrad = biasGrad;
  b.dBiasStrides = dBiasStrides;
  return b;
}

void BackwardProblem::setDenseBSHD() {
  ForwardProblem::setDenseBSHD();
  dOStrides = oStrides, dQStrides = qStrides;
  dKStrides = kStrides, dVStrides = vStrides;
  dBiasStrides = {headsQ * seqlenQ * seqlenK, seqlenQ * seqlenK, seqlenK};
}

Status validate(const BackwardProblem &p) {
  if (!p.lse)
    return Status::error("lse must be the forward's log-sum-exp (a device "
                         "pointer), got null: the backward reads it");
  if (Status s = validate(static_cast<const ForwardProblem &>(p)); !s)
    return s;
  if (Status s = validateBackwardParams(p.params(), p.trustDeviceLengths); !s)
    return s;
  const int64_t eb = elementBytes(p.dtype);
  const std::pair<const char *, const void *> pointers[] = {
      {"do", p.dO}, {"dq", p.dQ}, {"dk", p.dK}, {"dv", p.dV}};
  for (const auto &[name, ptr] : pointers) {
    if (!ptr)
      return Status::error(std::string(name) +
                           " must be a device pointer, got null");
    if (reinterpret_cast<uintptr_t>(ptr) % eb != 0)
      return Status::error(std::string(name) + " (" + hexAddress(ptr) +
                           ") must be aligned to " + std::to_string(eb) +
                           " bytes");
  }
  if (p.biasGrad && !p.dBias)
    return Status::error("dbias must be a device pointer when bias_grad is "
                         "on, got null");
  if (reinterpret_cast<uintptr_t>(p.dBias) % eb != 0)
    return Status::error("dbias (" + hexAddress(p.dBias) +
                         ") must be aligned to " + std::to_string(eb) +
                         " bytes");
  if (reinterpret_cast<uintptr_t>(p.workspace) % 16 != 0)
    return Status::error("workspace (" + hexAddress(p.workspace) +
                         ") must be aligned to 16 bytes");
  return Status::ok();
}

AttentionSpec specFor(const BackwardProblem &p) {
  AttentionSpec spec = specFor(static_cast<const ForwardProblem &>(p));
  spec.direction = Direction::Backward;
  spec.deterministic = p.deterministic;
  spec.biasGrad = p.biasGrad;
  spec.writeLse = true;
  return spec;
}

// ---- the runtime ------------------------------------------------------------
struct Runtime::Impl {
  const driver::Api *cu = nullptr;
  CUdevice device = 0;
  CUcontext context = nullptr;
  DeviceInfo info;
  Arch arch = Arch::Sm80;
  int driverVersion = 0;
  std::string flashjitVersion, llvmVersion;
  std::optional<DiskCache> disk;
  std::string cacheDirectory;
  ModuleCache modules;
  std::unique_ptr<TuneDatabase> tuneDb; ///< null: tuned configs off
  /// Tile config per (spec, shape bucket), as resolved from the tune
  /// database or the default table: a plan's lookup stays a map hit.
  std::mutex configsMutex;
  std::unordered_map<std::string, std::pair<TileConfig, ConfigSource>> configs;
  /// Bumped by each store: a lookup that raced one is not kept.
  uint64_t configsGeneration = 0;
  /// Tune keys whose stored config was refused (each is warned about once).
  std::unordered_set<std::string> invalidTuned;
  std::atomic<uint64_t> diskHits{0};
  std::atomic<uint64_t> compiles{0};
  std::atomic<uint64_t> quickCompiles{0};
  std::atomic<uint64_t> generateUs{0}, jitUs{0};
  bool quickFirst = true;
  std::optional<Family> family; ///< RuntimeOptions::family
  /// Full kernels compiling in the background behind their quick forms.
  std::mutex upgradesMutex;
  std::vector<std::future<void>> upgrades;

  CacheKey cacheKey(const AttentionSpec &spec, const TileConfig &config) const {
    return {spec,        config,        arch,
            flashjitVersion, llvmVersion, driverVersion,
            driver::assembler(driverVersion).name};
  }
  Expected<CacheEntry> compileEntry(const AttentionSpec &spec,
                                    const TileConfig &config);
  Expected<ModuleCache::Kernel> loadEntry(const CacheEntry &entry,
                                          LoadedKernel::Source source);
  Expected<ModuleCache::Kernel> cachedOrCompiled(const AttentionSpec &spec,
                                                 const TileConfig &config);
  void upgradeLater(std::string memoryKey, AttentionSpec spec,
                    TileConfig config);
  void finishUpgrades() {
    std::vector<std::future<void>> pending;
    {
      std::lock_guard<std::mutex> guard(upgradesMutex);
      pending.swap(upgrades);
    }
    for (auto &f : pending)
      f.wait();
  }

  ~Impl() {
    finishUpgrades(); // they use the context and put into `modules`
    if (!context)
      return;
    driver::ScopedContext scope(*cu, context);
    modules.clear(); // unloads the modules while the context still lives
    cu->cuDevicePrimaryCtxRelease_v2(device);
  }
};

Runtime::Runtime(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Runtime::~Runtime() = default;

Expected<std::unique_ptr<Runtime>>
Runtime::create(const RuntimeOptions &options) {
  registerKernelFamilies();
  auto api = driver::api();
  if (!api)
    return api.status();
  auto impl = std::make_unique<Impl>();
  impl->cu = *api;
  const driver::Api &cu = *impl->cu;
  auto info = queryDevice(options.device);
  if (!info)
    return info.status();
  impl->info = *info;
  auto arch = archForComputeCapability(info->ccMajor, info->ccMinor);
  if (!arch)
    return Status::error("device " + std::to_string(options.device) + " (" +
                         info->name + "): " + arch.message());
  impl->arch = *arch;
  auto version = flashjit::driverVersion();
  if (!version)
    return version.status();
  impl->driverVersion = *version;
  impl->quickFirst = options.quickFirst;
  impl->family = options.family;
  impl->flashjitVersion = flashjitVersion();
  impl->llvmVersion = llvmVersion();
  if (Status s = driver::check(cu.cuDeviceGet(&impl->device, options.device),
                               "cuDeviceGet");
      !s)
    return s;
  if (Status s = driver::check(
          cu.cuDevicePrimaryCtxRetain(&impl->context, impl->device),
          "cuDevicePrimaryCtxRetain");
      !s)
    return s;
  // One directory holds the kernels and the tune database.
  if (options.diskCache || options.useTuned) {
    auto dir = options.cacheDirectory.empty()
                   ? DiskCache::defaultDirectory()
                   : Expected<std::string>(options.cacheDirectory);
    if (!dir) {
      if (options.diskCache)
        std::fprintf(stderr,
                     "flashjit: warning: %s; kernels are not cached on disk\n",
                     dir.message().c_str());
    } else {
      if (options.diskCache) {
        impl->disk.emplace(*dir);
        impl->cacheDirectory = *dir;
      }
      if (options.useTuned)
        impl->tuneDb =
            std::make_unique<TuneDatabase>(TuneDatabase::pathIn(*dir));
    }
  }
  return std::unique_ptr<Runtime>(new Runtime(std::move(impl)));
}

std::string_view toString(ConfigSource source) {
  switch (source) {
  case ConfigSource::Explicit:
    return "explicit";
  case ConfigSource::Tuned:
    return "tuned";
  case ConfigSource::Default:
    return "default";
  }
  return "?";
}

TuneKey Runtime::tuneKey(const ForwardProblem &p) const {
  return {specFor(p), shapeBucket(p), impl_->info.name, impl_->flashjitVersion,
          impl_->driverVersion};
}

TuneKey Runtime::tuneKey(const BackwardProblem &p) const {
  return {specFor(p), shapeBucket(p), impl_->info.name, impl_->flashjitVersion,
          impl_->driverVersion};
}

std::optional<TuneEntry> Runtime::tunedEntry(const ForwardProblem &p) {
  return tunedEntryFor(tuneKey(p));
}

std::optional<TuneEntry> Runtime::tunedEntry(const BackwardProblem &p) {
  return tunedEntryFor(tuneKey(p));
}

std::optional<TuneEntry> Runtime::tunedEntryFor(const TuneKey &key) {
  if (!impl_->tuneDb)
    return std::nullopt;
  auto entry = impl_->tuneDb->lookup(key);
  if (!entry)
    return std::nullopt;
  // Nothing read from disk is trusted unchecked; a config the runtime
  // cannot use says so once per key, never silently.
  Status s = entry->config.quick
                 ? Status::error("it names a quick form, which is never tuned")
                 : flashjit::validate(entry->config, key.spec, impl_->arch);
  if (s)
    return entry;
  std::lock_guard<std::mutex> guard(impl_->configsMutex);
  if (impl_->invalidTuned.insert(key.text()).second)
    std::fprintf(stderr,
                 "flashjit: warning: the tune database %s holds an unusable "
                 "config for %s (%s); using the default config\n",
                 impl_->tuneDb->path().c_str(), key.text().c_str(),
                 s.message().c_str());
  return std::nullopt;
}

Expected<std::string> Runtime::storeTuned(const TuneKey &key,
                                          const TuneEntry &entry) {
  if (!impl_->tuneDb)
    return Status::error(
        "this runtime has no tune database (RuntimeOptions::useTuned is off, "
        "or no cache directory could be found: set FLASHJIT_CACHE_DIR)");
  if (Status s = impl_->tuneDb->store(key, entry); !s)
    return s;
  std::lock_guard<std::mutex> guard(impl_->configsMutex);
  impl_->configs.clear();
  ++impl_->configsGeneration;
  return impl_->tuneDb->path();
}

const DeviceInfo &Runtime::device() const { return impl_->info; }
Arch Runtime::arch() const { return impl_->arch; }
int Runtime::driverVersion() const { return impl_->driverVersion; }
const std::string &Runtime::cacheDirectory() const {
  return impl_->cacheDirectory;
}

CacheStats Runtime::cacheStats() const {
  CacheStats st;
  st.memoryHits = impl_->modules.hits();
  st.diskHits = impl_->diskHits;
  st.compiles = impl_->compiles;
  st.quickCompiles = impl_->quickCompiles;
  st.generateMs = impl_->generateUs / 1e3;
  st.jitMs = impl_->jitUs / 1e3;
  return st;
}

void Runtime::finishCompiles() { impl_->finishUpgrades(); }

void Runtime::clearMemoryCache() {
  impl_->finishUpgrades(); // or a full kernel would land after the clear
  driver::ScopedContext scope(*impl_->cu, impl_->context);
  impl_->modules.clear();
}

namespace {
/// In-memory keys: the fields of the spec (and of the tile, or of the
/// shape bucket), packed. Arch and versions are fixed per Runtime, so they
/// need no place here (the disk key, CacheKey::hash, has them all). Cheaper
/// than canonicalText, which would cost most of a memory hit. The
/// structured bindings stop compiling when a struct gains a field, so a new
/// one cannot be forgotten here.
template <typename T, size_t N> std::string packed(const T (&fields)[N]) {
  return std::string(reinterpret_cast<const char *>(fields), sizeof fields);
}

std::string specKey(const AttentionSpec &spec) {
  const auto &[dtype, headDimQK, headDimV, mask, gqaGroup, writeLse, align,
               bias, softcap, varlen, keyLengths, direction, deterministic,
               biasGrad] = spec;
  const int32_t fields[] = {static_cast<int32_t>(dtype),
                            headDimQK,
                            headDimV,
                            static_cast<int32_t>(mask),
                            gqaGroup,
                            writeLse,
                            align,
                            static_cast<int32_t>(bias),
                            softcap,
                            varlen,
                            keyLengths,
                            static_cast<int32_t>(direction),
                            deterministic,
                            biasGrad};
  return packed(fields);
}

/// The key of a compiled kernel, from its spec's key.
std::string memoryKey(const std::string &specKey, const TileConfig &config) {
  const auto &[blockM, blockN, warps, stages, packGqa, quick, family, pingpong,
                overlap, scalar] = config;
  const int32_t fields[] = {blockM, blockN,   warps,
                            stages, packGqa,  quick,
                            static_cast<int32_t>(family), pingpong, overlap,
                            scalar};
  return specKey + packed(fields);
}

/// The key of the tile config chosen for a spec (its key) and shape bucket.
std::string configKey(const std::string &specKey, const ShapeBucket &bucket) {
  const auto &[seqlenQ, seqlenK, batchHeads] = bucket;
  const int64_t fields[] = {seqlenQ, seqlenK, batchHeads};
  return specKey + packed(fields);
}
} // namespace

Expected<CacheEntry> Runtime::Impl::compileEntry(const AttentionSpec &spec,
                                                 const TileConfig &config) {
  using Clock = std::chrono::steady_clock;
  auto micros = [](Clock::time_point from) {
    return uint64_t(
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - from)
            .count());
  };
  const auto t0 = Clock::now();
  auto artifact = compile(spec, config, arch);
  generateUs += micros(t0);
  if (!artifact)
    return artifact.status();
  const auto t1 = Clock::now();
  auto cubin = driver::assemble(*cu, driverVersion, artifact->ptx,
                                artifact->kernelName, arch,
                                artifact->launch.ptxasOptLevel);
  jitUs += micros(t1);
  if (!cubin)
    return cubin.status();
  // The launch facts the key implies are the ones a disk entry is checked
  // against: the generator must agree with them.
  const KernelMeta meta = kernelMetaFor(cacheKey(spec, config));
  if (meta != KernelMeta{artifact->kernelName, artifact->launch.threadsPerBlock,
                         artifact->launch.sharedMemBytes,
                         artifact->launch.blockM})
    return Status::error("internal error: the generator's launch facts for " +
                         meta.kernelName + " differ from kernelMetaFor's");
  return CacheEntry{artifact->ptx, std::move(*cubin), meta};
}

Expected<ModuleCache::Kernel>
Runtime::Impl::loadEntry(const CacheEntry &entry, LoadedKernel::Source source) {
  if (entry.meta.sharedMemBytes > info.maxSharedMemPerBlockOptin)
    return Status::error(entry.meta.kernelName + " needs " +
                         std::to_string(entry.meta.sharedMemBytes) +
                         " bytes of shared memory; " + info.name +
                         " allows at most " +
                         std::to_string(info.maxSharedMemPerBlockOptin) +
                         " per block (use a smaller tile or fewer stages)");
  return driver::loadKernel(*cu, context, entry.cubin, entry.meta, source);
}

/// The kernel of exactly `config`, from disk or compiled (and stored). The
/// caller holds the context.
Expected<ModuleCache::Kernel>
Runtime::Impl::cachedOrCompiled(const AttentionSpec &spec,
                                const TileConfig &config) {
  const CacheKey key = cacheKey(spec, config);
  auto build = [&] { return compileEntry(spec, config); };
  auto fetch = [&](bool &fromDisk) {
    return disk ? disk->getOrBuild(key, build, &fromDisk) : build();
  };
  auto load = [&](const CacheEntry &entry, bool fromDisk) {
    return loadEntry(entry, fromDisk ? LoadedKernel::Source::Disk
                                     : LoadedKernel::Source::Compiled);
  };
  bool fromDisk = false;
  Expected<CacheEntry> entry = fetch(fromDisk);
  if (!entry)
    return entry.status();
  Expected<ModuleCache::Kernel> kernel = load(*entry, fromDisk);
  if (!kernel && fromDisk) {
    // Intact on disk yet refused by the driver: never trust it again.
    std::fprintf(stderr,
                 "flashjit: warning: cached kernel %s does not load (%s); "
                 "rebuilding it\n",
                 disk->entryPath(key).c_str(), kernel.message().c_str());
    (void)disk->remove(key);
    entry = fetch(fromDisk);
    if (!entry)
      return entry.status();
    kernel = load(*entry, fromDisk);
  }
  if (kernel)
    ++(fromDisk ? diskHits : compiles);
  return kernel;
}

void Runtime::Impl::upgradeLater(std::string memoryKey, AttentionSpec spec,
                                 TileConfig config) {
  auto task = [this, memoryKey = std::move(memoryKey), spec, config] {
    driver::ScopedContext scope(*cu, context);
    Expected<ModuleCache::Kernel> kernel = Status::error("not built");
    try {
      kernel = cachedOrCompiled(spec, config);
    } catch (const std::exception &e) {
      kernel = Status::error(e.what());
    }
    if (kernel)
      modules.put(memoryKey, std::move(*kernel));
    else // the quick form gives the same results; it stays
      std::fprintf(stderr,
                   "flashjit: warning: %s did not build (%s); its quick form "
                   "stays in use\n",
                   kernelName(spec, config, arch).c_str(),
                   kernel.message().c_str());
  };
  std::lock_guard<std::mutex> guard(upgradesMutex);
  // Finished ones go (a long-lived process meets many specialisations).
  upgrades.erase(std::remove_if(upgrades.begin(), upgrades.end(),
                                [](const std::future<void> &f) {
                                  return f.wait_for(std::chrono::seconds(0)) ==
                                         std::future_status::ready;
                                }),
                 upgrades.end());
  upgrades.push_back(std::async(std::launch::async, std::move(task)));
}

Expected<ModuleCache::Kernel> Runtime::kernelFor(const AttentionSpec &spec,
                                                 const TileConfig &config,
                                                 const std::string &specKey,
                                                 bool allowQuick) {
  std::string key = memoryKey(specKey, config);
  return impl_->modules.getOrBuild(key, [&]() -> Expected<ModuleCache::Kernel> {
    Impl &rt = *impl_;
    driver::ScopedContext scope(*rt.cu, rt.context);
    const KernelFamily *family = findFamily(config.family);
    if (!allowQuick || !rt.quickFirst || config.quick || !family ||
        !family->hasQuickForm())
      return rt.cachedOrCompiled(spec, config);
    // A valid disk entry is a disk hit, not a cold miss (an invalid one is
    // rebuilt, with its warning, by the full compile below).
    if (rt.disk)
      if (std::optional<CacheEntry> entry =
              rt.disk->load(rt.cacheKey(spec, config))) {
        auto kernel = rt.loadEntry(*entry, LoadedKernel::Source::Disk);
        if (kernel) {
          ++rt.diskHits;
          return kernel;
        }
        return rt.cachedOrCompiled(spec,
                                   config); // refused: rebuilt with a warning
      }
    // The full kernel compiles on another thread meanwhile, and replaces
    // the quick form once loaded.
    rt.upgradeLater(key, spec, config);
    TileConfig quick = config;
    quick.quick = true;
    Expected<ModuleCache::Kernel> kernel =
        [&]() -> Expected<ModuleCache::Kernel> {
      auto entry = rt.compileEntry(spec, quick);
      if (!entry)
        return entry.status();
      return rt.loadEntry(*entry, LoadedKernel::Source::Quick);
    }();
    if (!kernel) { // the full kernel's own result (or error) is the one to see
      rt.finishUpgrades();
      return rt.cachedOrCompiled(spec, config);
    }
    ++rt.quickCompiles;
    return kernel;
  });
}

namespace {
/// ForwardKernelArgs of a problem (the backward's kernels take them too).
ForwardKernelArgs kernelArgsOf(const ForwardProblem &p) {
  ForwardKernelArgs a{};
  a.q = const_cast<void *>(p.q);
  a.k = const_cast<void *>(p.k);
  a.v = const_cast<void *>(p.v);
  a.o = p.o;
  a.lse = p.lse;
  a.bias = p.bias == BiasMode::Tensor ? p.biasData : nullptr;
  a.alibiSlopes = p.bias == BiasMode::Alibi ? p.alibiSlopes : nullptr;
  a.cuSeqlensQ = p.varlen ? p.deviceCuSeqlensQ : nullptr;
  a.cuSeqlensK = p.varlen ? p.deviceCuSeqlensK : nullptr;
  a.keyLengths = p.hasKeyLengths() ? p.deviceKeyLengths : nullptr;
  // Varlen addresses rows through cu_seqlens; batch strides do not apply.
  auto batchStride = [&](int64_t s) { return p.varlen ? 0 : s; };
  a.qBatchStride = batchStride(p.qStrides.batch), a.qHeadStride = p.qStrides.head,
  a.qRowStride = p.qStrides.row;
  a.kBatchStride = batchStride(p.kStrides.batch), a.kHeadStride = p.kStrides.head,
  a.kRowStride = p.kStrides.row;
  a.vBatchStride = batchStride(p.vStrides.batch), a.vHeadStride = p.vStrides.head,
  a.vRowStride = p.vStrides.row;
  a.oBatchStride = batchStride(p.oStrides.batch), a.oHeadStride = p.oStrides.head,
  a.oRowStride = p.oStrides.row;
  a.lseBatchStride = p.lse ? batchStride(p.lseBatchStride) : 0;
  a.lseHeadStride = p.lse ? p.lseHeadStride : 0;
  if (p.bias == BiasMode::Tensor) {
    // Broadcast dimensions (extent 1) do not move.
    a.biasBatchStride = p.biasShape.batch == 1 ? 0 : p.biasShape.strides.batch;
    a.biasHeadStride = p.biasShape.heads == 1 ? 0 : p.biasShape.strides.head;
    a.biasRowStride = p.biasShape.strides.row;
  }
  a.alibiBatchStride = p.bias == BiasMode::Alibi ? p.alibiBatchStride : 0;
  a.seqlenQ = static_cast<int32_t>(p.seqlenQ);
  a.seqlenK = static_cast<int32_t>(p.seqlenK);
  // An unbounded side reaches past every key of every row.
  const int64_t unbounded =
      std::min<int64_t>(p.seqlenQ + p.seqlenK, kMaxSeqlen);
  auto extent = [&](int64_t w) {
    return static_cast<int32_t>(w == kUnboundedWindow ? unbounded
                                                      : std::min(w, unbounded));
  };
  a.windowLeft = p.mask == MaskMode::Window ? extent(p.windowLeft) : 0;
  a.windowRight = p.mask == MaskMode::Window ? extent(p.windowRight) : 0;
  a.scaleLog2 = static_cast<float>(p.scale() * kLog2e);
  a.softcap = static_cast<float>(p.softcap);
  return a;
}
} // namespace

std::pair<TileConfig, ConfigSource>
Runtime::chosenConfig(const AttentionSpec &spec, const std::string &specKey,
                      const TuneKey &tuneKey, const Family *family) {
  const std::string key = configKey(specKey, tuneKey.bucket);
  std::unique_lock<std::mutex> lock(impl_->configsMutex);
  if (auto it = impl_->configs.find(key); it != impl_->configs.end())
    return it->second;
  const uint64_t generation = impl_->configsGeneration;
  lock.unlock(); // the first lookup reads the database file
  auto tuned = tunedEntryFor(tuneKey);
  // A family the caller forces is the family of every plan.
  if (tuned && family && tuned->config.family != *family)
    tuned.reset();
  const std::pair<TileConfig, ConfigSource> chosen =
      tuned ? std::pair{tuned->config, ConfigSource::Tuned}
            : std::pair{family ? defaultTileConfig(spec, impl_->arch, *family)
                               : defaultTileConfig(spec, impl_->arch),
                        ConfigSource::Default};
  lock.lock();
  if (generation == impl_->configsGeneration)
    impl_->configs.emplace(key, chosen);
  return chosen;
}

Expected<ForwardPlan> Runtime::planForward(const ForwardProblem &p,
                                           bool fullKernel) {
  if (Status s = validate(p); !s)
    return s;
  ForwardPlan plan;
  plan.spec = specFor(p);
  // Both in-memory keys below (tile config, kernel) start with the spec's.
  const std::string packedSpec = specKey(plan.spec);
  if (p.tile) {
    plan.config = *p.tile;
    plan.source = ConfigSource::Explicit;
  } else {
    std::tie(plan.config, plan.source) =
        chosenConfig(plan.spec, packedSpec, tuneKey(p),
                     impl_->family ? &*impl_->family : nullptr);
  }
  // Checks the spec too.
  if (Status s = flashjit::validate(plan.config, plan.spec, impl_->arch); !s)
    return s;
  // Tile rows: query rows, times the GQA group when its heads are packed.
  // Counted in 64 bits and checked before narrowing to the launch's 32.
  // Checked before the compile, which such a problem would only waste.
  const int64_t blockM = plan.config.blockM;
  const int64_t rows = p.seqlenQ * (plan.config.packGqa ? p.gqaGroup() : 1);
  const int64_t rowBlocks = (rows + blockM - 1) / blockM;
  const int64_t gridHeads = plan.config.packGqa ? p.headsKV : p.headsQ;
  if (rowBlocks > kMaxGridX)
    return Status::error(
        "seqlen_q too large: " + std::to_string(rows) + " query rows" +
        (plan.config.packGqa ? " (GQA group packed)" : "") + " make " +
        std::to_string(rowBlocks) + " row blocks of " +
        std::to_string(blockM) + "; a launch takes at most 2^31 - 1");
  // The kernels number a CTA's (row block, head) in 32 bits.
  const int64_t rowBlocksTimesHeads = rowBlocks * gridHeads;
  if (rowBlocksTimesHeads > int64_t(std::numeric_limits<uint32_t>::max()))
    return Status::error(
        "seqlen_q x heads_q too large: " + std::to_string(rowBlocks) +
        " row blocks of " + std::to_string(blockM) + " rows times " +
        std::to_string(gridHeads) + " heads is " +
        std::to_string(rowBlocksTimesHeads) + " CTAs; at most 2^32 - 1");
  plan.grid[0] = static_cast<unsigned>(rowBlocks);
  plan.grid[1] = static_cast<unsigned>(gridHeads);
  plan.grid[2] = static_cast<unsigned>(p.batch);
  const bool allowQuick = plan.source != ConfigSource::Explicit && !fullKernel;
  auto kernel = kernelFor(plan.spec, plan.config, packedSpec, allowQuick);
  if (kernel && fullKernel && (*kernel)->source == LoadedKernel::Source::Quick) {
    impl_->finishUpgrades();
    kernel = kernelFor(plan.spec, plan.config, packedSpec, /*allowQuick=*/false);
    if (kernel && (*kernel)->source == LoadedKernel::Source::Quick) {
      // The background compile failed (and warned): its error, here.
      driver::ScopedContext scope(*impl_->cu, impl_->context);
      kernel = impl_->cachedOrCompiled(plan.spec, plan.config);
    }
  }
  if (!kernel)
    return kernel.status();
  plan.kernel = std::move(*kernel);
  plan.launch = launchFacts(plan.spec, plan.config);
  if (Status s = encodeTensorMaps(*impl_->cu, p, plan.launch, plan); !s)
    return s;

  plan.args = kernelArgsOf(p);
  return plan;
}

namespace {
/// The address of each ForwardKernelArgs field, in the kernels' parameter
/// order, into out[0, kForwardKernelArgCount) (the launches read them).
void forwardArgAddresses(ForwardKernelArgs &a, void **out) {
  void *params[] = {
      &a.q, &a.k, &a.v, &a.o, &a.lse, &a.bias, &a.alibiSlopes, &a.cuSeqlensQ,
      &a.cuSeqlensK, &a.keyLengths,
      &a.qBatchStride, &a.qHeadStride, &a.qRowStride,
      &a.kBatchStride, &a.kHeadStride, &a.kRowStride,
      &a.vBatchStride, &a.vHeadStride, &a.vRowStride,
      &a.oBatchStride, &a.oHeadStride, &a.oRowStride,
      &a.lseBatchStride, &a.lseHeadStride,
      &a.biasBatchStride, &a.biasHeadStride, &a.biasRowStride,
      &a.alibiBatchStride,
      &a.seqlenQ, &a.seqlenK, &a.windowLeft, &a.windowRight,
      &a.scaleLog2, &a.softcap};
  // One address per ForwardKernelArgs field, in order (the last field ends
  // the list).
  static_assert(sizeof params / sizeof params[0] == kForwardKernelArgCount &&
                    offsetof(ForwardKernelArgs, softcap) ==
                        kForwardKernelPointerArgs * sizeof(void *) +
                            kForwardKernelStrideArgs * sizeof(int64_t) +
                            4 * sizeof(int32_t) + sizeof(float),
                "launch parameters out of step with ForwardKernelArgs");
  std::copy(std::begin(params), std::end(params), out);
}
} // namespace

Status Runtime::launch(const ForwardPlan &plan, void *stream) {
  const driver::Api &cu = *impl_->cu;
  driver::ScopedContext scope(cu, impl_->context);
  // The kernel reads its parameters through these addresses at launch.
  void *params[kForwardKernelArgCount];
  forwardArgAddresses(const_cast<ForwardKernelArgs &>(plan.args), params);
  // The tensor maps follow, by value (the driver copies 128 bytes each).
  void *withMaps[kForwardKernelArgCount + 3];
  std::copy(std::begin(params), std::end(params), withMaps);
  auto &maps = const_cast<ForwardPlan &>(plan).tensorMaps;
  for (int i = 0; i < plan.tensorMapCount; ++i)
    withMaps[kForwardKernelArgCount + i] = &maps[i];
  const LoadedKernel &k = *plan.kernel;
  return driver::check(
      cu.cuLaunchKernel(static_cast<CUfunction>(k.function), plan.grid[0],
                        plan.grid[1], plan.grid[2], k.threadsPerBlock, 1, 1,
                        k.sharedMemBytes, static_cast<CUstream>(stream),
                        withMaps, nullptr),
      ("cuLaunchKernel(" + k.name + ")").c_str());
}

Expected<BackwardPlan> Runtime::planBackward(const BackwardProblem &p) {
  if (Status s = validate(p); !s)
    return s;
  BackwardPlan plan;
  ForwardPlan &m = plan.main;
  m.spec = specFor(p);
  const std::string packedSpec = specKey(m.spec);
  if (p.tile) {
    m.config = *p.tile;
    m.source = ConfigSource::Explicit;
  } else {
    // The forward's forced family may build no backward: then the choice
    // is preferredFamily's.
    const KernelFamily *forced =
        impl_->family ? findFamily(*impl_->family) : nullptr;
    const bool keepForced = forced && forced->buildsBackward();
    std::tie(m.config, m.source) =
        chosenConfig(m.spec, packedSpec, tuneKey(p),
                     keepForced ? &*impl_->family : nullptr);
  }
  if (Status s = flashjit::validate(m.config, m.spec, impl_->arch); !s)
    return s;
  const int64_t keyTiles =
      (p.seqlenK + m.config.blockN - 1) / m.config.blockN;
  const int64_t splits = p.deterministic ? deterministicDqSplits(keyTiles) : 1;
  const int64_t auxBlocks =
      (p.seqlenQ + kBackwardAuxRows - 1) / kBackwardAuxRows;
  if (keyTiles > std::numeric_limits<int32_t>::max() ||
      auxBlocks > std::numeric_limits<int32_t>::max())
    return Status::error("seqlen_q or seqlen_k too large for the backward's "
                         "grid");
  m.grid[0] = static_cast<unsigned>(p.deterministic ? splits : keyTiles);
  m.grid[1] = static_cast<unsigned>(p.headsKV);
  m.grid[2] = static_cast<unsigned>(p.batch);
  plan.auxGrid[0] = static_cast<unsigned>(auxBlocks);
  plan.auxGrid[1] = static_cast<unsigned>(p.headsQ);
  plan.auxGrid[2] = static_cast<unsigned>(p.batch);
  auto kernel = kernelFor(m.spec, m.config, packedSpec, /*allowQuick=*/false);
  if (!kernel)
    return kernel.status();
  m.kernel = std::move(*kernel);
  m.launch = launchFacts(m.spec, m.config);
  m.args = kernelArgsOf(p);
  {
    const driver::Api &cu = *impl_->cu;
    driver::ScopedContext scope(cu, impl_->context);
    auto entry = [&](const std::string &name, void *&function) {
      CUfunction f = nullptr;
      Status s = driver::check(
          cu.cuModuleGetFunction(&f, static_cast<CUmodule>(m.kernel->module),
                                 name.c_str()),
          ("cuModuleGetFunction(" + name + ")").c_str());
      function = f;
      return s;
    };
    if (Status s = entry(backwardPreprocessEntry(m.kernel->name),
                         plan.preprocess);
        !s)
      return s;
    if (Status s = entry(backwardConvertEntry(m.kernel->name), plan.convert);
        !s)
      return s;
  }

  const BackwardParams params = p.params();
  plan.workspace = backwardWorkspace(params, splits);
  const BackwardWorkspace &w = plan.workspace;
  BackwardKernelArgs &a = plan.args;
  a.dO = p.dO, a.dQ = p.dQ, a.dK = p.dK, a.dV = p.dV;
  a.dBias = p.biasGrad ? p.dBias : nullptr;
  if (p.biasGrad) { // positions within sequences: varlen keeps batch strides
    a.dBiasBatchStride = p.dBiasStrides.batch;
    a.dBiasHeadStride = p.dBiasStrides.head;
    a.dBiasRowStride = p.dBiasStrides.row;
  }
  a.workspace = static_cast<float *>(p.workspace);
  auto batchStride = [&](int64_t s) { return p.varlen ? 0 : s; };
  a.dOBatchStride = batchStride(p.dOStrides.batch);
  a.dOHeadStride = p.dOStrides.head, a.dORowStride = p.dOStrides.row;
  a.dQBatchStride = batchStride(p.dQStrides.batch);
  a.dQHeadStride = p.dQStrides.head, a.dQRowStride = p.dQStrides.row;
  a.dKBatchStride = batchStride(p.dKStrides.batch);
  a.dKHeadStride = p.dKStrides.head, a.dKRowStride = p.dKStrides.row;
  a.dVBatchStride = batchStride(p.dVStrides.batch);
  a.dVHeadStride = p.dVStrides.head, a.dVRowStride = p.dVStrides.row;
  a.wsRowBatchStride = w.rowBatchStride, a.wsRowHeadStride = w.rowHeadStride;
  a.wsLseOffset = w.lseOffset, a.wsDOutSumOffset = w.dOutSumOffset;
  a.wsDqAccumOffset = w.dqAccumOffset, a.wsDqSplitStride = w.dqSplitStride;
  a.wsDqRowStride = w.dqRowStride;
  a.dqSplits = static_cast<int32_t>(splits);
  a.scale = static_cast<float>(p.scale());
  return plan;
}

Expected<size_t> Runtime::backwardWorkspaceBytes(const BackwardProblem &p) {
  auto plan = planBackward(p);
  if (!plan)
    return plan.status();
  return static_cast<size_t>(plan->workspace.bytes());
}

Status Runtime::launch(const BackwardPlan &plan, void *stream) {
  if (!plan.args.workspace)
    return Status::error("workspace must be a device pointer, got null");
  const driver::Api &cu = *impl_->cu;
  driver::ScopedContext scope(cu, impl_->context);
  auto &a = const_cast<BackwardKernelArgs &>(plan.args);
  // ForwardKernelArgs first, then BackwardKernelArgs.
  void *params[kForwardKernelArgCount + kBackwardArgCount];
  forwardArgAddresses(const_cast<ForwardKernelArgs &>(plan.main.args), params);
  void *backwardParams[] = {
      &a.dO, &a.dQ, &a.dK, &a.dV, &a.dBias, &a.workspace,
      &a.dOBatchStride, &a.dOHeadStride, &a.dORowStride,
      &a.dQBatchStride, &a.dQHeadStride, &a.dQRowStride,
      &a.dKBatchStride, &a.dKHeadStride, &a.dKRowStride,
      &a.dVBatchStride, &a.dVHeadStride, &a.dVRowStride,
      &a.dBiasBatchStride, &a.dBiasHeadStride, &a.dBiasRowStride,
      &a.wsRowBatchStride, &a.wsRowHeadStride,
      &a.wsLseOffset, &a.wsDOutSumOffset, &a.wsDqAccumOffset,
      &a.wsDqSplitStride, &a.wsDqRowStride,
      &a.dqSplits, &a.scale};
  static_assert(sizeof backwardParams / sizeof backwardParams[0] ==
                        kBackwardArgCount &&
                    offsetof(BackwardKernelArgs, scale) ==
                        kBackwardPointerArgs * sizeof(void *) +
                            kBackwardStrideArgs * sizeof(int64_t) +
                            sizeof(int32_t),
                "launch parameters out of step with BackwardKernelArgs");
  std::copy(std::begin(backwardParams), std::end(backwardParams),
            params + kForwardKernelArgCount);
  auto run = [&](void *function, const unsigned grid[3], int threads,
                 int smem, const std::string &name) {
    return driver::check(
        cu.cuLaunchKernel(static_cast<CUfunction>(function), grid[0], grid[1],
                          grid[2], threads, 1, 1, smem,
                          static_cast<CUstream>(stream), params, nullptr),
        ("cuLaunchKernel(" + name + ")").c_str());
  };
  const LoadedKernel &k = *plan.main.kernel;
  Status s = run(plan.preprocess, plan.auxGrid, kBackwardAuxThreads, 0,
                 backwardPreprocessEntry(k.name));
  if (s)
    s = run(k.function, plan.main.grid, k.threadsPerBlock, k.sharedMemBytes,
            k.name);
  if (s)
    s = run(plan.convert, plan.auxGrid, kBackwardAuxThreads, 0,
            backwardConvertEntry(k.name));
  return s;
}

Status Runtime::attentionBackward(const BackwardProblem &problem,
                                  void *stream) {
  auto plan = planBackward(problem);
  if (!plan)
    return plan.status();
  if (plan->args.workspace)
    return launch(*plan, stream);
  // A workspace of our own lives until the kernels are done with it.
  auto buffer = allocate(static_cast<size_t>(plan->workspace.bytes()));
  if (!buffer)
    return buffer.status();
  plan->args.workspace = static_cast<float *>(buffer->data());
  Status s = launch(*plan, stream);
  Status done = synchronize(stream);
  return s ? done : s;
}

Status Runtime::attentionForward(const ForwardProblem &problem, void *stream) {
  auto plan = planForward(problem);
  if (!plan)
    return plan.status();
  return launch(*plan, stream);
}

// ---- memory and timing ------------------------------------------------------
DeviceBuffer &DeviceBuffer::operator=(DeviceBuffer &&other) noexcept {
  if (this != &other) {
    reset();
    std::swap(owner_, other.owner_);
    std::swap(ptr_, other.ptr_);
    std::swap(bytes_, other.bytes_);
  }
  return *this;
}

void DeviceBuffer::reset() {
  if (owner_ && ptr_)
    (void)owner_->free(ptr_);
  owner_ = nullptr;
  ptr_ = nullptr;
  bytes_ = 0;
}

Expected<DeviceBuffer> Runtime::allocate(size_t bytes) {
  DeviceBuffer buffer;
  if (bytes == 0)
    return buffer;
  driver::ScopedContext scope(*impl_->cu, impl_->context);
  CUdeviceptr ptr = 0;
  if (Status s = driver::check(
          impl_->cu->cuMemAlloc_v2(&ptr, bytes),
          ("cuMemAlloc(" + std::to_string(bytes) + " bytes)").c_str());
      !s)
    return s;
  buffer.owner_ = this;
  buffer.ptr_ = reinterpret_cast<void *>(ptr);
  buffer.bytes_ = bytes;
  return buffer;
}

Status Runtime::free(void *ptr) {
  driver::ScopedContext scope(*impl_->cu, impl_->context);
  return driver::check(
      impl_->cu->cuMemFree_v2(reinterpret_cast<CUdeviceptr>(ptr)), "cuMemFree");
}

Status Runtime::copyToDevice(void *dst, const void *src, size_t bytes) {
  driver::ScopedContext scope(*impl_->cu, impl_->context);
  return driver::check(impl_->cu->cuMemcpyHtoD_v2(
                           reinterpret_cast<CUdeviceptr>(dst), src, bytes),
                       "cuMemcpyHtoD");
}

Status Runtime::copyToHost(void *dst, const void *src, size_t bytes) {
  driver::ScopedContext scope(*impl_->cu, impl_->context);
  return driver::check(impl_->cu->cuMemcpyDtoH_v2(
                           dst, reinterpret_cast<CUdeviceptr>(src), bytes),
                       "cuMemcpyDtoH");
}

Status Runtime::fill16(void *dst, uint16_t value, size_t count, void *stream) {
  driver::ScopedContext scope(*impl_->cu, impl_->context);
  return driver::check(
      impl_->cu->cuMemsetD16Async(reinterpret_cast<CUdeviceptr>(dst), value,
                                  count, static_cast<CUstream>(stream)),
      "cuMemsetD16Async");
}

Status Runtime::fill32(void *dst, uint32_t value, size_t count, void *stream) {
  driver::ScopedContext scope(*impl_->cu, impl_->context);
  return driver::check(
      impl_->cu->cuMemsetD32Async(reinterpret_cast<CUdeviceptr>(dst), value,
                                  count, static_cast<CUstream>(stream)),
      "cuMemsetD32Async");
}

Status Runtime::synchronize(void *stream) {
  driver::ScopedContext scope(*impl_->cu, impl_->context);
  return driver::check(
      impl_->cu->cuStreamSynchronize(static_cast<CUstream>(stream)),
      "cuStreamSynchronize");
}

Expected<float> Runtime::timeMs(const std::function<Status()> &enqueue,
                                void *stream) {
  const driver::Api &cu = *impl_->cu;
  driver::ScopedContext scope(cu, impl_->context);
  CUevent events[2] = {nullptr, nullptr};
  auto finish = [&](Status s) {
    for (CUevent e : events)
      if (e)
        cu.cuEventDestroy_v2(e);
    return s;
  };
  for (CUevent &e : events)
    if (Status s = driver::check(cu.cuEventCreate(&e, CU_EVENT_DEFAULT),
                                 "cuEventCreate");
        !s)
      return finish(s);
  const auto cuStream = static_cast<CUstream>(stream);
  Status s =
      driver::check(cu.cuEventRecord(events[0], cuStream), "cuEventRecord");
  if (s)
    s = enqueue();
  if (s)
    s = driver::check(cu.cuEventRecord(events[1], cuStream), "cuEventRecord");
  if (s)
    s = driver::check(cu.cuEventSynchronize(events[1]), "cuEventSynchronize");
  float ms = 0;
  if (s)
    s = driver::check(cu.eventElapsedTime(&ms, events[0], events[1]),
                      "cuEventElapsedTime");
  if (Status done = finish(s); !done)
    return done;
  return ms;
}

} // namespace flashjit
