"""Per-call overhead and throughput of flashjit's Python paths (needs a GPU).

    python bench/python_overhead.py [--cli build/bin/flashjit] [--json out.json]

Overhead: a tiny problem (batch 1, 1 head, 128 tokens, head_dim 64, bf16)
called N times back to back with one synchronize at the end: the host
microseconds per call, since the kernel itself takes a few microseconds.
Paths: flashjit.torch's
flash_attn_func and its custom op, torch SDPA on the same tensors
(transposed views, as flash-attn-style code calls it), and a jitted
flashjit.jax.flash_attention.

Throughput: TFLOP/s at head_dim 80 and 128 (batch 4, 16 heads, 4096 tokens,
bf16, no LSE), without a mask and causal: 20 calls back to back after
prepare and warm-up, timed with CUDA events from torch and by the wall
clock to the last result from JAX (median of 5 such runs); with --cli, the
C++ benchmark (flashjit bench --no-lse) on the same shapes. FLOPs count only
the pairs the mask keeps, as flashjit bench does.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time


def record(results, section, name, value):
    """Stores a result and prints it at once: a run cut short (a timeout)
    still reports what it measured."""
    results[section][name] = value
    print(f"{section}: {name}: {value:.1f}", flush=True)


def flops(b, h, s, d, causal):
    pairs = s * (s + 1) // 2 if causal else s * s
    return 4 * b * h * pairs * d


def host_us_per_call(call, sync, n=2000):
    for _ in range(50):
        call()
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        call()
    sync()
    return (time.perf_counter() - t0) / n * 1e6


def torch_paths(results):
    import torch
    import torch.nn.functional as F

    from flashjit.torch import attention_forward, flash_attn_func

    q, k, v = (torch.randn(1, 128, 1, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    sync = torch.cuda.synchronize
    paths = {
        "flashjit.torch.flash_attn_func": lambda: flash_attn_func(q, k, v),
        "flashjit::attention_forward (op)": lambda: attention_forward(
            q, k, v, None, None, None, None, 0, 0, None, False, -1, -1, 0.0, False, False),
        "torch SDPA": lambda: F.scaled_dot_product_attention(qt, kt, vt),
    }
    with torch.no_grad():
        for name, call in paths.items():
            record(results, "overhead_us", name, host_us_per_call(call, sync))
        for d in (80, 128):
            for causal in (False, True):
                b, h, s = 4, 16, 4096
                q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16)
                           for _ in range(3))
                from flashjit.torch import prepare

                prepare(q, k, v, causal=causal)
                start, end = torch.cuda.Event(True), torch.cuda.Event(True)
                flash_attn_func(q, k, v, causal=causal)
                times = []
                for _ in range(5):
                    start.record()
                    for _ in range(20):
                        flash_attn_func(q, k, v, causal=causal)
                    end.record()
                    end.synchronize()
                    times.append(start.elapsed_time(end) / 20)
                ms = statistics.median(times)
                record(results, "tflops", f"torch d={d} {'causal' if causal else 'none'}",
                       flops(b, h, s, d, causal) / (ms * 1e-3) / 1e12)


def jax_paths(results):
    import jax
    import jax.numpy as jnp

    from flashjit.jax import flash_attention

    key = jax.random.PRNGKey(0)
    q, k, v = (jax.random.normal(key, (1, 128, 1, 64), jnp.bfloat16) for _ in range(3))
    f = jax.jit(flash_attention)
    out = [None]

    def call():
        out[0] = f(q, k, v)

    record(results, "overhead_us", "flashjit.jax.flash_attention (jit)",
           host_us_per_call(call, lambda: out[0].block_until_ready()))
    for d in (80, 128):
        for causal in (False, True):
            b, h, s = 4, 16, 4096
            q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (b, s, h, d), jnp.bfloat16)
                       for i in range(3))
            g = jax.jit(lambda q, k, v: flash_attention(q, k, v, causal=causal))
            g(q, k, v).block_until_ready()
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(20):
                    r = g(q, k, v)
                r.block_until_ready()
                times.append((time.perf_counter() - t0) * 1e3 / 20)
            ms = statistics.median(times)
            record(results, "tflops", f"jax d={d} {'causal' if causal else 'none'}",
                   flops(b, h, s, d, causal) / (ms * 1e-3) / 1e12)


def cli_paths(results, cli):
    for causal in (False, True):
        out = subprocess.run(
            [cli, "bench", "--head-dims", "80,128", "--seqlens", "4096", "--batch", "4",
             "--heads-q", "16", "--dtype", "bf16", "--no-lse", "--json"]
            + (["--mask", "causal"] if causal else []),
            check=True, capture_output=True, text=True).stdout
        for row in json.loads(out)["rows"]:
            record(results, "tflops", f"C++ d={row['head_dim_qk']} {row['mask']}",
                   row["tflops"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cli", help="the flashjit CLI, for the C++ benchmark's numbers")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    results = {"overhead_us": {}, "tflops": {}}
    for name, run in (("torch", torch_paths), ("jax", jax_paths)):
        try:
            run(results)
        except ImportError as e:
            print(f"{name}: skipped ({e})", file=sys.stderr)
    if args.cli:
        cli_paths(results, args.cli)
    for section, unit in (("overhead_us", "us per call"), ("tflops", "TFLOP/s")):
        print(f"{section} ({unit}):")
        for name, value in results[section].items():
            print(f"  {name:45s} {value:8.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
