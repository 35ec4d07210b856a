"""flashjit: FlashAttention kernels generated at run time, specialised for
any head size (1..256), dtype, mask and GQA group.

The framework entry points live in submodules, so that importing flashjit
needs neither framework:

    from flashjit.torch import flash_attn_func, flash_attn_varlen_func
    from flashjit.jax import flash_attention

This module holds the C API underneath them (libflashjit.so, beside this
file; see flashjit.h): the forward and backward arguments, one runtime per
CUDA device, PTX generation without a GPU, and the paths a C or Julia
caller needs.
"""

import importlib.util as _importlib_util
import os as _os


def _triton_ptxas():
    """Triton's bundled ptxas (found without importing triton), or None.

    The runtime assembles PTX with the CUDA toolkit's ptxas where one is
    installed; nvJitLink and the driver's JIT, which it falls back to,
    compile relocatable code that spills the sm90 kernels. Beside torch,
    Triton usually ships a ptxas: libflashjit.so tries it last
    (FLASHJIT_BUNDLED_PTXAS, runtime/lib/Assembler.h)."""
    try:
        spec = _importlib_util.find_spec("triton")
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = _os.path.join(root, "backends", "nvidia", "bin", "ptxas")
        if _os.access(path, _os.X_OK):
            return path
    return None


if "FLASHJIT_BUNDLED_PTXAS" not in _os.environ:  # read when the runtime starts
    _ptxas = _triton_ptxas()
    if _ptxas:
        _os.environ["FLASHJIT_BUNDLED_PTXAS"] = _ptxas

from ._flashjit import (  # noqa: F401, E402
    HEADER_API_VERSION as _HEADER_API_VERSION,
    BackwardArgs,
    FlashjitError,
    ForwardArgs,
    Runtime,
    api_version as _api_version,
    current_device,
    generate_ptx,
    version as _version,
)

__all__ = [
    "BackwardArgs",
    "FlashjitError",
    "ForwardArgs",
    "Runtime",
    "current_device",
    "generate_ptx",
    "include_dir",
    "library_path",
]

__version__ = _version()

if _api_version() != _HEADER_API_VERSION:  # a stale libflashjit.so beside us
    raise ImportError(
        f"flashjit: libflashjit.so has C API {_api_version()}, the extension was "
        f"built for {_HEADER_API_VERSION}: reinstall the package"
    )

_here = _os.path.dirname(_os.path.abspath(__file__))


def library_path() -> str:
    """libflashjit.so, the C library this package calls (for ctypes, Julia)."""
    return _os.path.join(_here, "libflashjit.so")


def include_dir() -> str:
    """The directory holding flashjit/flashjit.h, the C API's header."""
    return _os.path.join(_here, "include")
