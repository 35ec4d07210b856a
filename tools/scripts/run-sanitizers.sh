#!/usr/bin/env bash
# Sanitizer runs of the CPU tests, and the fuzzers. run-tests.sh (the README's
# test command, .ci/run) calls it with "asan fuzz tsan"; docs/SANITIZERS.md
# says what each finds and the last results.
#   bash tools/scripts/run-sanitizers.sh [asan] [fuzz] [tsan]
#   asan  build in ${ASAN_BUILD_DIR:-build-asan} what the unit tests need, with
#         ASan + UBSan (any finding aborts), and run ctest unit and unit-standin
#         (the stand-in libcuda: the launch path without a GPU)
#   fuzz  (needs asan's build) every fuzz target for FUZZ_SECONDS (default 20)
#         each: libFuzzer (flashjit-fuzz) where clang is installed, else the
#         unit tests' seeded mutation loop; corpus: tests/fuzz/corpus/<target>
#   tsan  build in ${TSAN_BUILD_DIR:-build-tsan} with TSan and run the
#         runtime's multi-threaded tests on the stand-in driver
# Prints the counts of each run; exits non-zero on any failure or finding.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
modes=("${@:-asan}")
fuzzSeconds=${FUZZ_SECONDS:-20}

# clang (of our LLVM release if installed) gives libFuzzer; g++ does the rest.
cc=gcc cxx=g++ fuzzer=OFF
for v in clang-22 clang; do
  if command -v "$v" >/dev/null && command -v "${v/clang/clang++}" >/dev/null; then
    cc=$v cxx=${v/clang/clang++} fuzzer=ON
    break
  fi
done

# configure DIR SANITIZERS FUZZER: a build of only what the tests need (shared
# LLVM: quick links; -O1: quick compiles, still fast tests).
configure() {
  cmake -G Ninja -S "$root" -B "$1" -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS=-O1 \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" -DFLASHJIT_SANITIZE="$2" \
    -DFLASHJIT_FUZZER="$3" -DFLASHJIT_BUILD_BENCH=OFF -DFLASHJIT_STATIC_LLVM=OFF >/dev/null
}

# The GoogleTest summaries of the last ctest run in DIR.
summarize() {
  grep -E "^\[==========\] [0-9]+ tests? from|^\[  (PASSED|SKIPPED|FAILED) +\] [0-9]+ test|^\[fuzz\]|ERROR: (Address|Leak)Sanitizer|runtime error:|WARNING: ThreadSanitizer" \
    "$1/Testing/Temporary/LastTest.log" || true
}

# LLVM's headers poison BumpPtrAllocator slabs in code built with ASan (ours),
# while the prebuilt, uninstrumented libMLIR hands the same slabs out
# without unpoisoning them: ignore manual poisoning, or every MLIR context
# that lives long enough reports a use-after-poison that is none.
export ASAN_OPTIONS=allow_user_poisoning=0:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}
export UBSAN_OPTIONS=print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}

status=0
asanDir=${ASAN_BUILD_DIR:-$root/build-asan}
for mode in "${modes[@]}"; do
  start=$(date +%s)
  case $mode in
  asan)
    echo "== ASan + UBSan ($cxx): building the unit tests, the CLI and the stand-in driver"
    configure "$asanDir" address,undefined "$fuzzer"
    targets=(flashjit-unit-tests flashjit flashjit-standin-cuda)
    [[ $fuzzer == ON ]] && targets+=(flashjit-fuzz)
    ninja -C "$asanDir" "${targets[@]}" | tail -1
    echo "ASan build done in $(($(date +%s) - start)) s"
    rc=0
    (cd "$asanDir" && ctest --output-on-failure -R '^unit') || rc=$?
    echo "ASan + UBSan unit tests (exit $rc):"
    summarize "$asanDir" | sed 's/^/  /'
    ((rc == 0)) || status=$rc
    ;;
  fuzz)
    if [[ ! -x $asanDir/bin/flashjit-unit-tests ]]; then
      echo "run-sanitizers.sh fuzz: build asan first" >&2
      exit 2
    fi
    if [[ -x $asanDir/bin/flashjit-fuzz ]]; then
      echo "== libFuzzer, ASan + UBSan, ${fuzzSeconds} s per target"
      for dir in "$root"/tests/fuzz/corpus/*/; do
        target=$(basename "$dir")
        work=$(mktemp -d)
        log="$asanDir/fuzz-$target.log"
        rc=0
        FLASHJIT_FUZZ_TARGET=$target "$asanDir/bin/flashjit-fuzz" -max_total_time="$fuzzSeconds" \
          -timeout=10 -rss_limit_mb=4096 -artifact_prefix="$asanDir/fuzz-$target-" \
          -print_final_stats=1 "$work" "$dir" > "$log" 2>&1 || rc=$?
        runs=$(grep -o "stat::number_of_executed_units: *[0-9]*" "$log" | grep -o "[0-9]*$" || echo "?")
        cov=$(grep -oE "cov: [0-9]+" "$log" | tail -1)
        echo "[fuzz] $target: $runs inputs in ${fuzzSeconds} s, ${cov:-cov: ?}, $(ls "$work" | wc -l) in the corpus, exit $rc"
        if ((rc != 0)); then
          grep -E "flashjit-fuzz|ERROR|SUMMARY|runtime error|Test unit written" "$log" | head -20
          status=$rc
        fi
        rm -rf "$work"
      done
    else
      echo "== seeded mutation loop (no clang: no libFuzzer), ASan + UBSan, ${fuzzSeconds} s per target"
      rc=0
      FLASHJIT_FUZZ_SECONDS=$fuzzSeconds "$asanDir/bin/flashjit-unit-tests" \
        --gtest_filter='Targets/Fuzz.*' > "$asanDir/fuzz.log" 2>&1 || rc=$?
      grep -E "^\[fuzz\]|Failure|^\[  (PASSED|FAILED)" "$asanDir/fuzz.log"
      ((rc == 0)) || status=$rc
    fi
    ;;
  tsan)
    tsanDir=${TSAN_BUILD_DIR:-$root/build-tsan}
    echo "== TSan ($cxx): building the unit tests and the stand-in driver"
    configure "$tsanDir" thread OFF
    ninja -C "$tsanDir" flashjit-unit-tests flashjit-standin-cuda | tail -1
    rc=0
    # The runtime's threads: one key from many threads, destruction while
    # background compiles run, the C API from many threads, the disk and
    # module caches' concurrent users.
    (cd "$tsanDir" && LD_LIBRARY_PATH=$tsanDir/standin-driver FLASHJIT_ASSEMBLER=driver TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
      bin/flashjit-unit-tests --gtest_filter='StandIn*:DiskCache.Concurrent*:ModuleCache.*:CApi.LastErrorIsPerThread' \
      > "$tsanDir/tsan.log" 2>&1) || rc=$?
    echo "TSan multi-threaded tests (exit $rc):"
    grep -E "^\[==========\] [0-9]+ tests? from|^\[  (PASSED|SKIPPED|FAILED) +\] [0-9]+ test|WARNING: ThreadSanitizer|SUMMARY" \
      "$tsanDir/tsan.log" | sed 's/^/  /'
    ((rc == 0)) || status=$rc
    ;;
  *)
    echo "run-sanitizers.sh: unknown mode '$mode' (asan, fuzz, tsan)" >&2
    exit 2
    ;;
  esac
  echo "$mode done in $(($(date +%s) - start)) s"
done
exit $status
