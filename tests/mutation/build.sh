#!/usr/bin/env bash
# Builds the mutation-test binaries: a scratch copy of the sources at
# $MUTATION_BASE (default HEAD) with patches/*.patch applied, never the
# product's tree. Patch 00 adds flashjit::mutant(name), true when
# FLASHJIT_MUTANT=<name>; each other patch injects one bug behind it, so
# ONE static build holds every mutant and, with FLASHJIT_MUTANT unset, is
# the product's code (the golden-PTX test passes on it).
#
#   bash tests/mutation/build.sh            # scratch in $MUTATION_DIR
#   bash tests/mutation/run-cpu.sh          # here: unit, lit, ptxas per mutant
#   then on the GPU machine (files: .device/flashjit-mutants.tar.xz):
#   bash tests/mutation/run-gpu.sh
#
# The GPU machine has no LLVM: the binaries are static (FLASHJIT_STATIC_LLVM)
# and one stripped flashjit-gpu-tests carries all mutants (about 20 MB xz).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
scratch=${MUTATION_DIR:-/tmp/flashjit-mutation}
base=${MUTATION_BASE:-HEAD}
rev=$(git -C "$root" rev-parse "$base")
# The commit the patches were last made against (they apply there).
made_against=630b816

# The scratch is re-staged when the base or any patch changed.
stamp="$rev $(cat "$root"/tests/mutation/patches/*.patch | sha256sum | cut -c1-16)"
mkdir -p "$scratch/src"
if [[ ! -f $scratch/src/.base || $(cat "$scratch/src/.base") != "$stamp" ]]; then
  # The patched tree is staged apart, then only the files whose contents
  # changed replace the scratch's: an earlier build stays incremental.
  stage=$scratch/stage
  rm -rf "$stage"
  mkdir -p "$stage"
  git -C "$root" archive "$rev" | tar -x -C "$stage"
  for p in "$root"/tests/mutation/patches/*.patch; do
    if ! (cd "$stage" && git apply --whitespace=nowarn "$p"); then
      echo "mutation: $(basename "$p") does not apply to $rev;" \
           "the patches were made against $made_against (MUTATION_BASE=$made_against)," \
           "or update them to the generators' new code" >&2
      exit 1
    fi
  done
  (cd "$stage" && find . -type f) | while read -r f; do
    if ! cmp -s "$stage/$f" "$scratch/src/$f"; then
      mkdir -p "$(dirname "$scratch/src/$f")"
      cp "$stage/$f" "$scratch/src/$f"
    fi
  done
  (cd "$scratch/src" && find . -type f ! -name .base) | while read -r f; do
    [[ -e $stage/$f ]] || rm -f "$scratch/src/$f"
  done
  rm -rf "$stage"
  echo "$stamp" > "$scratch/src/.base"
fi
BUILD_DIR=$scratch/build bash "$scratch/src/tools/scripts/build.sh" -DFLASHJIT_STATIC_LLVM=ON

# The GPU machine's archive: the GPU test binary, stripped.
mkdir -p "$root/.device" "$scratch/pack/bin"
strip -o "$scratch/pack/bin/flashjit-gpu-tests" "$scratch/build/bin/flashjit-gpu-tests"
echo "$rev" > "$scratch/pack/BASE"
tar -cJf "$root/.device/flashjit-mutants.tar.xz" -C "$scratch/pack" bin BASE
ls -l "$root/.device/flashjit-mutants.tar.xz"
