#!/usr/bin/env bash
# Configures and builds flashjit into ${BUILD_DIR:-build}. Extra CMake
# arguments pass through (e.g. -DFLASHJIT_STATIC_LLVM=ON).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build}
cmake -G Ninja -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
# Linking against the static LLVM archives takes ~2 GB per link: cap parallel links.
ninja -C "$build" -j "${JOBS:-$(nproc)}"
