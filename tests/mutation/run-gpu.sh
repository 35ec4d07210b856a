#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, after
# tests/mutation/build.sh made .device/flashjit-mutants.tar.xz here:
#   bash tests/mutation/run-gpu.sh
# Every mutant (and "none", the control, which must pass) runs the same
# subset of the GPU suite in its own process, all at once (one process a
# CPU core: compiling kernels is most of the time). Writes $OUT/gpu-mutation.md
# (which tests fail under each mutant) and one log per mutant.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-/tmp/out}
work=/tmp/flashjit-mutants
mkdir -p "$out" "$work"
tar -xJf "$root/.device/flashjit-mutants.tar.xz" -C "$work"
bin=$work/bin/flashjit-gpu-tests
unset FLASHJIT_TEST_CACHE_DIR FLASHJIT_CACHE_DIR # a fresh cache per process

source "$root/tests/mutation/mutants.sh"

# The subset (about 90 tests, 100 kernels a process): the forward matrix at
# d = 64, 128 and 256 (sequences up to 1000: many K/V tiles), layouts, every
# feature at d = 80 (full kernel, and the quick form against it), the
# runtime's quick-form tiering, the C API and the autotuner.
# $MUTATION_FILTER replaces it.
filter='Matrix/Forward.*_d64*:Matrix/Forward.*_d128*:Matrix/Forward.*_d256*'
filter+=':Forward/Layout.*:Matrix/Features.*_d80_*:Matrix/QuickForm.*_d80_*'
filter+=':Runtime.ColdMissRunsTheQuickFormUntilTheFullKernelLoads:CApi.*'
filter+=':Autotune.*:FeaturesRuntime.PackedAndUnpackedGqaBothMatch'
filter=${MUTATION_FILTER:-$filter}

{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
  echo "base: $(cat "$work/BASE")"
  echo "filter: $filter"
} | tee "$out/gpu.txt"

start=$(date +%s)
for m in "${mutants[@]}"; do
  (
    if [[ $m != none ]]; then export FLASHJIT_MUTANT=$m; fi
    timeout "${MUTANT_TIMEOUT:-520}" "$bin" --gtest_filter="$filter" \
      > "$out/gpu-$m.log" 2>&1
    echo $? > "$out/gpu-$m.rc"
  ) &
done
wait
echo "all mutants ran in $(( $(date +%s) - start )) s" | tee -a "$out/gpu.txt"

# The tests a log reports failed, one a line.
failedTests() {
  grep -E '^\[  FAILED  \] [A-Za-z]' "$1" | grep -v ' listed below' |
    sed -E 's/^\[  FAILED  \] //; s/,? where .*//; s/ \(.*//' | sort -u
}
failedTests "$out/gpu-none.log" > "$out/control-failures.txt"

# One row per mutant: exit code, tests passed and failed, and the tests that
# catch it (failing under the mutant but not in the control), by suite with
# their instances counted. A mutant is caught when that list is not empty;
# the control should fail nothing (its failures, if any, are listed apart).
{
  echo "| mutant | exit | passed | failed | caught by (failing here, passing in the control) |"
  echo "|---|---|---|---|---|"
  for m in "${mutants[@]}"; do
    log=$out/gpu-$m.log
    rc=$(cat "$out/gpu-$m.rc" 2>/dev/null || echo "?")
    passed=$(sed -nE 's/^\[  PASSED  \] ([0-9]+) tests?.*/\1/p' "$log" | tail -1)
    failed=$(failedTests "$log")
    count=0 bySuite=""
    [[ -n $failed ]] && count=$(wc -l <<< "$failed")
    if [[ $m == none ]]; then
      caught=$failed
    else
      caught=$(comm -23 <(echo "$failed") "$out/control-failures.txt")
    fi
    if [[ -n $caught ]]; then
      bySuite=$(sed -E 's#^([^.]*\.[^/]*)/.*#\1#' <<< "$caught" | sort | uniq -c |
                awk '{printf "%s%s (%d)", sep, $2, $1; sep=", "}')
    fi
    # A process killed by a signal (a mutant that breaks the generator
    # itself, not the kernel) or by the timeout catches nothing: say so.
    if [[ $rc =~ ^[0-9]+$ ]] && ((rc == 124 || rc > 128)); then
      bySuite="none: the process ended with $rc ($( ((rc == 124)) && echo timeout ||
               echo "signal $((rc - 128))")) in $(grep '^\[ RUN      \]' "$log" | tail -1 |
               sed -E 's/^\[ RUN      \] //')"
    fi
    echo "| $m | $rc | ${passed:-0} | $count | ${bySuite:--} |"
  done
} | tee "$out/gpu-mutation.md"
