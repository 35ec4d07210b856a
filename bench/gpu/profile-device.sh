#!/usr/bin/env bash
# Runs on the lent GPU machine from the repository root (see run-device.sh):
# Nsight Compute on one flashjit forward kernel and on PyTorch's
# FlashAttention-2 kernel at the same shape, plus the SASS of flashjit's.
#   PROFILE_D=128 PROFILE_MASK=none PROFILE_TILE="128 64 4 2" bash bench/gpu/profile-device.sh
# PROFILE_NCU_ARGS adds ncu options to both runs (e.g. "--print-details all
# --section SourceCounters --metrics lts__t_sectors_srcunit_tex_op_read.sum").
# Reports (text) go to $OUT: ncu-flashjit.txt, ncu-fa2.txt, sass.txt.gz.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out" /tmp/fj
[[ -x /tmp/fj/bin/flashjit ]] || tar -xJf .device/flashjit-bin.tar.xz -C /tmp/fj
bin=/tmp/fj/bin
export FLASHJIT_CACHE_DIR=/tmp/fj/profile-cache
rm -rf "$FLASHJIT_CACHE_DIR"
d=${PROFILE_D:-128} mask=${PROFILE_MASK:-none}
read -r bm bn warps stages <<<"${PROFILE_TILE:-128 64 4 2}"
h=$((2048 / d))
shape="--head-dim $d --batch 4 --heads-q $h --heads-kv $h --seqlen 4096 --dtype bf16 --mask $mask"
tile="--block-m $bm --block-n $bn --warps $warps --stages $stages"
sections="--section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables \
  --section SchedulerStats --section WarpStateStats --section InstructionStats --section Occupancy --section LaunchStats"
timeout 200 ncu --clock-control none $sections ${PROFILE_NCU_ARGS:-} -k regex:fwd_ --launch-count 1 \
  "$bin/flashjit" run $shape $tile --warmup 0 --repeats 1 > "$out/ncu-flashjit.txt" 2>&1
tail -3 "$out/ncu-flashjit.txt"
cubin=$(find "$FLASHJIT_CACHE_DIR" -name '*.cubin' | head -1)
cuobjdump --dump-sass "$cubin" | gzip > "$out/sass.txt.gz"
causal=False; [[ $mask == causal ]] && causal=True
cat > /tmp/fa2.py <<PY
import torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
q, k, v = (torch.randn(4, $h, 4096, $d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
    for _ in range(2):
        F.scaled_dot_product_attention(q, k, v, is_causal=$causal)
torch.cuda.synchronize()
PY
timeout 200 ncu --clock-control none $sections ${PROFILE_NCU_ARGS:-} -k regex:flash_fwd --launch-skip 1 --launch-count 1 \
  python3 /tmp/fa2.py > "$out/ncu-fa2.txt" 2>&1
tail -3 "$out/ncu-fa2.txt"
