#!/usr/bin/env bash
# Session 8, call 2: which LLVM middle end. The same binary (aecca34 + an
# experiment-only FLASHJIT_LLVM_PIPELINE override) with three pipelines,
# against session 7's binary ("base"): throughput where call 1 saw the new
# kernels slower, interleaved, two rounds; cold compile.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
new=/tmp/fj/bin; base=/tmp/fj/base
s="$out/summary.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$s"
CUSTC="function(early-cse<memssa>,instcombine,simplifycfg,reassociate,loop-mssa(licm),early-cse<memssa>,instcombine,adce,simplifycfg)"
ROT="function(early-cse<memssa>,instcombine,simplifycfg,reassociate,loop(loop-rotate),loop-mssa(licm),early-cse<memssa>,instcombine,adce,simplifycfg)"
O3="default<O3>"
shape() { echo "--head-dim $1 --batch 4 --heads-q $((2048 / $1)) --heads-kv $((2048 / $1)) --seqlen 4096 --dtype bf16 --mask $2"; }
run() { local name=$1 bin=$2 pipe=$3; shift 3; echo -n "$name $* | " >> "$s"
  FLASHJIT_LLVM_PIPELINE="$pipe" FLASHJIT_CACHE_DIR=/tmp/fj/cache-$name "$bin/flashjit" bench "$@" --json 2>&1 | grep -E '"(config|tflops)"' | tr -d '\n ' >> "$s"; echo >> "$s"; }
for round in 1 2; do
  echo "== round $round" >> "$s"
  for k in "128 causal" "160 causal" "160 none" "100 causal" "96 causal" "80 none" "128 none" "64 causal"; do
    set -- $k
    run custC $new "$CUSTC" $(shape $1 $2)
    run rot $new "$ROT" $(shape $1 $2)
    run o3loops $new "$O3" $(shape $1 $2)
    echo -n "base " >> "$s"; FLASHJIT_CACHE_DIR=/tmp/fj/cache-base "$base/flashjit" bench $(shape $1 $2) --json 2>&1 | grep -E '"(config|tflops)"' | tr -d '\n ' >> "$s"; echo >> "$s"
  done
done
cold() { echo "== cold compile $1" >> "$s"
  rm -rf /tmp/fj/cold; FLASHJIT_LLVM_PIPELINE="$3" CUDA_CACHE_DISABLE=1 FLASHJIT_CACHE_DIR=/tmp/fj/cold "$2/flashjit-bench-gpu" --dims 64 --seqlens 128 --cache-latency 2>&1 | grep -E "^\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|$" >> "$s"; }
for r in 1 2 3; do cold custC $new "$CUSTC"; cold rot $new "$ROT"; cold o3loops $new "$O3"; cold base $base ""; done
echo "== ptxas standalone" >> "$s"
for v in custC rot; do p=CUSTC; [ $v = rot ] && p=ROT
  FLASHJIT_LLVM_PIPELINE="${!p}" "$new/flashjit" compile --head-dim 128 --dtype bf16 --arch sm_90a --emit ptx > /tmp/fj/k.ptx
  for i in 1 2 3; do TIMEFORMAT="$v d=128 ptxas %R s"; { time ptxas -arch=sm_90a /tmp/fj/k.ptx -o /tmp/fj/k.cubin; } 2>> "$s"; done
done
cat "$s"
