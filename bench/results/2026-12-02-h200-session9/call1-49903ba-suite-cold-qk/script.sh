#!/usr/bin/env bash
# Session 9, call 1: codegen revision 10 (49903ba + an experiment-only knob,
# FLASHJIT_EXPERIMENT_QK_STEPS: Q K^T k-steps per run-time loop iteration)
# against 3dee048 (revision 9, "base"): cold compile x3 interleaved, the GPU
# suite, sanitizer on both dtypes, the rolled-QK experiment.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
new=/tmp/fj/bin; base=/tmp/fj/base
s="$out/summary.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$s"
"$new/flashjit" --version >> "$s"
cold() { echo "== cold compile $1" >> "$s"
  rm -rf /tmp/fj/cold; CUDA_CACHE_DISABLE=1 FLASHJIT_CACHE_DIR=/tmp/fj/cold "$2/flashjit-bench-gpu" --dims 64 --seqlens 128 --cache-latency 2>&1 | grep -E "^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|$" >> "$s"; }
for r in 1 2 3; do cold new $new; cold base $base; done
export FLASHJIT_CACHE_DIR=/tmp/fj/cache-tests
t0=$(date +%s)
timeout 220 $new/flashjit-gpu-tests > "$out/gpu-tests.log" 2>&1
echo "tests rc=$? wall_s=$(( $(date +%s) - t0 ))" >> "$s"; grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]" "$out/gpu-tests.log" | tail -8 >> "$s"
for args in "--head-dim 128 --batch 2 --heads-q 3 --heads-kv 3 --seqlen-q 200 --seqlen-k 333 --mask causal" "--head-dim 72 --dtype fp16 --batch 2 --heads-q 2 --heads-kv 2 --seqlen-q 300 --seqlen-k 257"; do
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool flashjit run $args" >> "$s"
    timeout 50 compute-sanitizer --tool $tool --print-limit 5 "$new/flashjit" run $args --repeats 1 --warmup 0 --check 2>&1 | grep -E "SUMMARY|PASS|FAIL|config" >> "$s"
  done
done
shape() { echo "--head-dim $1 --batch 4 --heads-q $((2048 / $1)) --heads-kv $((2048 / $1)) --seqlen 4096 --dtype bf16 --mask $2"; }
qk() { local steps=$1; shift; echo -n "qk-steps=$steps $* | " >> "$s"
  FLASHJIT_EXPERIMENT_QK_STEPS=$steps FLASHJIT_CACHE_DIR=/tmp/fj/cache-qk$steps "$new/flashjit" bench "$@" --json 2>&1 | grep -E '"(config|tflops)"' | tr -d '\n ' >> "$s"; echo >> "$s"; }
for r in 1 2; do
  for st in 0 1 2 4; do qk $st $(shape 128 causal); done
  for st in 0 4; do qk $st $(shape 256 causal); qk $st $(shape 256 none); qk $st $(shape 192 causal); done
  for st in 0 2; do qk $st $(shape 160 causal); done
done
cat "$s"
