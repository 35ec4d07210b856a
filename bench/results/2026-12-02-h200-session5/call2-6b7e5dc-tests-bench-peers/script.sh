#!/usr/bin/env bash
# Session 5, call 2: final binaries. Tests, bench + peers in the same call,
# autotune at D=100/112, sanitizer on the new kernels, honest cold compile.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
bin=/tmp/fj/bin
export FLASHJIT_CACHE_DIR=/tmp/fj/cache
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
"$bin/flashjit" info | tee -a "$out/gpu.txt"
lat="$out/cache-latency.txt"
for mode in "CUDA_CACHE_DISABLE=1" "CUDA_CACHE_DISABLE=1" "CUDA_CACHE_DISABLE=0 (driver cache empty)" "CUDA_CACHE_DISABLE=0 (driver cache filled)"; do
  echo "== $mode" >> "$lat"
  env ${mode%% *} "$bin/flashjit-bench-gpu" --dims 64 --seqlens 128 --cache-latency 2>&1 | grep -E "^\| [0-9]" >> "$lat"
done
cat "$lat"
timeout 200 "$bin/flashjit-gpu-tests" > "$out/gpu-tests.log" 2>&1; grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]" "$out/gpu-tests.log" | tail -8
"$bin/flashjit-bench-gpu" --dims 64,80,96,100,128,160,192,256 --seqlens 4096 --json "$out/flashjit.json" > "$out/bench.log" 2>&1; grep -E "^\|" "$out/bench.log"
DIMS=64,80,96,100,128,160,192,256 SEQS=4096 PEERS_OUT="$out" PYTHONUNBUFFERED=1 timeout 200 python3 .device/peers_bench.py > "$out/peers.log" 2>&1; tail -18 "$out/peers.log"
for d in 100 112; do for mask in none causal; do
  h=$((2048 / d)); [[ $d == 112 ]] && h=16
  echo "== autotune d=$d $mask" >> "$out/autotune.log"
  timeout 40 "$bin/flashjit" autotune --head-dim $d --batch 4 --heads-q $h --heads-kv $h --seqlen 4096 --dtype bf16 --mask $mask --top 5 >> "$out/autotune.log" 2>&1
done; done
grep -E "== autotune|^best:" "$out/autotune.log"
san="$out/sanitizer.log"
for tool in memcheck racecheck; do
  for args in "--head-dim 100 --mask causal --seqlen-q 300 --seqlen-k 333" \
              "--head-dim 128 --seqlen-q 257 --seqlen-k 200 --heads-q 4 --heads-kv 2" \
              "--head-dim 96 --dtype fp16 --mask causal --seqlen 130" \
              "--head-dim 256 --seqlen 100 --batch 2" \
              "--head-dim 120 --seqlens-q 100,0,37 --seqlens-k 90,5,300 --mask causal"; do
    echo "== compute-sanitizer --tool $tool flashjit run $args" >> "$san"
    timeout 60 compute-sanitizer --tool $tool --print-limit 5 "$bin/flashjit" run $args --repeats 1 --warmup 0 2>&1 | tail -3 >> "$san"
  done
done
grep -E "ERROR SUMMARY|RACECHECK SUMMARY|check" "$san" | sort | uniq -c
