#!/usr/bin/env bash
# Session 6, call 3 (1b67336): causal CTA order in one division (new) against
# the five-division order of 8cc3e32 (lpt5) and no reordering (base =
# 08d5c34), interleaved; d=96 three stages; every D both masks with peers in
# the same call; sanitizer on a multi-chunk causal kernel; GPU tests.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
bin=/tmp/fj/bin
s="$out/summary.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$s"
"$bin/flashjit" info >> "$s"
shape() { echo "--head-dim $1 --batch 4 --heads-q $((2048 / $1)) --heads-kv $((2048 / $1)) --seqlen 4096 --dtype bf16 --mask $2"; }
bench() { # label binary args...
  local label=$1 b=$2; shift 2
  echo -n "$label $* | " >> "$s"
  FLASHJIT_CACHE_DIR=/tmp/fj/cache-$label "$b" bench "$@" --json 2>&1 | grep -E '"(config|tflops)"' | tr -d '\n ' >> "$s"; echo >> "$s"
}
echo "== A/B causal: base = 08d5c34, lpt5 = 8cc3e32, new = 1b67336 (interleaved, two rounds)" >> "$s"
for d in 64 80 96 128 192 256; do
  for r in 1 2; do
    bench base /tmp/fj/base/flashjit $(shape $d causal)
    bench lpt5 /tmp/fj/lpt5/flashjit $(shape $d causal)
    bench new "$bin/flashjit" $(shape $d causal)
  done
done
echo "== d=96: new with two stages, base without a mask" >> "$s"
for r in 1 2; do
  bench new "$bin/flashjit" $(shape 96 causal) --block-m 128 --block-n 64 --warps 4 --stages 2
  bench base /tmp/fj/base/flashjit $(shape 96 none)
  bench new "$bin/flashjit" $(shape 96 none)
done
echo "== new, every D, both masks (defaults)" >> "$s"
for d in 64 80 96 100 128 160 192 256; do for mask in none causal; do
  bench new "$bin/flashjit" $(shape $d $mask)
done; done
DIMS=64,80,96,100,128,160,192,256 SEQS=4096 PEERS_OUT=/tmp PYTHONUNBUFFERED=1 timeout 240 python3 .device/peers_bench.py > "$out/peers.log" 2>&1
tail -18 "$out/peers.log" >> "$s"
export FLASHJIT_CACHE_DIR=/tmp/fj/cache
for tool in memcheck racecheck; do
  for args in "--head-dim 256 --mask causal --heads-q 10 --heads-kv 10 --seqlen-q 130 --seqlen-k 4096" \
              "--head-dim 96 --mask causal --batch 2 --heads-q 3 --heads-kv 3 --seqlen-q 300 --seqlen-k 420"; do
    echo "== compute-sanitizer --tool $tool flashjit run $args" >> "$s"
    timeout 100 compute-sanitizer --tool $tool --print-limit 5 "$bin/flashjit" run $args --repeats 1 --warmup 0 --check 2>&1 | grep -E "SUMMARY|PASS|FAIL|config" >> "$s"
  done
done
timeout 200 "$bin/flashjit-gpu-tests" > "$out/gpu-tests.log" 2>&1; grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]" "$out/gpu-tests.log" | tail -8 >> "$s"
cat "$s"
