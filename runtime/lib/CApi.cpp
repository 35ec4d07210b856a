//===- CApi.cpp - flashjit.h over the C++ Runtime -------------------------===//
//
// Each entry point turns the C++ API's Status into a code by the step that
// failed (argument checks, driver, device, compile, launch) and keeps the
// message for flashjit_last_error(). Nothing may throw across extern "C".
//
//===----------------------------------------------------------------------===//
#include "flashjit/flashjit.h"

#include "flashjit/compiler/KernelFamily.h"
#include "flashjit/compiler/Pipeline.h"
#include "flashjit/kernels/Families.h"
#include "flashjit/runtime/Runtime.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

struct flashjit_runtime {
  std::unique_ptr<flashjit::Runtime> runtime;
};

namespace {
thread_local std::string tLastError;

flashjit_status fail(flashjit_status code, std::string message) {
  tLastError = std::move(message);
  return code;
}

/// Runs `body`, turning any exception (bad_alloc) into a status code.
template <typename F> flashjit_status guarded(F &&body) {
  try {
    return body();
  } catch (const std::exception &e) {
    return fail(FLASHJIT_ERROR_INTERNAL, std::string("flashjit: ") + e.what());
  } catch (...) {
    return fail(FLASHJIT_ERROR_INTERNAL, "flashjit: unknown internal error");
  }
}

/// A struct of `given` bytes where this library's has `expected`: the
/// caller was built against another flashjit.h (or never initialised it).
flashjit_status wrongStructSize(const std::string &what, uint64_t given,
                                size_t expected, const std::string &hint) {
  return fail(FLASHJIT_ERROR_INVALID_ARGUMENT,
              what + " is " + std::to_string(given) + ", this libflashjit (" +
                  flashjit::flashjitVersion() + ", API " +
                  std::to_string(FLASHJIT_API_VERSION) + ") has " +
                  std::to_string(expected) +
                  ": the caller was built against another flashjit.h" + hint);
}

/// Refuses a struct of a size this library does not know before any other
/// field is read.
template <typename Struct>
flashjit_status checkStructSize(const Struct &given, const char *name) {
  if (given.struct_size == sizeof(Struct))
    return FLASHJIT_SUCCESS;
  return wrongStructSize(std::string(name) + ".struct_size", given.struct_size,
                         sizeof(Struct),
                         std::string(", or did not call ") + name + "_init");
}

/// Init functions write only a struct of this library's size.
template <typename Struct>
flashjit_status initStruct(Struct *s, uint64_t size, const char *name) {
  if (!s)
    return fail(FLASHJIT_ERROR_INVALID_ARGUMENT,
                std::string(name) + " must not be NULL");
  if (size != sizeof(Struct))
    return wrongStructSize(std::string(name) + "_init: struct_size", size,
                           sizeof(Struct), "");
  std::memset(s, 0, sizeof *s);
  s->struct_size = sizeof(Struct);
  return FLASHJIT_SUCCESS;
}

/// A 0-or-1 field.
flashjit_status checkFlag(int32_t value, const char *name) {
  if (value == 0 || value == 1)
    return FLASHJIT_SUCCESS;
  return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, std::string(name) +
                                                   " must be 0 or 1, got " +
                                                   std::to_string(value));
}

void copyStrides(flashjit::Strides &to, const int64_t from[3]) {
  to = {from[0], from[1], from[2]};
}

/// The C++ problem for `a`; fails on values the C types allow but the C++
/// enums do not.
flashjit_status toProblem(const flashjit_forward_args &a,
                          flashjit::ForwardProblem &p) {
  if (flashjit_status s = checkStructSize(a, "flashjit_forward_args");
      s != FLASHJIT_SUCCESS)
    return s;
  for (auto [value, name] :
       {std::pair{a.trust_device_lengths, "trust_device_lengths"},
        std::pair{a.full_kernel, "full_kernel"}})
    if (flashjit_status s = checkFlag(value, name); s != FLASHJIT_SUCCESS)
      return s;
  if (a.dtype != FLASHJIT_FP16 && a.dtype != FLASHJIT_BF16)
    return fail(FLASHJIT_ERROR_INVALID_ARGUMENT,
                "dtype must be FLASHJIT_FP16 (0) or FLASHJIT_BF16 (1), got " +
                    std::to_string(a.dtype));
  if (a.mask < FLASHJIT_MASK_NONE || a.mask > FLASHJIT_MASK_WINDOW)
    return fail(FLASHJIT_ERROR_INVALID_ARGUMENT,
                "mask must be FLASHJIT_MASK_NONE (0), FLASHJIT_MASK_CAUSAL (1) "
                "or FLASHJIT_MASK_WINDOW (2), got " +
                    std::to_string(a.mask));
  if (a.bias_mode < FLASHJIT_BIAS_NONE || a.bias_mode > FLASHJIT_BIAS_ALIBI)
    return fail(FLASHJIT_ERROR_INVALID_ARGUMENT,
                "bias_mode must be FLASHJIT_BIAS_NONE (0), FLASHJIT_BIAS_TENSOR "
                "(1) or FLASHJIT_BIAS_ALIBI (2), got " +
                    std::to_string(a.bias_mode));
  if ((a.cu_seqlens_q == nullptr) != (a.cu_seqlens_k == nullptr))
    return fail(FLASHJIT_ERROR_INVALID_ARGUMENT,
                "cu_seqlens_q and cu_seqlens_k must both be set (varlen) or "
                "both be NULL");
  p.dtype =
      a.dtype == FLASHJIT_FP16 ? flashjit::DType::F16 : flashjit::DType::BF16;
  p.mask = static_cast<flashjit::MaskMode>(a.mask);
  p.bias = static_cast<flashjit::BiasMode>(a.bias_mode);
  static_assert(int(flashjit::MaskMode::Window) == FLASHJIT_MASK_WINDOW &&
                    int(flashjit::BiasMode::Alibi) == FLASHJIT_BIAS_ALIBI,
                "C and C++ enums out of step");
  p.windowLeft = a.window_left;
  p.windowRight = a.window_right;
  p.softcap = a.softcap;
  p.biasShape.batch = a.bias_batch;
  p.biasShape.heads = a.bias_heads;
  copyStrides(p.biasShape.strides, a.bias_strides);
  p.biasData = a.bias;
  p.alibiSlopes = a.alibi_slopes;
  p.alibiBatchStride = a.alibi_batch_stride;
  p.deviceCuSeqlensQ = a.cu_seqlens_q;
  p.deviceCuSeqlensK = a.cu_seqlens_k;
  p.deviceKeyLengths = a.key_lengths;
  p.batch = a.batch;
  p.headsQ = a.heads_q;
  p.headsKV = a.heads_kv ? a.heads_kv : a.heads_q;
  p.seqlenQ = a.seqlen_q;
  p.seqlenK = a.seqlen_k;
  p.headDimQK = a.head_dim_qk;
  p.headDimV = a.head_dim_v ? a.head_dim_v : a.head_dim_qk;
  copyStrides(p.qStrides, a.q_strides);
  copyStrides(p.kStrides, a.k_strides);
  copyStrides(p.vStrides, a.v_strides);
  copyStrides(p.oStrides, a.o_strides);
  p.lseBatchStride = a.lse_strides[0];
  p.lseHeadStride = a.lse_strides[1];
  if (a.softmax_scale != 0)
    p.softmaxScale = a.softmax_scale;
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.o = a.o;
  p.lse = a.lse;
  // Decode: the block table's host copy comes with the sequence lengths.
  if (a.block_table) {
    flashjit::PagedKV pg;
    pg.numPages = a.num_pages;
    pg.pageSize = a.page_size;
    pg.maxPagesPerSeq = a.max_pages_per_seq;
    p.paged = std::move(pg);
    p.deviceBlockTable = a.block_table;
  }
  p.newKeys = a.new_keys;
  p.kNew = a.k_new;
  p.vNew = a.v_new;
  copyStrides(p.kNewStrides, a.k_new_strides);
  copyStrides(p.vNewStrides, a.v_new_strides);
  p.numSplits = a.num_splits;
  p.workspace = a.workspace;
  p.workspaceBytes = static_cast<size_t>(a.workspace_bytes);
  return FLASHJIT_SUCCESS;
}

/// Where the device values of the sequence lengths come from when a host
/// copy is missing: read (forward calls that do not trust them), or
/// trusted unread (nothing synchronises).
struct LengthSource {
  flashjit::Runtime *runtime; ///< null: never read (prepare, PTX)
  void *stream;
  bool trusted;
};

/// Host copies of `count` int32 values: `host` when given; else nothing
/// (trusted device values), or read from `device` after `stream` has
/// finished (so that its producer is done).
flashjit_status hostInts(const LengthSource &from, const int32_t *host,
                         const int32_t *device, int64_t count, const char *name,
                         std::vector<int32_t> &out) {
  if (count < 0)
    return fail(FLASHJIT_ERROR_INVALID_ARGUMENT,
                std::string(name) + ": batch must be >= 1");
  out.clear();
  if (!host && (from.trusted || !from.runtime))
    return FLASHJIT_SUCCESS;
  out.assign(static_cast<size_t>(count), 0);
  if (host) {
    std::memcpy(out.data(), host, out.size() * sizeof(int32_t));
    return FLASHJIT_SUCCESS;
  }
  if (reinterpret_cast<uintptr_t>(device) % alignof(int32_t) != 0)
    return fail(FLASHJIT_ERROR_INVALID_ARGUMENT,
                std::string(name) + " must be aligned to 4 bytes");
  flashjit::Runtime &rt = *from.runtime;
  flashjit::Status s = rt.synchronize(from.stream);
  if (s)
    s = rt.copyToHost(out.data(), device, out.size() * sizeof(int32_t));
  if (!s)
    return fail(FLASHJIT_ERROR_INVALID_ARGUMENT,
                std::string("reading ") + name + " from the device: " +
                    s.message());
  return FLASHJIT_SUCCESS;
}

/// The host copies of the varlen prefix sums and key lengths.
flashjit_status hostSequenceInfo(const LengthSource &from,
                                 const flashjit_forward_args &a,
                                 flashjit::ForwardProblem &p) {
  p.trustDeviceLengths = from.trusted || !from.runtime;
  const int64_t batch = p.batch; // validated: in [1, 65535]
  if (a.cu_seqlens_q) {
    flashjit::VarlenSeqs seqs;
    seqs.totalQ = a.total_q;
    seqs.totalK = a.total_k;
    for (auto [host, device, name, out] :
         {std::tuple{a.cu_seqlens_q_host, a.cu_seqlens_q, "cu_seqlens_q",
                     &seqs.cuSeqlensQ},
          std::tuple{a.cu_seqlens_k_host, a.cu_seqlens_k, "cu_seqlens_k",
                     &seqs.cuSeqlensK}})
      if (flashjit_status s =
              hostInts(from, host, device, batch + 1, name, *out);
          s != FLASHJIT_SUCCESS)
        return s;
    p.varlen = std::move(seqs);
  }
  if (a.key_lengths)
    if (flashjit_status s = hostInts(from, a.key_lengths_host, a.key_lengths,
                                     batch, "key_lengths", p.keyLengths);
        s != FLASHJIT_SUCCESS)
      return s;
  if (p.paged) {
    if (a.max_pages_per_seq < 1 || a.max_pages_per_seq > (int64_t(1) << 31))
      return fail(FLASHJIT_ERROR_INVALID_ARGUMENT,
                  "max_pages_per_seq must be in [1, 2^31), got " +
                      std::to_string(a.max_pages_per_seq));
    return hostInts(from, a.block_table_host, a.block_table,
                    batch * a.max_pages_per_seq, "block_table",
                    p.paged->blockTable);
  }
  return FLASHJIT_SUCCESS;
}

/// The checked problem of `a` (sequence lengths from `lengths`), with the
/// args' tile override for `arch` applied.
flashjit_status checkedProblem(const flashjit_forward_args *a,
                               const LengthSource &lengths, flashjit::Arch arch,
                               flashjit::ForwardProblem &p) {
  if (!a)
    return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, "args must not be NULL");
  if (flashjit_status s = toProblem(*a, p); s != FLASHJIT_SUCCESS)
    return s;
  // Batch sizes the host copies below: it is checked first.
  if (flashjit::Status s = flashjit::validateSizes(p); !s)
    return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, s.message());
  if (flashjit_status s = hostSequenceInfo(lengths, *a, p);
      s != FLASHJIT_SUCCESS)
    return s;
  if (flashjit::Status s = flashjit::validate(p); !s)
    return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, s.message());
  if (!a->block_m && !a->block_n && !a->warps && !a->stages && !a->pack_gqa)
    return FLASHJIT_SUCCESS;
  const flashjit::AttentionSpec spec = flashjit::specFor(p);
  flashjit::TileConfig tile = flashjit::defaultTileConfig(spec, arch);
  for (auto [field, value] :
       {std::pair{&tile.blockM, a->block_m},
        std::pair{&tile.blockN, a->block_n}, std::pair{&tile.warps, a->warps},
        std::pair{&tile.stages, a->stages}})
    if (value)
      *field = value;
  if (a->pack_gqa)
    tile.packGqa = a->pack_gqa > 0;
  if (flashjit::Status s = flashjit::validate(tile, spec, arch); !s)
    return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, s.message());
  p.tile = tile;
  return FLASHJIT_SUCCESS;
}

/// The plan of a forward call or a prepare (which reads nothing through the
/// args' pointers and always loads the full kernel).
flashjit_status plan(flashjit_runtime *rt, const flashjit_forward_args *args,
                     void *stream, bool launchable,
                     flashjit::Expected<flashjit::ForwardPlan> &out) {
  if (!rt)
    return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, "rt must not be NULL");
  if (!args)
    return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, "args must not be NULL");
  // Before any other field is read.
  if (flashjit_status s = checkStructSize(*args, "flashjit_forward_args");
      s != FLASHJIT_SUCCESS)
    return s;
  flashjit::Runtime &runtime = *rt->runtime;
  flashjit::ForwardProblem problem;
  const LengthSource lengths{launchable ? &runtime : nullptr, stream,
                             args->trust_device_lengths == 1};
  if (flashjit_status s =
          checkedProblem(args, lengths, runtime.arch(), problem);
      s != FLASHJIT_SUCCESS)
    return s;
  out = runtime.planForward(problem, !launchable || args->full_kernel == 1);
  if (!out)
    return fail(FLASHJIT_ERROR_COMPILE, out.message());
  return FLASHJIT_SUCCESS;
}
/// The checked backward problem of `a`, with the forward's tile override
/// applied to the backward's default tiles.
flashjit_status backwardProblem(flashjit_runtime *rt,
                                const flashjit_backward_args *a, void *stream,
                                bool launchable, flashjit::BackwardProblem &p) {
  if (!rt)
    return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, "rt must not be NULL");
  if (!a)
    return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, "args must not be NULL");
  if (flashjit_status s = checkStructSize(*a, "flashjit_backward_args");
      s != FLASHJIT_SUCCESS)
    return s;
  for (auto [value, name] : {std::pair{a->deterministic, "deterministic"},
                             std::pair{a->bias_grad, "bias_grad"}})
    if (flashjit_status s = checkFlag(value, name); s != FLASHJIT_SUCCESS)
      return s;
  flashjit::Runtime &runtime = *rt->runtime;
  flashjit_forward_args fwd = a->forward;
  if (flashjit_status s = checkStructSize(fwd, "flashjit_forward_args");
      s != FLASHJIT_SUCCESS)
    return s;
  fwd.block_m = fwd.block_n = fwd.warps = fwd.stages = fwd.pack_gqa = 0;
  const LengthSource lengths{launchable ? &runtime : nullptr, stream,
                             fwd.trust_device_lengths == 1};
  if (flashjit_status s = checkedProblem(&fwd, lengths, runtime.arch(), p);
      s != FLASHJIT_SUCCESS)
    return s;
  p.dO = a->dout, p.dQ = a->dq, p.dK = a->dk, p.dV = a->dv;
  copyStrides(p.dOStrides, a->dout_strides);
  copyStrides(p.dQStrides, a->dq_strides);
  copyStrides(p.dKStrides, a->dk_strides);
  copyStrides(p.dVStrides, a->dv_strides);
  p.deterministic = a->deterministic == 1;
  p.biasGrad = a->bias_grad == 1;
  p.dBias = a->dbias;
  copyStrides(p.dBiasStrides, a->dbias_strides);
  if (flashjit::Status s = flashjit::validate(p); !s)
    return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, s.message());
  const flashjit_forward_args &t = a->forward;
  if (t.block_m || t.block_n || t.warps || t.stages) {
    const flashjit::AttentionSpec spec = flashjit::specFor(p);
    flashjit::TileConfig tile =
        flashjit::defaultTileConfig(spec, runtime.arch());
    for (auto [field, value] :
         {std::pair{&tile.blockM, t.block_m}, std::pair{&tile.blockN, t.block_n},
          std::pair{&tile.warps, t.warps}, std::pair{&tile.stages, t.stages}})
      if (value)
        *field = value;
    if (flashjit::Status s = flashjit::validate(tile, spec, runtime.arch()); !s)
      return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, s.message());
    p.tile = tile;
  }
  return FLASHJIT_SUCCESS;
}
} // namespace

extern "C" {

flashjit_status flashjit_forward_args_init(flashjit_forward_args *args,
                                           uint64_t struct_size) {
  if (flashjit_status s =
          initStruct(args, struct_size, "flashjit_forward_args");
      s != FLASHJIT_SUCCESS)
    return s;
  args->dtype = FLASHJIT_BF16;
  args->window_left = args->window_right = -1;
  return FLASHJIT_SUCCESS;
}

flashjit_status flashjit_runtime_options_init(flashjit_runtime_options *options,
                                              uint64_t struct_size) {
  if (flashjit_status s =
          initStruct(options, struct_size, "flashjit_runtime_options");
      s != FLASHJIT_SUCCESS)
    return s;
  const flashjit::RuntimeOptions defaults;
  options->device = defaults.device;
  options->disk_cache = defaults.diskCache;
  options->use_tuned = defaults.useTuned;
  options->quick_first = defaults.quickFirst;
  return FLASHJIT_SUCCESS;
}

flashjit_status flashjit_runtime_create(int device, flashjit_runtime **out) {
  flashjit_runtime_options options;
  (void)flashjit_runtime_options_init(&options, sizeof options);
  options.device = device;
  return flashjit_runtime_create_with_options(&options, out);
}

flashjit_status
flashjit_runtime_create_with_options(const flashjit_runtime_options *options,
                                     flashjit_runtime **out) {
  return guarded([&] {
    if (!out)
      return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, "out must not be NULL");
    *out = nullptr;
    if (!options)
      return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, "options must not be NULL");
    if (flashjit_status s =
            checkStructSize(*options, "flashjit_runtime_options");
        s != FLASHJIT_SUCCESS)
      return s;
    flashjit::RuntimeOptions o;
    for (auto [name, value, to] :
         {std::tuple{"disk_cache", options->disk_cache, &o.diskCache},
          std::tuple{"use_tuned", options->use_tuned, &o.useTuned},
          std::tuple{"quick_first", options->quick_first, &o.quickFirst}}) {
      if (value != 0 && value != 1)
        return fail(FLASHJIT_ERROR_INVALID_ARGUMENT,
                    std::string(name) + " must be 0 or 1, got " +
                        std::to_string(value));
      *to = value == 1;
    }
    o.device = options->device;
    if (options->cache_dir)
      o.cacheDirectory = options->cache_dir;
    if (flashjit::Status s = flashjit::driverStatus(); !s)
      return fail(FLASHJIT_ERROR_NO_DRIVER, s.message());
    auto runtime = flashjit::Runtime::create(o);
    if (!runtime)
      return fail(FLASHJIT_ERROR_DEVICE, runtime.message());
    *out = new flashjit_runtime{std::move(*runtime)};
    return FLASHJIT_SUCCESS;
  });
}

void flashjit_runtime_destroy(flashjit_runtime *rt) { delete rt; }

flashjit_status flashjit_attention_forward(flashjit_runtime *rt,
                                           const flashjit_forward_args *args,
                                           void *stream) {
  return guarded([&] {
    flashjit::Expected<flashjit::ForwardPlan> p =
        flashjit::Status::error("not planned");
    if (flashjit_status s = plan(rt, args, stream, /*launchable=*/true, p);
        s != FLASHJIT_SUCCESS)
      return s;
    if (flashjit::Status s = rt->runtime->launch(*p, stream); !s)
      return fail(FLASHJIT_ERROR_LAUNCH, s.message());
    return FLASHJIT_SUCCESS;
  });
}

flashjit_status flashjit_forward_workspace_size(
    flashjit_runtime *rt, const flashjit_forward_args *args, uint64_t *bytes) {
  return guarded([&] {
    if (!bytes)
      return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, "bytes must not be NULL");
    *bytes = 0;
    if (!rt)
      return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, "rt must not be NULL");
    flashjit::ForwardProblem problem;
    if (flashjit_status s =
            checkedProblem(args, LengthSource{nullptr, nullptr, true},
                           rt->runtime->arch(), problem);
        s != FLASHJIT_SUCCESS)
      return s;
    auto needed = rt->runtime->forwardWorkspaceBytes(problem);
    if (!needed)
      return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, needed.message());
    *bytes = *needed;
    return FLASHJIT_SUCCESS;
  });
}

flashjit_status flashjit_backward_args_init(flashjit_backward_args *args,
                                            uint64_t struct_size) {
  if (flashjit_status s =
          initStruct(args, struct_size, "flashjit_backward_args");
      s != FLASHJIT_SUCCESS)
    return s;
  return flashjit_forward_args_init(&args->forward, sizeof args->forward);
}

flashjit_status flashjit_attention_backward(flashjit_runtime *rt,
                                            const flashjit_backward_args *args,
                                            void *stream) {
  return guarded([&] {
    flashjit::BackwardProblem p;
    if (flashjit_status s =
            backwardProblem(rt, args, stream, /*launchable=*/true, p);
        s != FLASHJIT_SUCCESS)
      return s;
    auto plan = rt->runtime->planBackward(p);
    if (!plan)
      return fail(FLASHJIT_ERROR_COMPILE, plan.message());
    if (flashjit::Status s = rt->runtime->launch(*plan, stream); !s)
      return fail(FLASHJIT_ERROR_LAUNCH, s.message());
    return FLASHJIT_SUCCESS;
  });
}

flashjit_status flashjit_backward_workspace_size(
    flashjit_runtime *rt, const flashjit_backward_args *args, uint64_t *bytes) {
  return guarded([&] {
    if (!bytes)
      return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, "bytes must not be NULL");
    *bytes = 0;
    flashjit::BackwardProblem p;
    if (flashjit_status s =
            backwardProblem(rt, args, nullptr, /*launchable=*/false, p);
        s != FLASHJIT_SUCCESS)
      return s;
    auto size = rt->runtime->backwardWorkspaceBytes(p);
    if (!size) // it compiles the kernels
      return fail(FLASHJIT_ERROR_COMPILE, size.message());
    *bytes = *size;
    return FLASHJIT_SUCCESS;
  });
}

flashjit_status flashjit_prepare(flashjit_runtime *rt,
                                 const flashjit_forward_args *args) {
  return guarded([&] {
    flashjit::Expected<flashjit::ForwardPlan> p =
        flashjit::Status::error("not planned");
    return plan(rt, args, nullptr, /*launchable=*/false, p);
  });
}

flashjit_status flashjit_generate_ptx(const flashjit_forward_args *args,
                                      const char *arch, char **ptx) {
  return guarded([&] {
    if (!ptx)
      return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, "ptx must not be NULL");
    *ptx = nullptr;
    std::optional<flashjit::Arch> target =
        arch ? flashjit::parseArch(arch) : std::nullopt;
    if (!target)
      return fail(FLASHJIT_ERROR_INVALID_ARGUMENT,
                  std::string("arch must be one of ") +
                      flashjit::archChoices() + ", got " +
                      (arch ? "'" + std::string(arch) + "'" : "NULL"));
    flashjit::registerKernelFamilies(); // as Runtime::create does
    flashjit::ForwardProblem problem;
    if (flashjit_status s = checkedProblem(
            args, LengthSource{nullptr, nullptr, true}, *target, problem);
        s != FLASHJIT_SUCCESS)
      return s;
    const flashjit::AttentionSpec spec = flashjit::specFor(problem);
    const flashjit::TileConfig config =
        problem.tile ? *problem.tile
                     : flashjit::defaultTileConfig(spec, *target);
    auto artifact = flashjit::compile(spec, config, *target);
    if (!artifact)
      return fail(FLASHJIT_ERROR_COMPILE, artifact.message());
    char *text = static_cast<char *>(std::malloc(artifact->ptx.size() + 1));
    if (!text)
      return fail(FLASHJIT_ERROR_INTERNAL, "flashjit: out of memory");
    std::memcpy(text, artifact->ptx.c_str(), artifact->ptx.size() + 1);
    *ptx = text;
    return FLASHJIT_SUCCESS;
  });
}

void flashjit_free(void *memory) { std::free(memory); }

flashjit_status flashjit_current_device(int32_t *device) {
  return guarded([&] {
    if (!device)
      return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, "device must not be NULL");
    if (flashjit::Status s = flashjit::driverStatus(); !s)
      return fail(FLASHJIT_ERROR_NO_DRIVER, s.message());
    auto ordinal = flashjit::currentDevice();
    if (!ordinal)
      return fail(FLASHJIT_ERROR_DEVICE, ordinal.message());
    *device = *ordinal;
    return FLASHJIT_SUCCESS;
  });
}

flashjit_status flashjit_finish_compiles(flashjit_runtime *rt) {
  return guarded([&] {
    if (!rt)
      return fail(FLASHJIT_ERROR_INVALID_ARGUMENT, "rt must not be NULL");
    rt->runtime->finishCompiles();
    return FLASHJIT_SUCCESS;
  });
}

const char *flashjit_last_error(void) { return tLastError.c_str(); }

const char *flashjit_status_string(flashjit_status status) {
  switch (status) {
  case FLASHJIT_SUCCESS:
    return "FLASHJIT_SUCCESS";
  case FLASHJIT_ERROR_INVALID_ARGUMENT:
    return "FLASHJIT_ERROR_INVALID_ARGUMENT";
  case FLASHJIT_ERROR_NO_DRIVER:
    return "FLASHJIT_ERROR_NO_DRIVER";
  case FLASHJIT_ERROR_DEVICE:
    return "FLASHJIT_ERROR_DEVICE";
  case FLASHJIT_ERROR_COMPILE:
    return "FLASHJIT_ERROR_COMPILE";
  case FLASHJIT_ERROR_LAUNCH:
    return "FLASHJIT_ERROR_LAUNCH";
  case FLASHJIT_ERROR_INTERNAL:
    return "FLASHJIT_ERROR_INTERNAL";
  }
  return "FLASHJIT_ERROR_UNKNOWN";
}

const char *flashjit_version(void) {
  static const std::string version = flashjit::flashjitVersion();
  return version.c_str();
}

int32_t flashjit_api_version(void) { return FLASHJIT_API_VERSION; }

} // extern "C"
