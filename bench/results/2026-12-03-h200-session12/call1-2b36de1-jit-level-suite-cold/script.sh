#!/usr/bin/env bash
# Session 12, call 1 (2b36de1): the quick form at ptxas -O1. The driver JIT's
# time per level on the quick forms' PTX; the GPU suite (bitwise quick = full,
# the C API's options); cold compiles, this build and 8693bc4's (quick form
# at the default level) interleaved; flashjit run's cold-miss report with
# --check; the quick form's speed; compute-sanitizer on an -O1 quick kernel.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
new=/tmp/fj/bin
s="$out/summary.txt"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv; nproc; uptime; "$new/flashjit" --version; } > "$s" 2>&1
echo "== driver JIT per CU_JIT_OPTIMIZATION_LEVEL (min of 4, ms)" >> "$s"
(cd .device/jitlevel && CUDA_CACHE_DISABLE=1 timeout 120 python3 jitlevel.py q_*.ptx f_128_none.ptx) >> "$s" 2>&1
echo "== GPU test suite" >> "$s"
t0=$(date +%s); rm -rf /tmp/fj/t
FLASHJIT_CACHE_DIR=/tmp/fj/t timeout 200 $new/flashjit-gpu-tests > "$out/gpu-tests.log" 2>&1
echo "tests rc=$? wall_s=$(( $(date +%s) - t0 ))" >> "$s"; grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]" "$out/gpu-tests.log" | tail -12 >> "$s"
for r in 1 2; do
  for b in flashjit-bench-gpu flashjit-bench-gpu-o3; do
    echo "== cold compile bench, $b, round $r" >> "$s"
    rm -rf /tmp/fj/c; CUDA_CACHE_DISABLE=1 FLASHJIT_CACHE_DIR=/tmp/fj/c timeout 100 "$new/$b" --dims 64 --seqlens 128 --cache-latency > "$out/cold-$b-$r.log" 2>&1
    grep -E "^first|^\| [0-9]+ \| (none|causal) \||error|die" "$out/cold-$b-$r.log" >> "$s"
  done
done
echo "== flashjit run, cold cache, --check" >> "$s"
for args in "--head-dim 100 --mask causal" "--head-dim 128" "--head-dim 72 --dtype fp16 --heads-q 8 --heads-kv 2 --mask causal"; do
  rm -rf /tmp/fj/r; CUDA_CACHE_DISABLE=1 FLASHJIT_CACHE_DIR=/tmp/fj/r timeout 60 "$new/flashjit" run $args --batch 2 --seqlen-q 1000 --seqlen-k 1000 --check >> "$s" 2>&1
  echo "rc=$?" >> "$s"
done
echo "== flashjit run, the same again (disk hit)" >> "$s"
FLASHJIT_CACHE_DIR=/tmp/fj/r timeout 60 "$new/flashjit" run --head-dim 72 --dtype fp16 --heads-q 8 --heads-kv 2 --mask causal --batch 2 --seqlen-q 1000 --seqlen-k 1000 --check >> "$s" 2>&1
echo "rc=$?" >> "$s"
for tool in memcheck racecheck; do
  echo "== compute-sanitizer --tool $tool flashjit run --quick d=128 (ptxas -O1)" >> "$s"
  FLASHJIT_CACHE_DIR=/tmp/fj/san timeout 60 compute-sanitizer --tool $tool --print-limit 5 "$new/flashjit" run --quick --head-dim 128 --batch 1 --heads-q 2 --heads-kv 2 --seqlen-q 130 --seqlen-k 257 --repeats 1 --warmup 0 --check 2>&1 | grep -E "SUMMARY|PASS|FAIL|kernel:" >> "$s"
done
shape() { echo "--head-dim $1 --batch 4 --heads-q $((2048 / $1)) --heads-kv $((2048 / $1)) --seqlen 4096 --dtype bf16 --mask $2"; }
bench() { echo -n "$* | " >> "$s"
  FLASHJIT_CACHE_DIR=/tmp/fj/cache-bench timeout 60 "$new/flashjit" bench "$@" --json 2>&1 | grep -E '"(config|tflops)"' | tr -d '\n ' >> "$s"; echo >> "$s"; }
echo "== quick form (ptxas -O1) and full kernel throughput" >> "$s"
for d in 64 100 128 192 256; do for m in none causal; do bench $(shape $d $m); bench $(shape $d $m) --quick; done; done
uptime >> "$s"
cat "$s"
