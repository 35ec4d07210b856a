#!/usr/bin/env bash
# Session 11, call 5 (e61e0f6): three more rounds of cold compiles with the
# quick form first (the driver's cache off), on a freshly started machine,
# and the quick form's own throughput next to the full kernel's.
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
shape() { echo "--head-dim $1 --batch 4 --heads-q $((2048 / $1)) --heads-kv $((2048 / $1)) --seqlen 4096 --dtype bf16 --mask $2"; }
bench() { echo -n "$* | " >> "$s"
  FLASHJIT_CACHE_DIR=/tmp/fj/cache-bench timeout 60 "$new/flashjit" bench "$@" --json 2>&1 | grep -E '"(config|tflops)"' | tr -d '\n ' >> "$s"; echo >> "$s"; }
for d in 64 100 128 192 256; do for m in none causal; do bench $(shape $d $m); bench $(shape $d $m) --quick; done; done
uptime >> "$s"
cat "$s"
