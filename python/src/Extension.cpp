//===- Extension.cpp - flashjit._flashjit: Python over the C API ----------===//
//
// A thin nanobind layer over libflashjit.so (flashjit.h): ForwardArgs and
// BackwardArgs are the C structs with their C field names (pointers and
// streams as Python ints), Runtime is one device's runtime, and status
// codes become exceptions:
// FLASHJIT_ERROR_INVALID_ARGUMENT a ValueError (the message names the
// argument), the others flashjit.FlashjitError. Framework glue lives in
// flashjit/torch.py, flashjit/jax.py and XlaFfi.cpp.
//
//===----------------------------------------------------------------------===//
#include "Runtimes.h"

#include <nanobind/stl/array.h>
#include <nanobind/stl/string.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

namespace nb = nanobind;
using namespace nb::literals;

namespace flashjit::python {

flashjit_runtime *runtimeFor(int device, flashjit_status &status) {
  static std::mutex mutex;
  static std::map<int, flashjit_runtime *> runtimes;
  std::lock_guard<std::mutex> guard(mutex);
  auto it = runtimes.find(device);
  if (it != runtimes.end()) {
    status = FLASHJIT_SUCCESS;
    return it->second;
  }
  flashjit_runtime *rt = nullptr;
  status = flashjit_runtime_create(device, &rt);
  if (status == FLASHJIT_SUCCESS)
    runtimes.emplace(device, rt);
  return rt;
}

namespace {
/// flashjit.FlashjitError: any failure other than a bad argument.
struct FlashjitError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Raises the Python exception of a failed call.
void check(flashjit_status status) {
  if (status == FLASHJIT_SUCCESS)
    return;
  std::string message = flashjit_last_error();
  if (status == FLASHJIT_ERROR_INVALID_ARGUMENT)
    throw nb::value_error(message.c_str());
  throw FlashjitError(std::string(flashjit_status_string(status)) + ": " +
                      message);
}

/// The C struct, initialised; copies keep its struct_size.
struct ForwardArgs : flashjit_forward_args {
  ForwardArgs() {
    check(flashjit_forward_args_init(this, sizeof(flashjit_forward_args)));
  }
  explicit ForwardArgs(const flashjit_forward_args &a)
      : flashjit_forward_args(a) {}
};

/// The C struct, initialised, then `forward` copied in.
struct BackwardArgs : flashjit_backward_args {
  explicit BackwardArgs(const ForwardArgs &f) {
    check(flashjit_backward_args_init(this, sizeof(flashjit_backward_args)));
    forward = f;
  }
};

struct Runtime {
  flashjit_runtime *rt;
  int device;
};

Runtime runtimeOf(int device) {
  flashjit_status status = FLASHJIT_SUCCESS;
  flashjit_runtime *rt = runtimeFor(device, status);
  check(status);
  return {rt, device};
}

template <typename T> uintptr_t address(T *p) {
  return reinterpret_cast<uintptr_t>(p);
}
template <typename T> T *pointer(uintptr_t a) {
  return reinterpret_cast<T *>(a);
}

nb::tuple tupleOf(const int64_t *values, size_t n) {
  nb::tuple t = nb::steal<nb::tuple>(PyTuple_New(static_cast<Py_ssize_t>(n)));
  for (size_t i = 0; i < n; ++i)
    PyTuple_SET_ITEM(t.ptr(), i, PyLong_FromLongLong(values[i]));
  return t;
}

/// A pointer field as a Python int (a device address; 0: NULL).
template <typename Class, typename Base, typename T>
void bindPointer(nb::class_<Class> &cls, const char *name, T *Base::*field) {
  cls.def_prop_rw(
      name, [field](const Class &a) { return address(a.*field); },
      [field](Class &a, uintptr_t v) { a.*field = pointer<T>(v); });
}

/// A fixed-size array field as a tuple.
template <typename Class, typename Base, size_t N>
void bindArray(nb::class_<Class> &cls, const char *name,
               int64_t (Base::*field)[N]) {
  cls.def_prop_rw(
      name, [field](const Class &a) { return tupleOf(a.*field, N); },
      [field](Class &a, const std::array<int64_t, N> &v) {
        std::memcpy(a.*field, v.data(), sizeof(int64_t) * N);
      });
}

void bindForwardArgs(nb::module_ &m) {
  using Args = flashjit_forward_args;
  nb::class_<ForwardArgs> cls(m, "ForwardArgs",
                              "flashjit_forward_args (flashjit.h), "
                              "initialised; fields by their C names, "
                              "pointers as integers.");
  cls.def(nb::init<>())
      .def("copy", [](const ForwardArgs &a) { return ForwardArgs(a); })
      .def("__copy__", [](const ForwardArgs &a) { return ForwardArgs(a); });
  for (auto [name, field] :
       {std::pair{"q", &Args::q}, std::pair{"k", &Args::k},
        std::pair{"v", &Args::v}, std::pair{"bias", &Args::bias}})
    bindPointer(cls, name, field);
  bindPointer(cls, "o", &Args::o);
  bindPointer(cls, "lse", &Args::lse);
  bindPointer(cls, "alibi_slopes", &Args::alibi_slopes);
  bindPointer(cls, "workspace", &Args::workspace);
  for (auto [name, field] : {std::pair{"cu_seqlens_q", &Args::cu_seqlens_q},
                             std::pair{"cu_seqlens_k", &Args::cu_seqlens_k},
                             std::pair{"key_lengths", &Args::key_lengths}})
    bindPointer(cls, name, field);
  for (auto [name, field] : {std::pair{"q_strides", &Args::q_strides},
                             std::pair{"k_strides", &Args::k_strides},
                             std::pair{"v_strides", &Args::v_strides},
                             std::pair{"o_strides", &Args::o_strides},
                             std::pair{"bias_strides", &Args::bias_strides}})
    bindArray(cls, name, field);
  bindArray(cls, "lse_strides", &Args::lse_strides);
  cls.def_ro("struct_size", &Args::struct_size)
      .def_rw("dtype", &Args::dtype)
      .def_rw("mask", &Args::mask)
      .def_rw("batch", &Args::batch)
      .def_rw("heads_q", &Args::heads_q)
      .def_rw("heads_kv", &Args::heads_kv)
      .def_rw("seqlen_q", &Args::seqlen_q)
      .def_rw("seqlen_k", &Args::seqlen_k)
      .def_rw("head_dim_qk", &Args::head_dim_qk)
      .def_rw("head_dim_v", &Args::head_dim_v)
      .def_rw("softmax_scale", &Args::softmax_scale)
      .def_rw("block_m", &Args::block_m)
      .def_rw("block_n", &Args::block_n)
      .def_rw("warps", &Args::warps)
      .def_rw("stages", &Args::stages)
      .def_rw("pack_gqa", &Args::pack_gqa)
      .def_rw("window_left", &Args::window_left)
      .def_rw("window_right", &Args::window_right)
      .def_rw("softcap", &Args::softcap)
      .def_rw("bias_mode", &Args::bias_mode)
      .def_rw("bias_batch", &Args::bias_batch)
      .def_rw("bias_heads", &Args::bias_heads)
      .def_rw("alibi_batch_stride", &Args::alibi_batch_stride)
      .def_rw("total_q", &Args::total_q)
      .def_rw("total_k", &Args::total_k)
      .def_rw("trust_device_lengths", &Args::trust_device_lengths)
      .def_rw("full_kernel", &Args::full_kernel)
      .def_rw("num_pages", &Args::num_pages)
      .def_rw("page_size", &Args::page_size)
      .def_rw("max_pages_per_seq", &Args::max_pages_per_seq)
      .def_rw("new_keys", &Args::new_keys)
      .def_rw("num_splits", &Args::num_splits)
      .def_rw("workspace_bytes", &Args::workspace_bytes);
}

void bindBackwardArgs(nb::module_ &m) {
  using Args = flashjit_backward_args;
  nb::class_<BackwardArgs> cls(
      m, "BackwardArgs",
      "flashjit_backward_args (flashjit.h), initialised, its `forward` a "
      "copy of the forward call's ForwardArgs; fields by their C names, "
      "pointers as integers.");
  cls.def(nb::init<const ForwardArgs &>(), "forward"_a)
      .def("copy", [](const BackwardArgs &a) { return BackwardArgs(a); })
      .def("__copy__", [](const BackwardArgs &a) { return BackwardArgs(a); })
      .def_prop_rw(
          "forward",
          [](const BackwardArgs &a) { return ForwardArgs(a.forward); },
          [](BackwardArgs &a, const ForwardArgs &f) { a.forward = f; },
          "A copy of the forward call's arguments (assign to change them).");
  bindPointer(cls, "dout", &Args::dout);
  for (auto [name, field] :
       {std::pair{"dq", &Args::dq}, std::pair{"dk", &Args::dk},
        std::pair{"dv", &Args::dv}, std::pair{"dbias", &Args::dbias}})
    bindPointer(cls, name, field);
  // The call's scratch is its forward's (one notion for both directions).
  cls.def_prop_rw(
         "workspace",
         [](const BackwardArgs &a) { return address(a.forward.workspace); },
         [](BackwardArgs &a, uintptr_t v) {
           a.forward.workspace = pointer<void>(v);
         },
         "forward.workspace: the call's scratch (set workspace_bytes too).")
      .def_prop_rw(
          "workspace_bytes",
          [](const BackwardArgs &a) { return a.forward.workspace_bytes; },
          [](BackwardArgs &a, uint64_t v) { a.forward.workspace_bytes = v; },
          "forward.workspace_bytes: the size of workspace.");
  for (auto [name, field] : {std::pair{"dout_strides", &Args::dout_strides},
                             std::pair{"dq_strides", &Args::dq_strides},
                             std::pair{"dk_strides", &Args::dk_strides},
                             std::pair{"dv_strides", &Args::dv_strides},
                             std::pair{"dbias_strides", &Args::dbias_strides}})
    bindArray(cls, name, field);
  cls.def_ro("struct_size", &Args::struct_size)
      .def_rw("deterministic", &Args::deterministic)
      .def_rw("bias_grad", &Args::bias_grad);
}
} // namespace
} // namespace flashjit::python

NB_MODULE(_flashjit, m) {
  using namespace flashjit::python;
  m.doc() = "flashjit's C API (libflashjit.so) for Python; see flashjit.h.";
  nb::exception<FlashjitError>(m, "FlashjitError", PyExc_RuntimeError);
  bindForwardArgs(m);
  bindBackwardArgs(m);

  nb::class_<Runtime>(m, "Runtime",
                      "The flashjit runtime of one CUDA device (kept for "
                      "the life of the process).")
      .def_static("get", &runtimeOf, "device"_a,
                  "The runtime of CUDA device `device`, created on first "
                  "use.")
      .def_ro("device", &Runtime::device)
      .def(
          "forward",
          [](const Runtime &r, const ForwardArgs &a, uintptr_t stream) {
            check(flashjit_attention_forward(r.rt, &a,
                                             reinterpret_cast<void *>(stream)));
          },
          "args"_a, "stream"_a, nb::call_guard<nb::gil_scoped_release>(),
          "flashjit_attention_forward on `stream` (a CUstream as an int; 0: "
          "the default stream).")
      .def(
          "backward",
          [](const Runtime &r, const BackwardArgs &a, uintptr_t stream) {
            check(flashjit_attention_backward(
                r.rt, &a, reinterpret_cast<void *>(stream)));
          },
          "args"_a, "stream"_a, nb::call_guard<nb::gil_scoped_release>(),
          "flashjit_attention_backward on `stream`. Give args.workspace "
          "and args.workspace_bytes (at least backward_workspace_size): "
          "without one the runtime's per-stream workspace is used.")
      .def(
          "backward_workspace_size",
          [](const Runtime &r, const BackwardArgs &a) {
            uint64_t bytes = 0;
            check(flashjit_backward_workspace_size(r.rt, &a, &bytes));
            return bytes;
          },
          "args"_a, nb::call_guard<nb::gil_scoped_release>(),
          "flashjit_backward_workspace_size: the workspace bytes of a "
          "backward call with `args`. Compiles and loads its kernels if need "
          "be and reads nothing through the pointers, so that it is also "
          "the backward's prepare (before CUDA-graph capture).")
      .def(
          "prepare",
          [](const Runtime &r, const ForwardArgs &a) {
            check(flashjit_prepare(r.rt, &a));
          },
          "args"_a, nb::call_guard<nb::gil_scoped_release>(),
          "flashjit_prepare: compile and load the full kernel, launch "
          "nothing.")
      .def(
          "finish_compiles",
          [](const Runtime &r) { check(flashjit_finish_compiles(r.rt)); },
          nb::call_guard<nb::gil_scoped_release>());

  m.def(
      "generate_ptx",
      [](const ForwardArgs &a, const std::string &arch) {
        char *ptx = nullptr;
        check(flashjit_generate_ptx(&a, arch.c_str(), &ptx));
        std::string text(ptx);
        flashjit_free(ptx);
        return text;
      },
      "args"_a, "arch"_a, nb::call_guard<nb::gil_scoped_release>(),
      "The PTX of the kernel for `args` on `arch` (no GPU needed).");
  m.def(
      "current_device",
      [] {
        int32_t device = -1;
        check(flashjit_current_device(&device));
        return device;
      },
      "The device of this thread's current CUDA context.");
  m.def("version", [] { return std::string(flashjit_version()); });
  m.def("api_version", &flashjit_api_version);
  m.attr("HEADER_API_VERSION") = FLASHJIT_API_VERSION;
  m.def("xla_ffi_handlers", &xlaFfiHandlers, "direction"_a = "forward",
        "The XLA FFI handler bundle of flashjit.jax's custom call of "
        "`direction`, 'forward' or 'backward'.");
}
