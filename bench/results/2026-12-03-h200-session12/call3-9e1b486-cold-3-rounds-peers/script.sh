#!/usr/bin/env bash
# Session 12, call 3 (9e1b486): three more rounds of cold compiles of the
# final quick form (one m16 tile per warp, ptxas -O1; the driver's cache off),
# and the full kernels' throughput at every head dim of the issue next to the
# peers in the same call.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
new=/tmp/fj/bin
s="$out/summary.txt"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv; nproc; uptime; "$new/flashjit" --version; } > "$s" 2>&1
for r in 1 2 3; do
  echo "== cold compile bench, flashjit-bench-gpu, round $r" >> "$s"
  rm -rf /tmp/fj/c; CUDA_CACHE_DISABLE=1 FLASHJIT_CACHE_DIR=/tmp/fj/c timeout 100 "$new/flashjit-bench-gpu" --dims 64 --seqlens 128 --cache-latency > "$out/cold-$r.log" 2>&1
  grep -E "^first|^\| [0-9]+ \| (none|causal) \||error|die" "$out/cold-$r.log" >> "$s"
done
shape() { echo "--head-dim $1 --batch 4 --heads-q $((2048 / $1)) --heads-kv $((2048 / $1)) --seqlen 4096 --dtype bf16 --mask $2"; }
bench() { echo -n "new $* | " >> "$s"
  FLASHJIT_CACHE_DIR=/tmp/fj/cache-bench timeout 60 "$new/flashjit" bench "$@" --json 2>&1 | grep -E '"(config|tflops)"' | tr -d '\n ' >> "$s"; echo >> "$s"; }
echo "== full kernel throughput" >> "$s"
for m in none causal; do for d in 64 80 96 100 128 160 192 256; do bench $(shape $d $m); done; done
DIMS=64,80,96,100,128,160,192,256 SEQS=4096 PEERS_OUT=/tmp PYTHONUNBUFFERED=1 timeout 190 python3 .device/peers_bench.py > "$out/peers.log" 2>&1
tail -24 "$out/peers.log" >> "$s"
uptime >> "$s"
cat "$s"
