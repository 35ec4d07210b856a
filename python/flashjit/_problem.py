"""Attention arguments -> flashjit_forward_args: the one place that checks
them for the Python bindings, with messages that name the argument.

Framework neutral: flashjit.torch describes real tensors (addresses and
strides), flashjit.jax abstract values at trace time (dense, no addresses).
Layouts are flash-attn's: q [batch, seqlen_q, heads_q, head_dim], k/v
[batch, seqlen_k, heads_kv, head_dim(_v)], out like q with head_dim_v, lse
float32 [batch, heads_q, seqlen_q]; varlen packs [total, heads, head_dim]
with int32 cu_seqlens of batch + 1 entries and lse [heads_q, total_q].
The backward (build_backward) takes dout like out and writes dq, dk, dv
dense like q, k, v.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Tuple

from . import _flashjit

FP16, BF16 = 0, 1
MASK_NONE, MASK_CAUSAL, MASK_WINDOW = 0, 1, 2
BIAS_ALIBI = 2
MAX_HEAD_DIM = 256
_DTYPES = {"float16": FP16, "bfloat16": BF16}


class Tensor(NamedTuple):
    """What the checks need to know of one array."""

    shape: Tuple[int, ...]
    dtype: str  # numpy-style name: "bfloat16", "float32", "int32", ...
    strides: Optional[Tuple[int, ...]] = None  # elements; None: dense
    device: object = None  # compared between arguments; None: not checked


class Problem(NamedTuple):
    """A checked call: its C arguments (pointers unset) and the shapes of
    the outputs it writes (dense row-major, as args' strides say)."""

    args: _flashjit.ForwardArgs
    out_shape: Tuple[int, ...]
    lse_shape: Tuple[int, ...]
    varlen: bool


def _dense_strides(shape: Sequence[int]) -> Tuple[int, ...]:
    strides, step = [], 1
    for extent in reversed(shape):
        strides.append(step)
        step *= extent
    return tuple(reversed(strides))


def row_strides(t: Tensor, varlen: bool) -> Tuple[int, int, int]:
    """flashjit's (batch, head, row) strides of t [..., rows, heads, dim]
    (varlen: [total, heads, dim], no batch stride)."""
    s = tuple(t.strides) if t.strides is not None else _dense_strides(t.shape)
    return (0, s[-2], s[-3]) if varlen else (s[0], s[2], s[1])


def mask_of(causal: bool, window_size) -> Tuple[int, int, int]:
    """flash-attn's (causal, window_size) as flashjit's (mask, left, right)."""
    try:
        left, right = (int(w) for w in window_size)
    except (TypeError, ValueError):
        raise ValueError(
            f"window_size: expected (left, right), -1 for unbounded, got {window_size!r}"
        ) from None
    for name, w in (("left", left), ("right", right)):
        if w < -1:
            raise ValueError(
                f"window_size: {name} must be >= 0, or -1 for unbounded, got {w}"
            )
    if causal:
        right = 0
    if left == -1 and right == -1:
        return MASK_NONE, -1, -1
    if causal and left == -1:
        return MASK_CAUSAL, -1, -1
    return MASK_WINDOW, left, right


def _describe(t: Tensor) -> str:
    return f"shape {tuple(t.shape)} ({t.dtype})"


def _check_rank(name: str, t: Tensor, dims: Sequence[str]) -> None:
    if len(t.shape) != len(dims):
        raise ValueError(
            f"{name}: expected {len(dims)} dimensions ({', '.join(dims)}), "
            f"got {_describe(t)}"
        )


def _check_lengths(name: str, t: Optional[Tensor], count: int, device) -> None:
    if t is None:
        return
    if t.dtype != "int32" or tuple(t.shape) != (count,):
        raise ValueError(f"{name}: expected int32 of shape ({count},), got {_describe(t)}")
    if t.strides is not None and count > 1 and t.strides[0] != 1:
        raise ValueError(f"{name}: must be contiguous, got strides {tuple(t.strides)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name}: on {t.device}, q on {device}")


def build(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size=(-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Optional[Tensor] = None,
    return_lse: bool = False,
    cu_seqlens_q: Optional[Tensor] = None,
    cu_seqlens_k: Optional[Tensor] = None,
    max_seqlen_q: Optional[int] = None,
    max_seqlen_k: Optional[int] = None,
    seqused_k: Optional[Tensor] = None,
) -> Problem:
    """Checks a call and returns its C arguments; the caller sets the
    pointers (q, k, v, o, lse, alibi_slopes, cu_seqlens_*, key_lengths)."""
    varlen = cu_seqlens_q is not None or cu_seqlens_k is not None
    if varlen and (cu_seqlens_q is None or cu_seqlens_k is None):
        raise ValueError("cu_seqlens_q and cu_seqlens_k: give both (varlen) or neither")
    if q.dtype not in _DTYPES:
        raise ValueError(f"q: expected float16 or bfloat16, got {q.dtype}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise ValueError(f"{name}: dtype {t.dtype} differs from q's {q.dtype}")
        if q.device is not None and t.device != q.device:
            raise ValueError(f"{name}: on {t.device}, q on {q.device}")
    if varlen:
        names = ("total_q", "heads_q", "head_dim")
        _check_rank("q", q, names)
        _check_rank("k", k, ("total_k", "heads_kv", "head_dim"))
        _check_rank("v", v, ("total_k", "heads_kv", "head_dim_v"))
    else:
        _check_rank("q", q, ("batch", "seqlen_q", "heads_q", "head_dim"))
        _check_rank("k", k, ("batch", "seqlen_k", "heads_kv", "head_dim"))
        _check_rank("v", v, ("batch", "seqlen_k", "heads_kv", "head_dim_v"))
        if k.shape[0] != q.shape[0] or v.shape[0] != q.shape[0]:
            raise ValueError(
                f"k, v: batch {k.shape[0]}, {v.shape[0]} must equal q's {q.shape[0]}"
            )
    rows_q, heads, dqk = q.shape[-3:]
    rows_k, heads_kv, dk = k.shape[-3:]
    if tuple(v.shape[-3:-1]) != (rows_k, heads_kv):
        raise ValueError(
            f"v: {_describe(v)} must match k's {tuple(k.shape)} but in its last dimension"
        )
    dv = v.shape[-1]
    for name, d in (("q", dqk), ("v", dv)):
        if not 1 <= d <= MAX_HEAD_DIM:
            raise ValueError(f"{name}: head_dim must be in [1, {MAX_HEAD_DIM}], got {d}")
    if dk != dqk:
        raise ValueError(f"k: head_dim {dk} differs from q's {dqk}")
    if heads_kv < 1 or heads % heads_kv:
        raise ValueError(f"k: heads_kv ({heads_kv}) must divide q's heads ({heads})")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.strides is not None and t.shape[-1] > 1 and t.strides[-1] != 1:
            raise ValueError(
                f"{name}: the last dimension must be contiguous (stride 1), "
                f"got strides {tuple(t.strides)}"
            )
    mask, left, right = mask_of(causal, window_size)
    scale = float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(dqk)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"softmax_scale: must be finite and > 0, got {softmax_scale}")
    softcap = float(softcap)
    if not math.isfinite(softcap) or softcap < 0:
        raise ValueError(f"softcap: must be finite and >= 0 (0: off), got {softcap}")

    a = _flashjit.ForwardArgs()
    a.dtype = _DTYPES[q.dtype]
    a.mask = mask
    a.window_left, a.window_right = left, right
    a.softmax_scale = scale
    a.softcap = softcap
    a.heads_q, a.heads_kv = heads, heads_kv
    a.head_dim_qk, a.head_dim_v = dqk, dv

    if varlen:
        batch = cu_seqlens_q.shape[0] - 1 if len(cu_seqlens_q.shape) == 1 else 0
        if batch < 1:
            raise ValueError(
                f"cu_seqlens_q: expected int32 of shape (batch + 1,), got {_describe(cu_seqlens_q)}"
            )
        _check_lengths("cu_seqlens_q", cu_seqlens_q, batch + 1, q.device)
        _check_lengths("cu_seqlens_k", cu_seqlens_k, batch + 1, q.device)
        for name, value in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int (the longest sequence), got {value!r}")
        a.seqlen_q, a.seqlen_k = max_seqlen_q, max_seqlen_k
        a.total_q, a.total_k = rows_q, rows_k
        out_shape = (rows_q, heads, dv)
        lse_shape = (heads, rows_q)
        a.lse_strides = (0, rows_q)
    else:
        batch = q.shape[0]
        a.seqlen_q, a.seqlen_k = rows_q, rows_k
        out_shape = (batch, rows_q, heads, dv)
        lse_shape = (batch, heads, rows_q)
        a.lse_strides = (heads * rows_q, rows_q)
    a.batch = batch
    _check_lengths("seqused_k", seqused_k, batch, q.device)
    for field, t in (("q_strides", q), ("k_strides", k), ("v_strides", v)):
        setattr(a, field, row_strides(t, varlen))
    a.o_strides = row_strides(Tensor(out_shape, q.dtype), varlen)

    if alibi_slopes is not None:
        s = alibi_slopes
        if s.dtype != "float32" or tuple(s.shape) not in ((heads,), (batch, heads)):
            raise ValueError(
                f"alibi_slopes: expected float32 of shape ({heads},) or ({batch}, {heads}), "
                f"got {_describe(s)}"
            )
        strides = s.strides if s.strides is not None else _dense_strides(s.shape)
        if strides[-1] != 1 and heads > 1:
            raise ValueError(f"alibi_slopes: the heads must be contiguous, got strides {tuple(strides)}")
        if q.device is not None and s.device != q.device:
            raise ValueError(f"alibi_slopes: on {s.device}, q on {q.device}")
        a.bias_mode = BIAS_ALIBI
        a.alibi_batch_stride = strides[0] if len(s.shape) == 2 and batch > 1 else 0
    if varlen or seqused_k is not None:
        # Device values, trusted unread: no synchronisation (flash-attn's contract).
        a.trust_device_lengths = 1
    return Problem(a, out_shape, lse_shape if return_lse else (0,), varlen)


def build_backward(
    problem: Problem,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    dout: Tensor,
    *,
    deterministic: bool = False,
) -> _flashjit.BackwardArgs:
    """The backward of a forward `problem` (built with return_lse=True) for
    the forward's out and lse and the gradient dout of out: its C arguments,
    pointers unset; dq, dk, dv are to be dense like q, k, v."""
    if problem.lse_shape == (0,):
        raise ValueError("lse: the backward needs the forward's LSE (build with return_lse=True)")
    for name, t, shape, dtype in (
        ("out", out, problem.out_shape, q.dtype),
        ("dout", dout, problem.out_shape, q.dtype),
        ("lse", lse, problem.lse_shape, "float32"),
    ):
        if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
            raise ValueError(f"{name}: expected {dtype} of shape {tuple(shape)}, got {_describe(t)}")
        if t.strides is not None and shape[-1] > 1 and t.strides[-1] != 1:
            raise ValueError(f"{name}: the last dimension must be contiguous (stride 1), "
                             f"got strides {tuple(t.strides)}")
        if q.device is not None and t.device != q.device:
            raise ValueError(f"{name}: on {t.device}, q on {q.device}")
    varlen = problem.varlen
    a = problem.args.copy()
    a.o_strides = row_strides(out, varlen)
    s = tuple(lse.strides) if lse.strides is not None else _dense_strides(lse.shape)
    a.lse_strides = (0, s[0]) if varlen else (s[0], s[1])
    b = _flashjit.BackwardArgs(a)
    b.dout_strides = row_strides(dout, varlen)
    for field, t in (("dq_strides", q), ("dk_strides", k), ("dv_strides", v)):
        setattr(b, field, row_strides(Tensor(t.shape, t.dtype), varlen))
    b.deterministic = int(bool(deterministic))
    return b
