#!/usr/bin/env bash
# Session 8, call 1: codegen revision 9 (aecca34) against session 7's HEAD
# (4343d0a, "base"). Cold compile A/B (alternating, CUDA_CACHE_DISABLE=1),
# ptxas standalone on the same PTX, the whole GPU suite, sanitizer on the
# new run-time loops, throughput of both binaries.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
new=/tmp/fj/bin; base=/tmp/fj/base
s="$out/summary.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$s"
"$new/flashjit" --version >> "$s"; "$base/flashjit" --version >> "$s"
nproc >> "$s"; uptime >> "$s"
cold() { echo "== cold compile $1" >> "$s"
  rm -rf /tmp/fj/cold; CUDA_CACHE_DISABLE=1 FLASHJIT_CACHE_DIR=/tmp/fj/cold "$2/flashjit-bench-gpu" --dims 64 --seqlens 128 --cache-latency 2>&1 | grep -E "^\| [0-9]" >> "$s"; }
for r in 1 2; do cold new $new; cold base $base; done
echo "== ptxas standalone (s), generation (flashjit compile --time)" >> "$s"
for b in new base; do for d in 64 80 128; do
  bin=/tmp/fj/$b; [ $b = new ] && bin=$new
  "$bin/flashjit" compile --head-dim $d --dtype bf16 --arch sm_90a --emit ptx > /tmp/fj/k.ptx
  g=$("$bin/flashjit" compile --head-dim $d --dtype bf16 --arch sm_90a --emit ptx --time 2>&1 >/dev/null | grep -o "total: [0-9.]*")
  t0=$(date +%s.%N); ptxas -arch=sm_90a /tmp/fj/k.ptx -o /tmp/fj/k.cubin; t1=$(date +%s.%N)
  echo "$b d=$d gen $g ptxas $(echo "$t1 - $t0" | bc) s lines $(wc -l < /tmp/fj/k.ptx)" >> "$s"
done; done
export FLASHJIT_CACHE_DIR=/tmp/fj/cache-tests
t0=$(date +%s)
timeout 250 $new/flashjit-gpu-tests > "$out/gpu-tests.log" 2>&1
echo "tests rc=$? wall_s=$(( $(date +%s) - t0 ))" >> "$s"; grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]" "$out/gpu-tests.log" | tail -8 >> "$s"
for args in "--head-dim 128 --batch 2 --heads-q 3 --heads-kv 3 --seqlen-q 200 --seqlen-k 333 --mask none" \
            "--head-dim 96 --batch 2 --heads-q 3 --heads-kv 3 --seqlen-q 300 --seqlen-k 333 --mask causal" \
            "--head-dim 100 --batch 2 --heads-q 3 --heads-kv 3 --seqlen-q 200 --seqlen-k 333 --mask causal"; do
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool flashjit run $args" >> "$s"
    timeout 50 compute-sanitizer --tool $tool --print-limit 5 "$new/flashjit" run $args --repeats 1 --warmup 0 --check 2>&1 | grep -E "SUMMARY|PASS|FAIL|config" >> "$s"
  done
done
shape() { echo "--head-dim $1 --batch 4 --heads-q $((2048 / $1)) --heads-kv $((2048 / $1)) --seqlen 4096 --dtype bf16 --mask $2"; }
bench() { local bin=$1; shift; echo -n "$* | " >> "$s"
  FLASHJIT_CACHE_DIR=/tmp/fj/cache-bench-$(basename $bin) "$bin/flashjit" bench "$@" --json 2>&1 | grep -E '"(config|tflops)"' | tr -d '\n ' >> "$s"; echo >> "$s"; }
for m in none causal; do for d in 64 80 96 100 128 160 192 256; do
  echo -n "new  " >> "$s"; bench $new $(shape $d $m); echo -n "base " >> "$s"; bench $base $(shape $d $m)
done; done
cat "$s"
