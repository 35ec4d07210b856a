#!/usr/bin/env bash
# Runs on the lent GPU machine from the repository root. Expects
# .device/flashjit-bin.tar.xz (static binaries built here with
# FLASHJIT_STATIC_LLVM=ON, stripped) and .device/peers_bench.py.
#   bash bench/gpu/run-device.sh tests|bench|peers|sanitize|features|autotune|all|python
# (python: also expects .whl/flashjit-*-cp312-*.whl; not part of all)
# (features = features-sanitize: compute-sanitizer on feature kernels, plus
#  features-bench: bench/gpu/features_peers.py)
# Logs go to $OUT (or /tmp/out).
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
bin=/tmp/fj/bin
export LD_LIBRARY_PATH=/tmp/fj/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export FLASHJIT_CACHE_DIR=/tmp/fj/cache
what=${1:-all}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
"$bin/flashjit" info | tee -a "$out/gpu.txt"

if [[ $what == tests || $what == all ]]; then
  timeout ${TEST_TIMEOUT:-280} "$bin/flashjit-gpu-tests" 2>&1 | tee "$out/gpu-tests.log" | grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]|FAIL" | tail -40
fi
if [[ $what == sanitize || $what == all ]]; then
  for tool in memcheck racecheck; do
    for args in "--head-dim 80 --mask causal --seqlen-q 200 --seqlen-k 333" \
                "--head-dim 33 --align 1 --dtype fp16 --seqlen 130" \
                "--head-dim 256 --seqlen 100 --heads-q 4 --heads-kv 2"; do
      echo "== compute-sanitizer --tool $tool flashjit run $args" | tee -a "$out/sanitizer.log"
      timeout 60 compute-sanitizer --tool $tool --print-limit 5 \
        "$bin/flashjit" run --batch 1 $args --repeats 1 --warmup 0 2>&1 | tail -4 | tee -a "$out/sanitizer.log"
    done
  done
fi
if [[ $what == features || $what == features-sanitize || $what == all ]]; then
  for tool in memcheck racecheck; do
    for args in "--head-dim 80 --mask window --window-left 40 --window-right 3 --seqlen-q 200 --seqlen-k 333 --bias alibi --softcap 20" \
                "--head-dim 33 --dtype fp16 --bias tensor --bias-shape 1,4 --heads-q 4 --heads-kv 1 --seqlen 130" \
                "--head-dim 128 --seqlens-q 100,0,37 --seqlens-k 90,5,300 --mask causal --heads-q 8 --heads-kv 2" \
                "--head-dim 256 --batch 2 --seqlen 150 --key-lengths 150,7 --layout bhsd --no-lse"; do
      echo "== compute-sanitizer --tool $tool flashjit run $args" | tee -a "$out/sanitizer-features.log"
      timeout 90 compute-sanitizer --tool $tool --print-limit 5 \
        "$bin/flashjit" run $args --repeats 1 --warmup 0 2>&1 | tail -4 | tee -a "$out/sanitizer-features.log"
    done
  done
fi
if [[ $what == features || $what == features-bench || $what == all ]]; then
  FLASHJIT="$bin/flashjit" OUT="$out" DIMS=${DIMS:-128,80} PYTHONUNBUFFERED=1 \
    timeout ${FEATURES_TIMEOUT:-400} python3 bench/gpu/features_peers.py 2>&1 | tee "$out/features.log" | tail -22
fi
if [[ $what == python ]]; then
  # The Python package: a cp312 wheel built here (.whl/, carried), installed
  # into the machine's torch + jax environment without network; its GPU
  # tests, then per-call overhead and TFLOP/s against the C++ bench.
  py=${PYTHON:-/opt/torch/.venv/bin/python}
  "$py" -m pip install -q --no-deps --no-index --force-reinstall .whl/flashjit-*-cp312-*.whl
  timeout ${PYTHON_TESTS_TIMEOUT:-400} "$py" -m pytest tests/python -q -rs -p no:cacheprovider 2>&1 \
    | tee "$out/python-tests.log" | tail -30
  timeout ${PYTHON_BENCH_TIMEOUT:-200} "$py" bench/python_overhead.py --cli "$bin/flashjit" \
    --json "$out/python-overhead.json" 2>&1 | tee "$out/python-overhead.log"
fi
if [[ $what == autotune || $what == all ]]; then
  # Issue 5's evidence: tune each shape (wall time per shape), then bench
  # the same shapes, which now run with the tuned configs.
  tune() { # head_dim, then extra options
    local d=$1 h=$((2048 / $1)); shift
    local args="--head-dim $d --batch 4 --heads-q $h --heads-kv $h --seqlen 4096 --dtype bf16 $*"
    echo "== flashjit autotune $args" | tee -a "$out/autotune.log"
    local start=$(date +%s%N)
    "$bin/flashjit" autotune $args --top 5 2>&1 | tee -a "$out/autotune.log" | tail -8
    echo "wall_ms=$(( ($(date +%s%N) - start) / 1000000 ))" | tee -a "$out/autotune.log"
  }
  for d in ${TUNE_DIMS-64 80 100 128}; do
    tune $d --mask none
    tune $d --mask causal
  done
  # Window 512 (issue 4's shape): does tuning recover the band's cost?
  for d in ${WINDOW_DIMS-80 128}; do
    tune $d --mask window --window-left 512 --window-right 0
  done
  for mask in none causal; do
    for d in ${TUNE_DIMS-64 80 100 128}; do
      h=$((2048 / d))
      "$bin/flashjit" bench --head-dim $d --mask $mask --batch 4 --heads-q $h --heads-kv $h \
        --seqlen 4096 --dtype bf16 --json 2>&1 | tee -a "$out/bench-tuned.log" \
        | grep -E '"(config|config_source|tflops)"' | tr -d '\n'
      echo
    done
  done
fi
if [[ $what == bench || $what == all ]]; then
  "$bin/flashjit-bench-gpu" --dims ${DIMS:-64,80,96,100,128,160,256} --seqlens 4096 \
     --json "$out/flashjit.json" --cache-latency 2>&1 | tee "$out/bench.log" | tail -30
fi
if [[ $what == peers || $what == all ]]; then
  DIMS=${DIMS:-64,80,96,100,128,160,256} SEQS=4096 PEERS_OUT="$out" PYTHONUNBUFFERED=1 \
    timeout 1200 python3 .device/peers_bench.py 2>&1 | tail -25 | tee "$out/peers.log"
fi
