"""flashjit for JAX: attention as an XLA custom call (the FFI).

    from flashjit.jax import flash_attention
    out = jax.jit(flash_attention, static_argnames="causal")(q, k, v, causal=True)

q [batch, seqlen_q, heads_q, head_dim], k/v [batch, seqlen_k, heads_kv,
head_dim(_v)] (jax.nn.dot_product_attention's BTNH layout), float16 or
bfloat16. The call is checked when traced (flashjit._problem: errors name
the argument), compiled and loaded when XLA instantiates the executable
(on the device whose CUDA context is current then; otherwise at the first
run) and launched on XLA's stream. Under vmap every extra leading dimension
is one more batch; varlen calls run sequentially. Gradients: custom_vjp,
whose backward raises until flashjit_attention_backward exists. The custom
call target, "flashjit_attention_forward", is registered for CUDA on import;
python/src/XlaFfi.cpp says what it takes.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _flashjit, _problem

__all__ = ["flash_attention", "flash_attention_varlen", "TARGET"]

TARGET = "flashjit_attention_forward"
jax.ffi.register_ffi_target(TARGET, _flashjit.xla_ffi_handlers(), platform="CUDA")

_BACKWARD_MISSING = (
    "flashjit: the attention backward is not implemented yet (its C entry point, "
    "flashjit_attention_backward, is to come): flashjit.jax.flash_attention "
    "cannot be differentiated yet"
)


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


def _facts(x) -> Optional[_problem.Tensor]:
    if x is None:
        return None
    return _problem.Tensor(tuple(x.shape), jnp.dtype(x.dtype).name)


def _call(q, k, v, alibi, cu_q, cu_k, lengths, static: _Static):
    problem = _problem.build(
        _facts(q), _facts(k), _facts(v), softmax_scale=static.softmax_scale,
        causal=static.causal, window_size=static.window_size,
        softcap=static.softcap, alibi_slopes=_facts(alibi),
        return_lse=static.return_lse, cu_seqlens_q=_facts(cu_q),
        cu_seqlens_k=_facts(cu_k),
        max_seqlen_q=static.max_seqlen_q if static.varlen else None,
        max_seqlen_k=static.max_seqlen_k if static.varlen else None,
        seqused_k=_facts(lengths),
    )
    a = problem.args
    operands = [q, k, v]
    if alibi is not None:  # as [batch, heads_q], which vmap extends
        operands.append(jnp.broadcast_to(alibi, (a.batch, a.heads_q)))
    if static.varlen:
        operands += [cu_q, cu_k]
    if lengths is not None:
        operands.append(lengths)
    results = [jax.ShapeDtypeStruct(problem.out_shape, q.dtype)]
    if static.return_lse:
        results.append(jax.ShapeDtypeStruct(problem.lse_shape, jnp.float32))
    call = jax.ffi.ffi_call(
        TARGET, results,
        vmap_method="sequential" if static.varlen else "broadcast_all")
    out = call(
        *operands,
        mask=np.int64(a.mask), window_left=np.int64(a.window_left),
        window_right=np.int64(a.window_right),
        softmax_scale=np.float64(a.softmax_scale), softcap=np.float64(a.softcap),
        alibi=alibi is not None, varlen=static.varlen,
        key_lengths=lengths is not None, return_lse=static.return_lse,
        batch=np.int64(a.batch), max_seqlen_q=np.int64(a.seqlen_q),
        max_seqlen_k=np.int64(a.seqlen_k), dtype=np.int64(a.dtype),
        q_shape=np.asarray(q.shape, np.int64), k_shape=np.asarray(k.shape, np.int64),
        v_shape=np.asarray(v.shape, np.int64),
    )
    return tuple(out) if static.return_lse else (out[0], None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def _attention(q, k, v, alibi, cu_q, cu_k, lengths, static):
    return _call(q, k, v, alibi, cu_q, cu_k, lengths, static)


def _attention_fwd(q, k, v, alibi, cu_q, cu_k, lengths, static):
    # Keeps what flashjit_attention_backward will take: q, k, v, out (and
    # lse, which the forward will then write whenever gradients are asked).
    out = _call(q, k, v, alibi, cu_q, cu_k, lengths, static)
    return out, (q, k, v, out)


def _attention_bwd(static, residuals, cotangents):
    raise NotImplementedError(_BACKWARD_MISSING)


_attention.defvjp(_attention_fwd, _attention_bwd)


def flash_attention(q, k, v, *, softmax_scale=None, causal=False,
                    window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                    key_value_seq_lengths=None, return_lse=False):
    """softmax(q k^T * softmax_scale, mask) v.

    q [batch, seqlen_q, heads_q, head_dim], k [batch, seqlen_k, heads_kv,
    head_dim], v [batch, seqlen_k, heads_kv, head_dim_v]; heads_kv divides
    heads_q (GQA); any head dims 1..256. causal / window_size=(left, right)
    (-1: unbounded) are aligned to the bottom-right corner; softcap > 0 caps
    the scores; alibi_slopes float32 [heads_q] or [batch, heads_q];
    key_value_seq_lengths int32 [batch]: only the first keys of each batch
    are real (as jax.nn.dot_product_attention). Returns out [batch,
    seqlen_q, heads_q, head_dim_v], and with return_lse=True also lse
    float32 [batch, heads_q, seqlen_q]."""
    static = _Static(
        None if softmax_scale is None else float(softmax_scale), bool(causal),
        tuple(int(w) for w in window_size), float(softcap), bool(return_lse),
        False, 0, 0)
    out, lse = _attention(q, k, v, alibi_slopes, None, None,
                          key_value_seq_lengths, static)
    return (out, lse) if return_lse else out


def flash_attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                           max_seqlen_k, *, softmax_scale=None, causal=False,
                           window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           return_lse=False):
    """Packed sequences, as flash-attn's varlen function: q [total_q,
    heads_q, head_dim], k/v [total_k, heads_kv, head_dim(_v)], cu_seqlens_q/k
    int32 [batch + 1] prefix sums, max_seqlen_q/k (Python ints) the longest
    sequences (trusted, never read back). Returns out [total_q, heads_q,
    head_dim_v] (and lse [heads_q, total_q])."""
    static = _Static(
        None if softmax_scale is None else float(softmax_scale), bool(causal),
        tuple(int(w) for w in window_size), float(softcap), bool(return_lse),
        True, int(max_seqlen_q), int(max_seqlen_k))
    out, lse = _attention(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k,
                          None, static)
    return (out, lse) if return_lse else out
