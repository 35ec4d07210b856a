#!/usr/bin/env bash
# Installs what flashjit needs to build on Debian 12 (run as root): LLVM/MLIR 22,
# lit + FileCheck, nlohmann/json, CLI11, xxhash, GoogleTest, ninja, ccache,
# cuda.h + ptxas (the CUDA toolkit under /usr/local/cuda if present, else
# Debian's non-free CUDA packages), and clang with its sanitizer and libFuzzer
# runtimes.
set -euo pipefail
need=()
for p in llvm-22-dev libmlir-22-dev mlir-22-tools llvm-22-tools nlohmann-json3-dev \
         libcli11-dev libxxhash-dev libgtest-dev cmake ninja-build ccache g++ \
         zlib1g-dev libzstd-dev python3 python3-dev python3-venv; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
cuda_h=$(ls /usr/local/cuda/include/cuda.h /usr/include/cuda.h 2>/dev/null | head -1 || true)
if [ ${#need[@]} -gt 0 ] || [ -z "$cuda_h" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if [ -z "$cuda_h" ]; then
    # cuda.h and ptxas come from the CUDA toolkit: Debian ships it in non-free.
    if ! apt-cache show nvidia-cuda-dev >/dev/null 2>&1; then
      echo "deb http://deb.debian.org/debian bookworm main contrib non-free non-free-firmware" \
        > /etc/apt/sources.list.d/flashjit-cuda.list
      apt-get update -qq
    fi
    need+=(nvidia-cuda-dev nvidia-cuda-toolkit)
  fi
  [ ${#need[@]} -gt 0 ] && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The sanitizer and fuzz runs (run-sanitizers.sh): clang of our LLVM release
# with its runtimes (ASan, UBSan, TSan, libFuzzer) where the archive has it,
# else Debian's clang; without either they build with g++ and fuzz with the
# unit tests' mutation loop.
if ! { command -v clang++-22 >/dev/null && dpkg -s libclang-rt-22-dev >/dev/null 2>&1; }; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends clang-22 libclang-rt-22-dev >/dev/null 2>&1 ||
    apt-get install -y -qq --no-install-recommends clang libclang-rt-14-dev >/dev/null 2>&1 ||
    echo "no clang packages: sanitizers build with g++, no libFuzzer"
fi
echo "dependencies ok"
