#!/usr/bin/env bash
# The Python package's tests: `pip install .` into a fresh virtual
# environment (the wheel build reuses the C++ build's objects through ccache
# when it sits beside it), `import flashjit`, then pytest tests/python with
# torch and jax (CPU wheels from PyPI, pinned to the GPU machine's versions)
# where they install; tests whose framework or GPU is missing are skipped
# and listed with the reason.
#   python-tests.sh <cmake build dir>
# FLASHJIT_CI_FRAMEWORKS="torch jax" (default) | "" to skip installing them.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-${BUILD_DIR:-$root/build}}
start=$(date +%s)

# The GPU machine runs Python 3.12: prefer it, else python3. (A pyenv shim
# may name a version it will not run: each candidate must run.)
python=
for candidate in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 python3; do
  if "$candidate" -c "import venv" >/dev/null 2>&1; then
    python=$candidate
    break
  fi
done
[ -n "$python" ] || { echo "python tests: no Python 3 with venv found"; exit 1; }
venv=$build-python-venv
rm -rf "$venv"
"$python" -m venv "$venv"
py=$venv/bin/python
echo "python tests: $("$py" --version) in $venv"

# Same depth as the C++ build and the same CCACHE_BASEDIR: ccache hits.
CCACHE_BASEDIR=$root "$py" -m pip install -q "$root" -Cbuild-dir="$build-wheel"
"$py" -c "import flashjit; print('import flashjit:', flashjit.__version__, flashjit.library_path())"
echo "pip install . done in $(( $(date +%s) - start )) s"

# tree-sitter-julia: the Julia package's source is parsed (no Julia here).
"$py" -m pip install -q pytest numpy tree-sitter tree-sitter-julia
frameworks=${FLASHJIT_CI_FRAMEWORKS-torch jax}
for fw in $frameworks; do
  case $fw in
    torch) spec="torch==2.11.0" ;;
    jax) spec="jax>=0.4.36,<=0.11.2" ;;
    *) echo "unknown framework $fw"; exit 2 ;;
  esac
  t0=$(date +%s)
  if "$py" -m pip install -q "$spec" >"$venv/pip-$fw.log" 2>&1; then
    echo "$fw installed in $(( $(date +%s) - t0 )) s"
  else
    echo "$fw did not install (its tests are skipped): $(tail -1 "$venv/pip-$fw.log")"
  fi
done
cd "$root"
"$py" -m pytest tests/python -q -rs -p no:cacheprovider
