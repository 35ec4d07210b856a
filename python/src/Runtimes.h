//===- Runtimes.h - One flashjit runtime per CUDA device, for the bindings ===//
//
// The Python extension and the XLA FFI handlers share them: a framework
// keeps its CUDA contexts for the life of the process, and so do these
// (never destroyed, so that no teardown races the driver's at exit).
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_PYTHON_RUNTIMES_H
#define FLASHJIT_PYTHON_RUNTIMES_H

#include "flashjit/flashjit.h"

#include <nanobind/nanobind.h>

#include <string>

namespace flashjit::python {

/// The runtime of CUDA device `device`, created on first use (thread-safe).
/// On failure: null, with the status returned in `status` and the message
/// in flashjit_last_error() on this thread.
flashjit_runtime *runtimeFor(int device, flashjit_status &status);

/// {"instantiate": capsule, "execute": capsule}: the XLA FFI handler bundle
/// of flashjit.jax's custom call of `direction`, "forward" or "backward"
/// (XlaFfi.cpp).
nanobind::dict xlaFfiHandlers(const std::string &direction);

} // namespace flashjit::python

#endif // FLASHJIT_PYTHON_RUNTIMES_H
