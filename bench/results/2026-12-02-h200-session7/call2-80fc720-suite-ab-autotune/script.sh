#!/usr/bin/env bash
# Session 7, call 2 (80fc720): the whole GPU suite, A/B against 9f950f4
# (base) at every head dim of the issue with and without a causal mask,
# autotune without a mask at d = 96-256, compute-sanitizer on the newly
# swizzled layouts, peers last.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
bin=/tmp/fj/bin; base=/tmp/fj/base/flashjit
s="$out/summary.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$s"
"$bin/flashjit" --version >> "$s"
export FLASHJIT_CACHE_DIR=/tmp/fj/cache-tests
t0=$(date +%s)
timeout 280 $bin/flashjit-gpu-tests > "$out/gpu-tests.log" 2>&1
echo "tests rc=$? wall_s=$(( $(date +%s) - t0 ))" >> "$s"; grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]" "$out/gpu-tests.log" | tail -8 >> "$s"
shape() { echo "--head-dim $1 --batch 4 --heads-q $((2048 / $1)) --heads-kv $((2048 / $1)) --seqlen 4096 --dtype bf16 --mask $2"; }
bench() { local label=$1 b=$2; shift 2; echo -n "$label $* | " >> "$s"
  FLASHJIT_CACHE_DIR=/tmp/fj/cache-$label "$b" bench "$@" --json 2>&1 | grep -E '"(config|tflops)"' | tr -d '\n ' >> "$s"; echo >> "$s"; }
echo "== A/B: base = 9f950f4, new = 80fc720 (interleaved)" >> "$s"
t0=$(date +%s)
for m in none causal; do for d in 64 80 96 100 128 160 192 256; do
  bench base $base $(shape $d $m); bench new $bin/flashjit $(shape $d $m)
done; done
echo "ab wall_s=$(( $(date +%s) - t0 ))" >> "$s"
for d in 192 160 256 128 96; do
  echo "== autotune new $(shape $d none)" >> "$s"
  FLASHJIT_CACHE_DIR=/tmp/fj/cache-tune timeout 40 $bin/flashjit autotune $(shape $d none) > "$out/autotune-d$d.log" 2>&1
  tail -4 "$out/autotune-d$d.log" >> "$s"
done
for args in "--head-dim 64 --batch 2 --heads-q 3 --heads-kv 3 --seqlen-q 200 --seqlen-k 333 --mask none" \
            "--head-dim 96 --batch 2 --heads-q 3 --heads-kv 3 --seqlen-q 200 --seqlen-k 333 --mask none" \
            "--head-dim 100 --batch 2 --heads-q 3 --heads-kv 3 --seqlen-q 200 --seqlen-k 333 --mask none" \
            "--head-dim 128 --batch 2 --heads-q 4 --heads-kv 2 --seqlen-q 200 --seqlen-k 333 --mask none"; do
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool flashjit run $args" >> "$s"
    timeout 60 compute-sanitizer --tool $tool --print-limit 5 "$bin/flashjit" run $args --repeats 1 --warmup 0 --check 2>&1 | grep -E "SUMMARY|PASS|FAIL|config" >> "$s"
  done
done
DIMS=64,80,96,100,128,160,192,256 SEQS=4096 PEERS_OUT=/tmp PYTHONUNBUFFERED=1 timeout 120 python3 .device/peers_bench.py > "$out/peers.log" 2>&1
tail -18 "$out/peers.log" >> "$s"
cat "$s"
