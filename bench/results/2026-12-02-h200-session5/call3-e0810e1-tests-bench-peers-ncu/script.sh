#!/usr/bin/env bash
# Session 5, call 3: final binaries (e0810e1). Cold compile split, tests,
# bench + peers in the same call, Nsight Compute at d=256 (flashjit vs FA2).
set -uo pipefail
out=${OUT:-/tmp/out}; o=/tmp/o; mkdir -p "$out" "$o" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
bin=/tmp/fj/bin
export FLASHJIT_CACHE_DIR=/tmp/fj/cache
s="$out/summary.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$s"
"$bin/flashjit" info >> "$s"
for run in 1 2 3; do
  echo "== cold compile, CUDA_CACHE_DISABLE=1, run $run (D | cold ms | disk hit ms | memory hit us)" >> "$s"
  CUDA_CACHE_DISABLE=1 "$bin/flashjit-bench-gpu" --dims 64 --seqlens 128 --cache-latency 2>&1 | grep -E "^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|$" >> "$s"
done
echo "== generation alone (flashjit compile --time), then ptxas -O3 alone" >> "$s"
for d in 64 80 128; do
  for i in 1 2; do "$bin/flashjit" compile --head-dim $d --dtype bf16 --time 2>&1 >/tmp/k$d.ptx | grep total | sed "s/^/d=$d /" >> "$s"; done
  /usr/bin/time -f "d=$d ptxas %e s" ptxas -arch=sm_90a /tmp/k$d.ptx -o /dev/null 2>> "$s"
done
cat "$s"
timeout 200 "$bin/flashjit-gpu-tests" > "$out/gpu-tests.log" 2>&1; grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]" "$out/gpu-tests.log" | tail -6
"$bin/flashjit-bench-gpu" --dims 64,80,96,100,128,160,192,256 --seqlens 4096 --json "$o/flashjit.json" > "$out/bench.log" 2>&1; grep -E "^\|" "$out/bench.log"
DIMS=64,80,96,100,128,160,192,256 SEQS=4096 PEERS_OUT="$o" PYTHONUNBUFFERED=1 timeout 200 python3 .device/peers_bench.py > "$out/peers.log" 2>&1; tail -18 "$out/peers.log"
OUT="$o" PROFILE_D=256 PROFILE_MASK=none PROFILE_TILE="128 64 8 2" timeout 240 bash bench/gpu/profile-device.sh 2>&1 | tail -6
cp "$o"/ncu-flashjit.txt "$o"/ncu-fa2.txt "$out"/ 2>/dev/null
tar -czf "$out/rest.tar.gz" -C "$o" .
grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|Issued Ipc|Registers Per|Executed Instructions  |Shared Memory|L1/TEX Hit|Bank" "$out"/ncu-flashjit.txt "$out"/ncu-fa2.txt | head -40
