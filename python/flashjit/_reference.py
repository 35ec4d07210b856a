"""Attention in plain PyTorch math, with flashjit's semantics: the kernels of
flashjit's ops on CPU tensors (so that torch.library.opcheck and
torch.compile run without a GPU) and the float64 oracle of the GPU tests
(its gradients by torch autograd; attention_backward writes the backward
out, as the GPU computes it, for the float32 yardstick of the 2x rule).

Scores x = scale * q.k; with softcap, x = softcap * tanh(x / softcap); then
ALiBi adds -slope * |i + sk - sq - j|; then masked pairs are -inf (causal and
window aligned to the bottom-right corner, keys past seqused_k masked). A
row with every key masked writes 0 and lse = -inf. GQA: query head h reads
K/V head h // (heads_q // heads_kv).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch


def _scores(q, k, *, scale, mask, left, right, softcap, slopes, keys):
    """Scores [h, sq, sk] after softcap and ALiBi, -inf where masked, and
    tanh(x / softcap) (None without softcap). q [sq, h, d], k [sk, h, d]
    (K/V heads already repeated for GQA)."""
    sq, heads, _ = q.shape
    sk = k.shape[0]
    s = torch.einsum("qhd,khd->hqk", q, k) * scale
    t = None
    if softcap > 0:
        t = torch.tanh(s / softcap)
        s = softcap * t
    i = torch.arange(sq, device=q.device).view(sq, 1)
    j = torch.arange(sk, device=q.device).view(1, sk)
    diag = i + keys - sq  # bottom-right aligned, on the real keys
    if slopes is not None:
        s = s - slopes.to(s.dtype).view(heads, 1, 1) * (diag - j).abs()
    visible = j < keys
    if mask == "causal":
        visible = visible & (j <= diag)
    elif mask == "window":
        if left >= 0:
            visible = visible & (j >= diag - left)
        if right >= 0:
            visible = visible & (j <= diag + right)
    return s.masked_fill(~visible, float("-inf")), t


def _softmax(s, round_to=None):
    """(P, LSE [h, sq], the exponentials rounded for P V) of scores s: P = 0
    and LSE = -inf on a row without keys, with gradients that stay finite
    there (torch.logsumexp's would be NaN)."""
    if s.shape[-1]:
        m = s.amax(dim=-1, keepdim=True).detach()
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    else:  # a sequence without keys
        m = s.new_zeros(s.shape[:-1] + (1,))
    e = torch.exp(s - m)
    total = e.sum(dim=-1, keepdim=True)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    lse = (m + torch.log(total)).squeeze(-1)
    e_pv = e if round_to is None else e.to(round_to).to(e.dtype)
    return e / safe, lse, e_pv / safe


def _one_sequence(q, k, v, *, scale, mask, left, right, softcap, slopes, keys):
    """q [sq, h, d], k [sk, hkv, d], v [sk, hkv, dv] in the compute dtype;
    `keys`: the real keys (<= sk). Returns out [sq, h, dv], lse [h, sq]."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    s, _ = _scores(q, k, scale=scale, mask=mask, left=left, right=right,
                   softcap=softcap, slopes=slopes, keys=keys)
    p, lse, _ = _softmax(s)
    out = torch.einsum("hqk,khd->qhd", p, v)
    return out, lse


def _one_sequence_backward(dout, q, k, v, out, *, scale, mask, left, right,
                           softcap, slopes, keys, round_to):
    """The gradients (dq, dk, dv) of sum(out * dout) for one sequence, as
    the GPU computes them: P recomputed, D = rowsum(dout * out), dS = P (dP
    - D) times softcap's 1 - tanh^2, dK and dV summed over the GQA group.
    round_to: round P, O, dS and the gradients to that dtype where the GPU
    kernel does (the float32 yardstick); None: no rounding. out None:
    recomputed (rounded likewise)."""
    rnd = (lambda x: x) if round_to is None else (lambda x: x.to(round_to).to(x.dtype))
    heads, heads_kv = q.shape[1], k.shape[1]
    group = heads // heads_kv
    kr = k.repeat_interleave(group, dim=1)
    vr = v.repeat_interleave(group, dim=1)
    s, t = _scores(q, kr, scale=scale, mask=mask, left=left, right=right,
                   softcap=softcap, slopes=slopes, keys=keys)
    p, _, p_pv = _softmax(s, round_to)
    if out is None:
        out = rnd(torch.einsum("hqk,khd->qhd", p_pv, vr))
    d = (dout * out).sum(dim=-1).transpose(0, 1).unsqueeze(-1)  # [h, sq, 1]
    dp = torch.einsum("qhd,khd->hqk", dout, vr)
    ds = p * (dp - d)
    if t is not None:
        ds = ds * (1 - t * t)
    p, ds = rnd(p), rnd(ds)
    dq = rnd(scale * torch.einsum("hqk,khd->qhd", ds, kr))
    sk = k.shape[0]
    dk = torch.einsum("hqk,qhd->khd", ds, q).reshape(sk, heads_kv, group, q.shape[-1]).sum(2)
    dv = torch.einsum("hqk,qhd->khd", p, dout).reshape(sk, heads_kv, group, dout.shape[-1]).sum(2)
    return dq, rnd(scale * dk), rnd(dv)


def _sequences(q, k, cu_seqlens_q, cu_seqlens_k, seqused_k, alibi_slopes):
    """Per sequence b: (query rows, key rows, real keys, ALiBi slopes); rows
    are slices of the packed (varlen) or batch index tensors."""
    if cu_seqlens_q is not None:
        cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
        spans = [(slice(cq[b], cq[b + 1]), slice(ck[b], ck[b + 1]))
                 for b in range(len(cq) - 1)]
    else:
        spans = [(b, b) for b in range(q.shape[0])]
    used = seqused_k.tolist() if seqused_k is not None else None
    for b, (qs, ks) in enumerate(spans):
        keys = k[ks].shape[0] if used is None else used[b]
        slopes = None
        if alibi_slopes is not None:
            slopes = alibi_slopes[b] if alibi_slopes.dim() == 2 else alibi_slopes
        yield qs, ks, keys, slopes


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size=(-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Optional[torch.Tensor] = None,
    cu_seqlens_q: Optional[torch.Tensor] = None,
    cu_seqlens_k: Optional[torch.Tensor] = None,
    seqused_k: Optional[torch.Tensor] = None,
    compute_dtype: torch.dtype = torch.float64,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) in compute_dtype, flash-attn layouts: dense q [b, sq, h,
    d] -> out [b, sq, h, dv], lse [b, h, sq]; varlen q [total_q, h, d] ->
    out [total_q, h, dv], lse [h, total_q]."""
    mask, left, right, scale = _options(q, softmax_scale, causal, window_size)
    q, k, v = (t.to(compute_dtype) for t in (q, k, v))
    outs, lses = [], []
    for qs, ks, keys, slopes in _sequences(q, k, cu_seqlens_q, cu_seqlens_k,
                                           seqused_k, alibi_slopes):
        out, lse = _one_sequence(
            q[qs], k[ks], v[ks], scale=scale, mask=mask, left=left,
            right=right, softcap=softcap, slopes=slopes, keys=keys)
        outs.append(out)
        lses.append(lse)
    if cu_seqlens_q is not None:
        return torch.cat(outs, dim=0), torch.cat(lses, dim=1)
    return torch.stack(outs), torch.stack(lses)


def attention_backward(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: Optional[torch.Tensor] = None,
    *,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size=(-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Optional[torch.Tensor] = None,
    cu_seqlens_q: Optional[torch.Tensor] = None,
    cu_seqlens_k: Optional[torch.Tensor] = None,
    seqused_k: Optional[torch.Tensor] = None,
    compute_dtype: torch.dtype = torch.float32,
    gpu_rounding: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of sum(out * dout) in compute_dtype, in the layouts of
    attention(): the backward of flashjit's kernels written out (P
    recomputed; D = rowsum(dout * out) with the given forward out, or the
    recomputed one when out is None). gpu_rounding: P, O, dS and the
    gradients rounded to q's dtype where the GPU kernel rounds them (the
    float32 yardstick of the 2x rule, and the op's CPU kernel)."""
    mask, left, right, scale = _options(q, softmax_scale, causal, window_size)
    round_to = q.dtype if gpu_rounding else None
    dout, q, k, v = (t.to(compute_dtype) for t in (dout, q, k, v))
    if out is not None:
        out = out.to(compute_dtype)
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for qs, ks, keys, slopes in _sequences(q, k, cu_seqlens_q, cu_seqlens_k,
                                           seqused_k, alibi_slopes):
        dq[qs], dk[ks], dv[ks] = _one_sequence_backward(
            dout[qs], q[qs], k[ks], v[ks], None if out is None else out[qs],
            scale=scale, mask=mask, left=left, right=right, softcap=softcap,
            slopes=slopes, keys=keys, round_to=round_to)
    return dq, dk, dv


def _options(q, softmax_scale, causal, window_size):
    """(mask name, left, right, scale) of a call's options."""
    from ._problem import mask_of

    mask_code, left, right = mask_of(causal, window_size)
    mask = {0: "none", 1: "causal", 2: "window"}[mask_code]
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    return mask, left, right, scale
