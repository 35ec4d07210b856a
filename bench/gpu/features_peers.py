"""Issue 4 evidence: flashjit's forward features next to PyTorch SDPA and
FlexAttention on the same shapes, in one run on the lent GPU.

Modes at S = 4096, bf16, B = 4, H = 2048 / D (peers_bench.py's shapes):
none, causal, window 512 (left 512, right 0: a causal sliding window), bias
(a [1, H, S, S] bf16 tensor), GQA 4:1, varlen (8 packed sequences). TFLOP/s
count only the (query, key) pairs the mask keeps. flashjit is timed by
`flashjit run` (CUDA events, median); peers by triton's do_bench (median).

  FLASHJIT=/path/to/flashjit DIMS=128,80 python3 features_peers.py
"""
import json, os, re, subprocess, sys
import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
import triton.testing as tt

dev = "cuda"
OUT = os.environ.get("OUT", "/tmp")
FLASHJIT = os.environ.get("FLASHJIT", "flashjit")
S, B, WINDOW = 4096, 4, 512
VARLEN = [4096, 1000, 3000, 512, 2048, 4096, 100, 2500]

try:
    from torch.nn.attention.flex_attention import flex_attention, create_block_mask
    import torch._dynamo
    torch._dynamo.config.cache_size_limit = 1024
    flex = torch.compile(flex_attention, dynamic=False)
except Exception as e:  # noqa: BLE001
    flex = None
    print("flex unavailable:", e)


def bench(fn):
    return tt.do_bench(fn, warmup=25, rep=100, return_mode="median")


def pairs(mode, lengths):
    """(query, key) pairs the mask keeps, summed over sequences."""
    total = 0
    for n in lengths:
        if mode in ("causal",):
            total += n * (n + 1) // 2
        elif mode == "window":
            total += sum(min(i + 1, WINDOW + 1) for i in range(n))
        else:
            total += n * n
    return total


def flashjit_run(D, H, mode):
    cmd = [FLASHJIT, "run", "--dtype", "bf16", "--head-dim", str(D),
           "--heads-q", str(H), "--heads-kv", str(H // 4 if mode == "gqa" else H),
           "--warmup", "10", "--repeats", "30"]
    if mode == "varlen":
        cmd += ["--seqlens-q", ",".join(map(str, VARLEN))]
    else:
        cmd += ["--batch", str(B), "--seqlen", str(S)]
    cmd += {"causal": ["--mask", "causal"],
            "window": ["--mask", "window", "--window-left", str(WINDOW), "--window-right", "0"],
            "bias": ["--bias", "tensor", "--bias-shape", f"1,{H}"]}.get(mode, [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    text = out.stdout + out.stderr
    m = re.search(r"time:\s+([0-9.]+) ms median.*?([0-9.]+) TFLOP/s", text)
    cfg = re.search(r"config:\s+(.*?) threads", text)
    if out.returncode != 0 or not m:
        return None, None, text.strip().splitlines()[-1][:160] if text.strip() else "no output"
    return float(m.group(1)), float(m.group(2)), cfg.group(1) if cfg else ""


def peers(D, H, mode):
    """TFLOP/s of each peer that supports the mode (None otherwise)."""
    res = {}
    hk = H // 4 if mode == "gqa" else H
    if mode == "varlen":
        lengths = VARLEN
        total = sum(lengths)
        q = torch.randn(total, H, D, device=dev, dtype=torch.bfloat16)
        k, v = torch.randn_like(q), torch.randn_like(q)
        flops = 4 * H * D * pairs("none", lengths)
        offsets = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), device=dev)
        try:  # FlashAttention-2 through nested jagged tensors
            qn, kn, vn = (torch.nested.nested_tensor_from_jagged(x, offsets).transpose(1, 2)
                          for x in (q, k, v))
            def fn():
                with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                    return F.scaled_dot_product_attention(qn, kn, vn)
            fn(); torch.cuda.synchronize()
            res["fa2"] = flops / bench(fn) / 1e9
        except Exception as e:  # noqa: BLE001
            res["fa2_why"] = str(e).splitlines()[0][:100]
        if flex is not None:
            try:  # document mask over the packed sequence
                doc = torch.repeat_interleave(torch.arange(len(lengths), device=dev),
                                              torch.tensor(lengths, device=dev))
                bm = create_block_mask(lambda b, h, qi, ki: doc[qi] == doc[ki],
                                       None, None, total, total, device=dev)
                qf, kf, vf = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))
                fn = lambda: flex(qf, kf, vf, block_mask=bm)
                fn(); torch.cuda.synchronize()
                res["flex"] = flops / bench(fn) / 1e9
            except Exception as e:  # noqa: BLE001
                res["flex_why"] = str(e).splitlines()[0][:100]
        return res
    q = torch.randn(B, H, S, D, device=dev, dtype=torch.bfloat16)
    k = torch.randn(B, hk, S, D, device=dev, dtype=torch.bfloat16)
    v = torch.randn(B, hk, S, D, device=dev, dtype=torch.bfloat16)
    flops = 4 * B * H * D * pairs(mode, [S])
    kwargs, mask_mod, score_mod = {}, None, None
    if mode == "causal":
        kwargs["is_causal"] = True
        mask_mod = lambda b, h, qi, ki: qi >= ki
    elif mode == "window":
        i = torch.arange(S, device=dev)
        kwargs["attn_mask"] = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] <= WINDOW)
        mask_mod = lambda b, h, qi, ki: (qi >= ki) & (qi - ki <= WINDOW)
    elif mode == "bias":
        bias = torch.randn(1, H, S, S, device=dev, dtype=torch.bfloat16)
        kwargs["attn_mask"] = bias
        score_mod = lambda s, b, h, qi, ki: s + bias[0, h, qi, ki]
    elif mode == "gqa":
        kwargs["enable_gqa"] = True
    for name, be in [("fa2", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                     ("mem_eff", SDPBackend.EFFICIENT_ATTENTION)]:
        try:
            def fn(be=be):
                with sdpa_kernel([be]):
                    return F.scaled_dot_product_attention(q, k, v, **kwargs)
            fn(); torch.cuda.synchronize()
            res[name] = flops / bench(fn) / 1e9
        except Exception as e:  # noqa: BLE001
            res[name + "_why"] = str(e).splitlines()[0][:100]
    if flex is not None:
        try:
            bm = create_block_mask(mask_mod, None, None, S, S, device=dev) if mask_mod else None
            fn = lambda: flex(q, k, v, block_mask=bm, score_mod=score_mod,
                              enable_gqa=(mode == "gqa"))
            fn(); torch.cuda.synchronize()
            res["flex"] = flops / bench(fn) / 1e9
        except Exception as e:  # noqa: BLE001
            res["flex_why"] = str(e).splitlines()[0][:100]
    return res


def main():
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    dims = [int(x) for x in os.environ.get("DIMS", "128,80").split(",")]
    rows = []
    for D in dims:
        for mode in ("none", "causal", "window", "bias", "gqa", "varlen"):
            if mode == "gqa":  # 4:1 needs heads_q divisible by 4
                H = 2048 // D // 4 * 4
            else:
                H = 2048 // D
            ms, tf, cfg = flashjit_run(D, H, mode)
            row = dict(D=D, H=H, mode=mode, flashjit=tf, flashjit_ms=ms, config=cfg)
            row.update(peers(D, H, mode))
            torch.cuda.empty_cache()
            rows.append(row)
            print(json.dumps(row), flush=True)
    with open(os.path.join(OUT, "features.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print("\n  D mode    | flashjit    fa2  cudnn mem_eff   flex | vs best peer  (TFLOP/s, unmasked work)")
    for r in rows:
        f = lambda k: f"{r[k]:6.0f}" if r.get(k) else "     -"
        best = max([r[k] for k in ("fa2", "cudnn", "mem_eff", "flex") if r.get(k)] or [0])
        ratio = f"{r['flashjit'] / best:5.2f}" if best and r.get("flashjit") else "    -"
        print(f"{r['D']:3d} {r['mode']:7s} | {f('flashjit')}   {f('fa2')} {f('cudnn')} {f('mem_eff')} {f('flex')} | {ratio}")
    by = {(r["D"], r["mode"]): r for r in rows}
    for D in dims:
        n, c = by.get((D, "none")), by.get((D, "causal"))
        w = by.get((D, "window"))
        if n and c and n.get("flashjit") and c.get("flashjit"):
            print(f"D={D}: causal / non-causal (unmasked work) = {c['flashjit'] / n['flashjit']:.2f}"
                  + (f", window / non-causal = {w['flashjit'] / n['flashjit']:.2f}" if w and w.get("flashjit") else ""))


if __name__ == "__main__":
    main()
