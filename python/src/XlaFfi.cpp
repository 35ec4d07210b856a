//===- XlaFfi.cpp - flashjit.jax's custom calls: XLA FFI handlers ---------===//
//
// Two custom calls, registered for CUDA by flashjit/jax.py:
//
// "flashjit_attention_forward". Operands: q, k, v, then optionally
// alibi_slopes [batch, heads_q] f32, cu_seqlens_q and cu_seqlens_k
// [batch + 1] s32 (varlen), key_lengths [batch] s32, in that order;
// results: o, then optionally lse (f32).
//
// "flashjit_attention_backward". Operands: q, k, v, o, lse, dout, then the
// forward's optional operands; results: dq, dk, dv (like q, k, v). Its
// float32 workspace comes from XLA's scratch allocator.
//
// Attributes (jax.py writes them): mask, window_left, window_right (i64),
// softmax_scale, softcap (f64; 0: default / off), alibi, varlen,
// key_lengths (bool), return_lse (bool, forward) or deterministic (bool,
// backward), batch, max_seqlen_q/k (i64, varlen), and the operand shapes
// q_shape, k_shape, v_shape (i64 arrays) with dtype (i64, flashjit_dtype)
// for the instantiate stage.
//
// Dense layout: [..., seqlen, heads, head_dim] row-major, every leading
// dimension a batch (so that vmap's extra dimensions are batches too), LSE
// [..., heads_q, seqlen_q]. Varlen: [total, heads, head_dim], LSE
// [heads_q, total_q].
//
// Instantiate (XLA compile time, no buffers, no stream): checks the call and
// compiles and loads its kernels (flashjit_prepare; for the backward
// flashjit_backward_workspace_size, which compiles them too) on the device
// of the thread's current CUDA context when it has one, else leaves the
// compile to the first execution. Execute: launches on XLA's stream, with
// the device lengths trusted (nothing synchronises).
//
//===----------------------------------------------------------------------===//
#include "Runtimes.h"

#include "xla/ffi/api/ffi.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace ffi = xla::ffi;
namespace nb = nanobind;

namespace flashjit::python {
namespace {
using Dims = std::vector<int64_t>;

/// What a handler needs to know of its custom call.
struct Direction {
  const char *target;
  bool backward;
};
constexpr Direction kForward{"flashjit_attention_forward", false};
constexpr Direction kBackward{"flashjit_attention_backward", true};

/// Any 256-byte aligned address: what instantiate passes for buffers it
/// does not have (nothing is read through them there).
template <typename T> T *placeholder(int n) {
  return reinterpret_cast<T *>(uintptr_t(256) * (n + 1));
}

ffi::Error invalid(const Direction &dir, const std::string &message) {
  return ffi::Error::InvalidArgument(std::string(dir.target) + ": " + message);
}

int64_t product(const Dims &d) {
  int64_t n = 1;
  for (int64_t e : d)
    n *= e;
  return n;
}

std::string str(const Dims &d) {
  std::string out = "[";
  for (size_t i = 0; i < d.size(); ++i)
    out += (i ? ", " : "") + std::to_string(d[i]);
  return out + "]";
}

/// The attribute `name` of the call, or an error naming it.
template <typename T>
ffi::Error attr(const Direction &dir, const ffi::Dictionary &attrs,
                const char *name, T &out) {
  auto value = attrs.get<T>(name);
  if (!value.has_value())
    return invalid(dir, std::string("attribute ") + name + ": " +
                            value.error().message());
  out = *value;
  return ffi::Error::Success();
}

/// What the operands and attributes say, apart from the pointers.
struct Call {
  Direction dir;
  bool alibi = false, varlen = false, keyLengths = false;
  bool returnLse = false;     ///< forward: an lse result
  bool deterministic = false; ///< backward
  /// Operands before the optional ones: q, k, v (backward: o, lse, dout).
  size_t fixedOperands() const { return dir.backward ? 6 : 3; }
  size_t operands() const {
    return fixedOperands() + alibi + 2 * varlen + keyLengths;
  }
  size_t results() const { return dir.backward ? 3 : 1 + returnLse; }
};

ffi::Error readFlags(const Direction &dir, const ffi::Dictionary &attrs,
                     Call &call) {
  call.dir = dir;
  for (auto [name, flag] :
       {std::pair{"alibi", &call.alibi}, std::pair{"varlen", &call.varlen},
        std::pair{"key_lengths", &call.keyLengths},
        dir.backward ? std::pair{"deterministic", &call.deterministic}
                     : std::pair{"return_lse", &call.returnLse}})
    if (ffi::Error e = attr(dir, attrs, name, *flag); e.failure())
      return e;
  call.returnLse = call.returnLse || dir.backward; // the backward reads it
  return ffi::Error::Success();
}

/// flashjit_forward_args for operand shapes q, k, v (pointers unset): the
/// one place that maps the custom calls' layout onto the C API.
ffi::Error argsFor(const Dims &q, const Dims &k, const Dims &v, int32_t dtype,
                   const ffi::Dictionary &attrs, const Call &call,
                   flashjit_forward_args &a) {
  const Direction &dir = call.dir;
  if (flashjit_forward_args_init(&a, sizeof a) != FLASHJIT_SUCCESS)
    return ffi::Error::Internal(flashjit_last_error());
  for (auto [name, d] :
       {std::pair{"q", &q}, std::pair{"k", &k}, std::pair{"v", &v}})
    if (call.varlen ? d->size() != 3 : d->size() < 4)
      return invalid(dir,
                     std::string(name) + " must have " +
                         (call.varlen ? "3 dimensions [total, heads, head_dim]"
                                      : "4 or more dimensions [..., seqlen, "
                                        "heads, head_dim]") +
                         ", got " + str(*d));
  // Leading (batch) dimensions agree; k and v agree but in head_dim.
  const size_t lead = q.size() - 3;
  if (k.size() != q.size() || v.size() != q.size() ||
      !std::equal(q.begin(), q.begin() + lead, k.begin()) ||
      !std::equal(k.begin(), k.end() - 1, v.begin()))
    return invalid(dir, "q " + str(q) + ", k " + str(k) + " and v " + str(v) +
                            " do not agree (k and v share all but head_dim, "
                            "q their batch dimensions)");
  const int64_t batch = product(Dims(q.begin(), q.begin() + lead));
  // Counted from the end: vmap adds leading dimensions.
  const size_t rank = q.size();
  const int64_t heads = q[rank - 2], headsKV = k[rank - 2];
  const int64_t dqk = q[rank - 1], dv = v[rank - 1];
  if (k[rank - 1] != dqk)
    return invalid(dir, "k's head_dim (" + std::to_string(k[rank - 1]) +
                            ") must equal q's (" + std::to_string(dqk) + ")");
  a.dtype = dtype;
  a.heads_q = heads;
  a.heads_kv = headsKV;
  a.head_dim_qk = dqk;
  a.head_dim_v = dv;
  const int64_t rowsQ = q[rank - 3], rowsK = k[rank - 3];
  if (call.varlen) {
    a.total_q = rowsQ;
    a.total_k = rowsK;
    // The sequences of the prefix sums (batch + 1 entries).
    for (auto [name, out] :
         {std::pair{"max_seqlen_q", &a.seqlen_q},
          std::pair{"max_seqlen_k", &a.seqlen_k}, std::pair{"batch", &a.batch}})
      if (ffi::Error e = attr(dir, attrs, name, *out); e.failure())
        return e;
    a.trust_device_lengths = 1;
  } else {
    a.seqlen_q = rowsQ;
    a.seqlen_k = rowsK;
    a.batch = batch;
  }
  // Row-major [..., rows, heads, dim]: row stride heads * dim, head stride
  // dim; the batch stride is ignored under varlen.
  auto strides = [&](int64_t *s, int64_t rows, int64_t h, int64_t d) {
    s[0] = rows * h * d;
    s[1] = d;
    s[2] = h * d;
  };
  strides(a.q_strides, rowsQ, heads, dqk);
  strides(a.k_strides, rowsK, headsKV, dqk);
  strides(a.v_strides, rowsK, headsKV, dv);
  strides(a.o_strides, rowsQ, heads, dv);
  a.lse_strides[0] = heads * rowsQ;
  a.lse_strides[1] = rowsQ;
  int64_t mask = 0;
  if (ffi::Error e = attr(dir, attrs, "mask", mask); e.failure())
    return e;
  a.mask = static_cast<int32_t>(mask);
  for (auto [name, out] : {std::pair{"window_left", &a.window_left},
                           std::pair{"window_right", &a.window_right}})
    if (ffi::Error e = attr(dir, attrs, name, *out); e.failure())
      return e;
  for (auto [name, out] : {std::pair{"softmax_scale", &a.softmax_scale},
                           std::pair{"softcap", &a.softcap}})
    if (ffi::Error e = attr(dir, attrs, name, *out); e.failure())
      return e;
  if (call.alibi) {
    a.bias_mode = FLASHJIT_BIAS_ALIBI;
    a.alibi_batch_stride = heads; // jax.py broadcasts slopes to [batch, heads]
  }
  return ffi::Error::Success();
}

/// The backward's arguments around `forward`: dout like o, dq, dk, dv
/// like q, k, v (dense, as the custom call's buffers are).
void backwardArgsFor(const flashjit_forward_args &forward, const Call &call,
                     flashjit_backward_args &b) {
  (void)flashjit_backward_args_init(&b, sizeof b);
  b.forward = forward;
  std::copy_n(forward.o_strides, 3, b.dout_strides);
  std::copy_n(forward.q_strides, 3, b.dq_strides);
  std::copy_n(forward.k_strides, 3, b.dk_strides);
  std::copy_n(forward.v_strides, 3, b.dv_strides);
  b.deterministic = call.deterministic;
}

ffi::Error status(flashjit_status s) {
  if (s == FLASHJIT_SUCCESS)
    return ffi::Error::Success();
  const std::string message = std::string("flashjit: ") + flashjit_last_error();
  return s == FLASHJIT_ERROR_INVALID_ARGUMENT
             ? ffi::Error::InvalidArgument(message)
             : ffi::Error::Internal(message);
}

/// Checks the call and compiles its kernels, launching nothing.
ffi::Error instantiate(const Direction &dir, const ffi::Dictionary &attrs) {
  Call call;
  if (ffi::Error e = readFlags(dir, attrs, call); e.failure())
    return e;
  Dims shapes[3];
  const char *names[] = {"q_shape", "k_shape", "v_shape"};
  for (int i = 0; i < 3; ++i) {
    auto dims = attrs.get<ffi::Span<const int64_t>>(names[i]);
    if (!dims.has_value())
      return invalid(dir, std::string("attribute ") + names[i] + ": " +
                              dims.error().message());
    shapes[i].assign(dims->begin(), dims->end());
  }
  int64_t dtype = 0;
  if (ffi::Error e = attr(dir, attrs, "dtype", dtype); e.failure())
    return e;
  flashjit_forward_args a;
  if (ffi::Error e = argsFor(shapes[0], shapes[1], shapes[2],
                             static_cast<int32_t>(dtype), attrs, call, a);
      e.failure())
    return e;
  int32_t device = -1;
  if (flashjit_current_device(&device) != FLASHJIT_SUCCESS)
    return ffi::Error::Success(); // compiled by the first execution instead
  flashjit_status s = FLASHJIT_SUCCESS;
  flashjit_runtime *rt = runtimeFor(device, s);
  if (!rt)
    return status(s);
  a.q = placeholder<const void>(0);
  a.k = placeholder<const void>(1);
  a.v = placeholder<const void>(2);
  a.o = placeholder<void>(3);
  a.lse = call.returnLse ? placeholder<float>(4) : nullptr;
  a.alibi_slopes = call.alibi ? placeholder<const float>(5) : nullptr;
  if (call.varlen) {
    a.cu_seqlens_q = placeholder<const int32_t>(6);
    a.cu_seqlens_k = placeholder<const int32_t>(7);
  }
  a.key_lengths = call.keyLengths ? placeholder<const int32_t>(8) : nullptr;
  a.trust_device_lengths = 1;
  if (!dir.backward)
    return status(flashjit_prepare(rt, &a));
  flashjit_backward_args b;
  backwardArgsFor(a, call, b);
  b.dout = placeholder<const void>(9);
  b.dq = placeholder<void>(10);
  b.dk = placeholder<void>(11);
  b.dv = placeholder<void>(12);
  uint64_t bytes = 0;
  return status(flashjit_backward_workspace_size(rt, &b, &bytes));
}

Dims dimsOf(const ffi::AnyBuffer &b) {
  auto d = b.dimensions();
  return Dims(d.begin(), d.end());
}

/// `b` is `type` of extents `dims`, or an error naming it.
ffi::Error expect(const Direction &dir, const char *name,
                  const ffi::AnyBuffer &b, const Dims &dims,
                  ffi::DataType type) {
  if (dimsOf(b) == dims && b.element_type() == type)
    return ffi::Error::Success();
  return invalid(dir,
                 std::string(name) + " must be " + str(dims) + " of " +
                     (type == ffi::DataType::F32 ? "float32" : "q's dtype") +
                     ", got " + str(dimsOf(b)));
}

/// The buffers of one execution, checked, and the forward call's
/// arguments with every pointer set.
struct Buffers {
  std::vector<ffi::AnyBuffer> in, out;
  flashjit_forward_args a;
};

ffi::Error readBuffers(const Call &call, const ffi::RemainingArgs &args,
                       const ffi::RemainingRets &rets,
                       const ffi::Dictionary &attrs, Buffers &buf) {
  const Direction &dir = call.dir;
  if (args.size() != call.operands() || rets.size() != call.results())
    return invalid(dir, "expected " + std::to_string(call.operands()) +
                            " operands and " + std::to_string(call.results()) +
                            " results, got " + std::to_string(args.size()) +
                            " and " + std::to_string(rets.size()));
  for (size_t i = 0; i < call.operands(); ++i) {
    auto b = args.get<ffi::AnyBuffer>(i);
    if (!b.has_value())
      return invalid(dir, "operand " + std::to_string(i) + ": " +
                              b.error().message());
    buf.in.push_back(*b);
  }
  for (size_t i = 0; i < call.results(); ++i) {
    auto r = rets.get<ffi::AnyBuffer>(i);
    if (!r.has_value())
      return invalid(dir, "result " + std::to_string(i) + ": " +
                              r.error().message());
    buf.out.push_back(**r);
  }
  const std::vector<ffi::AnyBuffer> &in = buf.in;
  flashjit_forward_args &a = buf.a;
  const ffi::DataType type = in[0].element_type();
  if (type != ffi::DataType::F16 && type != ffi::DataType::BF16)
    return invalid(dir, "q must be float16 or bfloat16");
  for (size_t i : {1, 2})
    if (in[i].element_type() != type)
      return invalid(dir,
                     std::string(i == 1 ? "k" : "v") + " must have q's dtype");
  if (ffi::Error e =
          argsFor(dimsOf(in[0]), dimsOf(in[1]), dimsOf(in[2]),
                  type == ffi::DataType::F16 ? FLASHJIT_FP16 : FLASHJIT_BF16,
                  attrs, call, a);
      e.failure())
    return e;
  a.q = in[0].untyped_data();
  a.k = in[1].untyped_data();
  a.v = in[2].untyped_data();
  // o like q with v's head_dim, lse [..., heads_q, rows of q]: results of
  // the forward, operands of the backward (with dout like o).
  Dims oShape = dimsOf(in[0]);
  oShape.back() = a.head_dim_v;
  Dims lseShape(oShape.begin(), oShape.end() - 3);
  lseShape.push_back(a.heads_q);
  lseShape.push_back(oShape[oShape.size() - 3]);
  const ffi::AnyBuffer &o = dir.backward ? in[3] : buf.out[0];
  if (ffi::Error e = expect(dir, "o", o, oShape, type); e.failure())
    return e;
  a.o = o.untyped_data();
  if (call.returnLse) {
    const ffi::AnyBuffer &lse = dir.backward ? in[4] : buf.out[1];
    if (ffi::Error e = expect(dir, "lse", lse, lseShape, ffi::DataType::F32);
        e.failure())
      return e;
    a.lse = static_cast<float *>(lse.untyped_data());
  }
  if (dir.backward) {
    if (ffi::Error e = expect(dir, "dout", in[5], oShape, type); e.failure())
      return e;
    for (size_t i = 0; i < 3; ++i)
      if (ffi::Error e = expect(dir,
                                i == 0   ? "dq"
                                : i == 1 ? "dk"
                                         : "dv",
                                buf.out[i], dimsOf(in[i]), type);
          e.failure())
        return e;
  }
  size_t next = call.fixedOperands();
  if (call.alibi) {
    // [..., heads_q], its leading dimensions the batches (as q's).
    const Dims d = dimsOf(in[next]);
    if (in[next].element_type() != ffi::DataType::F32 || d.empty() ||
        d.back() != a.heads_q || product(d) != a.batch * a.heads_q)
      return invalid(dir, "alibi_slopes must be float32 [" +
                              std::to_string(a.batch) + ", " +
                              std::to_string(a.heads_q) + "], got " + str(d));
    a.alibi_slopes = static_cast<const float *>(in[next++].untyped_data());
  }
  // Device lengths are trusted unread; their extents are checked here.
  auto lengths = [&](const char *name, int64_t count) -> ffi::Error {
    const Dims d = dimsOf(in[next]);
    if (in[next].element_type() != ffi::DataType::S32 || d.empty() ||
        product(d) != count)
      return invalid(dir, std::string(name) + " must be int32 [" +
                              std::to_string(count) + "], got " + str(d));
    return ffi::Error::Success();
  };
  if (call.varlen) {
    for (auto [name, out] : {std::pair{"cu_seqlens_q", &a.cu_seqlens_q},
                             std::pair{"cu_seqlens_k", &a.cu_seqlens_k}}) {
      if (ffi::Error e = lengths(name, a.batch + 1); e.failure())
        return e;
      *out = static_cast<const int32_t *>(in[next++].untyped_data());
    }
  }
  if (call.keyLengths) {
    if (ffi::Error e = lengths("key_lengths", a.batch); e.failure())
      return e;
    a.key_lengths = static_cast<const int32_t *>(in[next++].untyped_data());
    a.trust_device_lengths = 1;
  }
  return ffi::Error::Success();
}

/// What both executions begin with: the flags, the checked buffers and the
/// device's runtime.
ffi::Error begin(const Direction &dir, int32_t device,
                 const ffi::RemainingArgs &args, const ffi::RemainingRets &rets,
                 const ffi::Dictionary &attrs, Call &call, Buffers &buf,
                 flashjit_runtime *&rt) {
  if (ffi::Error e = readFlags(dir, attrs, call); e.failure())
    return e;
  if (ffi::Error e = readBuffers(call, args, rets, attrs, buf); e.failure())
    return e;
  flashjit_status s = FLASHJIT_SUCCESS;
  rt = runtimeFor(device, s);
  return rt ? ffi::Error::Success() : status(s);
}

ffi::Error executeForward(void *stream, int32_t device, ffi::RemainingArgs args,
                          ffi::RemainingRets rets, ffi::Dictionary attrs) {
  Call call;
  Buffers buf;
  flashjit_runtime *rt = nullptr;
  if (ffi::Error e = begin(kForward, device, args, rets, attrs, call, buf, rt);
      e.failure())
    return e;
  return status(flashjit_attention_forward(rt, &buf.a, stream));
}

ffi::Error executeBackward(void *stream, int32_t device,
                           ffi::ScratchAllocator scratch,
                           ffi::RemainingArgs args, ffi::RemainingRets rets,
                           ffi::Dictionary attrs) {
  Call call;
  Buffers buf;
  flashjit_runtime *rt = nullptr;
  if (ffi::Error e = begin(kBackward, device, args, rets, attrs, call, buf, rt);
      e.failure())
    return e;
  flashjit_backward_args b;
  backwardArgsFor(buf.a, call, b);
  b.dout = buf.in[5].untyped_data();
  b.dq = buf.out[0].untyped_data();
  b.dk = buf.out[1].untyped_data();
  b.dv = buf.out[2].untyped_data();
  uint64_t bytes = 0;
  if (ffi::Error e = status(flashjit_backward_workspace_size(rt, &b, &bytes));
      e.failure())
    return e;
  // XLA's allocator, ordered on XLA's stream (freed when the handler
  // returns, reused only by work queued after these kernels). XLA refuses
  // alignments above 16 (ffi_api.cc's kMaxAlignment), all the runtime asks.
  std::optional<void *> workspace = scratch.Allocate(bytes, 16);
  if (!workspace.has_value())
    return ffi::Error::Internal(std::string(kBackward.target) +
                                ": no scratch memory for the workspace (" +
                                std::to_string(bytes) + " bytes)");
  b.forward.workspace = *workspace;
  b.forward.workspace_bytes = bytes;
  return status(flashjit_attention_backward(rt, &b, stream));
}

ffi::Error instantiateForward(ffi::Dictionary attrs) {
  return instantiate(kForward, attrs);
}
ffi::Error instantiateBackward(ffi::Dictionary attrs) {
  return instantiate(kBackward, attrs);
}

XLA_FFI_DEFINE_HANDLER(kInstantiateForward, instantiateForward,
                       ffi::Ffi::BindInstantiate().Attrs());
XLA_FFI_DEFINE_HANDLER(kExecuteForward, executeForward,
                       ffi::Ffi::Bind()
                           .Ctx<ffi::PlatformStream<void *>>()
                           .Ctx<ffi::DeviceOrdinal>()
                           .RemainingArgs()
                           .RemainingRets()
                           .Attrs());
XLA_FFI_DEFINE_HANDLER(kInstantiateBackward, instantiateBackward,
                       ffi::Ffi::BindInstantiate().Attrs());
XLA_FFI_DEFINE_HANDLER(kExecuteBackward, executeBackward,
                       ffi::Ffi::Bind()
                           .Ctx<ffi::PlatformStream<void *>>()
                           .Ctx<ffi::DeviceOrdinal>()
                           .Ctx<ffi::ScratchAllocator>()
                           .RemainingArgs()
                           .RemainingRets()
                           .Attrs());
} // namespace

nb::dict xlaFfiHandlers(const std::string &direction) {
  const bool backward = direction == "backward";
  if (!backward && direction != "forward")
    throw nb::value_error(
        ("direction: expected 'forward' or 'backward', got '" + direction + "'")
            .c_str());
  nb::dict handlers;
  handlers["instantiate"] = nb::capsule(reinterpret_cast<void *>(
      backward ? kInstantiateBackward : kInstantiateForward));
  handlers["execute"] = nb::capsule(
      reinterpret_cast<void *>(backward ? kExecuteBackward : kExecuteForward));
  return handlers;
}

} // namespace flashjit::python
