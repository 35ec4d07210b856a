//===- XlaFfi.cpp - flashjit.jax's custom call: XLA FFI handlers ----------===//
//
// One custom call, "flashjit_attention_forward", registered for CUDA by
// flashjit/jax.py. Operands: q, k, v, then optionally alibi_slopes
// [batch, heads_q] f32, cu_seqlens_q and cu_seqlens_k [batch + 1] s32
// (varlen), key_lengths [batch] s32, in that order; results: o, then
// optionally lse (f32). Attributes (jax.py writes them): mask, window_left,
// window_right (i64), softmax_scale, softcap (f64; 0: default / off),
// alibi, varlen, key_lengths, return_lse (bool), batch, max_seqlen_q/k
// (i64, varlen), and the operand shapes q_shape, k_shape, v_shape (i64
// arrays) with dtype (i64, flashjit_dtype) for the instantiate stage.
//
// Dense layout: [..., seqlen, heads, head_dim] row-major, every leading
// dimension a batch (so that vmap's extra dimensions are batches too), LSE
// [..., heads_q, seqlen_q]. Varlen: [total, heads, head_dim], LSE
// [heads_q, total_q].
//
// Instantiate (XLA compile time, no buffers, no stream): checks the call and
// compiles and loads its kernel (flashjit_prepare) on the device of the
// thread's current CUDA context when it has one, else leaves the compile
// to the first execution. Execute: launches on XLA's stream, with the
// device lengths trusted (nothing synchronises).
//
//===----------------------------------------------------------------------===//
#include "Runtimes.h"

#include "xla/ffi/api/ffi.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ffi = xla::ffi;
namespace nb = nanobind;

namespace flashjit::python {
namespace {
using Dims = std::vector<int64_t>;

/// Any 256-byte aligned address: what instantiate passes for buffers it
/// does not have (flashjit_prepare reads nothing through them).
template <typename T> T *placeholder(int n) {
  return reinterpret_cast<T *>(uintptr_t(256) * (n + 1));
}

ffi::Error invalid(const std::string &message) {
  return ffi::Error::InvalidArgument("flashjit_attention_forward: " + message);
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
ffi::Error attr(const ffi::Dictionary &attrs, const char *name, T &out) {
  auto value = attrs.get<T>(name);
  if (!value.has_value())
    return invalid(std::string("attribute ") + name + ": " +
                   value.error().message());
  out = *value;
  return ffi::Error::Success();
}

/// What the operands and attributes say, apart from the pointers.
struct Call {
  bool alibi = false, varlen = false, keyLengths = false, returnLse = false;
};

ffi::Error readFlags(const ffi::Dictionary &attrs, Call &call) {
  for (auto [name, flag] :
       {std::pair{"alibi", &call.alibi}, std::pair{"varlen", &call.varlen},
        std::pair{"key_lengths", &call.keyLengths},
        std::pair{"return_lse", &call.returnLse}})
    if (ffi::Error e = attr(attrs, name, *flag); e.failure())
      return e;
  return ffi::Error::Success();
}

/// flashjit_forward_args for operand shapes q, k, v (pointers unset): the
/// one place that maps the custom call's layout onto the C API.
ffi::Error argsFor(const Dims &q, const Dims &k, const Dims &v, int32_t dtype,
                   const ffi::Dictionary &attrs, const Call &call,
                   flashjit_forward_args &a) {
  if (flashjit_forward_args_init(&a, sizeof a) != FLASHJIT_SUCCESS)
    return ffi::Error::Internal(flashjit_last_error());
  for (auto [name, d] :
       {std::pair{"q", &q}, std::pair{"k", &k}, std::pair{"v", &v}})
    if (call.varlen ? d->size() != 3 : d->size() < 4)
      return invalid(std::string(name) + " must have " +
                     (call.varlen ? "3 dimensions [total, heads, head_dim]"
                                  : "4 or more dimensions [..., seqlen, "
                                    "heads, head_dim]") +
                     ", got " + str(*d));
  // Leading (batch) dimensions agree; k and v agree but in head_dim.
  const size_t lead = q.size() - 3;
  if (k.size() != q.size() || v.size() != q.size() ||
      !std::equal(q.begin(), q.begin() + lead, k.begin()) ||
      !std::equal(k.begin(), k.end() - 1, v.begin()))
    return invalid("q " + str(q) + ", k " + str(k) + " and v " + str(v) +
                   " do not agree (k and v share all but head_dim, q their "
                   "batch dimensions)");
  const int64_t batch = product(Dims(q.begin(), q.begin() + lead));
  // Counted from the end: vmap adds leading dimensions.
  const size_t rank = q.size();
  const int64_t heads = q[rank - 2], headsKV = k[rank - 2];
  const int64_t dqk = q[rank - 1], dv = v[rank - 1];
  if (k[rank - 1] != dqk)
    return invalid("k's head_dim (" + std::to_string(k[rank - 1]) +
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
    if (ffi::Error e = attr(attrs, "max_seqlen_q", a.seqlen_q); e.failure())
      return e;
    if (ffi::Error e = attr(attrs, "max_seqlen_k", a.seqlen_k); e.failure())
      return e;
    // The sequences of the prefix sums (batch + 1 entries).
    if (ffi::Error e = attr(attrs, "batch", a.batch); e.failure())
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
  if (ffi::Error e = attr(attrs, "mask", mask); e.failure())
    return e;
  a.mask = static_cast<int32_t>(mask);
  for (auto [name, out] : {std::pair{"window_left", &a.window_left},
                           std::pair{"window_right", &a.window_right}})
    if (ffi::Error e = attr(attrs, name, *out); e.failure())
      return e;
  for (auto [name, out] : {std::pair{"softmax_scale", &a.softmax_scale},
                           std::pair{"softcap", &a.softcap}})
    if (ffi::Error e = attr(attrs, name, *out); e.failure())
      return e;
  if (call.alibi) {
    a.bias_mode = FLASHJIT_BIAS_ALIBI;
    a.alibi_batch_stride = heads; // jax.py broadcasts slopes to [batch, heads]
  }
  return ffi::Error::Success();
}

ffi::Error status(flashjit_status s) {
  if (s == FLASHJIT_SUCCESS)
    return ffi::Error::Success();
  const std::string message = std::string("flashjit: ") + flashjit_last_error();
  return s == FLASHJIT_ERROR_INVALID_ARGUMENT
             ? ffi::Error::InvalidArgument(message)
             : ffi::Error::Internal(message);
}

ffi::Error instantiate(ffi::Dictionary attrs) {
  Call call;
  if (ffi::Error e = readFlags(attrs, call); e.failure())
    return e;
  Dims shapes[3];
  const char *names[] = {"q_shape", "k_shape", "v_shape"};
  for (int i = 0; i < 3; ++i) {
    auto dims = attrs.get<ffi::Span<const int64_t>>(names[i]);
    if (!dims.has_value())
      return invalid(std::string("attribute ") + names[i] + ": " +
                     dims.error().message());
    shapes[i].assign(dims->begin(), dims->end());
  }
  int64_t dtype = 0;
  if (ffi::Error e = attr(attrs, "dtype", dtype); e.failure())
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
  return status(flashjit_prepare(rt, &a));
}

Dims dimsOf(const ffi::AnyBuffer &b) {
  auto d = b.dimensions();
  return Dims(d.begin(), d.end());
}

ffi::Error execute(void *stream, int32_t device, ffi::RemainingArgs args,
                   ffi::RemainingRets rets, ffi::Dictionary attrs) {
  Call call;
  if (ffi::Error e = readFlags(attrs, call); e.failure())
    return e;
  const size_t operands = 3 + call.alibi + 2 * call.varlen + call.keyLengths;
  const size_t results = 1 + call.returnLse;
  if (args.size() != operands || rets.size() != results)
    return invalid("expected " + std::to_string(operands) + " operands and " +
                   std::to_string(results) + " results, got " +
                   std::to_string(args.size()) + " and " +
                   std::to_string(rets.size()));
  std::vector<ffi::AnyBuffer> in;
  for (size_t i = 0; i < operands; ++i) {
    auto b = args.get<ffi::AnyBuffer>(i);
    if (!b.has_value())
      return invalid("operand " + std::to_string(i) + ": " +
                     b.error().message());
    in.push_back(*b);
  }
  const ffi::DataType type = in[0].element_type();
  if (type != ffi::DataType::F16 && type != ffi::DataType::BF16)
    return invalid("q must be float16 or bfloat16");
  for (size_t i : {1, 2})
    if (in[i].element_type() != type)
      return invalid(std::string(i == 1 ? "k" : "v") + " must have q's dtype");
  flashjit_forward_args a;
  if (ffi::Error e =
          argsFor(dimsOf(in[0]), dimsOf(in[1]), dimsOf(in[2]),
                  type == ffi::DataType::F16 ? FLASHJIT_FP16 : FLASHJIT_BF16,
                  attrs, call, a);
      e.failure())
    return e;
  a.q = in[0].untyped_data();
  a.k = in[1].untyped_data();
  a.v = in[2].untyped_data();
  size_t next = 3;
  if (call.alibi) {
    // [..., heads_q], its leading dimensions the batches (as q's).
    const Dims d = dimsOf(in[next]);
    if (in[next].element_type() != ffi::DataType::F32 || d.empty() ||
        d.back() != a.heads_q || product(d) != a.batch * a.heads_q)
      return invalid("alibi_slopes must be float32 [" +
                     std::to_string(a.batch) + ", " +
                     std::to_string(a.heads_q) + "], got " + str(d));
    a.alibi_slopes = static_cast<const float *>(in[next++].untyped_data());
  }
  // Device lengths are trusted unread; their extents are checked here.
  auto lengths = [&](const char *name, int64_t count) -> ffi::Error {
    const Dims d = dimsOf(in[next]);
    if (in[next].element_type() != ffi::DataType::S32 || d.empty() ||
        product(d) != count)
      return invalid(std::string(name) + " must be int32 [" +
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
  // Results: o like q with v's head_dim, lse [..., heads_q, rows of q].
  Dims oShape = dimsOf(in[0]);
  oShape.back() = a.head_dim_v;
  Dims lseShape(oShape.begin(), oShape.end() - 3);
  lseShape.push_back(a.heads_q);
  lseShape.push_back(oShape[oShape.size() - 3]);
  auto o = rets.get<ffi::AnyBuffer>(0);
  if (!o.has_value())
    return invalid("o: " + o.error().message());
  if (dimsOf(**o) != oShape || (*o)->element_type() != type)
    return invalid("o must be " + str(oShape) + " of q's dtype, got " +
                   str(dimsOf(**o)));
  a.o = (*o)->untyped_data();
  if (call.returnLse) {
    auto lse = rets.get<ffi::AnyBuffer>(1);
    if (!lse.has_value())
      return invalid("lse: " + lse.error().message());
    if (dimsOf(**lse) != lseShape ||
        (*lse)->element_type() != ffi::DataType::F32)
      return invalid("lse must be float32 " + str(lseShape) + ", got " +
                     str(dimsOf(**lse)));
    a.lse = static_cast<float *>((*lse)->untyped_data());
  }
  flashjit_status s = FLASHJIT_SUCCESS;
  flashjit_runtime *rt = runtimeFor(device, s);
  if (!rt)
    return status(s);
  return status(flashjit_attention_forward(rt, &a, stream));
}

XLA_FFI_DEFINE_HANDLER(kInstantiate, instantiate,
                       ffi::Ffi::BindInstantiate().Attrs());
XLA_FFI_DEFINE_HANDLER(kExecute, execute,
                       ffi::Ffi::Bind()
                           .Ctx<ffi::PlatformStream<void *>>()
                           .Ctx<ffi::DeviceOrdinal>()
                           .RemainingArgs()
                           .RemainingRets()
                           .Attrs());
} // namespace

nb::dict xlaFfiHandlers() {
  nb::dict handlers;
  handlers["instantiate"] = nb::capsule(reinterpret_cast<void *>(kInstantiate));
  handlers["execute"] = nb::capsule(reinterpret_cast<void *>(kExecute));
  return handlers;
}

} // namespace flashjit::python
