#!/usr/bin/env bash
# Session 9, call 3: why the cold compile did not follow the instruction
# counts. ptxas standalone on the PTX of both binaries (made here by
# 9f0fcea "new" and 3dee048 "base"), interleaved, 8 rounds; then the cold
# compile bench 6 rounds with alternating order.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
new=/tmp/fj/bin; base=/tmp/fj/base
s="$out/summary.txt"
{ nvidia-smi --query-gpu=name,driver_version --format=csv; nproc; uptime; lscpu | grep -E "Model name|MHz|^CPU\(s\)"; ptxas --version | tail -1; } > "$s" 2>&1
TIMEFORMAT=%R
echo "== ptxas -arch=sm_90a wall seconds, 8 interleaved rounds" >> "$s"
for f in 64 80 128 128c; do
  tn=""; tb=""
  for r in 1 2 3 4 5 6 7 8; do
    a=$( { time ptxas -arch=sm_90a .device/ptx/new$f.ptx -o /tmp/n.cubin; } 2>&1 )
    b=$( { time ptxas -arch=sm_90a .device/ptx/base$f.ptx -o /tmp/b.cubin; } 2>&1 )
    tn="$tn $a"; tb="$tb $b"
  done
  echo "new$f:$tn" >> "$s"; echo "base$f:$tb" >> "$s"
done
cold() { echo "== cold compile $1" >> "$s"
  rm -rf /tmp/fj/cold; CUDA_CACHE_DISABLE=1 FLASHJIT_CACHE_DIR=/tmp/fj/cold "$2/flashjit-bench-gpu" --dims 64 --seqlens 128 --cache-latency 2>&1 | grep -E "^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|$" >> "$s"; }
for r in 1 2 3; do cold new $new; cold base $base; cold base $base; cold new $new; done
echo "== flashjit compile (generation only, no GPU work) wall seconds, d=128, 8 runs" >> "$s"
t=""; for r in 1 2 3 4 5 6 7 8; do a=$( { time $new/flashjit compile --head-dim 128 > /dev/null; } 2>&1 ); t="$t $a"; done; echo "new compile d128:$t" >> "$s"
uptime >> "$s"
cat "$s"
