#!/usr/bin/env bash
# Compile latency, spec -> PTX: the in-process table (after one warm-up
# compile) and the first compile of fresh processes. Prints markdown.
#   bash bench/compile_latency.sh [build-dir]
set -euo pipefail
bin=${1:-build}/bin/flashjit-bench-compile
echo "## In-process, after a warm-up compile (sm_90a)"
echo
"$bin" --arch=sm_90a
echo
echo "## First compile in a fresh process (ms, 3 processes each)"
echo
echo "| head_dim | run 1 | run 2 | run 3 |"
echo "|---|---|---|---|"
for d in 64 80 128 256; do
  printf "| %s |" "$d"
  for i in 1 2 3; do printf " %s |" "$("$bin" --first --head-dim=$d)"; done
  echo
done
