"""flashjit for PyTorch: flash-attn's functions on flashjit's kernels.

    from flashjit.torch import flash_attn_func
    out = flash_attn_func(q, k, v, causal=True)   # q [batch, seqlen, heads, head_dim]

flash_attn_func and flash_attn_varlen_func take flash-attn's arguments and
layouts, any head dim 1..256 (head_dim_v may differ from head_dim), GQA, a
sliding window, softcap and ALiBi, and run on the current CUDA stream. They
call one torch.library custom op, flashjit::attention_forward, with a fake
kernel (torch.compile(fullgraph=True) traces it) and a CPU kernel in plain
PyTorch math (flashjit._reference), so that torch.library.opcheck and
torch.compile also run without a GPU. Tensors are passed by address
(zero-copy) after the checks of flashjit._problem, whose messages name the
argument. Backward: autograd is wired to flashjit::attention_backward's
place (_backward below), which raises until flashjit_attention_backward
exists; the forward keeps the LSE that it will need.
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch

from . import _flashjit, _problem, _reference

__all__ = ["flash_attn_func", "flash_attn_varlen_func", "prepare"]

_Tensor = torch.Tensor


def _facts(t: Optional[_Tensor]) -> Optional[_problem.Tensor]:
    if t is None:
        return None
    return _problem.Tensor(
        tuple(t.shape), str(t.dtype).rpartition(".")[2], t.stride(), t.device
    )


@functools.lru_cache(maxsize=4096)
def _checked(q, k, v, alibi, cu_q, cu_k, used, max_q, max_k, scale, causal,
             window, softcap, lse) -> _problem.Problem:
    """The checked problem of a call's facts, memoised: a repeated call
    (same shapes, strides, dtypes, options) costs a lookup."""
    return _problem.build(
        q, k, v, softmax_scale=scale, causal=causal, window_size=window,
        softcap=softcap, alibi_slopes=alibi, return_lse=lse,
        cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max_q,
        max_seqlen_k=max_k, seqused_k=used,
    )


def _current_stream(device: torch.device) -> int:
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)  # no Stream object
    if raw is not None:
        return raw(device.index)
    return torch.cuda.current_stream(device).cuda_stream


def _launch(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k, seqused_k,
            max_seqlen_q, max_seqlen_k, softmax_scale, causal, window_left,
            window_right, softcap, return_lse, prepare_only=False):
    if q.device.type != "cuda":
        raise ValueError(f"q: expected a CUDA tensor, got one on {q.device}")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    tensors = (q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k, seqused_k)
    facts = tuple(_facts(t) for t in tensors)
    problem = _checked(
        *facts, max_seqlen_q if cu_seqlens_q is not None else None,
        max_seqlen_k if cu_seqlens_q is not None else None,
        softmax_scale, causal, (window_left, window_right), softcap, return_lse,
    )
    out = q.new_empty(problem.out_shape)
    lse = q.new_empty(problem.lse_shape, dtype=torch.float32)
    a = problem.args.copy()
    a.q, a.k, a.v, a.o = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr()
    if return_lse:
        a.lse = lse.data_ptr()
    if alibi_slopes is not None:
        a.alibi_slopes = alibi_slopes.data_ptr()
    if cu_seqlens_q is not None:
        a.cu_seqlens_q, a.cu_seqlens_k = cu_seqlens_q.data_ptr(), cu_seqlens_k.data_ptr()
    if seqused_k is not None:
        a.key_lengths = seqused_k.data_ptr()
    runtime = _flashjit.Runtime.get(q.device.index)
    if prepare_only:
        runtime.prepare(a)
        return out, lse
    # A graph keeps the kernel it captured: never the quick form.
    a.full_kernel = int(torch.cuda.is_current_stream_capturing())
    runtime.forward(a, _current_stream(q.device))
    return out, lse


@torch.library.custom_op("flashjit::attention_forward", mutates_args=(),
                         device_types="cuda")
def attention_forward(
    q: _Tensor, k: _Tensor, v: _Tensor, alibi_slopes: Optional[_Tensor],
    cu_seqlens_q: Optional[_Tensor], cu_seqlens_k: Optional[_Tensor],
    seqused_k: Optional[_Tensor], max_seqlen_q: int, max_seqlen_k: int,
    softmax_scale: Optional[float], causal: bool, window_left: int, window_right: int,
    softcap: float, return_lse: bool,
) -> Tuple[_Tensor, _Tensor]:
    """(out, lse); lse is empty unless return_lse. Dense or varlen."""
    return _launch(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k, seqused_k,
                   max_seqlen_q, max_seqlen_k, softmax_scale, causal,
                   window_left, window_right, softcap, return_lse)


@attention_forward.register_kernel("cpu")
def _attention_forward_cpu(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k,
                           seqused_k, max_seqlen_q, max_seqlen_k,
                           softmax_scale, causal, window_left, window_right,
                           softcap, return_lse):
    # The same checks as on the GPU, then the reference in float32.
    _problem.build(
        *(_facts(t) for t in (q, k, v)), softmax_scale=softmax_scale,
        causal=causal, window_size=(window_left, window_right), softcap=softcap,
        alibi_slopes=_facts(alibi_slopes), cu_seqlens_q=_facts(cu_seqlens_q),
        cu_seqlens_k=_facts(cu_seqlens_k),
        max_seqlen_q=max_seqlen_q if cu_seqlens_q is not None else None,
        max_seqlen_k=max_seqlen_k if cu_seqlens_q is not None else None,
        seqused_k=_facts(seqused_k),
    )
    out, lse = _reference.attention(
        q, k, v, softmax_scale=softmax_scale, causal=causal,
        window_size=(window_left, window_right), softcap=softcap,
        alibi_slopes=alibi_slopes, cu_seqlens_q=cu_seqlens_q,
        cu_seqlens_k=cu_seqlens_k, seqused_k=seqused_k,
        compute_dtype=torch.float32,
    )
    out = out.to(q.dtype).contiguous()
    lse = lse.contiguous() if return_lse else q.new_empty((0,), dtype=torch.float32)
    return out, lse


@attention_forward.register_fake
def _attention_forward_fake(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k,
                            seqused_k, max_seqlen_q, max_seqlen_k,
                            softmax_scale, causal, window_left, window_right,
                            softcap, return_lse):
    # Shapes only (they may be symbolic): out like q with v's head_dim.
    out = q.new_empty((*q.shape[:-1], v.shape[-1]))
    if not return_lse:
        lse_shape = (0,)
    elif cu_seqlens_q is not None:
        lse_shape = (q.shape[1], q.shape[0])
    else:
        lse_shape = (q.shape[0], q.shape[2], q.shape[1])
    return out, q.new_empty(lse_shape, dtype=torch.float32)


# ---- autograd -----------------------------------------------------------------
_BACKWARD_MISSING = (
    "flashjit: the attention backward is not implemented yet (its C entry point, "
    "flashjit_attention_backward, is to come); the forward works under "
    "torch.no_grad() or with inputs that do not require grad"
)


def _setup_context(ctx, inputs, output):
    q, k, v = inputs[:3]
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.options = inputs[3:]


def _backward(ctx, grad_out, grad_lse):
    # Here flashjit::attention_backward (over flashjit_attention_backward)
    # will turn (q, k, v, out, lse, grad_out) into (dq, dk, dv).
    raise NotImplementedError(_BACKWARD_MISSING)


attention_forward.register_autograd(_backward, setup_context=_setup_context)


# ---- flash-attn's functions ---------------------------------------------------
def _options(q, dropout_p, softmax_scale, causal, window_size, softcap,
             deterministic, return_attn_probs):
    if dropout_p:
        raise ValueError(f"dropout_p: flashjit has no dropout, got {dropout_p}")
    if return_attn_probs:
        raise ValueError("return_attn_probs: not supported; use return_lse=True")
    if softmax_scale is not None:
        softmax_scale = float(softmax_scale)  # None: 1 / sqrt(head_dim)
    mask, left, right = _problem.mask_of(causal, window_size)
    return softmax_scale, bool(causal), left, right, float(softcap)


def _needs_lse(return_lse, *tensors) -> bool:
    """LSE is written when asked for, or kept for the backward."""
    return bool(return_lse) or (
        torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    )


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                    window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                    deterministic=False, return_attn_probs=False, *,
                    return_lse=False):
    """softmax(q k^T * softmax_scale, mask) v, as flash_attn.flash_attn_func.

    q [batch, seqlen_q, heads_q, head_dim], k [batch, seqlen_k, heads_kv,
    head_dim], v [batch, seqlen_k, heads_kv, head_dim_v], float16 or
    bfloat16 on one CUDA device; heads_kv divides heads_q (GQA). causal and
    window_size=(left, right) are aligned to the bottom-right corner; -1 is
    unbounded. softcap > 0 caps the scores (Gemma 2). alibi_slopes: float32
    [heads_q] or [batch, heads_q]. Returns out [batch, seqlen_q, heads_q,
    head_dim_v], and with return_lse=True also lse float32 [batch, heads_q,
    seqlen_q] (natural log)."""
    scale, causal, left, right, softcap = _options(
        q, dropout_p, softmax_scale, causal, window_size, softcap,
        deterministic, return_attn_probs)
    lse = _needs_lse(return_lse, q, k, v)
    out, lse_out = attention_forward(
        q, k, v, alibi_slopes, None, None, None, 0, 0, scale, causal, left,
        right, softcap, lse)
    return (out, lse_out) if return_lse else out


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                           max_seqlen_k, dropout_p=0.0, softmax_scale=None,
                           causal=False, window_size=(-1, -1), softcap=0.0,
                           alibi_slopes=None, deterministic=False,
                           return_attn_probs=False, block_table=None, *,
                           seqused_k=None, return_lse=False):
    """flash_attn.flash_attn_varlen_func: packed sequences. q [total_q,
    heads_q, head_dim], k/v [total_k, heads_kv, head_dim(_v)], cu_seqlens_q/k
    int32 [batch + 1] prefix sums on q's device, max_seqlen_q/k the longest
    sequences (trusted: nothing is read back, nothing synchronises). seqused_k
    (int32 [batch]): only the first seqused_k[b] keys of sequence b are used.
    Returns out [total_q, heads_q, head_dim_v] (and lse [heads_q, total_q])."""
    if block_table is not None:
        raise ValueError("block_table: paged KV caches are not supported yet")
    scale, causal, left, right, softcap = _options(
        q, dropout_p, softmax_scale, causal, window_size, softcap,
        deterministic, return_attn_probs)
    lse = _needs_lse(return_lse, q, k, v)
    out, lse_out = attention_forward(
        q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k, seqused_k,
        int(max_seqlen_q), int(max_seqlen_k), scale, causal, left, right,
        softcap, lse)
    return (out, lse_out) if return_lse else out


def prepare(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1),
            softcap=0.0, alibi_slopes=None, *, cu_seqlens_q=None,
            cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None,
            seqused_k=None, return_lse=False) -> None:
    """Compiles and loads the full kernel that flash_attn_func (or, with
    cu_seqlens, flash_attn_varlen_func) would launch for these tensors,
    without launching it: call before capturing a CUDA graph, or to take the
    compile out of the first call."""
    scale, causal, left, right, softcap = _options(
        q, 0.0, softmax_scale, causal, window_size, softcap, False, False)
    varlen = cu_seqlens_q is not None
    _launch(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k, seqused_k,
            int(max_seqlen_q) if varlen else 0,
            int(max_seqlen_k) if varlen else 0, scale, causal, left, right,
            softcap, bool(return_lse), prepare_only=True)
