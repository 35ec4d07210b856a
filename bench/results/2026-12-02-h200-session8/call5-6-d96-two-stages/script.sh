#!/usr/bin/env bash
# Session 8, call 5 (d=96 causal now 2 stages): the GPU tests of d=96 and
# the new default's throughput.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
new=/tmp/fj/bin; s="$out/summary.txt"
"$new/flashjit" --version > "$s"
FLASHJIT_CACHE_DIR=/tmp/fj/c timeout 100 "$new/flashjit-gpu-tests" --gtest_filter='*d96*' > "$out/gpu-tests-d96.log" 2>&1
echo "tests rc=$?" >> "$s"; grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]" "$out/gpu-tests-d96.log" | tail -6 >> "$s"
for m in causal none; do echo -n "d=96 $m | " >> "$s"
  FLASHJIT_CACHE_DIR=/tmp/fj/b "$new/flashjit" bench --head-dim 96 --batch 4 --heads-q 21 --heads-kv 21 --seqlen 4096 --dtype bf16 --mask $m --json 2>&1 | grep -E '"(config|tflops)"' | tr -d '\n ' >> "$s"; echo >> "$s"; done
cat "$s"
