#!/usr/bin/env bash
# Packs what a lent GPU machine needs to run bench/gpu/run-device.sh (it has
# no LLVM and no package registry): the static binaries (flashjit,
# flashjit-bench-gpu, flashjit-gpu-tests, stripped) as
# .device/flashjit-bin.tar.xz, their commit in .device/COMMIT, the peers
# scripts (../shared/peers, or PEERS_DIR) beside them and, with --wheel, the
# Python wheel in .whl/. Both folders are kept out of git
# (.git/info/exclude). Run from anywhere; then send [".device", ".whl"] as
# the call's carried paths and run, under a timeout,
#   bash bench/gpu/run-device.sh MODE...
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
build=${BUILD_DIR:-$root/build}
export CCACHE_BASEDIR=$root
BUILD_DIR=$build bash tools/scripts/build.sh -DFLASHJIT_STATIC_LLVM=ON
# A worktree's .git is a file: the exclude list lives in the common git dir.
exclude=$(git rev-parse --git-common-dir)/info/exclude
for ignored in .device .whl; do
  grep -qxF "$ignored" "$exclude" 2>/dev/null ||
    { mkdir -p "$(dirname "$exclude")" && echo "$ignored" >> "$exclude"; }
done
mkdir -p .device
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin"
for b in flashjit flashjit-bench-gpu flashjit-gpu-tests; do
  strip -o "$stage/bin/$b" "$build/bin/$b"
done
tar -C "$stage" -cJf .device/flashjit-bin.tar.xz bin
git rev-parse --short HEAD > .device/COMMIT
[[ -z $(git status --porcelain --untracked-files=no) ]] ||
  echo "pack-device.sh: the work tree has uncommitted changes; COMMIT names HEAD" >&2
peers=${PEERS_DIR:-$root/../shared/peers}
if [[ -d $peers ]]; then
  cp "$peers"/*.py .device/
else
  echo "pack-device.sh: no peers scripts at $peers (PEERS_DIR); peer modes will fail" >&2
fi
if [[ ${1:-} == --wheel ]]; then
  # The lent machine runs CPython 3.12: the wheel must be cp312.
  py=${PYTHON:-}
  for candidate in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
    [[ -z $py ]] && "$candidate" -c "import venv" >/dev/null 2>&1 && py=$candidate
  done
  [[ -n $py ]] || { echo "pack-device.sh: no Python 3.12 for the wheel (set PYTHON)" >&2; exit 1; }
  rm -rf .whl
  "$py" -m pip wheel . --no-deps -w .whl -Cbuild-dir=build-wheel-cp312
fi
du -sh .device ${1:+.whl} 2>/dev/null
echo "packed $(cat .device/COMMIT)"
