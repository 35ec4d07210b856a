#!/usr/bin/env bash
# Forward: the copies with the producer tail (numerics small first, test,
# sanitizers, speed at d = 100), then the overlap kernels' speed, then peers.
set -u
T0=$SECONDS; left() { echo $(( ${BUDGET:-570} - (SECONDS - T0) )); }
rm -rf /tmp/fj; mkdir -p /tmp/fj "$OUT"
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
B=/tmp/fj/bin
export FLASHJIT_CACHE_DIR=/tmp/fj/cache
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; $B/flashjit --version; date -u; cat .device/COMMIT; } > $OUT/run.txt 2>&1
shape() { local h=$((2048 / $1)); echo "--head-dim $1 --batch 4 --heads-q $h --heads-kv $h --seqlen 4096 --dtype bf16 --mask $2"; }
bench() { local log=$1 d=$2 m=$3; shift 3
  (( $(left) > 45 )) || { echo "d=$d mask=$m [$*] | skipped: time" >> $OUT/$log; return; }
  echo "d=$d mask=$m [$*] | $(timeout 40 $B/flashjit bench $(shape $d $m) "$@" 2>&1 | tail -1)" >> $OUT/$log; }
# 1. copies
for a in "--head-dim 100 --seqlen 300 --mask causal --heads-q 2 --heads-kv 2" \
         "--head-dim 36 --seqlen 200 --dtype fp16 --heads-q 8 --heads-kv 4" \
         "--head-dim 100 --seqlens-q 100,0,37 --seqlens-k 90,5,300 --mask causal --heads-q 8 --heads-kv 2 --pack-gqa on"; do
  echo "== run --family sm90 $a" >> $OUT/copies-check.log
  timeout 30 $B/flashjit run --family sm90 $a --check --repeats 2 >> $OUT/copies-check.log 2>&1; echo "rc=$?" >> $OUT/copies-check.log
done
if [[ $(grep -c PASS $OUT/copies-check.log) == 3 ]]; then
  timeout 150 $B/flashjit-gpu-tests --gtest_filter='Sm90Family.CopiedRowsMatchTheReference' > $OUT/copies-test.log 2>&1; echo "rc=$? wall=$((SECONDS-T0))" >> $OUT/copies-test.log
  for t in memcheck racecheck synccheck; do
    echo "== $t" >> $OUT/copies-sanitizer.log
    FLASHJIT_CACHE_DIR=/tmp/fj/cache-san timeout 60 compute-sanitizer --tool $t --print-limit 5 $B/flashjit run --family sm90 --head-dim 100 --seqlen 150 --mask causal --heads-q 2 --heads-kv 2 --check --repeats 1 --warmup 0 2>&1 | grep -E "SUMMARY|PASS|FAIL|loads|error" >> $OUT/copies-sanitizer.log
  done
  for m in none causal; do
    bench copies-bench.log 100 $m --family sm80; bench copies-bench.log 100 $m --family sm90
    bench copies-bench.log 96 $m; bench copies-bench.log 112 $m
  done
fi
echo "copies done at $((SECONDS-T0)) s" >> $OUT/run.txt
# 2. overlap (d = 128 first: the 650 goal)
for m in none causal; do
  for v in "" "--block-n 176" "--overlap on" "--overlap on --pingpong on" "--overlap on --pingpong off" \
           "--overlap on --block-n 144" "--overlap on --block-n 160" "--overlap on --block-n 176"; do
    bench overlap.log 128 $m $v
  done
done
for d in 256 192 64; do for m in none causal; do for v in "" "--overlap on"; do bench overlap.log $d $m $v; done; done; done
echo "overlap done at $((SECONDS-T0)) s" >> $OUT/run.txt
# 3. peers in the same call
(( $(left) > 60 )) && DIMS=100,128,256 SEQS=4096 PEERS_OUT=$OUT PYTHONUNBUFFERED=1 timeout $(( $(left) - 10 )) python3 .device/peers_bench.py > $OUT/peers.log 2>&1
date -u >> $OUT/run.txt
