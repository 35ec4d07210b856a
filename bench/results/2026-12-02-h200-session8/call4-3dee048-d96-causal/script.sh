#!/usr/bin/env bash
# Session 8, call 4: d=96 causal fell below FA2 in call 3 (298 vs 303
# TFLOP/s; base 317). Autotune it with revision 9 and time candidate tiles.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
new=/tmp/fj/bin; base=/tmp/fj/base
s="$out/summary.txt"
shape="--head-dim 96 --batch 4 --heads-q 21 --heads-kv 21 --seqlen 4096 --dtype bf16 --mask causal"
FLASHJIT_CACHE_DIR=/tmp/fj/tune timeout 120 "$new/flashjit" autotune $shape > "$out/autotune.log" 2>&1
tail -25 "$out/autotune.log" >> "$s"
bench() { local name=$1 bin=$2; shift 2; echo -n "$name $* | " >> "$s"
  FLASHJIT_CACHE_DIR=/tmp/fj/cache-$name "$bin/flashjit" bench $shape "$@" --json 2>&1 | grep -E '"(config|tflops)"' | tr -d '\n ' >> "$s"; echo >> "$s"; }
for r in 1 2; do
  bench base $base
  bench new $new
  bench new $new --block-m 128 --block-n 64 --warps 4 --stages 2
  bench new $new --block-m 128 --block-n 64 --warps 4 --stages 1
  bench new $new --block-m 128 --block-n 32 --warps 4 --stages 2
  bench new $new --block-m 128 --block-n 64 --warps 8 --stages 2
done
cat "$s"
