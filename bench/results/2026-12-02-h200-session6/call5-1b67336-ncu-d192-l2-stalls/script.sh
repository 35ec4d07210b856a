#!/usr/bin/env bash
# Session 6, call 5 (binaries of 1b67336; kernels byte-identical at HEAD):
# where the D = 192 non-causal kernels stall and what their L2 traffic is,
# flashjit 64x64 w4 s1 (default) and 128x64 w8 s1 next to FA2 (128x64 w8).
set -uo pipefail
out=${OUT:-/tmp/out}; mkdir -p "$out"
s="$out/summary.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$s"
m=lts__t_sectors.sum,lts__t_requests.sum,lts__t_sectors_srcunit_tex.sum,lts__t_requests_srcunit_tex.sum,lts__t_sectors_srcunit_tex_op_read.sum,lts__t_sectors_srcunit_tex_op_write.sum,smsp__warp_issue_stalled_no_instruction_per_warp_active.pct,smsp__warp_issue_stalled_barrier_per_warp_active.pct,smsp__warp_issue_stalled_long_scoreboard_per_warp_active.pct,smsp__warp_issue_stalled_short_scoreboard_per_warp_active.pct,smsp__warp_issue_stalled_math_pipe_throttle_per_warp_active.pct,smsp__warp_issue_stalled_mio_throttle_per_warp_active.pct,smsp__warp_issue_stalled_wait_per_warp_active.pct,smsp__warp_issue_stalled_dispatch_stall_per_warp_active.pct,smsp__warp_issue_stalled_not_selected_per_warp_active.pct,smsp__warp_issue_stalled_selected_per_warp_active.pct,smsp__warp_issue_stalled_lg_throttle_per_warp_active.pct,smsp__warp_issue_stalled_tex_throttle_per_warp_active.pct,smsp__warp_issue_stalled_branch_resolving_per_warp_active.pct,smsp__warp_issue_stalled_membar_per_warp_active.pct,smsp__warp_issue_stalled_sleeping_per_warp_active.pct,smsp__warp_issue_stalled_drain_per_warp_active.pct,smsp__warp_issue_stalled_imc_miss_per_warp_active.pct,smsp__warp_issue_stalled_misc_per_warp_active.pct
export PROFILE_NCU_ARGS="--print-details all --section SourceCounters --metrics $m"
OUT=$out/p64x64w4 PROFILE_D=192 PROFILE_MASK=none PROFILE_TILE="64 64 4 1" timeout 250 bash bench/gpu/profile-device.sh >> "$s" 2>&1
OUT=$out/p128x64w8 PROFILE_D=192 PROFILE_MASK=none PROFILE_TILE="128 64 8 1" timeout 200 bash bench/gpu/profile-device.sh >> "$s" 2>&1
rm -f $out/p128x64w8/ncu-fa2.txt $out/*/sass.txt.gz
for f in $out/p64x64w4/ncu-flashjit.txt $out/p64x64w4/ncu-fa2.txt $out/p128x64w8/ncu-flashjit.txt; do
  echo "== $f" >> "$s"; grep -E "lts__|smsp__warp_issue_stalled|Duration" "$f" >> "$s"
done
cat "$s"
