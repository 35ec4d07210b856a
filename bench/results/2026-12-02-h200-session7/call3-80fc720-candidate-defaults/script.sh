#!/usr/bin/env bash
# Session 7, call 3 (80fc720, the binaries of call 2): candidate defaults
# for the unpadded swizzled layout. Explicit tiles against the default at
# d = 128 / 160 / 192 with and without a mask, autotune where the issue's
# goals are tight (d=100, d=64) or untuned (causal 160 / 192), D=64 A/B
# again, peers in the same call.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
bin=/tmp/fj/bin; base=/tmp/fj/base/flashjit
s="$out/summary.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$s"
shape() { echo "--head-dim $1 --batch 4 --heads-q $((2048 / $1)) --heads-kv $((2048 / $1)) --seqlen 4096 --dtype bf16 --mask $2"; }
bench() { local label=$1 b=$2; shift 2; echo -n "$label $* | " >> "$s"
  FLASHJIT_CACHE_DIR=/tmp/fj/cache-$label "$b" bench "$@" --json 2>&1 | grep -E '"(config|tflops)"|local|spill' | tr -d '\n ' >> "$s"; echo >> "$s"; }
echo "== explicit tiles (new)" >> "$s"
for m in none causal; do
  for t in "160" "160 --block-m 64 --block-n 128 --warps 4 --stages 1" "144 --block-m 64 --block-n 128 --warps 4 --stages 1" "144" \
           "192" "192 --block-m 128 --block-n 128 --warps 8 --stages 1" "192 --block-m 128 --block-n 64 --warps 8 --stages 3" \
           "128" "128 --block-m 128 --block-n 64 --warps 4 --stages 2"; do
    set -- $t; d=$1; shift
    bench new $bin/flashjit $(shape $d $m) "$@"
  done
done
echo "== A/B d=64 none: base = 9f950f4, new = 80fc720" >> "$s"
for r in 1 2; do bench base $base $(shape 64 none); bench new $bin/flashjit $(shape 64 none); done
for dm in "100 none" "100 causal" "64 none" "160 causal" "192 causal" "80 none"; do set -- $dm
  echo "== autotune new $(shape $1 $2)" >> "$s"
  FLASHJIT_CACHE_DIR=/tmp/fj/cache-tune timeout 40 $bin/flashjit autotune $(shape $1 $2) > "$out/autotune-d$1-$2.log" 2>&1
  grep -E "^\s+[0-9]+\s+block_m" "$out/autotune-d$1-$2.log" | sort -k6 -n -r | head -4 >> "$s"
  tail -3 "$out/autotune-d$1-$2.log" | head -2 >> "$s"
done
DIMS=64,80,100,128,144,160,192 SEQS=4096 PEERS_OUT=/tmp PYTHONUNBUFFERED=1 timeout 120 python3 .device/peers_bench.py > "$out/peers.log" 2>&1
tail -16 "$out/peers.log" >> "$s"
cat "$s"
