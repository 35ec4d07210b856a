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
bf16, no LSE) without a mask and causal, after prepare and a warm-up, timed
two ways, each beside the C++ benchmark timed the same way (with --cli:
flashjit bench --no-lse on the same shapes). "single": each call alone
between CUDA events, median of 30, as `flashjit bench` times by default;
before each, an L2-sized write and a 1 ms GPU sleep are queued so that the
GPU is still busy when Python issues the call (else the events would time
Python's host overhead too). "back-to-back": 100 calls queued at once, the
time per call, median of 5 such runs, as `flashjit bench --back-to-back`
times (the GPU never idles: its clocks under that load); torch with CUDA
events, JAX by the wall clock to the last result (JAX has no events).
FLOPs count only the pairs the mask keeps, as flashjit bench does. The
ratios are printed last.
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


SHAPES = [(80, False), (80, True), (128, False), (128, True)]
BATCH, HEADS, SEQLEN = 4, 16, 4096  # of every shape, in every path
BACK_TO_BACK = 100
SLEEP_CYCLES = 2_000_000  # about 1 ms at the H200's 1.98 GHz


def shape_name(d, causal):
    return f"d={d} {'causal' if causal else 'none'}"


def tflops(b, h, s, d, causal, ms):
    """As flashjit bench counts them: only the pairs the mask keeps."""
    pairs = s * (s + 1) // 2 if causal else s * s
    return 4 * b * h * pairs * d / (ms * 1e-3) / 1e12


def warm_up(call, sync, seconds=0.5):
    """Calls until `seconds` have passed: the GPU's clocks settle first."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            call()
        sync()


def ratios(results):
    """Each Python number over the C++ benchmark's timed the same way."""
    t = results["tflops"]
    out = {}
    for d, causal in SHAPES:
        name = shape_name(d, causal)
        for path, how in (("torch", "single"), ("torch", "back-to-back"),
                          ("jax", "back-to-back")):
            mine, cpp = t.get(f"{path} {how} {name}"), t.get(f"C++ {how} {name}")
            if mine and cpp:
                out[f"{path} / C++, {how}, {name}"] = mine / cpp
    return out


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
        flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
        for d, causal in SHAPES:
            b, h, s = BATCH, HEADS, SEQLEN
            q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16)
                       for _ in range(3))
            from flashjit.torch import prepare

            prepare(q, k, v, causal=causal)
            call = lambda: flash_attn_func(q, k, v, causal=causal)  # noqa: E731
            warm_up(call, sync)
            start, end = torch.cuda.Event(True), torch.cuda.Event(True)
            singles = []
            for _ in range(30):
                flush.zero_()
                torch.cuda._sleep(SLEEP_CYCLES)
                start.record()
                call()
                end.record()
                end.synchronize()
                singles.append(start.elapsed_time(end))
            runs = []
            for _ in range(5):
                start.record()
                for _ in range(BACK_TO_BACK):
                    call()
                end.record()
                end.synchronize()
                runs.append(start.elapsed_time(end) / BACK_TO_BACK)
            name = shape_name(d, causal)
            record(results, "tflops", f"torch single {name}",
                   tflops(b, h, s, d, causal, statistics.median(singles)))
            record(results, "tflops", f"torch back-to-back {name}",
                   tflops(b, h, s, d, causal, statistics.median(runs)))


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
    for d, causal in SHAPES:
        b, h, s = BATCH, HEADS, SEQLEN
        q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (b, s, h, d), jnp.bfloat16)
                   for i in range(3))
        g = jax.jit(lambda q, k, v: flash_attention(q, k, v, causal=causal))
        last = [g(q, k, v)]

        def call():
            last[0] = g(q, k, v)

        warm_up(call, lambda: last[0].block_until_ready())
        runs = []
        for _ in range(5):
            last[0].block_until_ready()
            t0 = time.perf_counter()
            for _ in range(BACK_TO_BACK):
                call()
            last[0].block_until_ready()
            runs.append((time.perf_counter() - t0) * 1e3 / BACK_TO_BACK)
        record(results, "tflops", f"jax back-to-back {shape_name(d, causal)}",
               tflops(b, h, s, d, causal, statistics.median(runs)))


def cli_paths(results, cli):
    head_dims = ",".join(str(d) for d in sorted({d for d, _ in SHAPES}))
    for label, extra in (("single", ["--repeats", "50"]),
                         ("back-to-back", ["--repeats", "5", "--back-to-back",
                                           str(BACK_TO_BACK)])):
        for causal in (False, True):
            out = subprocess.run(
                [cli, "bench", "--head-dims", head_dims,
                 "--seqlens", str(SEQLEN), "--batch", str(BATCH), "--heads-q", str(HEADS),
                 "--dtype", "bf16", "--no-lse", "--warmup", "10",
                 "--json"] + extra + (["--mask", "causal"] if causal else []),
                check=True, capture_output=True, text=True).stdout
            for row in json.loads(out)["rows"]:
                record(results, "tflops",
                       f"C++ {label} d={row['head_dim_qk']} {row['mask']}", row["tflops"])


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
    results["ratios"] = ratios(results)
    for section, unit in (("overhead_us", "us per call"), ("tflops", "TFLOP/s"),
                          ("ratios", "x")):
        print(f"{section} ({unit}):")
        for name, value in results[section].items():
            print(f"  {name:45s} {value:8.3f}" if section == "ratios"
                  else f"  {name:45s} {value:8.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
