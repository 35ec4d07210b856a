#!/usr/bin/env bash
# Install, build self-contained (static LLVM) binaries, run every test:
# unit (GoogleTest), unit-standin (the launch path on a stand-in libcuda),
# ptxas (PTX assembles, no spills), lit (FileCheck), static-no-llvm (ldd),
# shared-* (libflashjit.so), julia-abi-layout, gpu (skipped, with the count,
# where no GPU is), then the Python package (pip install . and pytest
# tests/python). Then the CPU tests again under ASan + UBSan, the fuzzers, and
# the runtime's threaded tests under TSan (run-sanitizers.sh;
# SANITIZERS="asan" or "" runs fewer).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
start=$(date +%s)
bash "$root/tools/scripts/install-deps.sh"
# Paths relative to the repository in ccache's keys: the wheel build of the
# Python tests (beside this one) reuses these objects.
export CCACHE_BASEDIR=$root
BUILD_DIR=$build bash "$root/tools/scripts/build.sh" -DFLASHJIT_STATIC_LLVM=ON
echo "build done in $(( $(date +%s) - start )) s"
cd "$build"
status=0
ctest --output-on-failure -j "$(nproc)" || status=$?
# The Python package: pip install . in a fresh venv, pytest tests/python.
bash "$root/tools/scripts/python-tests.sh" "$build" || status=$?
# GoogleTest's own summary of the GPU tests (how many ran, how many skipped).
if [ -x bin/flashjit-gpu-tests ]; then
  gpu_log=$(bin/flashjit-gpu-tests 2>&1 || true)
  summary=$(grep -E "^\[  (PASSED|SKIPPED|FAILED) *\] [0-9]+ test" <<< "$gpu_log" | tr '\n' ' ')
  reason=$(grep -m1 -o "no CUDA GPU: .*" <<< "$gpu_log" || true)
  echo "GPU tests (bin/flashjit-gpu-tests): ${summary:-no summary} ${reason:+($reason)}"
fi
echo "main tests done in $(( $(date +%s) - start )) s (exit $status)"
sanitizers=${SANITIZERS-asan fuzz tsan}
if [ -n "$sanitizers" ]; then
  bash "$root/tools/scripts/run-sanitizers.sh" $sanitizers || status=$?
fi
echo "tests done in $(( $(date +%s) - start )) s (exit $status)"
exit $status
