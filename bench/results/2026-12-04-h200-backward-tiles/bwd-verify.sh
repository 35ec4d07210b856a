#!/usr/bin/env bash
# The backward GPU tests and a few checks with the new default tiles.
GTEST_FILTER='*Backward*' TEST_TIMEOUT=130 bash bench/gpu/run-device.sh tests > $OUT/console.log 2>&1
B=/tmp/fj/bin/flashjit; L=$OUT/bwd-verify.log
ck() { echo "== run --backward --check $*" >> $L
  timeout 40 $B run --backward "$@" --repeats 1 --warmup 0 --check 2>&1 | grep -E "config:|PASS|FAIL|rror" >> $L; }
ck --head-dim 33 --seqlen 300 --mask causal --heads-q 4
ck --head-dim 48 --heads-q 8 --heads-kv 2 --seqlen-q 200 --seqlen-k 333 --mask causal
ck --head-dim 112 --seqlens-q 100,300 --seqlens-k 150,300 --heads-q 2 --deterministic
ck --head-dim 128 --seqlen 500 --key-lengths 500 --heads-q 2 --mask causal
