#!/usr/bin/env bash
# Session 11, call 3 (e61e0f6, codegen revision 12): cold compiles with the
# quick form first, the GPU suite, compute-sanitizer on a quick kernel, and
# throughput of the full kernels at every head dim of the issue next to the
# peers (same call).
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
new=/tmp/fj/bin
s="$out/summary.txt"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv; nproc; uptime; "$new/flashjit" --version; } > "$s" 2>&1
echo "== cold compile bench" >> "$s"
rm -rf /tmp/fj/c; CUDA_CACHE_DISABLE=1 FLASHJIT_CACHE_DIR=/tmp/fj/c timeout 100 "$new/flashjit-bench-gpu" --dims 64 --seqlens 128 --cache-latency > "$out/bench-cold.log" 2>&1
grep -E "^first|^\| [0-9]+ \| (none|causal) \||error|die" "$out/bench-cold.log" >> "$s"
echo "== GPU test suite" >> "$s"
t0=$(date +%s); rm -rf /tmp/fj/t
FLASHJIT_CACHE_DIR=/tmp/fj/t timeout 200 $new/flashjit-gpu-tests > "$out/gpu-tests.log" 2>&1
echo "tests rc=$? wall_s=$(( $(date +%s) - t0 ))" >> "$s"; grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]" "$out/gpu-tests.log" | tail -12 >> "$s"
for tool in memcheck racecheck; do
  echo "== compute-sanitizer --tool $tool flashjit run --quick d=256" >> "$s"
  FLASHJIT_CACHE_DIR=/tmp/fj/san timeout 40 compute-sanitizer --tool $tool --print-limit 5 "$new/flashjit" run --quick --head-dim 256 --batch 1 --heads-q 2 --heads-kv 2 --seqlen-q 130 --seqlen-k 257 --repeats 1 --warmup 0 --check 2>&1 | grep -E "SUMMARY|PASS|FAIL|kernel:" >> "$s"
done
shape() { echo "--head-dim $1 --batch 4 --heads-q $((2048 / $1)) --heads-kv $((2048 / $1)) --seqlen 4096 --dtype bf16 --mask $2"; }
bench() { echo -n "new $* | " >> "$s"
  FLASHJIT_CACHE_DIR=/tmp/fj/cache-bench timeout 60 "$new/flashjit" bench "$@" --json 2>&1 | grep -E '"(config|tflops)"' | tr -d '\n ' >> "$s"; echo >> "$s"; }
for m in none causal; do for d in 64 80 96 100 128 160 192 256; do bench $(shape $d $m); done; done
DIMS=64,80,96,100,128,160,192,256 SEQS=4096 PEERS_OUT=/tmp PYTHONUNBUFFERED=1 timeout 190 python3 .device/peers_bench.py > "$out/peers.log" 2>&1
tail -24 "$out/peers.log" >> "$s"
uptime >> "$s"
cat "$s"
