#!/usr/bin/env bash
# First checks: small runs first (a bad mbarrier phase hangs), then the GPU tests.
set -u
rm -rf /tmp/fj; mkdir -p /tmp/fj "$OUT"
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
export FLASHJIT_CACHE_DIR=/tmp/fj/cache
B=/tmp/fj/bin/flashjit
log=$OUT/first-checks.log
one() { echo "== flashjit $*" | tee -a $log; timeout 60 $B "$@" 2>&1 | tail -7 | tee -a $log; echo "rc=${PIPESTATUS[0]}" | tee -a $log; }
one run --backward --family sm90 --head-dim 64 --seqlen 256 --heads-q 2 --heads-kv 2 --check --repeats 2
one run --backward --family sm90 --head-dim 128 --seqlen 300 --heads-q 4 --heads-kv 2 --mask causal --check --repeats 2
one run --backward --family sm90 --head-dim 96 --seqlen-q 130 --seqlen-k 200 --heads-q 2 --heads-kv 2 --check --repeats 2
one run --backward --family sm90 --head-dim 64 --seqlens-q 77,0,1,40 --seqlens-k 90,5,1,130 --mask causal --heads-q 4 --heads-kv 2 --check --repeats 2
one run --backward --family sm90 --head-dim 128 --seqlen 200 --heads-q 4 --heads-kv 4 --mask causal --deterministic --check --repeats 2
one run --backward --family sm90 --head-dim 36 --seqlen 200 --dtype fp16 --heads-q 2 --heads-kv 2 --check --repeats 2
one run --head-dim 100 --heads-q 2 --heads-kv 2 --family sm90 --seqlen 300 --check --repeats 2
one run --head-dim 36 --heads-q 8 --heads-kv 4 --family sm90 --seqlen 200 --dtype fp16 --check --repeats 2
one run --head-dim 128 --heads-q 8 --heads-kv 2 --seqlen 300 --mask causal --pack-gqa on --check --repeats 2
one run --head-dim 160 --seqlen 500 --mask causal --check --repeats 2
one run --head-dim 256 --seqlen 400 --dtype fp16 --check --repeats 2
GTEST_FILTER='Sm90Family.*:Sm90/Sm90BackwardMatrix.*:Matrix/Features.*d192*:Matrix/Features.*d256*' TEST_TIMEOUT=260 bash .device/run-device.sh tests > $OUT/tests-stdout.log 2>&1
tail -30 $OUT/tests-stdout.log
for args in "--head-dim 128 --seqlen 150 --mask causal --heads-q 4 --heads-kv 2" "--head-dim 64 --seqlens-q 50,0,17 --seqlens-k 40,5,90 --heads-q 2 --heads-kv 2 --deterministic"; do
  for tool in memcheck racecheck synccheck; do
    echo "== compute-sanitizer --tool $tool flashjit run --backward --family sm90 $args" | tee -a $OUT/sanitize.log
    FLASHJIT_CACHE_DIR=/tmp/fj/cache-san timeout 90 compute-sanitizer --tool $tool --print-limit 5 $B run --backward --family sm90 $args --repeats 1 --warmup 0 --check 2>&1 | grep -E "SUMMARY|PASS|FAIL|error" | tee -a $OUT/sanitize.log
  done
done
bash .device/run-device.sh sm90-smoke > $OUT/smoke-stdout.log 2>&1
grep -c PASS $OUT/sm90-smoke.log; grep -B2 -i "fail\|error\|mismatch\|rc=1" $OUT/sm90-smoke.log | head -20
cd $OUT && tar czf /tmp/logs.tgz *.log *.txt 2>/dev/null; rm -f $OUT/*.log $OUT/gpu.txt; mv /tmp/logs.tgz $OUT/
