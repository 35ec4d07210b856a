#!/usr/bin/env bash
# Session 6, call 6 (93bfd46 on branch wip-swizzle): shared-memory rows on
# 32-byte boundaries with a one-bit chunk swizzle, against 1b67336 (base).
# A/B at D = 192 / 256 / 64 / 160 (kernels that assemble without spills),
# cp.async sectors per instruction, a GPU-test subset, peers last.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
bin=/tmp/fj/bin; base=/tmp/fj/base/flashjit
s="$out/summary.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$s"
shape() { echo "--head-dim $1 --batch 4 --heads-q $((2048 / $1)) --heads-kv $((2048 / $1)) --seqlen 4096 --dtype bf16 --mask $2"; }
bench() { local label=$1 b=$2; shift 2; echo -n "$label $* | " >> "$s"
  FLASHJIT_CACHE_DIR=/tmp/fj/cache-$label "$b" bench "$@" --json 2>&1 | grep -E '"(config|tflops)"' | tr -d '\n ' >> "$s"; echo >> "$s"; }
echo "== A/B: base = 1b67336, swz = 93bfd46 (interleaved)" >> "$s"
for dm in "192 none" "256 none" "192 causal" "256 causal" "64 none" "160 none"; do set -- $dm
  for r in 1 2; do bench base $base $(shape $1 $2); bench swz $bin/flashjit $(shape $1 $2); done
done
m=sm__sass_l1tex_t_sectors_pipe_lsu_mem_global_op_ldgsts_cache_bypass.sum,smsp__inst_executed_op_ldgsts.sum,smsp__sass_l1tex_data_pipe_lsu_wavefronts_mem_shared_op_ldgsts.sum,gpu__time_duration.sum
for label in base swz; do b=$base; [[ $label == swz ]] && b=$bin/flashjit
  echo "== ncu $label d=192 none" >> "$s"
  FLASHJIT_CACHE_DIR=/tmp/fj/cache-$label timeout 60 ncu --clock-control none --metrics $m -k regex:fwd_ --launch-count 1 \
    $b run $(shape 192 none) --warmup 0 --repeats 1 2>&1 | grep -E "sm__sass|smsp__|gpu__time" >> "$s"
done
export FLASHJIT_CACHE_DIR=/tmp/fj/cache-tests
timeout 100 $bin/flashjit-gpu-tests --gtest_filter='Matrix/Forward.*_d192*:Matrix/Forward.*_d256*:Matrix/Forward.*_d33*:Matrix/Forward.*_d96*:Matrix/Forward.*_d100*:Matrix/Forward.*_d8*:Long/*:FeaturesRuntime/*' > "$out/gpu-tests.log" 2>&1
echo "tests rc=$?" >> "$s"; grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]" "$out/gpu-tests.log" | tail -8 >> "$s"
DIMS=192,256,64,160 SEQS=4096 PEERS_OUT=/tmp PYTHONUNBUFFERED=1 timeout 70 python3 .device/peers_bench.py > "$out/peers.log" 2>&1
tail -10 "$out/peers.log" >> "$s"
cat "$s"
