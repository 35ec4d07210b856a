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

} // namespace

namespace {
/// A tensor's strides and extents (batches, heads, rows).
struct Moving {
  const Strides &strides;
  int64_t batches, heads, rows;
};
/// Appends the strides the kernels multiply by a nonzero index: a stride of
/// a size-1 dimension never moves a row.
void addMovingStrides(std::vector<int64_t> &values, const Moving &t) {
  if (t.batches > 1)
    values.push_back(t.strides.batch);
  if (t.heads > 1)
    values.push_back(t.strides.head);
  if (t.rows > 1)
    values.push_back(t.strides.row);
}
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
      // A paged cache's keys come from its block table and cache lengths.
      {"cu_seqlens_k", p.deviceCuSeqlensK, 4, p.varlen && !p.paged},
      {"key_lengths", p.deviceKeyLengths, 4, p.hasKeyLengths()},
      {"block_table", p.deviceBlockTable, 4, p.paged.has_value()},
      {"k_new", p.kNew, eb, p.newKeys > 0},
      {"v_new", p.vNew, eb, p.newKeys > 0},
      {"workspace", p.workspace, 16, false},
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
  if (p.paged && !p.hasKeyLengths())
    return Status::error("a paged KV cache needs key_lengths (the cache "
                         "lengths), got none");
  if (p.numSplits < 0 || p.numSplits > kMaxSplits)
    return Status::error("num_splits must be in [0, " +
                         std::to_string(kMaxSplits) +
                         "] (0: chosen per problem), got " +
                         std::to_string(p.numSplits));
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
  spec.pagedKV = p.paged.has_value();
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
  const int64_t rowsK =
      p.paged ? p.paged->pageSize : p.varlen ? p.varlen->totalK : p.seqlenK;
  // A paged cache's batch strides are page strides.
  const int64_t kvBatches = p.paged ? p.paged->numPages : p.varlen ? 1 : p.batch;
  const int64_t qBatches = p.varlen ? 1 : p.batch;
  std::vector<Moving> tensors = {{p.qStrides, qBatches, p.headsQ, rowsQ},
                                 {p.kStrides, kvBatches, p.headsKV, rowsK},
                                 {p.vStrides, kvBatches, p.headsKV, rowsK},
                                 {p.oStrides, qBatches, p.headsQ, rowsQ}};
  if (p.newKeys > 0) { // the append kernel copies these rows with the spec's
    for (const void *ptr : {p.kNew, p.vNew})
      values.push_back(
          static_cast<int64_t>(reinterpret_cast<uintptr_t>(ptr) / eb));
    tensors.push_back({p.kNewStrides, p.batch, p.headsKV, p.newKeys});
    tensors.push_back({p.vNewStrides, p.batch, p.headsKV, p.newKeys});
  }
  for (const Moving &t : tensors)
    addMovingStrides(values, t);
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
  // The decode features are the forward's (validateBackwardParams refuses
  // a paged cache).
  if (p.numSplits > 1)
    return Status::error("num_splits (" + std::to_string(p.numSplits) +
                         ") splits a forward's keys; the backward takes 0 "
                         "or 1");
  return Status::ok();
}

AttentionSpec specFor(const BackwardProblem &p) {
  AttentionSpec spec = specFor(static_cast<const ForwardProblem &>(p));
  spec.direction = Direction::Backward;
  // dO is copied and dQ, dK, dV stored as Q, K, V are: their pointers and
  // moving strides bound the alignment too.
  const int64_t eb = elementBytes(p.dtype);
  const int64_t batches = p.varlen ? 1 : p.batch;
  const int64_t rowsQ = p.varlen ? p.varlen->totalQ : p.seqlenQ;
  const int64_t rowsK = p.varlen ? p.varlen->totalK : p.seqlenK;
  std::vector<int64_t> values = {spec.globalAlignElems};
  const struct {
    const void *ptr;
    const Strides &strides;
    int64_t heads, rows;
  } gradients[] = {{p.dO, p.dOStrides, p.headsQ, rowsQ},
                   {p.dQ, p.dQStrides, p.headsQ, rowsQ},
                   {p.dK, p.dKStrides, p.headsKV, rowsK},
                   {p.dV, p.dVStrides, p.headsKV, rowsK}};
  for (const auto &t : gradients) {
    values.push_back(
        static_cast<int64_t>(reinterpret_cast<uintptr_t>(t.ptr) / eb));
    addMovingStrides(values, {t.strides, batches, t.heads, t.rows});
  }
  spec.globalAlignElems = alignmentElems(values);
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
  std::unordered_map<std::string, Runtime::ConfigChoice> configs;
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
  /// The workspaces of launches without a caller's (split-KV partials, the
  /// backward's arrays), one buffer per stream (launches on one stream run
  /// in order, so each may reuse it).
  std::mutex workspacesMutex;
  std::unordered_map<void *, std::pair<CUdeviceptr, size_t>> workspaces;

  /// The workspace of a launch of `plan` on `stream`: the caller's, else
  /// the stream's of at least plan.workspaceBytes (growing it waits for the
  /// stream's work, which may still use the old one).
  Expected<void *> workspaceFor(void *stream, const ForwardPlan &plan) {
    if (plan.workspace)
      return plan.workspace;
    const size_t bytes = plan.workspaceBytes;
    std::lock_guard<std::mutex> guard(workspacesMutex);
    auto &[ptr, size] = workspaces[stream];
    if (size < bytes) {
      if (ptr) {
        if (Status s = driver::check(
                cu->cuStreamSynchronize(static_cast<CUstream>(stream)),
                "cuStreamSynchronize (growing the workspace; pass a "
                "workspace to launch without it)");
            !s)
          return s;
        cu->cuMemFree_v2(ptr);
        ptr = 0, size = 0;
      }
      if (Status s = driver::check(
              cu->cuMemAlloc_v2(&ptr, bytes),
              ("cuMemAlloc(" + std::to_string(bytes) +
               " bytes of workspace)")
                  .c_str());
          !s) {
        ptr = 0;
        return s;
      }
      size = bytes;
    }
    return reinterpret_cast<void *>(ptr);
  }

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
    for (auto &[stream, buffer] : workspaces)
      if (buffer.first)
        cu->cuMemFree_v2(buffer.first);
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
               bias, softcap, varlen, keyLengths, pagedKV,
               splitKV, direction, deterministic, biasGrad] = spec;
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
                            pagedKV,
                            splitKV,
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
  const int64_t fields[] = {bucket.seqlenQ, bucket.seqlenK, bucket.batchHeads,
                            bucket.decode ? 1 : 0};
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
                         artifact->launch.blockM, meta.combineEntry,
                         meta.appendEntry})
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
  if (p.paged) { // page strides, which varlen keeps
    a.kBatchStride = p.kStrides.batch;
    a.vBatchStride = p.vStrides.batch;
  }
  return a;
}

/// The call's workspace: `needed` bytes, the caller's (checked against its
/// size) or, when the problem has none, the runtime's at launch.
Status useWorkspace(const ForwardProblem &p, size_t needed, ForwardPlan &plan,
                    const char *what) {
  plan.workspaceBytes = needed;
  plan.workspace = needed ? p.workspace : nullptr;
  if (p.workspace && needed && p.workspaceBytes < needed)
    return Status::error("workspace_bytes (" +
                         std::to_string(p.workspaceBytes) +
                         ") is less than the " + std::to_string(needed) +
                         " bytes that " + what + " need");
  return Status::ok();
}
} // namespace

Runtime::ConfigChoice
Runtime::chosenConfig(const AttentionSpec &spec, const std::string &specKey,
                      const TuneKey &tuneKey, const Family *family) {
  const std::string key = configKey(specKey, tuneKey.bucket);
  std::unique_lock<std::mutex> lock(impl_->configsMutex);
  if (auto it = impl_->configs.find(key); it != impl_->configs.end())
    return it->second;
  const uint64_t generation = impl_->configsGeneration;
  lock.unlock(); // the first lookup reads the database file
  ConfigChoice chosen{family ? defaultTileConfig(spec, impl_->arch, *family)
                             : defaultTileConfig(spec, impl_->arch),
                      ConfigSource::Default};
  // A family the caller forces is the family of every plan.
  if (const auto tuned = tunedEntryFor(tuneKey);
      tuned && (!family || tuned->config.family == *family))
    chosen = {tuned->config, ConfigSource::Tuned, tuned->splits};
  lock.lock();
  if (generation == impl_->configsGeneration)
    impl_->configs.emplace(key, chosen);
  return chosen;
}

Status Runtime::choosePlan(const ForwardProblem &p, ForwardPlan &plan) {
  if (Status s = validate(p); !s)
    return s;
  plan.spec = specFor(p);
  // Both in-memory keys below (tile config, kernel) start with the spec's.
  const std::string packedSpec = specKey(plan.spec);
  int tunedSplits = 0; // a tuned decode entry's split count
  if (p.tile) {
    plan.config = *p.tile;
    plan.source = ConfigSource::Explicit;
  } else {
    const ConfigChoice choice =
        chosenConfig(plan.spec, packedSpec, tuneKey(p),
                     impl_->family ? &*impl_->family : nullptr);
    plan.config = choice.config;
    plan.source = choice.source;
    tunedSplits = choice.splits;
  }
  // Decode-like problems (a row block per K/V group of few rows) take the
  // decode table of the sm80 family unless the caller forces another
  // family: a 64- or 128-row tile would compute padding rows (bucket-free:
  // the rows decide, exactly per shape).
  const int64_t groupRows = decodeTileRows(p);
  const bool decodeLike = isDecodeLike(p);
  bool fromDecodeTable = false;
  if (plan.source == ConfigSource::Default && decodeLike &&
      (!impl_->family || *impl_->family == Family::Sm80))
    if (auto decode = decodeTileConfig(plan.spec, impl_->arch, groupRows)) {
      plan.config = *decode;
      fromDecodeTable = true;
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

  // Split-KV: asked for, or chosen for decode-like and paged problems: a
  // tuned decode entry's count (flashjit autotune --decode; at most the
  // key blocks, within grid z), else the heuristic.
  plan.numSplits = 1;
  const int64_t partialRows =
      p.varlen ? p.varlen->totalQ : p.batch * p.seqlenQ;
  if (p.numSplits > 1) {
    plan.numSplits = p.numSplits;
  } else if (p.numSplits == 0 && (decodeLike || p.paged) &&
             plan.config.family == Family::Sm80 &&
             partialRows * p.headsQ < std::numeric_limits<int32_t>::max()) {
    const int64_t keyBlocks = std::max<int64_t>(
        1, (p.seqlenK + plan.config.blockN - 1) / plan.config.blockN);
    if (tunedSplits > 0 && p.batch * tunedSplits <= kMaxGridZ) {
      plan.numSplits = int(std::min<int64_t>(tunedSplits, keyBlocks));
    } else {
      const int64_t ctas =
          int64_t(plan.grid[0]) * plan.grid[1] * int64_t(plan.grid[2]);
      plan.numSplits = chooseSplits(
          ctas, keyBlocks, p.batch, impl_->info.smCount,
          ctasPerSm(launchFacts(plan.spec, plan.config), impl_->arch));
    }
  }
  if (plan.numSplits > 1) {
    if (plan.config.family != Family::Sm80)
      return Status::error("num_splits (" + std::to_string(plan.numSplits) +
                           ") needs the sm80 kernel family (split-KV); the " +
                           std::string(toString(plan.config.family)) +
                           " family has none");
    if (p.batch * plan.numSplits > kMaxGridZ)
      return Status::error(
          "batch x num_splits must be at most 65535 (the grid's z), got " +
          std::to_string(p.batch) + " x " + std::to_string(plan.numSplits));
    if (partialRows * p.headsQ >= std::numeric_limits<int32_t>::max())
      return Status::error("split-KV needs (batch x seqlen_q, or total_q) x "
                           "heads_q below 2^31, got " +
                           std::to_string(partialRows * p.headsQ));
    plan.spec.splitKV = true;
    // The default table's tiles of a split spec leave registers for the
    // float32 partials (the same rows per CTA: the grid stands).
    if (plan.source == ConfigSource::Default && !fromDecodeTable) {
      const TileConfig split =
          defaultTileConfig(plan.spec, impl_->arch, plan.config.family);
      if (split.blockM == plan.config.blockM)
        plan.config = split;
    }
    if (Status s = flashjit::validate(plan.config, plan.spec, impl_->arch); !s)
      return s;
    plan.grid[2] = static_cast<unsigned>(p.batch * plan.numSplits);
    const PartialLayout layout =
        partialLayout(partialRows, p.headsQ, p.headDimV, plan.numSplits);
    plan.partialLseOffset = layout.oBytes;
    const std::string what =
        std::to_string(plan.numSplits) + " splits' partials";
    if (Status s = useWorkspace(p, layout.bytes, plan, what.c_str()); !s)
      return s;
  }
  return Status::ok();
}

Expected<size_t> Runtime::forwardWorkspaceBytes(const ForwardProblem &p) {
  ForwardPlan plan;
  if (Status s = choosePlan(p, plan); !s)
    return s;
  return plan.workspaceBytes;
}

Expected<ForwardPlan> Runtime::planForward(const ForwardProblem &p,
                                           bool fullKernel) {
  ForwardPlan plan;
  if (Status s = choosePlan(p, plan); !s)
    return s;
  const std::string packedSpec = specKey(plan.spec);
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

  // ---- decode: block table, splits, the combine and append kernels ------
  if (!plan.spec.pagedKV && !plan.spec.splitKV)
    return plan;
  const ForwardKernelArgs &a = plan.args;
  DecodeKernelArgs &d = plan.decode;
  const PageDivisor divisor =
      pageDivisor(p.paged ? p.paged->pageSize : int64_t(1));
  if (p.paged) {
    d.blockTable = p.deviceBlockTable;
    d.blockTableStride = p.paged->maxPagesPerSeq;
    d.pageSize = static_cast<int32_t>(p.paged->pageSize);
    d.pageDivMul = divisor.mul;
    d.pageDivShift = divisor.shift;
  }
  d.numSplits = plan.numSplits;
  d.headsQ = static_cast<int32_t>(p.headsQ);
  d.newKeys = static_cast<int32_t>(p.newKeys);
  const int64_t partialRows =
      p.varlen ? p.varlen->totalQ : p.batch * p.seqlenQ;
  d.partialEntries = partialRows * p.headsQ;
  // The module's helper entries (Decode.h) the launch needs.
  for (auto [needed, function, what] :
       {std::tuple{plan.spec.splitKV, plan.kernel->combineFunction, "combine"},
        std::tuple{p.newKeys > 0, plan.kernel->appendFunction, "append"}})
    if (needed && !function)
      return Status::error("internal: " + plan.kernel->name + " has no " +
                           what + " kernel");
  if (plan.spec.splitKV) {
    CombineKernelArgs &c = plan.combine;
    c.o = p.o;
    c.lse = p.lse;
    c.cuSeqlensQ = a.cuSeqlensQ;
    c.partialEntries = d.partialEntries;
    c.oBatchStride = a.oBatchStride, c.oHeadStride = a.oHeadStride,
    c.oRowStride = a.oRowStride;
    c.lseBatchStride = a.lseBatchStride, c.lseHeadStride = a.lseHeadStride;
    c.numSplits = plan.numSplits;
    c.headsQ = static_cast<int32_t>(p.headsQ);
    c.seqlenQ = static_cast<int32_t>(p.seqlenQ);
    c.batch = static_cast<int32_t>(p.batch);
    constexpr int64_t kEntriesPerCta = kCombineThreads / 32;
    plan.combineGrid = static_cast<unsigned>(
        (d.partialEntries + kEntriesPerCta - 1) / kEntriesPerCta);
  }
  if (p.newKeys > 0) {
    AppendKernelArgs &ap = plan.append;
    ap.kNew = p.kNew;
    ap.vNew = p.vNew;
    ap.kCache = a.k;
    ap.vCache = a.v;
    ap.blockTable = p.deviceBlockTable;
    ap.cacheLengths = p.deviceKeyLengths;
    ap.kNewBatchStride = p.kNewStrides.batch;
    ap.kNewHeadStride = p.kNewStrides.head;
    ap.kNewRowStride = p.kNewStrides.row;
    ap.vNewBatchStride = p.vNewStrides.batch;
    ap.vNewHeadStride = p.vNewStrides.head;
    ap.vNewRowStride = p.vNewStrides.row;
    ap.kPageStride = p.kStrides.batch, ap.kHeadStride = p.kStrides.head,
    ap.kRowStride = p.kStrides.row;
    ap.vPageStride = p.vStrides.batch, ap.vHeadStride = p.vStrides.head,
    ap.vRowStride = p.vStrides.row;
    ap.blockTableStride = d.blockTableStride;
    ap.newKeys = d.newKeys;
    ap.headsKV = static_cast<int32_t>(p.headsKV);
    ap.pageSize = d.pageSize;
    ap.pageDivMul = d.pageDivMul;
    ap.pageDivShift = d.pageDivShift;
    // One 16-byte chunk per thread (grid-stride beyond 4096 CTAs).
    const int64_t chunks =
        p.newKeys * p.headsKV *
        std::max(p.headDimQK / copyElems(plan.spec, int(p.headDimQK)),
                 p.headDimV / copyElems(plan.spec, int(p.headDimV)));
    plan.appendGrid[0] = static_cast<unsigned>(std::clamp<int64_t>(
        (chunks + kAppendThreads - 1) / kAppendThreads, 1, 4096));
    plan.appendGrid[1] = static_cast<unsigned>(p.batch);
  }
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

/// Launches one entry of a module on a stream (a CTA of `threads` x 1 x 1).
struct KernelLauncher {
  const driver::Api &cu;
  CUstream stream;
  Status operator()(void *function, const unsigned grid[3], int threads,
                    int sharedBytes, void **params,
                    const std::string &name) const {
    return driver::check(
        cu.cuLaunchKernel(static_cast<CUfunction>(function), grid[0], grid[1],
                          grid[2], threads, 1, 1, sharedBytes, stream, params,
                          nullptr),
        ("cuLaunchKernel(" + name + ")").c_str());
  }
};
} // namespace

Status Runtime::launch(const ForwardPlan &plan, void *stream) {
  const driver::Api &cu = *impl_->cu;
  driver::ScopedContext scope(cu, impl_->context);
  const LoadedKernel &k = *plan.kernel;
  const KernelLauncher launchOn{cu, static_cast<CUstream>(stream)};
  DecodeKernelArgs d = plan.decode;
  CombineKernelArgs c = plan.combine;
  if (plan.numSplits > 1) { // the partials' workspace
    auto ws = impl_->workspaceFor(stream, plan);
    if (!ws)
      return ws.status();
    d.partialO = static_cast<float *>(*ws);
    d.partialLse = reinterpret_cast<float *>(static_cast<char *>(*ws) +
                                             plan.partialLseOffset);
    c.partialO = d.partialO;
    c.partialLse = d.partialLse;
  }
  if (plan.appendGrid[0] > 0) { // new K/V rows into their pages, first
    AppendKernelArgs ap = plan.append;
    void *params[] = {
        &ap.kNew, &ap.vNew, &ap.kCache, &ap.vCache, &ap.blockTable,
        &ap.cacheLengths,
        &ap.kNewBatchStride, &ap.kNewHeadStride, &ap.kNewRowStride,
        &ap.vNewBatchStride, &ap.vNewHeadStride, &ap.vNewRowStride,
        &ap.kPageStride, &ap.kHeadStride, &ap.kRowStride,
        &ap.vPageStride, &ap.vHeadStride, &ap.vRowStride,
        &ap.blockTableStride,
        &ap.newKeys, &ap.headsKV, &ap.pageSize, &ap.pageDivMul,
        &ap.pageDivShift};
    static_assert(sizeof params / sizeof params[0] == kAppendKernelArgCount,
                  "launch parameters out of step with AppendKernelArgs");
    const unsigned grid[3] = {plan.appendGrid[0], plan.appendGrid[1], 1};
    if (Status s = launchOn(k.appendFunction, grid, kAppendThreads, 0, params,
                            appendKernelName(k.name));
        !s)
      return s;
  }
  // The kernel reads its parameters through these addresses at launch.
  void *decodeParams[] = {&d.blockTable,     &d.partialO,
                          &d.partialLse,     &d.blockTableStride,
                          &d.partialEntries, &d.pageSize,
                          &d.pageDivMul,     &d.pageDivShift,
                          &d.numSplits,      &d.headsQ,
                          &d.newKeys};
  static_assert(sizeof decodeParams / sizeof decodeParams[0] ==
                    kDecodeKernelArgCount,
                "launch parameters out of step with DecodeKernelArgs");
  // Then the decode parameters (decode specs) and the tensor maps, by value
  // (the driver copies 128 bytes each).
  void *all[kForwardKernelArgCount + kDecodeKernelArgCount +
            ForwardPlan::kMaxTensorMaps];
  forwardArgAddresses(const_cast<ForwardKernelArgs &>(plan.args), all);
  void **next = all + kForwardKernelArgCount;
  if (plan.spec.pagedKV || plan.spec.splitKV)
    next = std::copy(std::begin(decodeParams), std::end(decodeParams), next);
  auto &maps = const_cast<ForwardPlan &>(plan).tensorMaps;
  for (int i = 0; i < plan.tensorMapCount; ++i)
    *next++ = &maps[i];
  if (Status s = launchOn(k.function, plan.grid, k.threadsPerBlock,
                          k.sharedMemBytes, all, k.name);
      !s)
    return s;
  if (plan.numSplits <= 1)
    return Status::ok();
  void *combineParams[] = {
      &c.partialO,     &c.partialLse,    &c.o,           &c.lse,
      &c.cuSeqlensQ,   &c.partialEntries, &c.oBatchStride, &c.oHeadStride,
      &c.oRowStride,   &c.lseBatchStride, &c.lseHeadStride, &c.numSplits,
      &c.headsQ,       &c.seqlenQ,        &c.batch};
  static_assert(sizeof combineParams / sizeof combineParams[0] ==
                    kCombineKernelArgCount,
                "launch parameters out of step with CombineKernelArgs");
  const unsigned grid[3] = {plan.combineGrid, 1, 1};
  return launchOn(k.combineFunction, grid, kCombineThreads, 0, combineParams,
                  combineKernelName(k.name));
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
    // The forward's forced family may build no backward, or not this one:
    // then the choice is preferredFamily's.
    const KernelFamily *forced =
        impl_->family ? findFamily(*impl_->family) : nullptr;
    const bool keepForced = forced && forced->buildsBackward() &&
                            forced->supports(m.spec, impl_->arch);
    const ConfigChoice choice =
        chosenConfig(m.spec, packedSpec, tuneKey(p),
                     keepForced ? &*impl_->family : nullptr);
    m.config = choice.config;
    m.source = choice.source;
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
  m.launch = launchFacts(m.spec, m.config);
  m.args = kernelArgsOf(p);
  if (Status s = encodeTensorMaps(*impl_->cu, p, m.launch, m, &p); !s)
    return s;

  plan.workspaceLayout = backwardWorkspace(p.params(), splits);
  const BackwardWorkspace &w = plan.workspaceLayout;
  if (Status s = useWorkspace(p, static_cast<size_t>(w.bytes()), m,
                              "the backward's arrays");
      !s)
    return s;
  BackwardKernelArgs &a = plan.args;
  a.dO = p.dO, a.dQ = p.dQ, a.dK = p.dK, a.dV = p.dV;
  a.dBias = p.biasGrad ? p.dBias : nullptr;
  if (p.biasGrad) { // positions within sequences: varlen keeps batch strides
    a.dBiasBatchStride = p.dBiasStrides.batch;
    a.dBiasHeadStride = p.dBiasStrides.head;
    a.dBiasRowStride = p.dBiasStrides.row;
  }
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

  auto kernel = kernelFor(m.spec, m.config, packedSpec, /*allowQuick=*/false);
  if (!kernel)
    return kernel.status();
  m.kernel = std::move(*kernel);
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
  if (Status s = entry(backwardConvertEntry(m.kernel->name), plan.convert); !s)
    return s;
  return plan;
}

Expected<size_t> Runtime::backwardWorkspaceBytes(const BackwardProblem &p) {
  auto plan = planBackward(p);
  if (!plan)
    return plan.status();
  return plan->main.workspaceBytes;
}

Status Runtime::launch(const BackwardPlan &plan, void *stream) {
  const driver::Api &cu = *impl_->cu;
  driver::ScopedContext scope(cu, impl_->context);
  BackwardKernelArgs a = plan.args;
  auto ws = impl_->workspaceFor(stream, plan.main);
  if (!ws)
    return ws.status();
  a.workspace = static_cast<float *>(*ws);
  // ForwardKernelArgs first, then BackwardKernelArgs, then the main
  // kernel's tensor maps (by value; the other two take fewer parameters).
  void *params[kForwardKernelArgCount + kBackwardArgCount +
               ForwardPlan::kMaxTensorMaps];
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
  void **next = std::copy(std::begin(backwardParams), std::end(backwardParams),
                          params + kForwardKernelArgCount);
  auto &maps = const_cast<BackwardPlan &>(plan).main.tensorMaps;
  for (int i = 0; i < plan.main.tensorMapCount; ++i)
    *next++ = &maps[i];
  const LoadedKernel &k = *plan.main.kernel;
  const KernelLauncher run{cu, static_cast<CUstream>(stream)};
  Status s = run(plan.preprocess, plan.auxGrid, kBackwardAuxThreads, 0, params,
                 backwardPreprocessEntry(k.name));
  if (s)
    s = run(k.function, plan.main.grid, k.threadsPerBlock, k.sharedMemBytes,
            params, k.name);
  if (s)
    s = run(plan.convert, plan.auxGrid, kBackwardAuxThreads, 0, params,
            backwardConvertEntry(k.name));
  return s;
}

Status Runtime::attentionBackward(const BackwardProblem &problem,
                                  void *stream) {
  auto plan = planBackward(problem);
  if (!plan)
    return plan.status();
  return launch(*plan, stream);
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
