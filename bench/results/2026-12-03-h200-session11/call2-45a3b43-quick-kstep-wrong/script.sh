#!/usr/bin/env bash
# Session 11, call 2 (45a3b43, codegen revision 12, the quick form a k-step an
# iteration with rolled K/V copies, compiled alongside the full kernel): cold
# compile with the quick form first (2 rounds, the driver's cache off), the
# GPU suite, compute-sanitizer on quick kernels.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
new=/tmp/fj/bin
s="$out/summary.txt"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv; nproc; uptime; "$new/flashjit" --version; } > "$s" 2>&1
for r in 1 2; do
  echo "== cold compile bench, round $r" >> "$s"
  rm -rf /tmp/fj/c; CUDA_CACHE_DISABLE=1 FLASHJIT_CACHE_DIR=/tmp/fj/c timeout 100 "$new/flashjit-bench-gpu" --dims 64 --seqlens 128 --cache-latency > "$out/bench$r.log" 2>&1
  grep -E "^first|^\| [0-9]+ \| (none|causal) \||error|die" "$out/bench$r.log" >> "$s"
done
for args in "--head-dim 100 --batch 2 --heads-q 3 --heads-kv 3 --seqlen-q 200 --seqlen-k 333 --mask causal" "--head-dim 72 --dtype fp16 --batch 1 --heads-q 4 --heads-kv 2 --seqlen-q 517 --seqlen-k 300 --mask causal" "--head-dim 256 --batch 1 --heads-q 2 --heads-kv 2 --seqlen-q 130 --seqlen-k 257"; do
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool flashjit run --quick $args" >> "$s"
    FLASHJIT_CACHE_DIR=/tmp/fj/san timeout 60 compute-sanitizer --tool $tool --print-limit 5 "$new/flashjit" run --quick $args --repeats 1 --warmup 0 --check 2>&1 | grep -E "SUMMARY|PASS|FAIL|config|kernel:" >> "$s"
  done
done
echo "== GPU test suite" >> "$s"
t0=$(date +%s); rm -rf /tmp/fj/t
FLASHJIT_CACHE_DIR=/tmp/fj/t timeout 330 $new/flashjit-gpu-tests > "$out/gpu-tests.log" 2>&1
echo "tests rc=$? wall_s=$(( $(date +%s) - t0 ))" >> "$s"; grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]" "$out/gpu-tests.log" | tail -12 >> "$s"
grep -E "Failure|differ|error" "$out/gpu-tests.log" | head -20 >> "$s"
uptime >> "$s"
cat "$s"
