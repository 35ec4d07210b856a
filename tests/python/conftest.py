"""Shared helpers of the Python tests: which optional pieces are present,
and FlashAttention's accuracy rule. Tests that need a missing framework or
a GPU skip with the reason (run pytest with -rs to list them)."""

import importlib.util
import os

import pytest

# torch and JAX share the GPU in one pytest process: JAX must not take 75%
# of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def cuda_available() -> bool:
    if not installed("torch"):
        return False
    import torch

    return torch.cuda.is_available()


requires_torch = pytest.mark.skipif(not installed("torch"), reason="torch is not installed")
requires_jax = pytest.mark.skipif(not installed("jax"), reason="jax is not installed")
requires_cuda = pytest.mark.skipif(
    not cuda_available(), reason="no CUDA GPU (torch.cuda.is_available() is False)"
)


def assert_within_2x(out, ref64, ref_lowp, what=""):
    """DESIGN.md's rule: the error against a float64 reference is at most
    twice that of a straightforward float32-accumulate implementation on the
    same inputs (rounded to the output dtype), plus a hair for exact ties
    (1e-5 of the largest reference value, as the C++ checks allow)."""
    assert bool(out.isfinite().all()), f"{what}: non-finite values"
    err = (out.double() - ref64).abs().max().item()
    base = (ref_lowp.double() - ref64).abs().max().item()
    slack = 1e-5 * max(1.0, ref64.abs().max().item())
    assert err <= 2 * base + slack, f"{what}: max error {err:.3g} > 2 x {base:.3g}"
