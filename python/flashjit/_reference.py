"""Attention in plain PyTorch math, with flashjit's semantics: the kernel of
flashjit's op on CPU tensors (so that torch.library.opcheck and
torch.compile run without a GPU) and the float64 oracle of the GPU tests.

Scores x = scale * q.k; with softcap, x = softcap * tanh(x / softcap); then
ALiBi adds -slope * |i + sk - sq - j|; then masked pairs are -inf (causal and
window aligned to the bottom-right corner, keys past seqused_k masked). A
row with every key masked writes 0 and lse = -inf. GQA: query head h reads
K/V head h // (heads_q // heads_kv).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch


def _one_sequence(q, k, v, *, scale, mask, left, right, softcap, slopes, keys):
    """q [sq, h, d], k [sk, hkv, d], v [sk, hkv, dv] in the compute dtype;
    `keys`: the real keys (<= sk). Returns out [sq, h, dv], lse [h, sq]."""
    sq, heads, _ = q.shape
    sk, heads_kv, _ = k.shape
    group = heads // heads_kv
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    s = torch.einsum("qhd,khd->hqk", q, k) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
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
    s = s.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)  # [h, sq]; -inf where nothing is seen
    p = torch.exp(s - lse.unsqueeze(-1)).nan_to_num(0.0)
    out = torch.einsum("hqk,khd->qhd", p, v)
    return out, lse


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
    from ._problem import mask_of

    mask_code, left, right = mask_of(causal, window_size)
    mask = {0: "none", 1: "causal", 2: "window"}[mask_code]
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    q, k, v = (t.to(compute_dtype) for t in (q, k, v))
    varlen = cu_seqlens_q is not None
    if varlen:
        cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
        spans = [((cq[b], cq[b + 1]), (ck[b], ck[b + 1])) for b in range(len(cq) - 1)]
    else:
        spans = [(None, None)] * q.shape[0]
    used = seqused_k.tolist() if seqused_k is not None else None
    outs, lses = [], []
    for b, (qs, ks) in enumerate(spans):
        qb = q[qs[0] : qs[1]] if varlen else q[b]
        kb = k[ks[0] : ks[1]] if varlen else k[b]
        vb = v[ks[0] : ks[1]] if varlen else v[b]
        slopes = None
        if alibi_slopes is not None:
            slopes = alibi_slopes[b] if alibi_slopes.dim() == 2 else alibi_slopes
        out, lse = _one_sequence(
            qb, kb, vb, scale=scale, mask=mask, left=left, right=right,
            softcap=softcap, slopes=slopes,
            keys=used[b] if used is not None else kb.shape[0],
        )
        outs.append(out)
        lses.append(lse)
    if varlen:
        return torch.cat(outs, dim=0), torch.cat(lses, dim=1)
    return torch.stack(outs), torch.stack(lses)
