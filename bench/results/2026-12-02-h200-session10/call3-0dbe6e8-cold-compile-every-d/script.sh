#!/usr/bin/env bash
# Session 10, call 3 (0dbe6e8): the cold-compile bench again on a freshly
# started machine (call 2's host ran slow: D=128 none 311-431 ms against
# 239-274 ms in session 9), 3 rounds, driver cache off.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
new=/tmp/fj/bin
s="$out/summary.txt"
{ nvidia-smi --query-gpu=name,driver_version --format=csv; nproc; uptime; lscpu | grep -E "Model name|^CPU\(s\)"; "$new/flashjit" --version; } > "$s" 2>&1
export CUDA_CACHE_DISABLE=1
TIMEFORMAT=%R
for r in 1 2 3; do
  echo "== cold compile bench, round $r" >> "$s"
  rm -rf /tmp/fj/c; FLASHJIT_CACHE_DIR=/tmp/fj/c "$new/flashjit-bench-gpu" --dims 64 --seqlens 128 --cache-latency > "$out/bench$r.log" 2>&1
  grep -E "^first compile|^\| [0-9]+ \| (none|causal) \|" "$out/bench$r.log" >> "$s"
  echo "flashjit compile d=128 (generation only, wall s): $( { time $new/flashjit compile --head-dim 128 > /dev/null; } 2>&1 )" >> "$s"
done
uptime >> "$s"
cat "$s"
