"""flashjit for PyTorch: flash-attn's functions on flashjit's kernels.

    from flashjit.torch import flash_attn_func
    out = flash_attn_func(q, k, v, causal=True)   # q [batch, seqlen, heads, head_dim]

flash_attn_func and flash_attn_varlen_func take flash-attn's arguments and
layouts, any head dim 1..256 (head_dim_v may differ from head_dim), GQA, a
sliding window, softcap and ALiBi, and run on the current CUDA stream. They
call the torch.library custom op flashjit::attention_forward, whose
autograd calls flashjit::attention_backward (flashjit_attention_backward:
dq, dk, dv from q, k, v, out and the LSE the forward keeps whenever a
gradient is wanted; GQA summed in the kernel; deterministic=True adds dq
without atomics). Both ops have a fake kernel (torch.compile(fullgraph=True)
traces forward and backward) and a CPU kernel in plain PyTorch math
(flashjit._reference), so that torch.library.opcheck and torch.compile also
run without a GPU. Tensors are passed by address (zero-copy) after the
checks of flashjit._problem, whose messages name the argument; the
backward's workspace comes from PyTorch's allocator on the current stream.
The LSE output is not differentiated (as in flash-attn); ALiBi slopes that
require grad are refused (their gradient is not computed).
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


def _dense(t: Optional[_Tensor]) -> Optional[_Tensor]:
    """t with its last dimension contiguous, as the kernels read it."""
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


def _problem_of(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k, seqused_k,
                max_seqlen_q, max_seqlen_k, softmax_scale, causal, window_left,
                window_right, softcap, return_lse) -> _problem.Problem:
    facts = tuple(_facts(t) for t in (q, k, v, alibi_slopes, cu_seqlens_q,
                                        cu_seqlens_k, seqused_k))
    varlen = cu_seqlens_q is not None
    return _checked(
        *facts, max_seqlen_q if varlen else None, max_seqlen_k if varlen else None,
        softmax_scale, causal, (window_left, window_right), softcap, return_lse,
    )


def _set_pointers(a, q, k, v, out, lse, alibi_slopes, cu_seqlens_q,
                  cu_seqlens_k, seqused_k) -> None:
    a.q, a.k, a.v, a.o = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr()
    if lse is not None:
        a.lse = lse.data_ptr()
    if alibi_slopes is not None:
        a.alibi_slopes = alibi_slopes.data_ptr()
    if cu_seqlens_q is not None:
        a.cu_seqlens_q, a.cu_seqlens_k = cu_seqlens_q.data_ptr(), cu_seqlens_k.data_ptr()
    if seqused_k is not None:
        a.key_lengths = seqused_k.data_ptr()


def _launch(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k, seqused_k,
            max_seqlen_q, max_seqlen_k, softmax_scale, causal, window_left,
            window_right, softcap, return_lse, prepare_only=False):
    if q.device.type != "cuda":
        raise ValueError(f"q: expected a CUDA tensor, got one on {q.device}")
    q, k, v = _dense(q), _dense(k), _dense(v)
    problem = _problem_of(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k,
                          seqused_k, max_seqlen_q, max_seqlen_k, softmax_scale,
                          causal, window_left, window_right, softcap, return_lse)
    out = q.new_empty(problem.out_shape)
    lse = q.new_empty(problem.lse_shape, dtype=torch.float32)
    a = problem.args.copy()
    _set_pointers(a, q, k, v, out, lse if return_lse else None, alibi_slopes,
                  cu_seqlens_q, cu_seqlens_k, seqused_k)
    runtime = _flashjit.Runtime.get(q.device.index)
    if prepare_only:
        runtime.prepare(a)
        return out, lse
    # A graph keeps the kernel it captured: never the quick form.
    a.full_kernel = int(torch.cuda.is_current_stream_capturing())
    runtime.forward(a, _current_stream(q.device))
    return out, lse


def _launch_backward(dout, q, k, v, out, lse, alibi_slopes, cu_seqlens_q,
                     cu_seqlens_k, seqused_k, max_seqlen_q, max_seqlen_k,
                     softmax_scale, causal, window_left, window_right, softcap,
                     deterministic, prepare_only=False):
    if q.device.type != "cuda":
        raise ValueError(f"q: expected a CUDA tensor, got one on {q.device}")
    dout, q, k, v, out = (_dense(t) for t in (dout, q, k, v, out))
    problem = _problem_of(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k,
                          seqused_k, max_seqlen_q, max_seqlen_k, softmax_scale,
                          causal, window_left, window_right, softcap, True)
    b = _problem.build_backward(
        problem, *(_facts(t) for t in (q, k, v, out, lse, dout)),
        deterministic=deterministic)
    a = b.forward
    _set_pointers(a, q, k, v, out, lse, alibi_slopes, cu_seqlens_q,
                  cu_seqlens_k, seqused_k)
    b.forward = a
    runtime = _flashjit.Runtime.get(q.device.index)
    if prepare_only:  # placeholders: nothing is read or written
        b.dout, b.dq, b.dk, b.dv = dout.data_ptr(), q.data_ptr(), k.data_ptr(), v.data_ptr()
        runtime.backward_workspace_size(b)
        return None
    # Dense, as build_backward laid them out.
    dq, dk, dv = (t.new_empty(t.shape) for t in (q, k, v))
    b.dout, b.dq, b.dk, b.dv = dout.data_ptr(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr()
    # From PyTorch's caching allocator on the current stream: freed after
    # this call, reused only by work queued after the kernels.
    workspace = torch.empty(runtime.backward_workspace_size(b), dtype=torch.uint8,
                            device=q.device)
    b.workspace, b.workspace_bytes = workspace.data_ptr(), workspace.numel()
    runtime.backward(b, _current_stream(q.device))
    return dq, dk, dv


@torch.library.custom_op("flashjit::attention_forward", mutates_args=(),
                         device_types="cuda")
def attention_forward(
    q: _Tensor, k: _Tensor, v: _Tensor, alibi_slopes: Optional[_Tensor],
    cu_seqlens_q: Optional[_Tensor], cu_seqlens_k: Optional[_Tensor],
    seqused_k: Optional[_Tensor], max_seqlen_q: int, max_seqlen_k: int,
    softmax_scale: Optional[float], causal: bool, window_left: int, window_right: int,
    softcap: float, return_lse: bool, deterministic: bool,
) -> Tuple[_Tensor, _Tensor]:
    """(out, lse); lse is empty unless return_lse. Dense or varlen.
    deterministic is the backward's (saved for it by autograd)."""
    return _launch(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k, seqused_k,
                   max_seqlen_q, max_seqlen_k, softmax_scale, causal,
                   window_left, window_right, softcap, return_lse)


def _check_cpu_call(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k,
                    seqused_k, max_seqlen_q, max_seqlen_k, softmax_scale,
                    causal, window_left, window_right, softcap, return_lse):
    """The GPU's checks for a CPU call: its problem."""
    varlen = cu_seqlens_q is not None
    return _problem.build(
        *(_facts(t) for t in (q, k, v)), softmax_scale=softmax_scale,
        causal=causal, window_size=(window_left, window_right), softcap=softcap,
        alibi_slopes=_facts(alibi_slopes), return_lse=return_lse,
        cu_seqlens_q=_facts(cu_seqlens_q), cu_seqlens_k=_facts(cu_seqlens_k),
        max_seqlen_q=max_seqlen_q if varlen else None,
        max_seqlen_k=max_seqlen_k if varlen else None,
        seqused_k=_facts(seqused_k),
    )


@attention_forward.register_kernel("cpu")
def _attention_forward_cpu(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k,
                           seqused_k, max_seqlen_q, max_seqlen_k,
                           softmax_scale, causal, window_left, window_right,
                           softcap, return_lse, deterministic):
    # The same checks as on the GPU, then the reference in float32.
    _check_cpu_call(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k,
                    seqused_k, max_seqlen_q, max_seqlen_k, softmax_scale,
                    causal, window_left, window_right, softcap, return_lse)
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
                            softcap, return_lse, deterministic):
    # Shapes only (they may be symbolic): out like q with v's head_dim.
    out = q.new_empty((*q.shape[:-1], v.shape[-1]))
    if not return_lse:
        lse_shape = (0,)
    elif cu_seqlens_q is not None:
        lse_shape = (q.shape[1], q.shape[0])
    else:
        lse_shape = (q.shape[0], q.shape[2], q.shape[1])
    return out, q.new_empty(lse_shape, dtype=torch.float32)


# ---- backward -----------------------------------------------------------------
@torch.library.custom_op("flashjit::attention_backward", mutates_args=(),
                         device_types="cuda")
def attention_backward(
    dout: _Tensor, q: _Tensor, k: _Tensor, v: _Tensor, out: _Tensor, lse: _Tensor,
    alibi_slopes: Optional[_Tensor], cu_seqlens_q: Optional[_Tensor],
    cu_seqlens_k: Optional[_Tensor], seqused_k: Optional[_Tensor],
    max_seqlen_q: int, max_seqlen_k: int, softmax_scale: Optional[float],
    causal: bool, window_left: int, window_right: int, softcap: float,
    deterministic: bool,
) -> Tuple[_Tensor, _Tensor, _Tensor]:
    """(dq, dk, dv) of sum(out * dout) for attention_forward's call with the
    same options, whose out and lse (return_lse=True) it takes; dense like
    q, k, v."""
    return _launch_backward(dout, q, k, v, out, lse, alibi_slopes, cu_seqlens_q,
                            cu_seqlens_k, seqused_k, max_seqlen_q, max_seqlen_k,
                            softmax_scale, causal, window_left, window_right,
                            softcap, deterministic)


@attention_backward.register_kernel("cpu")
def _attention_backward_cpu(dout, q, k, v, out, lse, alibi_slopes, cu_seqlens_q,
                            cu_seqlens_k, seqused_k, max_seqlen_q, max_seqlen_k,
                            softmax_scale, causal, window_left, window_right,
                            softcap, deterministic):
    # The GPU's checks, then its algorithm in float32 (rounding as it does).
    dout, q, k, v, out = (_dense(t) for t in (dout, q, k, v, out))
    problem = _check_cpu_call(q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k,
                              seqused_k, max_seqlen_q, max_seqlen_k,
                              softmax_scale, causal, window_left, window_right,
                              softcap, True)
    _problem.build_backward(problem, *(_facts(t) for t in (q, k, v, out, lse, dout)),
                            deterministic=deterministic)
    grads = _reference.attention_backward(
        dout, q, k, v, out, softmax_scale=softmax_scale, causal=causal,
        window_size=(window_left, window_right), softcap=softcap,
        alibi_slopes=alibi_slopes, cu_seqlens_q=cu_seqlens_q,
        cu_seqlens_k=cu_seqlens_k, seqused_k=seqused_k)
    return tuple(g.to(q.dtype).contiguous() for g in grads)


@attention_backward.register_fake
def _attention_backward_fake(dout, q, k, v, out, lse, alibi_slopes, cu_seqlens_q,
                             cu_seqlens_k, seqused_k, max_seqlen_q, max_seqlen_k,
                             softmax_scale, causal, window_left, window_right,
                             softcap, deterministic):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


# ---- autograd -----------------------------------------------------------------
# attention_forward's inputs after q, k, v: the tensors, then the options.
_SAVED_TENSORS = 4  # alibi_slopes, cu_seqlens_q, cu_seqlens_k, seqused_k


def _setup_context(ctx, inputs, output):
    q, k, v = inputs[:3]
    tensors = inputs[3:3 + _SAVED_TENSORS]
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, out, lse, *tensors)
    (ctx.max_seqlen_q, ctx.max_seqlen_k, ctx.softmax_scale, ctx.causal,
     ctx.window_left, ctx.window_right, ctx.softcap, ctx.lse_written,
     ctx.deterministic) = inputs[3 + _SAVED_TENSORS:]


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, *tensors = ctx.saved_tensors
    options = (ctx.max_seqlen_q, ctx.max_seqlen_k, ctx.softmax_scale, ctx.causal,
               ctx.window_left, ctx.window_right, ctx.softcap)
    if not ctx.lse_written:  # the op called directly, without return_lse
        out, lse = attention_forward(q, k, v, *tensors, *options, True,
                                     ctx.deterministic)
    dq, dk, dv = attention_backward(grad_out, q, k, v, out, lse, *tensors,
                                    *options, ctx.deterministic)
    return (dq, dk, dv) + (None,) * (len(ctx.needs_input_grad) - 3)


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
    return softmax_scale, bool(causal), left, right, float(softcap), bool(deterministic)


def _needs_lse(return_lse, alibi_slopes, *tensors) -> bool:
    """LSE is written when asked for, or kept for the backward."""
    if alibi_slopes is not None and alibi_slopes.requires_grad and torch.is_grad_enabled():
        raise ValueError("alibi_slopes: flashjit does not differentiate the ALiBi "
                         "slopes; pass alibi_slopes.detach()")
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
    seqlen_q] (natural log, not differentiated). Differentiable in q, k, v;
    deterministic=True: the backward's dq without float atomics, the same
    bits on every run."""
    scale, causal, left, right, softcap, deterministic = _options(
        q, dropout_p, softmax_scale, causal, window_size, softcap,
        deterministic, return_attn_probs)
    lse = _needs_lse(return_lse, alibi_slopes, q, k, v)
    out, lse_out = attention_forward(
        q, k, v, alibi_slopes, None, None, None, 0, 0, scale, causal, left,
        right, softcap, lse, deterministic)
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
    Returns out [total_q, heads_q, head_dim_v] (and lse [heads_q, total_q]).
    Differentiable in q, k, v as flash_attn_func."""
    if block_table is not None:
        raise ValueError("block_table: paged KV caches are not supported yet")
    scale, causal, left, right, softcap, deterministic = _options(
        q, dropout_p, softmax_scale, causal, window_size, softcap,
        deterministic, return_attn_probs)
    lse = _needs_lse(return_lse, alibi_slopes, q, k, v)
    out, lse_out = attention_forward(
        q, k, v, alibi_slopes, cu_seqlens_q, cu_seqlens_k, seqused_k,
        int(max_seqlen_q), int(max_seqlen_k), scale, causal, left, right,
        softcap, lse, deterministic)
    return (out, lse_out) if return_lse else out


def prepare(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1),
            softcap=0.0, alibi_slopes=None, *, cu_seqlens_q=None,
            cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None,
            seqused_k=None, return_lse=False, backward=False,
            deterministic=False) -> None:
    """Compiles and loads the full kernel that flash_attn_func (or, with
    cu_seqlens, flash_attn_varlen_func) would launch for these tensors,
    without launching it: call before capturing a CUDA graph, or to take the
    compile out of the first call. backward=True: also the backward's
    kernels (and the forward that keeps the LSE for them), as a training
    step with these tensors and `deterministic` launches them."""
    scale, causal, left, right, softcap, deterministic = _options(
        q, 0.0, softmax_scale, causal, window_size, softcap, deterministic, False)
    varlen = cu_seqlens_q is not None
    lengths = (int(max_seqlen_q) if varlen else 0, int(max_seqlen_k) if varlen else 0)
    tensors = (alibi_slopes, cu_seqlens_q, cu_seqlens_k, seqused_k)
    options = (*lengths, scale, causal, left, right, softcap)
    out, lse = _launch(q, k, v, *tensors, *options, bool(return_lse or backward),
                       prepare_only=True)
    if backward:
        _launch_backward(out, q, k, v, out, lse, *tensors, *options,
                         deterministic, prepare_only=True)
