#!/usr/bin/env bash
# Session 9, call 4: 9f0fcea (= HEAD's kernels) cold compile again: the bench
# (D = 64, 80, 128 in one process) three rounds, then `flashjit run` (one
# process each, so its first compile also pays one-time initialisation) at
# other head dims of the mission, both masks, two rounds; CUDA_CACHE_DISABLE=1
# and an empty cache directory every time.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
new=/tmp/fj/bin
s="$out/summary.txt"
{ nvidia-smi --query-gpu=name,driver_version --format=csv; uptime; "$new/flashjit" --version; } > "$s" 2>&1
cold() { echo "== cold compile (bench)" >> "$s"
  rm -rf /tmp/fj/cold; CUDA_CACHE_DISABLE=1 FLASHJIT_CACHE_DIR=/tmp/fj/cold "$new/flashjit-bench-gpu" --dims 64 --seqlens 128 --cache-latency 2>&1 | grep -E "^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|$" >> "$s"; }
for r in 1 2 3; do cold; done
for r in 1 2; do
  for d in 33 72 100 160 192 256; do for m in none causal; do
    rm -rf /tmp/fj/cold
    echo -n "run d=$d $m: " >> "$s"
    CUDA_CACHE_DISABLE=1 FLASHJIT_CACHE_DIR=/tmp/fj/cold "$new/flashjit" run --head-dim $d --mask $m --batch 1 --heads-q 2 --heads-kv 2 --seqlen 128 --repeats 1 --warmup 0 2>&1 | grep -E "^kernel:" >> "$s"
  done; done
done
uptime >> "$s"
cat "$s"
