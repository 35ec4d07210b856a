"""flashjit for JAX: attention as XLA custom calls (the FFI).

    from flashjit.jax import flash_attention
    out = jax.jit(flash_attention, static_argnames="causal")(q, k, v, causal=True)
    dq, dk, dv = jax.grad(lambda q, k, v: flash_attention(q, k, v).sum(), (0, 1, 2))(q, k, v)

q [batch, seqlen_q, heads_q, head_dim], k/v [batch, seqlen_k, heads_kv,
head_dim(_v)] (jax.nn.dot_product_attention's BTNH layout), float16 or
bfloat16. The call is checked when traced (flashjit._problem: errors name
the argument), compiled and loaded when XLA instantiates the executable
(on the device whose CUDA context is current then; otherwise at the first
run) and launched on XLA's stream. Under vmap every extra leading dimension
is one more batch; varlen calls run sequentially. Gradients: a custom_vjp
whose forward keeps the LSE and whose backward is a second custom call
(flashjit_attention_backward: dq, dk, dv, GQA summed in the kernel, its
workspace from XLA's scratch allocator); the LSE output is not
differentiated, and differentiating the ALiBi slopes is an error. Both custom call targets, TARGET and
BACKWARD_TARGET, are registered for CUDA on import; python/src/XlaFfi.cpp
says what they take.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _flashjit, _problem

__all__ = ["flash_attention", "flash_attention_varlen", "TARGET", "BACKWARD_TARGET"]

TARGET = "flashjit_attention_forward"
BACKWARD_TARGET = "flashjit_attention_backward"
for _target, _direction in ((TARGET, "forward"), (BACKWARD_TARGET, "backward")):
    jax.ffi.register_ffi_target(_target, _flashjit.xla_ffi_handlers(_direction),
                                platform="CUDA")


class _Static(NamedTuple):
    """The options of a call that are XLA attributes (hashable)."""

    softmax_scale: Optional[float]
    causal: bool
    window_size: Tuple[int, int]
    softcap: float
    return_lse: bool
    varlen: bool
    max_seqlen_q: int
    max_seqlen_k: int
    deterministic: bool


def _facts(x) -> Optional[_problem.Tensor]:
    if x is None:
        return None
    return _problem.Tensor(tuple(x.shape), jnp.dtype(x.dtype).name)


def _checked(q, k, v, alibi, cu_q, cu_k, lengths, static: _Static, return_lse):
    """(problem, the optional operands, the attributes) of a call: what
    both custom calls take after their own leading operands."""
    problem = _problem.build(
        _facts(q), _facts(k), _facts(v), softmax_scale=static.softmax_scale,
        causal=static.causal, window_size=static.window_size,
        softcap=static.softcap, alibi_slopes=_facts(alibi),
        return_lse=return_lse, cu_seqlens_q=_facts(cu_q),
        cu_seqlens_k=_facts(cu_k),
        max_seqlen_q=static.max_seqlen_q if static.varlen else None,
        max_seqlen_k=static.max_seqlen_k if static.varlen else None,
        seqused_k=_facts(lengths),
    )
    a = problem.args
    optional = []
    if alibi is not None:  # as [batch, heads_q], which vmap extends
        optional.append(jnp.broadcast_to(alibi, (a.batch, a.heads_q)))
    if static.varlen:
        optional += [cu_q, cu_k]
    if lengths is not None:
        optional.append(lengths)
    attrs = dict(
        mask=np.int64(a.mask), window_left=np.int64(a.window_left),
        window_right=np.int64(a.window_right),
        softmax_scale=np.float64(a.softmax_scale), softcap=np.float64(a.softcap),
        alibi=alibi is not None, varlen=static.varlen,
        key_lengths=lengths is not None,
        batch=np.int64(a.batch), max_seqlen_q=np.int64(a.seqlen_q),
        max_seqlen_k=np.int64(a.seqlen_k), dtype=np.int64(a.dtype),
        q_shape=np.asarray(q.shape, np.int64), k_shape=np.asarray(k.shape, np.int64),
        v_shape=np.asarray(v.shape, np.int64),
    )
    return problem, optional, attrs


def _vmap_method(static: _Static) -> str:
    return "sequential" if static.varlen else "broadcast_all"


def _forward(q, k, v, alibi, cu_q, cu_k, lengths, static: _Static, return_lse):
    """(out, lse or None)."""
    problem, optional, attrs = _checked(q, k, v, alibi, cu_q, cu_k, lengths,
                                        static, return_lse)
    results = [jax.ShapeDtypeStruct(problem.out_shape, q.dtype)]
    if return_lse:
        results.append(jax.ShapeDtypeStruct(problem.lse_shape, jnp.float32))
    call = jax.ffi.ffi_call(TARGET, results, vmap_method=_vmap_method(static))
    out = call(q, k, v, *optional, return_lse=return_lse, **attrs)
    return tuple(out) if return_lse else (out[0], None)


def _backward(q, k, v, out, lse, dout, alibi, cu_q, cu_k, lengths, static: _Static):
    """(dq, dk, dv) of sum(out * dout)."""
    _, optional, attrs = _checked(q, k, v, alibi, cu_q, cu_k, lengths, static, True)
    results = [jax.ShapeDtypeStruct(t.shape, t.dtype) for t in (q, k, v)]
    call = jax.ffi.ffi_call(BACKWARD_TARGET, results, vmap_method=_vmap_method(static))
    return tuple(call(q, k, v, out, lse, dout.astype(out.dtype), *optional,
                      deterministic=static.deterministic, **attrs))


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def _attention(q, k, v, alibi, cu_q, cu_k, lengths, static):
    return _forward(q, k, v, alibi, cu_q, cu_k, lengths, static, static.return_lse)


def _attention_fwd(q, k, v, alibi, cu_q, cu_k, lengths, static):
    # symbolic_zeros: each argument says whether it is differentiated.
    if alibi is not None and alibi.perturbed:
        raise ValueError(
            "alibi_slopes: flashjit does not differentiate the ALiBi slopes; "
            "pass jax.lax.stop_gradient(alibi_slopes)")
    q, k, v, alibi, cu_q, cu_k, lengths = (
        None if x is None else x.value for x in (q, k, v, alibi, cu_q, cu_k, lengths))
    # The LSE is written whenever gradients are asked for: the backward reads it.
    out, lse = _forward(q, k, v, alibi, cu_q, cu_k, lengths, static, True)
    primal = (out, lse if static.return_lse else None)
    return primal, (q, k, v, alibi, cu_q, cu_k, lengths, out, lse)


def _attention_bwd(static, residuals, cotangents):
    q, k, v, alibi, cu_q, cu_k, lengths, out, lse = residuals
    dout = cotangents[0]  # the LSE's is zero: flash_attention stops its gradient
    if isinstance(dout, jax.custom_derivatives.SymbolicZero):
        dq, dk, dv = (jnp.zeros(t.shape, t.dtype) for t in (q, k, v))
    else:
        dq, dk, dv = _backward(q, k, v, out, lse, dout, alibi, cu_q, cu_k, lengths,
                               static)
    return dq, dk, dv, None, None, None, None


_attention.defvjp(_attention_fwd, _attention_bwd, symbolic_zeros=True)


def _outputs(out, lse, return_lse):
    return (out, jax.lax.stop_gradient(lse)) if return_lse else out


def flash_attention(q, k, v, *, softmax_scale=None, causal=False,
                    window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                    key_value_seq_lengths=None, return_lse=False,
                    deterministic=False):
    """softmax(q k^T * softmax_scale, mask) v.

    q [batch, seqlen_q, heads_q, head_dim], k [batch, seqlen_k, heads_kv,
    head_dim], v [batch, seqlen_k, heads_kv, head_dim_v]; heads_kv divides
    heads_q (GQA); any head dims 1..256. causal / window_size=(left, right)
    (-1: unbounded) are aligned to the bottom-right corner; softcap > 0 caps
    the scores; alibi_slopes float32 [heads_q] or [batch, heads_q];
    key_value_seq_lengths int32 [batch]: only the first keys of each batch
    are real (as jax.nn.dot_product_attention). Returns out [batch,
    seqlen_q, heads_q, head_dim_v], and with return_lse=True also lse
    float32 [batch, heads_q, seqlen_q] (not differentiated). Differentiable
    in q, k, v (jax.grad, jax.vjp); deterministic=True: the backward adds dq
    without float atomics, the same bits on every run."""
    static = _Static(
        None if softmax_scale is None else float(softmax_scale), bool(causal),
        tuple(int(w) for w in window_size), float(softcap), bool(return_lse),
        False, 0, 0, bool(deterministic))
    out, lse = _attention(q, k, v, alibi_slopes, None, None,
                          key_value_seq_lengths, static)
    return _outputs(out, lse, return_lse)


def flash_attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                           max_seqlen_k, *, softmax_scale=None, causal=False,
                           window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           return_lse=False, deterministic=False):
    """Packed sequences, as flash-attn's varlen function: q [total_q,
    heads_q, head_dim], k/v [total_k, heads_kv, head_dim(_v)], cu_seqlens_q/k
    int32 [batch + 1] prefix sums, max_seqlen_q/k (Python ints) the longest
    sequences (trusted, never read back). Returns out [total_q, heads_q,
    head_dim_v] (and lse [heads_q, total_q]). Differentiable in q, k, v as
    flash_attention."""
    static = _Static(
        None if softmax_scale is None else float(softmax_scale), bool(causal),
        tuple(int(w) for w in window_size), float(softcap), bool(return_lse),
        True, int(max_seqlen_q), int(max_seqlen_k), bool(deterministic))
    out, lse = _attention(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k,
                          None, static)
    return _outputs(out, lse, return_lse)
