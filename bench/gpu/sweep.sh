#!/usr/bin/env bash
# Tile-config sweep with the CLI (before the autotuner exists): one line per
# (head_dim, mask, config) with the TFLOP/s `flashjit run` reports.
# Usage (device): bash bench/gpu/sweep.sh "64 80 128" "128,64,8,2 128,64,4,2"
set -uo pipefail
bin=/tmp/fj/bin
dims=${1:-"64 80 96 100 128 160 256"}
configs=${2:-"128,64,8,2 128,64,4,2 128,128,8,2 64,64,4,2 128,64,8,3 128,32,4,2 128,128,4,2 64,128,4,2 128,32,8,3"}
masks=${3:-"none"}
for d in $dims; do
  h=$(( 2048 / d )); [ $h -lt 1 ] && h=1
  for m in $masks; do
    for c in $configs; do
      IFS=, read bm bn w st <<< "$c"
      r=$("$bin/flashjit" run --batch 2 --heads-q $h --heads-kv $h --seqlen 4096 --head-dim $d \
           --mask $m --block-m $bm --block-n $bn --warps $w --stages $st --repeats 15 2>&1)
      tf=$(grep -o "[0-9.]* TFLOP/s" <<< "$r" | head -1)
      regs=$(grep -o "registers=[0-9]*" <<< "$r" | head -1)
      err=$(grep -i -m1 "error" <<< "$r" | cut -c1-80)
      echo "d=$d mask=$m cfg=$c ${tf:-n/a} $regs $err"
    done
  done
done
