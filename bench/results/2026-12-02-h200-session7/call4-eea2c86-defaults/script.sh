#!/usr/bin/env bash
# Session 7, call 4 (eea2c86): the new default tiles. The whole GPU suite,
# every head dim of the issue with and without a causal mask against the
# peers in the same call, d=112 against its previous tile, sanitizer on the
# new default tiles, cache latency.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
bin=/tmp/fj/bin
s="$out/summary.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$s"
"$bin/flashjit" --version >> "$s"
export FLASHJIT_CACHE_DIR=/tmp/fj/cache-tests
t0=$(date +%s)
timeout 280 $bin/flashjit-gpu-tests > "$out/gpu-tests.log" 2>&1
echo "tests rc=$? wall_s=$(( $(date +%s) - t0 ))" >> "$s"; grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]" "$out/gpu-tests.log" | tail -8 >> "$s"
shape() { echo "--head-dim $1 --batch 4 --heads-q $((2048 / $1)) --heads-kv $((2048 / $1)) --seqlen 4096 --dtype bf16 --mask $2"; }
bench() { echo -n "$* | " >> "$s"
  FLASHJIT_CACHE_DIR=/tmp/fj/cache-bench "$bin/flashjit" bench "$@" --json 2>&1 | grep -E '"(config|tflops)"' | tr -d '\n ' >> "$s"; echo >> "$s"; }
echo "== defaults, eea2c86" >> "$s"
for m in none causal; do for d in 64 80 96 100 128 160 192 256; do bench $(shape $d $m); done; done
echo "== d=112 and d=144: default against the previous default tile" >> "$s"
for m in none causal; do
  bench $(shape 112 $m); bench $(shape 112 $m) --block-m 128 --block-n 64 --warps 4 --stages 2
  bench $(shape 144 $m); bench $(shape 144 $m) --block-m 128 --block-n 32 --warps 8 --stages 2
done
for args in "--head-dim 160 --batch 2 --heads-q 3 --heads-kv 3 --seqlen-q 200 --seqlen-k 333 --mask causal" \
            "--head-dim 192 --batch 2 --heads-q 3 --heads-kv 3 --seqlen-q 300 --seqlen-k 333 --mask none" \
            "--head-dim 100 --batch 2 --heads-q 3 --heads-kv 3 --seqlen-q 200 --seqlen-k 333 --mask causal"; do
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool flashjit run $args" >> "$s"
    timeout 60 compute-sanitizer --tool $tool --print-limit 5 "$bin/flashjit" run $args --repeats 1 --warmup 0 --check 2>&1 | grep -E "SUMMARY|PASS|FAIL|config" >> "$s"
  done
done
echo "== cold compile, CUDA_CACHE_DISABLE=1" >> "$s"
CUDA_CACHE_DISABLE=1 FLASHJIT_CACHE_DIR=/tmp/fj/cold "$bin/flashjit-bench-gpu" --dims 64 --seqlens 128 --cache-latency 2>&1 | grep -E "^\|" >> "$s"
DIMS=64,80,96,100,112,128,144,160,192,256 SEQS=4096 PEERS_OUT=/tmp PYTHONUNBUFFERED=1 timeout 150 python3 .device/peers_bench.py > "$out/peers.log" 2>&1
tail -22 "$out/peers.log" >> "$s"
cat "$s"
