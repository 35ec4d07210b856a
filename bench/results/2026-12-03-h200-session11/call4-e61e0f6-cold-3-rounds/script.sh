#!/usr/bin/env bash
# Session 11, call 4 (e61e0f6): three more rounds of cold compiles with the
# quick form first (the driver's cache off), on the loan of call 3.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
new=/tmp/fj/bin
s="$out/summary.txt"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv; nproc; uptime; "$new/flashjit" --version; } > "$s" 2>&1
for r in 1 2 3; do
  echo "== cold compile bench, round $r" >> "$s"
  rm -rf /tmp/fj/c; CUDA_CACHE_DISABLE=1 FLASHJIT_CACHE_DIR=/tmp/fj/c timeout 100 "$new/flashjit-bench-gpu" --dims 64 --seqlens 128 --cache-latency > "$out/bench$r.log" 2>&1
  grep -E "^first|^\| [0-9]+ \| (none|causal) \||error|die" "$out/bench$r.log" >> "$s"
done
uptime >> "$s"
cat "$s"
