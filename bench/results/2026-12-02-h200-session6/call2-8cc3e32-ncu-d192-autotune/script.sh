#!/usr/bin/env bash
# Session 6, call 2 (8cc3e32): Nsight Compute at D=192 (none) on flashjit's
# 128x64 w8 s1 (FA2's own tile at D=192) and 64x64 w4 s1 (the default), each
# next to FA2; then autotune at D=96 and D=192 with the causal CTA order.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
bin=/tmp/fj/bin
s="$out/summary.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$s"
OUT=$out/p128x64w8 PROFILE_D=192 PROFILE_MASK=none PROFILE_TILE="128 64 8 1" bash bench/gpu/profile-device.sh >> "$s" 2>&1
OUT=$out/p64x64w4 PROFILE_D=192 PROFILE_MASK=none PROFILE_TILE="64 64 4 1" bash bench/gpu/profile-device.sh >> "$s" 2>&1
rm -f $out/p64x64w4/ncu-fa2.txt
export FLASHJIT_CACHE_DIR=/tmp/fj/cache
shape() { echo "--head-dim $1 --batch 4 --heads-q $((2048 / $1)) --heads-kv $((2048 / $1)) --seqlen 4096 --dtype bf16 --mask $2"; }
for dm in "96 none 6" "96 causal 6" "192 none 30"; do set -- $dm
  echo "== flashjit autotune $(shape $1 $2) --top $3" >> "$out/autotune.log"
  timeout 60 "$bin/flashjit" autotune $(shape $1 $2) --top $3 2>&1 | grep -vE "^(compile|measure) " >> "$out/autotune.log"
done
cd "$out" && tar -czf profiles.tgz p128x64w8 p64x64w4 && rm -rf p128x64w8 p64x64w4
cat "$s"; grep -E "^ +[0-9]+ +block_m|^best" "$out/autotune.log"
