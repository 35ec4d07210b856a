#!/usr/bin/env bash
# The one runner of GPU measurements. Runs on the lent GPU machine from the
# repository root; expects .device/flashjit-bin.tar.xz (static binaries built
# with FLASHJIT_STATIC_LLVM=ON, stripped; .device/peers_bench.py for peers),
# as bench/gpu/pack-device.sh makes them.
#
#   bash bench/gpu/run-device.sh MODE [MODE ...]      (modes run in order)
#
# Every run writes $OUT/run.txt first: the date, this command line with the
# settings below that were set, the commit (.device/COMMIT, written when the
# binaries are packed, else git, else $FLASHJIT_COMMIT), the GPU and the versions. A result under bench/results
# cites that command line and commit; the runner is the code that made it.
#
# Shapes: "the standard shape" of head dim D is bf16, batch 4, 2048 / D heads
# (q = kv), seqlen 4096, as the results in bench/results use.
#
# Modes (settings in capitals, defaults in brackets):
#   tests           flashjit-gpu-tests with wall time [GTEST_FILTER, TEST_TIMEOUT=280]
#   sanitize        compute-sanitizer memcheck + racecheck on `flashjit run --check`
#                   [SANITIZE_RUNS: ';'-separated argument lists; SANITIZE_ARGS added to each,
#                    e.g. --quick]
#   features-sanitize, features-bench, features (both)
#                   feature kernels under compute-sanitizer; bench/gpu/features_peers.py
#                   [DIMS (here 128,80 unless given), FEATURES_TIMEOUT=400]
#   autotune        `flashjit autotune` per standard shape, then `flashjit bench` of them
#                   [TUNE_DIMS="64 80 100 128", TUNE_MASKS="none causal",
#                    WINDOW_DIMS="80 128" (window 512/0), TUNE_TOP=5, TUNE_TIMEOUT=120]
#   bench           flashjit-bench-gpu --dims DIMS --seqlens 4096 --cache-latency (JSON)
#                   [DIMS=64,80,96,100,128,160,256]
#   peers           .device/peers_bench.py on the standard shapes [DIMS, PEERS_TIMEOUT=1200]
#   throughput      `flashjit bench --json` per standard shape, config and TFLOP/s;
#                   interleaved A/B over BINS, ROUNDS times
#                   [DIMS, MASKS="none causal", BINS="new=/tmp/fj/bin", ROUNDS=1,
#                    VARIANTS: ';'-separated extra option sets, each benched too
#                    (e.g. "--quick" or "--block-m 128 --block-n 64 --warps 4 --stages 2")]
#   cold            cold compile: flashjit-bench-gpu --dims COLD_DIMS --seqlens 128
#                   --cache-latency in an empty cache directory, the driver's cache off,
#                   interleaved over BINS and BENCH_BINARIES, ROUNDS times
#                   [COLD_DIMS=64, ROUNDS=3, BENCH_BINARIES=flashjit-bench-gpu, DRIVER_CACHE=0
#                    (1: also with the driver's JIT cache on)]
#   first-compile   `flashjit run` in a new process per (D, mask) on an empty cache: the
#                   first compile of a process [FIRST_DIMS="64 128 160 192 256",
#                   MASKS, ROUNDS=1]
#   compile-split   generation time (`flashjit compile --time`) and standalone ptxas per D
#                   [SPLIT_DIMS="64 80 128", BINS, ROUNDS=1]
#   jit-options     the driver JIT's time, registers and cubin per optimisation level and
#                   CU_JIT_FAST_COMPILE (bench/gpu/jit_options.py), and ptxas
#                   --Ofast-compile, on the PTX of JIT_KERNELS
#                   [JIT_KERNELS="128:causal 160:none 192:causal 256:none", JIT_QUICK=0
#                    (1: the quick forms)]
#   run-check       `flashjit run --check` on a cold cache, then again from disk
#                   [RUN_ARGS: ';'-separated argument lists]
#   profile         Nsight Compute of one flashjit kernel next to FlashAttention-2 at the
#                   standard shape, and flashjit's SASS
#                   [PROFILE_D=128, PROFILE_MASK=none, PROFILE_TILE="128 64 4 2",
#                    PROFILE_NCU_ARGS]
#   backward-profile Nsight Compute of the backward's main kernel next to FlashAttention-2's
#                   (SDPA flash backward) at the standard shape, and its SASS
#                   [PROFILE_D=128, PROFILE_MASK=none, PROFILE_ARGS: extra `run --backward` options]
#   ncu-metrics     ncu --metrics NCU_METRICS on `flashjit run` of the standard shape per BINS
#                   [NCU_D=192, NCU_MASK=none, NCU_METRICS: cp.async/ldmatrix wavefronts]
#   sweep           tile sweep with `flashjit run` [SWEEP_DIMS, SWEEP_CONFIGS, SWEEP_MASKS]
#   python          the Python package: the carried cp312 wheel (.whl/flashjit-*-cp312-*.whl)
#                   installed into the machine's torch + jax environment without network,
#                   tests/python, then bench/python_overhead.py against the C++ bench
#                   [PYTHON=/opt/torch/.venv/bin/python, PYTHON_TESTS_TIMEOUT=400,
#                    PYTHON_BENCH_TIMEOUT=200]; not part of all
#   sm90-smoke      the sm90 family's default and variants under `flashjit run --check`,
#                   small, each under a 60 s timeout (a bad mbarrier phase hangs)
#   sm90-tests      the Sm90Family.* GPU tests (every variant), and the feature matrix at
#                   the head dims whose sm90 defaults differ most (128, 192, 256): what a
#                   change of the family's defaults must pass [TEST_TIMEOUT]
#   sm90-sanitize   compute-sanitizer memcheck, racecheck and synccheck on sm90 kernels
#   tma-probe       bench/gpu/tma-probe.cu (nvcc): one TMA load per map of a list, each in its
#                   own process: which 4-d maps (unit dimensions, heads as columns of rows,
#                   no swizzle) and innermost coordinates (8 bytes off 16: expected to be
#                   refused) the hardware refuses with an illegal instruction
#   sm90-copies     the sm90 family's cp.async copies (rows TMA cannot address), forced:
#                   small `run --check` under 30 s timeouts first (a bad register hand-off
#                   or mbarrier phase hangs), then Sm90Family.CopiedRowsMatchTheReference,
#                   the sanitizers on one, and `bench` at d = 100 with --family sm80|sm90
#                   beside d = 96 and 112 [MASKS]
#   setmaxnreg-probe bench/gpu/setmaxnreg-probe.cu (nvcc): which producer / consumer
#                   register counts a CTA of 384 threads hands over, and which hang
#   sm90-variants   TFLOP/s of option sets (VARIANTS, ';'-separated) at the standard shape
#                   [VARIANT_DIMS="64 128 256", MASKS]
#   sm90-bench      the default config's TFLOP/s (`flashjit bench`) at the standard shape of
#                   every D in DIMS, fp16 at a few D, and 1k / 16k key lengths at D=128
#   grid            the default config's TFLOP/s at issue 19's shapes (16k tokens, 2048 / D
#                   heads) of every D, seqlen, dtype and mask [GRID_DIMS="64 72 80 96 100
#                   112 128 160 192 256", GRID_SEQS=4096, GRID_DTYPES=bf16, MASKS]
#   peers-grid      bench/gpu/peers_grid.py: the peers (.device/peers_bench.py's cases) on
#                   the same grid, FlexAttention at FLEX_DIMS only [FLEX_DIMS=100,
#                   PEERS_TIMEOUT]; appends to peers-grid.log and peers-grid.jsonl
#   backward-smoke  `flashjit run --backward --check` over head dims and features, each
#                   under a 60 s timeout [BACKWARD_RUNS: ';'-separated argument lists]
#   backward-tests  the '*Backward*' GPU tests (matrix, deterministic, autotune) [TEST_TIMEOUT]
#   backward-sanitize  compute-sanitizer memcheck, racecheck and synccheck on small
#                   `flashjit run --backward --check` runs
#   backward-bench  `flashjit bench --backward` at the standard shape of every D in
#                   BACKWARD_DIMS [64,96,100,128,192,256] and MASKS, `flashjit autotune
#                   --backward` at D=128 causal, then .device/peers_more.py bwd on the same
#                   shapes [PEERS_TIMEOUT]
#   backward-tiles  candidate backward tiles against the default: `run --backward --check`
#                   with each on small problems, `bench --backward` of both at the
#                   standard shapes [BACKWARD_TILES="64:16,128,4,2 96:16,128,8,2 ..."
#                   (D:block_m,block_n,warps,stages), MASKS]
#   backward-tune   `flashjit autotune --backward` per standard shape, with `flashjit bench
#                   --backward` before and after [BACKWARD_TUNE_DIMS="128 64", MASKS,
#                   TUNE_TIMEOUT=300]
#   sm90-backward   the sm90 (wgmma) backward, forced: smoke runs (first), its GPU tests and
#                   sanitizers at d <= 128 (TMA) and d = 36 (copied), `bench --backward`
#                   of both families at d = 64 and 128
#   backward        backward-smoke, backward-tests, backward-sanitize, backward-bench
#                   [BACKWARD_EXTRA: options added to every backward run, bench and
#                    sanitizer line, e.g. "--scalar off" for the mma.sync main kernel]
#   decode-smoke    `flashjit run --decode --check` over page sizes, split counts, GQA 8:1,
#                   MQA, cache lengths 0/1/non-multiples, append-free prefill, each under
#                   a 60 s timeout [DECODE_RUNS: ';'-separated argument lists]
#   decode-tests    the decode GPU tests (Paged*, SplitKV*) [TEST_TIMEOUT]
#   decode-sanitize compute-sanitizer memcheck, racecheck and synccheck on small paged
#                   and split `flashjit run --decode --check` runs
#   decode-bench    `flashjit bench --decode` K+V GB/s at D=128 bf16, heads 32/8: batch 8 x
#                   32k keys and batch 64 x 4k keys, contiguous and paged (16, 256);
#                   then decode-peers
#   decode-peers    .device/peers_more.py decode (SDPA backends, FlexAttention, the same
#                   shapes) and the device's copy bandwidth [PEERS_TIMEOUT=600]
#   decode-tune     `flashjit autotune --decode` on the decode-bench shapes, then their
#                   `flashjit bench --decode` with the tuned configs
#   decode          decode-smoke, decode-tests, decode-sanitize, decode-bench, in that order
#   all             tests sanitize features autotune bench peers
#
# Modes may also be given comma-separated in one argument.
# Logs go to $OUT (or /tmp/out). BINS entries are label=directory of another
# build's binaries (unpacked by the caller, e.g. /tmp/fj/base). Any other
# environment (FLASHJIT_*, CUDA_*) passes through to the programs.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out" /tmp/fj
[[ -x /tmp/fj/bin/flashjit ]] || tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
bin=/tmp/fj/bin
export LD_LIBRARY_PATH=/tmp/fj/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export FLASHJIT_CACHE_DIR=${FLASHJIT_CACHE_DIR:-/tmp/fj/cache}
modes=(${*:-all})
modes=(${modes[@]//,/ })
givenDims=${DIMS:-}
DIMS=${DIMS:-64,80,96,100,128,160,256}
MASKS=${MASKS:-none causal}
# Issue 19's grid (the grid and peers-grid modes; peers_grid.py takes them).
export GRID_DIMS=${GRID_DIMS:-64 72 80 96 100 112 128 160 192 256}
export GRID_SEQS=${GRID_SEQS:-4096} GRID_DTYPES=${GRID_DTYPES:-bf16}
BINS=${BINS:-new=$bin}
ROUNDS=${ROUNDS:-}

# ---- the record of this run ----------------------------------------------------
settings=""
for v in GTEST_FILTER TEST_TIMEOUT SANITIZE_RUNS SANITIZE_ARGS FEATURES_TIMEOUT TUNE_DIMS \
         TUNE_MASKS WINDOW_DIMS TUNE_TOP TUNE_TIMEOUT DIMS MASKS BINS ROUNDS VARIANTS \
         BENCH_BINARIES DRIVER_CACHE FIRST_DIMS SPLIT_DIMS JIT_KERNELS JIT_QUICK RUN_ARGS \
         PROFILE_D PROFILE_MASK PROFILE_TILE PROFILE_NCU_ARGS NCU_D NCU_MASK NCU_METRICS \
         SWEEP_DIMS SWEEP_CONFIGS SWEEP_MASKS PEERS_TIMEOUT PYTHON PYTHON_TESTS_TIMEOUT \
         PYTHON_BENCH_TIMEOUT CUDA_CACHE_DISABLE BACKWARD_RUNS BACKWARD_DIMS BACKWARD_TUNE_DIMS BACKWARD_TILES \
         VARIANT_DIMS PROFILE_ARGS GRID_DIMS GRID_SEQS GRID_DTYPES FLEX_DIMS COLD_DIMS; do
  [[ -n ${!v+x} ]] && settings+="$v='${!v}' "
done
# The binaries' commit first: the lent machine's checkout may carry a .git
# of another commit than the tree it was sent.
commit=$(cat .device/COMMIT 2>/dev/null || git rev-parse --short HEAD 2>/dev/null ||
         echo "${FLASHJIT_COMMIT:-unknown (set FLASHJIT_COMMIT or write .device/COMMIT)}")
{
  echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "command: ${settings}bash bench/gpu/run-device.sh ${modes[*]}"
  echo "commit:  $commit"
  echo "host:    $(nproc) cores, $(uptime)"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
  "$bin/flashjit" --version
  "$bin/flashjit" info
} 2>&1 | tee "$out/run.txt"
cp "$out/run.txt" "$out/gpu.txt" # the name older results use

# ---- helpers ---------------------------------------------------------------------
# Nsight Compute sections of the profile modes.
ncuSections="--section SpeedOfLight --section ComputeWorkloadAnalysis \
  --section MemoryWorkloadAnalysis_Tables --section SchedulerStats --section WarpStateStats \
  --section InstructionStats --section Occupancy --section LaunchStats"
# `flashjit bench --backward OPTIONS` under a timeout of SECONDS: its config and
# time lines as one.
backwardRate() { # SECONDS OPTIONS...
  timeout "$1" "$bin/flashjit" bench --backward "${@:2}" 2>&1 |
    grep -E '^(config|time):' | paste -sd' '
}
shape() { # D mask -> the standard shape's options
  local h=$((2048 / $1)); ((h < 1)) && h=1
  echo "--head-dim $1 --batch 4 --heads-q $h --heads-kv $h --seqlen 4096 --dtype bf16 --mask $2"
}
dims() { tr ',' ' ' <<< "$1"; }
# `flashjit bench` of the default config at issue 19's shapes: D, mask,
# seqlen S, dtype at 16k tokens (batch 16384 / S) and 2048 / D heads; one
# line "d=D mask=M S=S dtype | <bench's table row>" into LOG.log.
grid_row() { # LOG D mask S dtype
  local h=$((2048 / $2)) b=$((16384 / $4))
  ((h < 1)) && h=1
  ((b < 1)) && b=1
  echo "d=$2 mask=$3 S=$4 $5 | $(timeout 60 "$bin/flashjit" bench --head-dim $2 --mask $3 \
    --batch $b --heads-q $h --heads-kv $h --seqlen $4 --dtype $5 2>&1 | tail -1)" |
    tee -a "$out/$1.log"
}
bins() { tr ' ' '\n' <<< "$BINS" | grep -v '^$'; } # label=dir lines
# `flashjit bench --json` of one shape with one build: "label options | config, TFLOP/s".
bench_one() { # label dir options...
  local label=$1 dir=$2; shift 2
  local row
  row=$(FLASHJIT_CACHE_DIR=/tmp/fj/cache-$label timeout 120 "$dir/flashjit" bench "$@" --json 2>&1 |
        grep -E '"(config|config_source|tflops)"' | tr -d '\n ')
  echo "$label $* | $row" | tee -a "$out/throughput.log"
}
# `flashjit run OPTIONS ARGS --check` per argument list on stdin, each under a
# timeout (a bad mbarrier phase or register hand-off hangs); fails if any did.
check_runs() { # log seconds options...
  local log=$1 seconds=$2 args failed=0
  shift 2
  while IFS= read -r args; do
    [[ -z $args ]] && continue
    echo "== flashjit run $* $args --check" | tee -a "$log"
    timeout "$seconds" "$bin/flashjit" run "$@" $args --check 2>&1 | tail -8 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    echo "rc=$rc" | tee -a "$log"
    ((rc == 0)) || failed=1
  done
  return $failed
}
sanitize_runs() { # tool-log, then argument lists on stdin [TOOLS]
  local log=$1 args
  while IFS= read -r args; do
    [[ -z $args ]] && continue
    for tool in ${TOOLS:-memcheck racecheck}; do
      echo "== compute-sanitizer --tool $tool flashjit run $args ${SANITIZE_ARGS:-}" | tee -a "$log"
      FLASHJIT_CACHE_DIR=/tmp/fj/cache-sanitize timeout 120 compute-sanitizer --tool $tool \
        --print-limit 5 "$bin/flashjit" run $args ${SANITIZE_ARGS:-} --repeats 1 --warmup 0 \
        --check 2>&1 | grep -E "SUMMARY|PASS|FAIL|config:|error" | tee -a "$log"
    done
  done
}

# ---- the modes -------------------------------------------------------------------
run_mode() {
  case $1 in
  tests)
    local t0=$SECONDS
    FLASHJIT_CACHE_DIR=/tmp/fj/cache-tests timeout ${TEST_TIMEOUT:-280} "$bin/flashjit-gpu-tests" \
      ${GTEST_FILTER:+--gtest_filter="$GTEST_FILTER"} > "$out/gpu-tests.log" 2>&1
    echo "tests rc=$? wall_s=$((SECONDS - t0))" | tee -a "$out/gpu-tests.log"
    grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]|Failure" "$out/gpu-tests.log" | tail -40
    ;;
  sanitize)
    sanitize_runs "$out/sanitizer.log" <<< "$(tr ';' '\n' <<< "${SANITIZE_RUNS:-\
--batch 1 --head-dim 80 --mask causal --seqlen-q 200 --seqlen-k 333;\
--batch 1 --head-dim 33 --align 1 --dtype fp16 --seqlen 130;\
--batch 1 --head-dim 256 --seqlen 100 --heads-q 4 --heads-kv 2}")"
    ;;
  features-sanitize)
    sanitize_runs "$out/sanitizer-features.log" <<< "$(tr ';' '\n' <<< "\
--head-dim 80 --mask window --window-left 40 --window-right 3 --seqlen-q 200 --seqlen-k 333 --bias alibi --softcap 20;\
--head-dim 33 --dtype fp16 --bias tensor --bias-shape 1,4 --heads-q 4 --heads-kv 1 --seqlen 130;\
--head-dim 128 --seqlens-q 100,0,37 --seqlens-k 90,5,300 --mask causal --heads-q 8 --heads-kv 2;\
--head-dim 256 --batch 2 --seqlen 150 --key-lengths 150,7 --layout bhsd --no-lse")"
    ;;
  features-bench)
    FLASHJIT="$bin/flashjit" OUT="$out" DIMS=${givenDims:-128,80} PYTHONUNBUFFERED=1 \
      timeout ${FEATURES_TIMEOUT:-400} python3 bench/gpu/features_peers.py 2>&1 |
      tee "$out/features.log" | tail -22
    ;;
  features) run_mode features-sanitize; run_mode features-bench ;;
  autotune)
    tune() { # D mask [options]
      local args="$(shape $1 $2) ${*:3}"
      echo "== flashjit autotune $args" | tee -a "$out/autotune.log"
      local start=$(date +%s%N)
      FLASHJIT_CACHE_DIR=/tmp/fj/cache-tune timeout ${TUNE_TIMEOUT:-120} "$bin/flashjit" autotune \
        $args --top ${TUNE_TOP:-5} 2>&1 | tee -a "$out/autotune.log" | tail -8
      echo "wall_ms=$((($(date +%s%N) - start) / 1000000))" | tee -a "$out/autotune.log"
    }
    for d in ${TUNE_DIMS-64 80 100 128}; do
      for m in ${TUNE_MASKS:-none causal}; do tune $d $m; done
    done
    for d in ${WINDOW_DIMS-80 128}; do tune $d window --window-left 512 --window-right 0; done
    for m in ${TUNE_MASKS:-none causal}; do
      for d in ${TUNE_DIMS-64 80 100 128}; do
        FLASHJIT_CACHE_DIR=/tmp/fj/cache-tune "$bin/flashjit" bench $(shape $d $m) --json 2>&1 |
          tee -a "$out/bench-tuned.log" | grep -E '"(config|config_source|tflops)"' | tr -d '\n'
        echo
      done
    done
    ;;
  bench)
    "$bin/flashjit-bench-gpu" --dims "$DIMS" --seqlens 4096 --json "$out/flashjit.json" \
      --cache-latency 2>&1 | tee "$out/bench.log" | tail -30
    ;;
  peers)
    DIMS=$DIMS SEQS=4096 PEERS_OUT="$out" PYTHONUNBUFFERED=1 timeout ${PEERS_TIMEOUT:-1200} \
      python3 .device/peers_bench.py 2>&1 | tee "$out/peers.log" | tail -25
    ;;
  throughput)
    local r d m label dir variant
    for ((r = 1; r <= ${ROUNDS:-1}; ++r)); do
      for m in $MASKS; do for d in $(dims "$DIMS"); do
        while IFS='=' read -r label dir; do
          bench_one "$label" "$dir" $(shape $d $m)
          while IFS= read -r variant; do
            [[ -n $variant ]] && bench_one "$label" "$dir" $(shape $d $m) $variant
          done <<< "$(tr ';' '\n' <<< "${VARIANTS:-}")"
        done <<< "$(bins)"
      done; done
    done
    ;;
  cold)
    local r label dir b
    for ((r = 1; r <= ${ROUNDS:-3}; ++r)); do
      while IFS='=' read -r label dir; do
        for b in ${BENCH_BINARIES:-flashjit-bench-gpu}; do
          for driverCache in 1 $([[ ${DRIVER_CACHE:-0} == 1 ]] && echo 0); do
            echo "== cold compile, $label $b, round $r, CUDA_CACHE_DISABLE=$driverCache" | tee -a "$out/cold.log"
            rm -rf /tmp/fj/cold
            CUDA_CACHE_DISABLE=$driverCache FLASHJIT_CACHE_DIR=/tmp/fj/cold timeout 200 "$dir/$b" \
              --dims ${COLD_DIMS:-64} --seqlens 128 --cache-latency > "$out/cold-$label-$b-$r.log" 2>&1
            grep -E "^first|^\| [0-9]+ \||error" "$out/cold-$label-$b-$r.log" | tee -a "$out/cold.log"
          done
        done
      done <<< "$(bins)"
    done
    ;;
  first-compile)
    local r d m
    for ((r = 1; r <= ${ROUNDS:-1}; ++r)); do
      for d in ${FIRST_DIMS:-64 128 160 192 256}; do for m in $MASKS; do
        rm -rf /tmp/fj/first
        echo "run d=$d $m: $(CUDA_CACHE_DISABLE=1 FLASHJIT_CACHE_DIR=/tmp/fj/first timeout 120 \
          "$bin/flashjit" run --head-dim $d --mask $m --batch 1 --heads-q 2 --heads-kv 2 --seqlen 128 \
          --repeats 1 --warmup 0 2>&1 | grep -E '^kernel:')" | tee -a "$out/first-compile.log"
      done; done
    done
    ;;
  compile-split)
    local r d label dir
    for ((r = 1; r <= ${ROUNDS:-1}; ++r)); do
      while IFS='=' read -r label dir; do
        for d in ${SPLIT_DIMS:-64 80 128}; do
          "$dir/flashjit" compile --head-dim $d --arch sm_90a --emit ptx > /tmp/fj/k.ptx
          local gen=$("$dir/flashjit" compile --head-dim $d --arch sm_90a --emit ptx --time 2>&1 \
                      >/dev/null | grep -o "total: [0-9.]*")
          local t0=$(date +%s%N)
          ptxas -arch=sm_90a /tmp/fj/k.ptx -o /tmp/fj/k.cubin
          echo "$label d=$d generate ${gen#total: } ms, ptxas $((($(date +%s%N) - t0) / 1000000)) ms," \
               "$(wc -l < /tmp/fj/k.ptx) PTX lines" | tee -a "$out/compile-split.log"
        done
      done <<< "$(bins)"
    done
    ;;
  jit-options)
    local k d m files=()
    mkdir -p /tmp/fj/ptx
    for k in ${JIT_KERNELS:-128:causal 160:none 192:causal 256:none}; do
      d=${k%%:*} m=${k##*:}
      "$bin/flashjit" compile --head-dim $d --mask $m --arch sm_90a --emit ptx \
        $([[ ${JIT_QUICK:-0} == 1 ]] && echo --quick) > /tmp/fj/ptx/k${d}_$m.ptx
      files+=(/tmp/fj/ptx/k${d}_$m.ptx)
    done
    CUDA_CACHE_DISABLE=1 timeout 300 python3 bench/gpu/jit_options.py "${files[@]}" 2>&1 |
      tee "$out/jit-options.log"
    echo "== ptxas -arch=sm_90a [--Ofast-compile LEVEL]: wall s of 3 runs, registers" | tee -a "$out/jit-options.log"
    local f o t
    for f in "${files[@]}"; do for o in "" "--Ofast-compile min" "--Ofast-compile mid" "--Ofast-compile max"; do
      t=""; for r in 1 2 3; do
        local t0=$(date +%s%N); ptxas -arch=sm_90a $o "$f" -o /tmp/fj/x.cubin 2>/dev/null
        t+=" $((($(date +%s%N) - t0) / 1000000))ms"; done
      echo "$(basename "$f") [$o]:$t $(ptxas -arch=sm_90a -v $o "$f" -o /tmp/fj/x.cubin 2>&1 |
           grep -o 'Used [0-9]* registers')" | tee -a "$out/jit-options.log"
    done; done
    ;;
  run-check)
    local args
    while IFS= read -r args; do
      [[ -z $args ]] && continue
      rm -rf /tmp/fj/run-check
      for pass in "cold cache" "disk hit"; do
        echo "== flashjit run $args --check ($pass)" | tee -a "$out/run-check.log"
        CUDA_CACHE_DISABLE=1 FLASHJIT_CACHE_DIR=/tmp/fj/run-check timeout 120 "$bin/flashjit" run \
          $args --check 2>&1 | tee -a "$out/run-check.log"
        echo "rc=${PIPESTATUS[0]}" | tee -a "$out/run-check.log"
      done
    done <<< "$(tr ';' '\n' <<< "${RUN_ARGS:-\
--head-dim 100 --mask causal --batch 2 --seqlen-q 1000 --seqlen-k 1000;\
--head-dim 128 --batch 2 --seqlen-q 1000 --seqlen-k 1000;\
--head-dim 72 --dtype fp16 --heads-q 8 --heads-kv 2 --mask causal --batch 2 --seqlen-q 1000 --seqlen-k 1000}")"
    ;;
  profile)
    local d=${PROFILE_D:-128} m=${PROFILE_MASK:-none} bm bn w st
    read -r bm bn w st <<< "${PROFILE_TILE:-128 64 4 2}"
    local sections=$ncuSections
    rm -rf /tmp/fj/cache-profile
    FLASHJIT_CACHE_DIR=/tmp/fj/cache-profile timeout 200 ncu --clock-control none $sections \
      ${PROFILE_NCU_ARGS:-} -k regex:fwd_ --launch-count 1 "$bin/flashjit" run $(shape $d $m) \
      --block-m $bm --block-n $bn --warps $w --stages $st --warmup 0 --repeats 1 \
      > "$out/ncu-flashjit.txt" 2>&1
    tail -3 "$out/ncu-flashjit.txt"
    cuobjdump --dump-sass "$(find /tmp/fj/cache-profile -name '*.cubin' | head -1)" | gzip > "$out/sass.txt.gz"
    local h=$((2048 / d)) causal=False
    [[ $m == causal ]] && causal=True
    cat > /tmp/fj/fa2.py <<PY
import torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
q, k, v = (torch.randn(4, $h, 4096, $d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
    for _ in range(2):
        F.scaled_dot_product_attention(q, k, v, is_causal=$causal)
torch.cuda.synchronize()
PY
    timeout 200 ncu --clock-control none $sections ${PROFILE_NCU_ARGS:-} -k regex:flash_fwd \
      --launch-skip 1 --launch-count 1 python3 /tmp/fj/fa2.py > "$out/ncu-fa2.txt" 2>&1
    tail -3 "$out/ncu-fa2.txt"
    ;;
  backward-profile)
    local d=${PROFILE_D:-128} m=${PROFILE_MASK:-none}
    local sections="$ncuSections --section SourceCounters"
    rm -rf /tmp/fj/cache-bprofile
    # The main kernel's name ends with the arch (its _pre and _dq kernels add a suffix).
    FLASHJIT_CACHE_DIR=/tmp/fj/cache-bprofile timeout 240 ncu --clock-control none $sections \
      -k 'regex:^bwd_.*sm90a$' --launch-count 1 "$bin/flashjit" run --backward $(shape $d $m) \
      ${PROFILE_ARGS:-} --warmup 0 --repeats 1 > "$out/ncu-backward-flashjit.txt" 2>&1
    tail -3 "$out/ncu-backward-flashjit.txt"
    find /tmp/fj/cache-bprofile -name '*.cubin' -exec cuobjdump --dump-sass {} \; | gzip > "$out/backward-sass.txt.gz"
    local h=$((2048 / d)) causal=False
    [[ $m == causal ]] && causal=True
    cat > /tmp/fj/fa2-bwd.py <<PY
import torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
q, k, v = (torch.randn(4, $h, 4096, $d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
    for _ in range(2):
        o = F.scaled_dot_product_attention(q, k, v, is_causal=$causal)
        torch.autograd.grad(o, (q, k, v), torch.randn_like(o))
torch.cuda.synchronize()
PY
    timeout 240 ncu --clock-control none $sections -k regex:flash_bwd_dq_dk_dv \
      --launch-skip 1 --launch-count 1 python3 /tmp/fj/fa2-bwd.py > "$out/ncu-backward-fa2.txt" 2>&1
    tail -3 "$out/ncu-backward-fa2.txt"
    ;;
  ncu-metrics)
    local label dir
    local metrics=${NCU_METRICS:-sm__sass_l1tex_t_sectors_pipe_lsu_mem_global_op_ldgsts_cache_bypass.sum,smsp__inst_executed_op_ldgsts.sum,smsp__sass_l1tex_data_pipe_lsu_wavefronts_mem_shared_op_ldgsts.sum,smsp__sass_l1tex_data_pipe_lsu_wavefronts_mem_shared_op_ldsm.sum,smsp__inst_executed_op_ldsm.sum,gpu__time_duration.sum}
    while IFS='=' read -r label dir; do
      echo "== ncu $label $(shape ${NCU_D:-192} ${NCU_MASK:-none})" | tee -a "$out/ncu-metrics.log"
      FLASHJIT_CACHE_DIR=/tmp/fj/cache-$label timeout 120 ncu --clock-control none --metrics "$metrics" \
        -k regex:fwd_ --launch-count 1 "$dir/flashjit" run $(shape ${NCU_D:-192} ${NCU_MASK:-none}) \
        --warmup 0 --repeats 1 2>&1 | grep -E "sm__|smsp__|lts__|gpu__time" | tee -a "$out/ncu-metrics.log"
    done <<< "$(bins)"
    ;;
  sweep)
    local d m c bm bn w st h r
    for d in ${SWEEP_DIMS:-64 80 96 100 128 160 256}; do
      h=$((2048 / d)); ((h < 1)) && h=1
      for m in ${SWEEP_MASKS:-none}; do
        for c in ${SWEEP_CONFIGS:-128,64,8,2 128,64,4,2 128,128,8,2 64,64,4,2 128,64,8,3 128,32,4,2}; do
          IFS=, read -r bm bn w st <<< "$c"
          r=$("$bin/flashjit" run --batch 2 --heads-q $h --heads-kv $h --seqlen 4096 --head-dim $d --mask $m \
               --block-m $bm --block-n $bn --warps $w --stages $st --repeats 15 2>&1)
          echo "d=$d mask=$m cfg=$c $(grep -o "[0-9.]* TFLOP/s" <<< "$r" | head -1)" \
               "$(grep -o "registers=[0-9]*" <<< "$r" | head -1) $(grep -i -m1 error <<< "$r" | cut -c1-80)" |
            tee -a "$out/sweep.log"
        done
      done
    done
    ;;
  python)
    local py=${PYTHON:-/opt/torch/.venv/bin/python}
    "$py" -m pip install -q --no-deps --no-index --force-reinstall .whl/flashjit-*-cp312-*.whl
    timeout ${PYTHON_TESTS_TIMEOUT:-400} "$py" -m pytest tests/python -q -rs -p no:cacheprovider 2>&1 |
      tee "$out/python-tests.log" | tail -30
    timeout ${PYTHON_BENCH_TIMEOUT:-200} "$py" bench/python_overhead.py --cli "$bin/flashjit" \
      --json "$out/python-overhead.json" 2>&1 | tee "$out/python-overhead.log"
    ;;
  sm90-smoke)
    local v args
    for v in "" "--overlap on" "--pingpong on" "--pingpong on --overlap on" \
             "--warps 4 --block-m 64" "--warps 12 --block-m 192 --block-n 64"; do
      for args in "--head-dim 128 --seqlen 512 --mask causal" \
                  "--head-dim 64 --seqlen-q 300 --seqlen-k 1000" \
                  "--head-dim 256 --seqlen 400 --mask causal --dtype fp16"; do
        echo "== flashjit run --batch 2 --heads-q 4 --heads-kv 4 $args $v --check" | tee -a "$out/sm90-smoke.log"
        timeout 60 "$bin/flashjit" run --batch 2 --heads-q 4 --heads-kv 4 $args $v \
          --repeats 3 --check 2>&1 | tail -3 | tee -a "$out/sm90-smoke.log"
      done
    done
    ;;
  sm90-tests)
    GTEST_FILTER='Sm90Family.*:Matrix/Features.*d128*:Matrix/Features.*d192*:Matrix/Features.*d256*:FeaturesRuntime.*' \
      run_mode tests
    ;;
  sm90-sanitize)
    TOOLS="memcheck racecheck synccheck" sanitize_runs "$out/sm90-sanitizer.log" <<< "$(tr ';' '\n' <<< "\
--head-dim 128 --seqlen 300 --mask causal --heads-q 2 --heads-kv 2;\
--head-dim 64 --seqlen 200 --pingpong on --overlap on --heads-q 2 --heads-kv 2;\
--head-dim 80 --batch 3 --seqlen 150 --key-lengths 150,77,1 --dtype fp16 --heads-q 2 --heads-kv 2;\
--head-dim 192 --seqlens-q 100,0,37 --seqlens-k 90,5,300 --mask causal --heads-q 8 --heads-kv 2;\
--head-dim 256 --seqlen 200 --heads-q 2 --heads-kv 2;\
--head-dim 100 --seqlen 300 --mask causal --heads-q 2 --heads-kv 2 --family sm90;\
--head-dim 36 --seqlen 200 --dtype fp16 --heads-q 8 --heads-kv 4 --family sm90;\
--head-dim 100 --seqlens-q 100,0,37 --seqlens-k 90,5,300 --mask causal --heads-q 8 --heads-kv 2 --pack-gqa on --family sm90;\
--head-dim 128 --seqlen 300 --mask causal --heads-q 8 --heads-kv 2 --pack-gqa on;\
--head-dim 64 --seqlen-q 77 --seqlen-k 500 --heads-q 16 --heads-kv 2 --pack-gqa on --pingpong on --overlap on")"
    ;;
  tma-probe)
    nvcc -arch=sm_90a -O2 -o /tmp/fj/tma-probe bench/gpu/tma-probe.cu -lcuda 2>&1 | tail -3
    local name args
    # name | dims (columns, rows, heads, batches) | byte strides | box columns, rows | coordinates
    while read -r name args; do
      echo "$name [$args]: $(timeout 20 /tmp/fj/tma-probe $args 2>&1 | tail -1)" | tee -a "$out/tma-probe.log"
    done <<'MAPS'
bshd-h2b1          128 300 2 1   512 256 153600      64 64   0 64
bshd-h1b1          128 300 1 1   256 76800 76800     64 64   0 64
bshd-h1b2          128 300 1 2   256 76800 76800     64 64   0 64
rows-d100-h2b1     200 300 1 1   400 120000 120000   64 64   0 64
rows-d100-col64    200 300 1 1   400 120000 120000   64 64   64 64
rows-d100-noswz    200 300 1 1   400 120000 120000   64 64   0 64 0
rows-d100-s16      200 300 1 1   400 16 16           64 64   0 64
rows-cols208       208 300 1 1   416 124800 124800   64 64   0 64
rows-cols256       256 300 1 1   512 153600 153600   64 64   0 64
rows-d100-h2       200 300 2 1   400 120000 240000   64 64   0 64
rows-d100-col100   200 300 1 1   400 120000 120000   64 64   100 64
rows-d100-col96    200 300 1 1   400 120000 120000   64 64   96 64
bshd-h2b1-col4     128 300 2 1   512 256 153600      64 64   4 64
bshd-h2b1-col8     128 300 2 1   512 256 153600      64 64   8 64
MAPS
    ;;
  sm90-copies)
    check_runs "$out/sm90-copies.log" 30 --family sm90 --repeats 2 <<'RUNS' ||
--head-dim 100 --seqlen 300 --mask causal --heads-q 2 --heads-kv 2
--head-dim 36 --seqlen 200 --dtype fp16 --heads-q 8 --heads-kv 4
--head-dim 100 --seqlens-q 100,0,37 --seqlens-k 90,5,300 --mask causal --heads-q 8 --heads-kv 2 --pack-gqa on
RUNS
      { echo "copies failed or hung: nothing timed" | tee -a "$out/sm90-copies.log"; return; }
    GTEST_FILTER='Sm90Family.CopiedRowsMatchTheReference' TEST_TIMEOUT=150 run_mode tests
    TOOLS="memcheck racecheck synccheck" sanitize_runs "$out/sm90-copies-sanitizer.log" \
      <<< "--head-dim 100 --seqlen 150 --mask causal --heads-q 2 --heads-kv 2 --family sm90"
    local m
    for m in $MASKS; do for v in "100 --family sm80" "100 --family sm90" "96" "112"; do
      set -- $v
      echo "d=$1 mask=$m [${*:2}] | $(timeout 40 "$bin/flashjit" bench $(shape $1 $m) "${@:2}" 2>&1 |
        tail -1)" | tee -a "$out/sm90-copies-bench.log"
    done; done
    ;;
  setmaxnreg-probe)
    local v
    for v in "48 232" "48 224" "24 240" "40 232" "32 232" "32 240"; do
      set -- $v
      nvcc -gencode arch=compute_90a,code=sm_90a -DP=$1 -DC=$2 -o /tmp/fj/setmaxnreg-$1-$2 \
        bench/gpu/setmaxnreg-probe.cu 2>&1 | tail -3
      timeout 20 /tmp/fj/setmaxnreg-$1-$2 2>&1 | tee -a "$out/setmaxnreg-probe.log"
    done
    ;;
  sm90-variants)
    local d m v variants
    IFS=';' read -ra variants <<< "${VARIANTS:---family sm80;;--pingpong on;--overlap on;--warps 4 --block-m 64 --overlap on}"
    for d in ${VARIANT_DIMS:-64 128 256}; do for m in $MASKS; do for v in "${variants[@]}"; do
      echo "d=$d mask=$m [$v] $(timeout 60 "$bin/flashjit" bench $(shape $d $m) $v 2>&1 |
        tail -1 | awk '{print $NF}') TFLOP/s" | tee -a "$out/sm90-variants.log"
    done; done; done
    ;;
  sm90-bench)
    local d m s
    for d in $(dims "$DIMS"); do for m in $MASKS; do grid_row sm90-bench $d $m 4096 bf16; done; done
    for d in 80 128 256; do for m in $MASKS; do grid_row sm90-bench $d $m 4096 fp16; done; done
    for s in 1024 16384; do for m in $MASKS; do grid_row sm90-bench 128 $m $s bf16; done; done
    ;;
  grid)
    local d m s t
    for t in $GRID_DTYPES; do for s in $GRID_SEQS; do
      for d in $GRID_DIMS; do for m in $MASKS; do
        grid_row grid $d $m $s $t
      done; done
    done; done
    ;;
  peers-grid)
    PEERS_OUT="$out" PYTHONUNBUFFERED=1 \
      timeout ${PEERS_TIMEOUT:-1200} python3 bench/gpu/peers_grid.py 2>&1 | tee -a "$out/peers-grid.log" |
      tail -25
    ;;
  backward-smoke)
    check_runs "$out/backward-smoke.log" 60 --backward --repeats 3 ${BACKWARD_EXTRA:-} \
      <<< "$(tr ';' '\n' <<< "${BACKWARD_RUNS:-\
--head-dim 64 --seqlen 256 --heads-q 2 --heads-kv 2;\
--head-dim 128 --seqlen 300 --mask causal --heads-q 4 --heads-kv 4;\
--head-dim 80 --seqlen-q 130 --seqlen-k 47 --dtype fp16 --heads-q 8 --heads-kv 2;\
--head-dim 100 --seqlen 333 --mask causal --heads-q 4 --heads-kv 1;\
--head-dim 192 --head-dim-v 128 --seqlen 200 --mask causal --heads-q 4 --heads-kv 2;\
--head-dim 256 --seqlen 150 --heads-q 2 --heads-kv 2;\
--head-dim 33 --seqlen 77 --dtype fp16 --align 1 --heads-q 2 --heads-kv 2;\
--head-dim 64 --seqlen 300 --mask window --window-left 40 --window-right 3 --softcap 20 --bias alibi --heads-q 4 --heads-kv 2;\
--head-dim 64 --seqlen 100 --bias tensor --bias-shape 2,4 --bias-grad --heads-q 4 --heads-kv 4 --batch 2;\
--head-dim 128 --seqlens-q 100,0,37 --seqlens-k 90,5,300 --mask causal --heads-q 8 --heads-kv 2;\
--head-dim 96 --batch 2 --seqlen 150 --key-lengths 150,7 --layout bhsd --heads-q 2 --heads-kv 2;\
--head-dim 128 --seqlen 700 --mask causal --heads-q 8 --heads-kv 2 --deterministic}")"
    ;;
  backward-tests)
    GTEST_FILTER='*Backward*' run_mode tests
    ;;
  backward-sanitize)
    local x=${BACKWARD_EXTRA:-}
    TOOLS="memcheck racecheck synccheck" sanitize_runs "$out/backward-sanitizer.log" <<< "$(tr ';' '\n' <<< "\
--backward --head-dim 64 --seqlen 130 --mask causal --heads-q 4 --heads-kv 2 $x;\
--backward --head-dim 192 --head-dim-v 128 --seqlen 70 --heads-q 2 --heads-kv 2 --deterministic $x;\
--backward --head-dim 80 --seqlens-q 50,0,17 --seqlens-k 40,5,90 --bias tensor --bias-grad --heads-q 2 --heads-kv 2 $x")"
    ;;
  backward-bench)
    local d m
    for d in $(dims "${BACKWARD_DIMS:-64,96,100,128,192,256}"); do for m in $MASKS; do
      echo "d=$d mask=$m | $(timeout 120 "$bin/flashjit" bench --backward $(shape $d $m) \
        ${BACKWARD_EXTRA:-} 2>&1 |
        tail -1)" | tee -a "$out/backward-bench.log"
    done; done
    FLASHJIT_CACHE_DIR=/tmp/fj/cache-tune timeout ${TUNE_TIMEOUT:-300} "$bin/flashjit" autotune \
      --backward $(shape 128 causal) --top 5 2>&1 | tee "$out/backward-autotune.log" | tail -12
    OUT="$out" DIMS=${BACKWARD_DIMS:-64,96,100,128,192,256} PYTHONUNBUFFERED=1 \
      timeout ${PEERS_TIMEOUT:-1200} python3 .device/peers_more.py bwd 2>&1 |
      tee "$out/backward-peers.log" | tail -15
    ;;
  backward-tiles)
    # Candidate backward tiles (D:block_m,block_n,warps,stages) against the
    # default: `run --backward --check` of each candidate on small problems
    # (causal; GQA 8:2 windowed and deterministic; varlen), then
    # `bench --backward` of the default and the candidate at the standard
    # shape of D, both masks.
    local cand d t h m tile
    for cand in ${BACKWARD_TILES:-64:16,128,4,2 96:16,128,8,2 100:16,128,8,2 128:16,128,8,2}; do
      d=${cand%%:*}; IFS=, read -r -a t <<< "${cand#*:}"
      tile="--block-m ${t[0]} --block-n ${t[1]} --warps ${t[2]} --stages ${t[3]}"
      for args in "--seqlen 300 --mask causal --heads-q 4" \
          "--heads-q 8 --heads-kv 2 --seqlen-q 200 --seqlen-k 333 --mask window --window-left 50 --window-right 0 --deterministic" \
          "--seqlens-q 100,300 --seqlens-k 150,300 --heads-q 2"; do
        echo "== run --backward --check --head-dim $d $tile $args" | tee -a "$out/backward-tiles.log"
        timeout 60 "$bin/flashjit" run --backward --head-dim $d $tile $args --repeats 1 \
          --warmup 0 --check 2>&1 | grep -E "config:|PASS|FAIL|rror" | tee -a "$out/backward-tiles.log"
      done
      for m in $MASKS; do for args in "" "$tile"; do
        echo "d=$d $m [${args:-default}] | $(backwardRate 60 $(shape $d $m) $args)" |
          tee -a "$out/backward-tiles.log"
      done; done
    done
    ;;
  backward-tune)
    # `flashjit autotune --backward` at the standard shapes, each shape's
    # `flashjit bench --backward` before (default) and after (tuned).
    local d m
    for d in ${BACKWARD_TUNE_DIMS:-128 64}; do for m in $MASKS; do
      echo "== d=$d mask=$m" | tee -a "$out/backward-tune.log"
      echo "default | $(backwardRate 120 $(shape $d $m))" | tee -a "$out/backward-tune.log"
      timeout ${TUNE_TIMEOUT:-300} "$bin/flashjit" autotune --backward $(shape $d $m) --top 5 \
        2>&1 | tail -14 | tee -a "$out/backward-tune.log"
      echo "after autotune | $(backwardRate 120 $(shape $d $m))" |
        tee -a "$out/backward-tune.log"
    done; done
    ;;
  backward)
    for m in backward-smoke backward-tests backward-sanitize backward-bench; do run_mode $m; done ;;
  sm90-backward)
    # The sm90 (wgmma) backward, forced (the default from d = 64): `run
    # --backward --check` smoke runs, its GPU tests, the sanitizers, then `bench
    # --backward` of both families at d = 64 and 128, and with a softcap at
    # d = 64 and 96.
    BACKWARD_EXTRA="--family sm90" BACKWARD_RUNS="\
--head-dim 64 --seqlen 256 --heads-q 2 --heads-kv 2;\
--head-dim 64 --seqlen 300 --mask causal --heads-q 8 --heads-kv 2;\
--head-dim 33 --seqlen-q 130 --seqlen-k 47 --dtype fp16 --heads-q 2 --heads-kv 2;\
--head-dim 64 --seqlens-q 77,0,1,40 --seqlens-k 90,5,1,130 --mask causal --heads-q 4 --heads-kv 2;\
--head-dim 48 --seqlen 200 --mask causal --heads-q 4 --heads-kv 4 --deterministic;\
--head-dim 128 --seqlen 300 --mask causal --heads-q 4 --heads-kv 2;\
--head-dim 96 --seqlens-q 77,0,130 --seqlens-k 90,5,200 --mask window --window-left 40 --window-right 0 --heads-q 2 --heads-kv 2;\
--head-dim 128 --head-dim-v 64 --seqlen 200 --heads-q 4 --heads-kv 4 --deterministic;\
--head-dim 96 --seqlen 200 --mask causal --heads-q 8 --heads-kv 2 --softcap 30 --bias alibi;\
--head-dim 64 --seqlen 150 --bias tensor --mask window --window-left 30 --window-right 5 --heads-q 2 --heads-kv 2 --deterministic" run_mode backward-smoke
    # The GPU matrix after the small runs: a kernel that hangs does so there
    # first, under a 60 s timeout instead of the tests' 280 s.
    GTEST_FILTER='Sm90/Sm90BackwardMatrix.*' run_mode tests
    TOOLS="memcheck racecheck synccheck" sanitize_runs "$out/sm90-backward-sanitizer.log" <<< "$(tr ';' '\n' <<< "\
--backward --head-dim 64 --seqlen 130 --mask causal --heads-q 4 --heads-kv 2 --family sm90;\
--backward --head-dim 33 --seqlens-q 50,0,17 --seqlens-k 40,5,90 --heads-q 2 --heads-kv 2 --family sm90 --deterministic;\
--backward --head-dim 128 --seqlen 150 --mask causal --heads-q 4 --heads-kv 2 --family sm90;\
--backward --head-dim 96 --seqlens-q 50,0,17 --seqlens-k 40,5,90 --heads-q 2 --heads-kv 2 --family sm90 --deterministic;\
--backward --head-dim 64 --seqlen 130 --mask causal --heads-q 4 --heads-kv 2 --softcap 5 --bias alibi --family sm90")"
    local d m x
    for x in "" "--softcap 30"; do
      for d in $([[ -z $x ]] && echo 64 128 || echo 64 96); do for m in $MASKS; do
        echo "d=$d mask=$m [$x] sm80 | $(timeout 120 "$bin/flashjit" bench --backward $(shape $d $m) $x --family sm80 2>&1 | tail -1)" |
          tee -a "$out/sm90-backward-bench.log"
        echo "d=$d mask=$m [$x] sm90 | $(timeout 120 "$bin/flashjit" bench --backward $(shape $d $m) $x --family sm90 2>&1 | tail -1)" |
          tee -a "$out/sm90-backward-bench.log"
      done; done
    done
    ;;
  decode-smoke)
    local args
    while IFS= read -r args; do
      [[ -z $args ]] && continue
      echo "== flashjit run --decode $args --check" | tee -a "$out/decode-smoke.log"
      timeout 60 "$bin/flashjit" run --decode $args --repeats 3 --check 2>&1 | tail -8 |
        tee -a "$out/decode-smoke.log"
      echo "rc=${PIPESTATUS[0]}" | tee -a "$out/decode-smoke.log"
    done <<< "$(tr ';' '\n' <<< "${DECODE_RUNS:-\
--head-dim 128 --heads-q 32 --heads-kv 8 --batch 3 --seqlen-k 8192 --key-lengths 8192,1000,1 --page-size 16;\
--head-dim 128 --heads-q 32 --heads-kv 8 --batch 3 --seqlen-k 8192 --key-lengths 8192,0,77 --page-size 1 --splits 1;\
--head-dim 128 --heads-q 32 --heads-kv 8 --batch 2 --seqlen-k 131072 --page-size 256 --splits 0;\
--head-dim 128 --heads-q 32 --heads-kv 4 --batch 4 --seqlen-k 5000 --page-size 32 --splits 7;\
--head-dim 64 --heads-q 16 --heads-kv 1 --batch 2 --seqlen-k 3000 --page-size 64 --dtype fp16;\
--head-dim 80 --heads-q 8 --heads-kv 2 --batch 2 --seqlen-k 2000 --page-size 128 --splits 128;\
--head-dim 192 --head-dim-v 128 --heads-q 8 --heads-kv 2 --seqlen-k 1500 --mask window --window-left 300 --window-right 0 --softcap 30 --bias alibi;\
--head-dim 128 --heads-q 8 --heads-kv 2 --batch 2 --seqlen-q 37 --seqlen-k 4000 --key-lengths 4000,123 --mask causal --page-size 16;\
--head-dim 33 --heads-q 4 --heads-kv 4 --seqlen-k 999 --splits 5}")"
    ;;
  decode-tests)
    GTEST_FILTER='Decode/*:Paged*:SplitKV*' run_mode tests
    ;;
  decode-sanitize)
    TOOLS="memcheck racecheck synccheck" sanitize_runs "$out/decode-sanitizer.log" <<< "$(tr ';' '\n' <<< "\
--decode --head-dim 128 --heads-q 8 --heads-kv 2 --batch 3 --seqlen-k 700 --key-lengths 700,0,33 --page-size 16 --splits 4;\
--decode --head-dim 80 --heads-q 4 --heads-kv 1 --batch 2 --seqlen-q 5 --seqlen-k 300 --mask causal --page-size 1;\
--decode --head-dim 64 --heads-q 4 --heads-kv 4 --seqlen-k 1000 --splits 9")"
    ;;
  decode-bench)
    local shape
    for shape in "--batch 8 --seqlens 32768" "--batch 64 --seqlens 4096"; do
      for page in 0 16 256; do
        echo "$shape page=$page | $(timeout 120 "$bin/flashjit" bench --decode --head-dim 128 \
          --heads-q 32 --heads-kv 8 $shape $( ((page)) && echo --page-size $page) 2>&1 |
          tail -1)" | tee -a "$out/decode-bench.log"
      done
    done
    run_mode decode-peers
    ;;
  decode-tune)
    # `flashjit autotune --decode` on each decode-bench shape (tile depth,
    # stages, split count), then `flashjit bench --decode` of it again: with
    # the tune database the runtime takes the tuned config.
    local shape page paged
    for shape in "--batch 8 --seqlen-k 32768" "--batch 64 --seqlen-k 4096"; do
      for page in 0 16 256; do
        paged=$( ((page)) && echo --page-size $page)
        echo "== autotune --decode $shape $paged" | tee -a "$out/decode-tune.log"
        timeout 150 "$bin/flashjit" autotune --decode --head-dim 128 --heads-q 32 \
          --heads-kv 8 $shape $paged --top 5 2>&1 | tail -12 | tee -a "$out/decode-tune.log"
        echo "${shape/seqlen-k/seqlens} page=$page | $(timeout 120 "$bin/flashjit" bench \
          --decode --head-dim 128 --heads-q 32 --heads-kv 8 ${shape/seqlen-k/seqlens} $paged \
          2>&1 | tail -1)" | tee -a "$out/decode-tune.log"
      done
    done
    ;;
  decode-peers)
    # The decode shapes' peers (SDPA backends, FlexAttention) and the copy
    # bandwidth (read + write bytes of a 1 GiB device copy / time) that the
    # decode goal is stated against.
    OUT="$out" PYTHONUNBUFFERED=1 timeout ${PEERS_TIMEOUT:-600} \
      python3 .device/peers_more.py decode 2>&1 | tee "$out/decode-peers.log" | tail -4
    timeout 120 python3 -c '
import torch, triton.testing as tt
x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
ms = tt.do_bench(lambda: y.copy_(x), warmup=10, rep=100, return_mode="median")
print(f"copy bandwidth: {2 * x.numel() / ms / 1e6:.0f} GB/s (1 GiB read + 1 GiB written)")' 2>&1 |
      tee -a "$out/decode-peers.log"
    ;;
  decode)
    for m in decode-smoke decode-tests decode-sanitize decode-bench; do run_mode $m; done ;;
  all) for m in tests sanitize features autotune bench peers; do run_mode $m; done ;;
  *) echo "run-device.sh: unknown mode '$1' (see the header of bench/gpu/run-device.sh)" >&2
     return 2 ;;
  esac
}

status=0
for mode in "${modes[@]}"; do
  echo "#### $mode" | tee -a "$out/run.txt"
  run_mode "$mode" || status=$?
done
echo "finished: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(uptime)" | tee -a "$out/run.txt"
exit $status
