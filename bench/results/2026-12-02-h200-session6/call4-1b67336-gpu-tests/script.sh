#!/usr/bin/env bash
# Session 6, call 4 (1b67336, the binaries of call 3): the whole GPU test
# suite without call 3's 200 s cut.
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/fj
tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
bin=/tmp/fj/bin
s="$out/summary.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$s"
"$bin/flashjit" info >> "$s"
export FLASHJIT_CACHE_DIR=/tmp/fj/cache
start=$(date +%s)
timeout 440 "$bin/flashjit-gpu-tests" > "$out/gpu-tests.log" 2>&1; echo "rc=$? wall_s=$(( $(date +%s) - start ))" >> "$s"
grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]" "$out/gpu-tests.log" | tail -8 >> "$s"
cat "$s"
