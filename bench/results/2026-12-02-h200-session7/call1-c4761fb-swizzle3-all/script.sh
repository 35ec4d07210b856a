#!/usr/bin/env bash
# Session 7, call 1 (c4761fb, wip-swz3-all): unpadded shared-memory rows
# with an XOR swizzle of min(ctz(chunks), 3) bits in every layout (the
# 4-warp 32-row tiles included), against 9f950f4 (base). A/B, ncu of the
# cp.async wavefronts at d=192, the whole GPU suite, sanitizer, peers.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
bin=/tmp/fj/bin; base=/tmp/fj/base/flashjit
s="$out/summary.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$s"
shape() { echo "--head-dim $1 --batch 4 --heads-q $((2048 / $1)) --heads-kv $((2048 / $1)) --seqlen 4096 --dtype bf16 --mask $2"; }
bench() { local label=$1 b=$2; shift 2; echo -n "$label $* | " >> "$s"
  FLASHJIT_CACHE_DIR=/tmp/fj/cache-$label "$b" bench "$@" --json 2>&1 | grep -E '"(config|tflops)"' | tr -d '\n ' >> "$s"; echo >> "$s"; }
echo "== A/B: base = 9f950f4, new = c4761fb (interleaved)" >> "$s"
t0=$(date +%s)
for dm in "192 none" "96 none" "128 none" "192 none" "96 none" "128 none" "256 none" "64 none" "160 none" "80 none" "192 causal" "96 causal" "128 causal"; do set -- $dm
  bench base $base $(shape $1 $2); bench new $bin/flashjit $(shape $1 $2)
done
echo "ab wall_s=$(( $(date +%s) - t0 ))" >> "$s"
m=sm__sass_l1tex_t_sectors_pipe_lsu_mem_global_op_ldgsts_cache_bypass.sum,smsp__inst_executed_op_ldgsts.sum,smsp__sass_l1tex_data_pipe_lsu_wavefronts_mem_shared_op_ldgsts.sum,smsp__sass_l1tex_data_pipe_lsu_wavefronts_mem_shared_op_ldsm.sum,smsp__inst_executed_op_ldsm.sum,gpu__time_duration.sum
echo "== ncu new d=192 none" >> "$s"
FLASHJIT_CACHE_DIR=/tmp/fj/cache-new timeout 60 ncu --clock-control none --metrics $m -k regex:fwd_ --launch-count 1 \
  $bin/flashjit run $(shape 192 none) --warmup 0 --repeats 1 2>&1 | grep -E "sm__sass|smsp__|gpu__time" >> "$s"
export FLASHJIT_CACHE_DIR=/tmp/fj/cache-tests
t0=$(date +%s)
timeout 270 $bin/flashjit-gpu-tests > "$out/gpu-tests.log" 2>&1
echo "tests rc=$? wall_s=$(( $(date +%s) - t0 ))" >> "$s"; grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]" "$out/gpu-tests.log" | tail -8 >> "$s"
DIMS=192,96,128,256,64 SEQS=4096 PEERS_OUT=/tmp PYTHONUNBUFFERED=1 timeout 100 python3 .device/peers_bench.py > "$out/peers.log" 2>&1
tail -12 "$out/peers.log" >> "$s"
for args in "--head-dim 192 --batch 2 --heads-q 3 --seqlen-q 200 --seqlen-k 333 --mask none" \
            "--head-dim 96 --batch 2 --heads-q 3 --seqlen-q 200 --seqlen-k 333 --mask causal" \
            "--head-dim 80 --batch 2 --heads-q 3 --seqlen-q 200 --seqlen-k 333 --mask causal"; do
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool flashjit run $args" >> "$s"
    timeout 60 compute-sanitizer --tool $tool --print-limit 5 "$bin/flashjit" run $args --repeats 1 --warmup 0 --check 2>&1 | grep -E "SUMMARY|PASS|FAIL|config" >> "$s"
  done
done
cat "$s"
