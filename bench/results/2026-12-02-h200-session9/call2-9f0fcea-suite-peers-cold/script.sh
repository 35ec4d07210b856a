#!/usr/bin/env bash
# Session 9, call 2: 9f0fcea (revision 10 + the rolled Q K^T at d = 121-128
# with a mask): the GPU suite, sanitizer on the rolled kernel, throughput of
# every head dim of the issue next to the peers (same call), cold compile
# three rounds interleaved with 3dee048 (revision 9, "base").
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
timeout 200 $new/flashjit-gpu-tests > "$out/gpu-tests.log" 2>&1
echo "tests rc=$? wall_s=$(( $(date +%s) - t0 ))" >> "$s"; grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]" "$out/gpu-tests.log" | tail -8 >> "$s"
for args in "--head-dim 128 --batch 2 --heads-q 3 --heads-kv 3 --seqlen-q 200 --seqlen-k 333 --mask causal" "--head-dim 124 --dtype fp16 --batch 1 --heads-q 2 --heads-kv 2 --seqlen-q 517 --seqlen-k 300 --mask causal"; do
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool flashjit run $args" >> "$s"
    timeout 50 compute-sanitizer --tool $tool --print-limit 5 "$new/flashjit" run $args --repeats 1 --warmup 0 --check 2>&1 | grep -E "SUMMARY|PASS|FAIL|config" >> "$s"
  done
done
shape() { echo "--head-dim $1 --batch 4 --heads-q $((2048 / $1)) --heads-kv $((2048 / $1)) --seqlen 4096 --dtype bf16 --mask $2"; }
bench() { echo -n "new $* | " >> "$s"
  FLASHJIT_CACHE_DIR=/tmp/fj/cache-bench "$new/flashjit" bench "$@" --json 2>&1 | grep -E '"(config|tflops)"' | tr -d '\n ' >> "$s"; echo >> "$s"; }
for m in none causal; do for d in 64 80 96 100 128 160 192 256; do bench $(shape $d $m); done; done
DIMS=64,80,96,100,128,160,192,256 SEQS=4096 PEERS_OUT=/tmp PYTHONUNBUFFERED=1 timeout 170 python3 .device/peers_bench.py > "$out/peers.log" 2>&1
tail -20 "$out/peers.log" >> "$s"
bench $(shape 128 causal); bench $(shape 96 causal); bench $(shape 96 none)
cat "$s"
