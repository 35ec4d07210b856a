#!/usr/bin/env bash
# The main job: install, build, compile one attention kernel (head_dim 80,
# causal, bf16, sm_90a) and print its PTX. No GPU needed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bash "$root/tools/scripts/install-deps.sh"
bash "$root/tools/scripts/build.sh"
"${BUILD_DIR:-$root/build}/bin/flashjit" compile --head-dim 80 --dtype bf16 --mask causal --arch sm_90a --emit ptx
