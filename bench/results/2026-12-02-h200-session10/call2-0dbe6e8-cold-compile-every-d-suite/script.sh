#!/usr/bin/env bash
# Session 10, call 2 (0dbe6e8): cold compile at every D of the issue and both
# masks in a warm process (3 rounds), the first compile of a process
# (flashjit run, one process each), and the driver JIT's time at each
# CU_JIT_OPTIMIZATION_LEVEL with the driver's own cache off; the GPU suite.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
new=/tmp/fj/bin
s="$out/summary.txt"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv; nproc; uptime; "$new/flashjit" --version; } > "$s" 2>&1
export CUDA_CACHE_DISABLE=1
for r in 1 2 3; do
  echo "== cold compile bench, round $r" >> "$s"
  rm -rf /tmp/fj/c; FLASHJIT_CACHE_DIR=/tmp/fj/c "$new/flashjit-bench-gpu" --dims 64 --seqlens 128 --cache-latency > "$out/bench$r.log" 2>&1
  grep -E "^first compile|^\| [0-9]+ \| (none|causal) \|" "$out/bench$r.log" >> "$s"
done
echo "== flashjit run: the first compile of a process" >> "$s"
for d in 64 128 160 192 256; do for m in none causal; do
  rm -rf /tmp/fj/r; echo "run d=$d $m: $(FLASHJIT_CACHE_DIR=/tmp/fj/r "$new/flashjit" run --head-dim $d --mask $m --batch 1 --seqlen-q 128 --seqlen-k 128 2>&1 | grep -o 'compiled in.*')" >> "$s"
done; done
echo "== driver JIT (probe), CUDA_CACHE_DISABLE=1, best of 3" >> "$s"
g++ -O2 -o /tmp/probe .device/probe/probe.cpp -I/usr/local/cuda/include -L/usr/local/cuda/lib64/stubs -lcuda >> "$s" 2>&1
(cd .device/probe && /tmp/probe k128_causal.ptx k160_none.ptx k160_causal.ptx k192_none.ptx k192_causal.ptx k256_none.ptx k256_causal.ptx) >> "$s" 2>&1
echo "== GPU test suite" >> "$s"
t0=$(date +%s); rm -rf /tmp/fj/t; unset CUDA_CACHE_DISABLE
FLASHJIT_CACHE_DIR=/tmp/fj/t timeout 240 $new/flashjit-gpu-tests > "$out/gpu-tests.log" 2>&1
echo "tests rc=$? wall_s=$(( $(date +%s) - t0 ))" >> "$s"; grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]" "$out/gpu-tests.log" | tail -8 >> "$s"
uptime >> "$s"
cat "$s"
