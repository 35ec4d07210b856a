#!/usr/bin/env bash
# Backward tile candidates: correctness (run --backward --check, explicit
# tiles) and the standard shapes' rate, old default against candidate.
rm -rf /tmp/fj; mkdir -p /tmp/fj; tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
B=/tmp/fj/bin/flashjit; export FLASHJIT_CACHE_DIR=/tmp/fj/cache; L=$OUT/bwd-sweep.log
{ date -u; echo "binaries: $(cat .device/COMMIT)"; echo "command: bash .device/bwd-sweep.sh"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > $L
ck() { echo "== run --backward --check $*" >> $L
  timeout 60 $B run --backward "$@" --repeats 1 --warmup 0 --check 2>&1 | grep -E "config:|PASS|FAIL|rror" >> $L; }
T4="--block-m 16 --block-n 128 --warps 4 --stages 2"; T8="--block-m 16 --block-n 128 --warps 8 --stages 2"
ck --head-dim 64 $T4 --seqlen 300 --mask causal --heads-q 4
ck --head-dim 64 $T4 --heads-q 8 --heads-kv 2 --seqlen-q 200 --seqlen-k 333 --mask causal --deterministic
ck --head-dim 64 $T4 --seqlens-q 100,300 --seqlens-k 150,300 --mask causal --heads-q 2
for D in 96 100 128; do
  ck --head-dim $D $T8 --seqlen 300 --mask causal --heads-q 4
  ck --head-dim $D $T8 --heads-q 8 --heads-kv 2 --seqlen-q 200 --seqlen-k 333 --mask window --window-left 50 --window-right 0 --deterministic
done
ck --head-dim 128 $T8 --seqlens-q 100,300 --seqlens-k 150,300 --heads-q 2
ck --head-dim 128 $T8 --seqlen 257 --heads-q 2
for D in 64 96 100 128; do H=$((2048 / D)); T=$T8; [ $D = 64 ] && T=$T4
  for m in none causal; do for t in "" "$T"; do
    echo "d=$D $m [${t:-default}] | $(timeout 60 $B bench --backward --head-dim $D --batch 4 \
      --heads-q $H --heads-kv $H --seqlen 4096 --dtype bf16 --mask $m $t 2>&1 |
      grep -E '^(config|time):' | paste -sd' ')" >> $L
  done; done
done
echo "finished $(date -u)" >> $L
