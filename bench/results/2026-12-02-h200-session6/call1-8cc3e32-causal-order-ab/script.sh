#!/usr/bin/env bash
# Session 6, call 1 (8cc3e32): causal CTAs longest first. A/B of the default
# configs against the 08d5c34 binary (base/flashjit) in the same call,
# interleaved per shape; peers in the same call; GPU tests; sanitizer on the
# remapped causal kernels; cold compile with the generate/JIT split.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj /tmp/fjb
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
bin=/tmp/fj/bin; base=/tmp/fj/base/flashjit
s="$out/summary.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$s"
"$bin/flashjit" info >> "$s"
shape() { echo "--head-dim $1 --batch 4 --heads-q $((2048 / $1)) --heads-kv $((2048 / $1)) --seqlen 4096 --dtype bf16 --mask $2"; }
bench() { # label binary cache args...
  local label=$1 b=$2 cache=$3; shift 3
  echo -n "$label $* | " >> "$s"
  FLASHJIT_CACHE_DIR=$cache "$b" bench "$@" --json 2>&1 | grep -E '"(config|tflops)"' | tr -d '\n ' >> "$s"; echo >> "$s"
}
echo "== A/B default configs: base = 08d5c34, new = 8cc3e32 (interleaved)" >> "$s"
for d in 64 80 96 100 128 160 192 256; do
  for mask in causal none; do
    if [[ $mask == none && ! " 96 192 256 " =~ " $d " ]]; then
      bench new "$bin/flashjit" /tmp/fj/cache $(shape $d $mask); continue
    fi
    bench base "$base" /tmp/fjb/cache $(shape $d $mask)
    bench new "$bin/flashjit" /tmp/fj/cache $(shape $d $mask)
    bench base "$base" /tmp/fjb/cache $(shape $d $mask)
    bench new "$bin/flashjit" /tmp/fj/cache $(shape $d $mask)
  done
done
DIMS=64,80,96,100,128,160,192,256 SEQS=4096 PEERS_OUT=/tmp PYTHONUNBUFFERED=1 timeout 240 python3 .device/peers_bench.py > "$out/peers.log" 2>&1
tail -18 "$out/peers.log" >> "$s"
export FLASHJIT_CACHE_DIR=/tmp/fj/cache
for run in 1 2; do
  echo "== cold compile, CUDA_CACHE_DISABLE=1, run $run" >> "$s"
  CUDA_CACHE_DISABLE=1 FLASHJIT_CACHE_DIR=/tmp/fj/cold$run "$bin/flashjit-bench-gpu" --dims 64 --seqlens 128 --cache-latency 2>&1 | grep -E "^\|" >> "$s"
done
for tool in memcheck racecheck; do
  for args in "--head-dim 100 --mask causal --batch 2 --heads-q 3 --heads-kv 3 --seqlen-q 300 --seqlen-k 420" \
              "--head-dim 128 --seqlens-q 100,0,37,260 --seqlens-k 90,5,300,260 --mask causal --heads-q 8 --heads-kv 2"; do
    echo "== compute-sanitizer --tool $tool flashjit run $args" >> "$s"
    timeout 60 compute-sanitizer --tool $tool --print-limit 5 "$bin/flashjit" run $args --repeats 1 --warmup 0 --check 2>&1 | grep -E "SUMMARY|PASS|FAIL" >> "$s"
  done
done
timeout 200 "$bin/flashjit-gpu-tests" > "$out/gpu-tests.log" 2>&1; grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]" "$out/gpu-tests.log" | tail -8 >> "$s"
cat "$s"
