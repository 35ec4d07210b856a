#!/usr/bin/env bash
# Session 5, call 1: V1 (conditional O rescale) correctness, A/B, autotune, honest cold compile.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
bin=/tmp/fj/bin
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
"$bin/flashjit" info | tee -a "$out/gpu.txt"
log="$out/exp.log"
# 1. cold compile, honest: driver JIT cache off, then on
for run in 1 2; do
  echo "== cache latency, CUDA_CACHE_DISABLE=1, run $run" | tee -a "$log"
  CUDA_CACHE_DISABLE=1 "$bin/flashjit-bench-gpu" --dims 64 --seqlens 128 --cache-latency 2>&1 | grep -E "^\|" | tail -4 | tee -a "$log"
done
echo "== cache latency, driver JIT cache on" | tee -a "$log"
"$bin/flashjit-bench-gpu" --dims 64 --seqlens 128 --cache-latency 2>&1 | grep -E "^\|" | tail -4 | tee -a "$log"
for d in 64 80 128; do
  "$bin/flashjit" compile --head-dim $d --dtype bf16 --time 2>>"$log" > /tmp/k$d.ptx
  /usr/bin/time -f "ptxas d=$d %e s" ptxas -arch=sm_90a /tmp/k$d.ptx -o /dev/null 2>>"$log"
done
tail -12 "$log"
# 4. GPU tests
timeout ${TEST_TIMEOUT:-250} "$bin/flashjit-gpu-tests" > "$out/gpu-tests.log" 2>&1; grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]" "$out/gpu-tests.log" | tail -8
# 2. A/B: default (conditional rescale + staged O) vs each off
for variant in on nocr nose; do
  export FLASHJIT_CACHE_DIR=/tmp/fj/cache-$variant
  unset FJ_EXP_NO_CR FJ_EXP_NO_SE
  dims=64,96,100,128,160,192,256
  [[ $variant == nocr ]] && { export FJ_EXP_NO_CR=1; dims=96,128,192,256; }
  [[ $variant == nose ]] && { export FJ_EXP_NO_SE=1; dims=96,128,192,256; }
  echo "== bench, variant $variant" | tee -a "$log"
  "$bin/flashjit-bench-gpu" --dims $dims --seqlens 4096 --json "$out/bench-$variant.json" 2>&1 | grep -E "^\|" | tee -a "$log"
done
unset FJ_EXP_NO_CR FJ_EXP_NO_SE
# 3. autotune with V1
for d in ${TUNE_DIMS:-128 192 256}; do for mask in none causal; do
  h=$((2048 / d))
  echo "== autotune d=$d $mask" | tee -a "$out/autotune.log"
  timeout 60 "$bin/flashjit" autotune --head-dim $d --batch 4 --heads-q $h --heads-kv $h --seqlen 4096 --dtype bf16 --mask $mask --top 6 2>&1 | tail -9 >> "$out/autotune.log"
done; done
grep -E "== autotune|^best:" "$out/autotune.log"
