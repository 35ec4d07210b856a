#!/usr/bin/env bash
# Session 5, call 4 (b7b352d): the FA2-order one-stage pipeline. Autotune
# (s1 configs now overlap loads), tests, sanitizer on s1 kernels, tuned bench
# and peers in the same call at D=96,128,192,256.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
bin=/tmp/fj/bin
export FLASHJIT_CACHE_DIR=/tmp/fj/cache
s="$out/summary.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$s"
"$bin/flashjit" info >> "$s"
shape() { echo "--head-dim $1 --batch 4 --heads-q $((2048 / $1)) --heads-kv $((2048 / $1)) --seqlen 4096 --dtype bf16 --mask $2"; }
for d in 192 256 128 96; do for mask in none causal; do
  echo "== flashjit autotune $(shape $d $mask) --top 8" >> "$out/autotune.log"
  timeout 40 "$bin/flashjit" autotune $(shape $d $mask) --top 8 >> "$out/autotune.log" 2>&1
done; done
grep -E "== flashjit autotune|^best:" "$out/autotune.log" | tee -a "$s"
echo "== flashjit bench (tuned configs from the autotune above)" >> "$s"
for d in 96 128 192 256; do for mask in none causal; do
  "$bin/flashjit" bench $(shape $d $mask) --json 2>&1 | grep -E '"(config|config_source|tflops)"' | tr -d '\n ' >> "$s"; echo >> "$s"
done; done
DIMS=96,128,192,256 SEQS=4096 PEERS_OUT=/tmp PYTHONUNBUFFERED=1 timeout 120 python3 .device/peers_bench.py > "$out/peers.log" 2>&1
tail -10 "$out/peers.log" >> "$s"
for tool in memcheck racecheck; do
  for args in "--head-dim 256 --mask causal --seqlen-q 200 --seqlen-k 333 --block-m 64 --block-n 64 --warps 4 --stages 1" \
              "--head-dim 192 --seqlen 150 --batch 2 --block-m 128 --block-n 64 --warps 8 --stages 1" \
              "--head-dim 33 --align 1 --dtype fp16 --seqlen 130 --mask causal"; do
    echo "== compute-sanitizer --tool $tool flashjit run $args" >> "$s"
    timeout 60 compute-sanitizer --tool $tool --print-limit 5 "$bin/flashjit" run $args --repeats 1 --warmup 0 --check 2>&1 | grep -E "SUMMARY|PASS|FAIL" >> "$s"
  done
done
timeout 200 "$bin/flashjit-gpu-tests" > "$out/gpu-tests.log" 2>&1; grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]" "$out/gpu-tests.log" | tail -6 >> "$s"
cat "$s"
