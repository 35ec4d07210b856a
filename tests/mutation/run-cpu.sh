#!/usr/bin/env bash
# Runs the CPU tests of the mutation build (tests/mutation/build.sh) once per
# mutant (FLASHJIT_MUTANT=<name>) and once without ("none", which must
# pass): the unit tests, lit, and the ptxas tests of d = 128, 160 and 256
# (every arch) plus the non-default configs. Prints a markdown table of the
# failing tests per mutant; logs in $OUT (default $MUTATION_DIR/cpu).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
scratch=${MUTATION_DIR:-/tmp/flashjit-mutation}
b=$scratch/build
out=${OUT:-$scratch/cpu}
mkdir -p "$out"
lit=$(sed -n 's/^LIT_EXECUTABLE:FILEPATH=//p' "$b/CMakeCache.txt")

source "$root/tests/mutation/mutants.sh"
ptxas_filter='Forward/PtxasDefaultConfig.*/d128_*:Forward/PtxasDefaultConfig.*/d160_*'
ptxas_filter+=':Forward/PtxasDefaultConfig.*/d256_*:Forward/PtxasOtherConfig.*'

# "Suite.Test (n)" for the failing tests of a gtest log, instances counted.
gtestFailures() {
  grep -E '^\[  FAILED  \] [A-Za-z]' "$1" | grep -v ' listed below' |
    sed -E 's/^\[  FAILED  \] //; s/,? where .*//; s/ \(.*//' | sort -u |
    sed -E 's#^([^.]*\.[^/]*)/.*#\1#' | grep . | sort | uniq -c |
    awk '{printf "%s%s (%d)", sep, $2, $1; sep=", "}'
}

echo "| mutant | unit | lit | ptxas |"
echo "|---|---|---|---|"
for m in "${mutants[@]}"; do
  if [[ $m == none ]]; then unset FLASHJIT_MUTANT; else export FLASHJIT_MUTANT=$m; fi
  "$b/bin/flashjit-unit-tests" > "$out/$m.unit.log" 2>&1
  unitRc=$?
  "$lit" -v "$b/tests/lit" > "$out/$m.lit.log" 2>&1
  "$b/bin/flashjit-ptxas-tests" --gtest_filter="$ptxas_filter" > "$out/$m.ptxas.log" 2>&1
  ptxasRc=$?
  unit=$(gtestFailures "$out/$m.unit.log")
  ptxas=$(gtestFailures "$out/$m.ptxas.log")
  # A test binary killed by a signal lists no failures: it caught nothing.
  ((unitRc > 128)) && unit="none: the unit tests ended with signal $((unitRc - 128))"
  ((ptxasRc > 128)) && ptxas="none: the ptxas tests ended with signal $((ptxasRc - 128))"
  litFailed=$(sed -n 's/^  flashjit :: //p' "$out/$m.lit.log" | sort -u | paste -sd, - | sed 's/,/, /g')
  echo "| $m | ${unit:-pass} | ${litFailed:-pass} | ${ptxas:-pass} |"
done
unset FLASHJIT_MUTANT
