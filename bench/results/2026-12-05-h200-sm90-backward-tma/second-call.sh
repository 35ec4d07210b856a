#!/usr/bin/env bash
# The sm90 backward's dQ fix checked, its GPU matrix and the d=256 feature
# matrix (after the sticky error of the first call), sanitizers, then
# timings with peers in the same call.
set -u
rm -rf /tmp/fj; mkdir -p /tmp/fj "$OUT"
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
export FLASHJIT_CACHE_DIR=/tmp/fj/cache
B=/tmp/fj/bin/flashjit
log=$OUT/checks.log
one() { echo "== flashjit $*" | tee -a $log; timeout 60 $B "$@" 2>&1 | grep -E "^(config|time|dq|dk|dv|PASS|FAIL|repeat)|error" | tee -a $log; }
one run --backward --family sm90 --head-dim 128 --seqlen 300 --heads-q 4 --heads-kv 2 --mask causal --check --repeats 2
one run --backward --family sm90 --head-dim 96 --seqlen-q 130 --seqlen-k 200 --heads-q 2 --heads-kv 2 --check --repeats 2
one run --backward --family sm90 --head-dim 128 --head-dim-v 64 --seqlen 200 --heads-q 4 --heads-kv 4 --mask causal --deterministic --check --repeats 3
one run --backward --family sm90 --head-dim 72 --seqlens-q 77,0,130 --seqlens-k 90,5,200 --mask window --window-left 40 --window-right 0 --heads-q 2 --heads-kv 2 --check --repeats 2
GTEST_FILTER='Sm90/Sm90BackwardMatrix.*:Matrix/Features.*d256*' TEST_TIMEOUT=170 bash .device/run-device.sh tests > $OUT/tests-stdout.log 2>&1
tail -12 $OUT/tests-stdout.log
for tool in memcheck racecheck synccheck; do
  echo "== $tool" | tee -a $OUT/sanitize.log
  FLASHJIT_CACHE_DIR=/tmp/fj/cache-san timeout 60 compute-sanitizer --tool $tool --print-limit 5 $B run --backward --family sm90 --head-dim 128 --seqlen 150 --mask causal --heads-q 4 --heads-kv 2 --repeats 1 --warmup 0 --check 2>&1 | grep -E "SUMMARY|PASS|FAIL" | tee -a $OUT/sanitize.log
done
left() { (( SECONDS < $1 )); } # seconds since start below $1
sh() { local h=$((2048 / $1)); echo "--head-dim $1 --batch 4 --heads-q $h --heads-kv $h --seqlen 4096 --dtype bf16 --mask $2"; }
left 330 && for d in 64 128; do for m in none causal; do for f in sm80 sm90; do
  echo "bwd d=$d mask=$m $f | $(timeout 30 $B bench --backward $(sh $d $m) --family $f 2>&1 | grep -E '^(config|time):' | paste -sd' ')" | tee -a $OUT/bwd.log
done; done; done
left 400 && for d in 128 192 256; do for m in none causal; do
  echo "fwd d=$d mask=$m | $(timeout 30 $B bench $(sh $d $m) 2>&1 | grep -E '^(config|time):' | paste -sd' ')" | tee -a $OUT/fwd.log
done; done
left 430 && DIMS=64,128 OUT=$OUT timeout 60 python3 .device/peers_more.py bwd > $OUT/peers-bwd.log 2>&1
left 480 && DIMS=128,192,256 SEQS=4096 PEERS_OUT=$OUT PYTHONUNBUFFERED=1 timeout $((560 - SECONDS)) python3 .device/peers_bench.py > $OUT/peers.log 2>&1
tail -5 $OUT/peers-bwd.log; tail -8 $OUT/peers.log
cd $OUT && tar czf /tmp/logs2.tgz *.log *.txt *.json 2>/dev/null; rm -f $OUT/*.log $OUT/*.json $OUT/gpu.txt; mv /tmp/logs2.tgz $OUT/
