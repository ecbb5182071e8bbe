#!/usr/bin/env bash
# Builds the heap sampler (pyheap/) once per CPython found under ~/.pyenv/versions (3.9 and
# newer; free-threaded builds skipped: the module needs the GIL), linked against glibc 2.17
# symbols only like the extension, into
#   layer/python/lambda_memory_profiler/_native.cpython-3XY-x86_64-linux-gnu.so
# (one file per version side by side: each interpreter imports its own). Says which versions
# were built. Needs the tools from `make tools` (zig, cargo-zigbuild).
#
#   LMP_NATIVE_PYTHONS="/path/python3.11 ..."   build for these interpreters instead
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
glibc="${LMP_GLIBC:-2.17}"
triple=x86_64-unknown-linux-gnu
export PATH="$root/.venv-tools/bin:$root/build/tools/bin:$PATH"
dest="$root/layer/python/lambda_memory_profiler"
PYENV_ROOT="${PYENV_ROOT:-$HOME/.pyenv}"

pythons=()
if [ -n "${LMP_NATIVE_PYTHONS:-}" ]; then
  read -r -a pythons <<<"$LMP_NATIVE_PYTHONS"
else
  for minor in 9 10 11 12 13 14; do
    found=$(ls -d "$PYENV_ROOT"/versions/3."$minor".* 2>/dev/null | grep -v 't$' | sort -V | tail -n 1 || true)
    [ -n "$found" ] && [ -x "$found/bin/python3" ] && pythons+=("$found/bin/python3")
  done
fi
[ ${#pythons[@]} -gt 0 ] || { echo "build-native.sh: no CPython >= 3.9 found" >&2; exit 1; }

built=()
for py in "${pythons[@]}"; do
  read -r version suffix gil_disabled < <("$py" -c 'import sys, sysconfig; print("%d.%d" % sys.version_info[:2], sysconfig.get_config_var("EXT_SUFFIX"), sysconfig.get_config_var("Py_GIL_DISABLED") or 0)')
  if [ "$gil_disabled" = 1 ]; then
    echo "build-native.sh: $py is free-threaded: skipped (the decorator falls back without the module)"
    continue
  fi
  # One target dir per version: pyo3's build configuration differs by interpreter.
  export CARGO_TARGET_DIR="$root/build/native-target/$version"
  PYO3_PYTHON="$py" cargo zigbuild -q --release -p pyheap --target "$triple.$glibc"
  install -m 0755 "$CARGO_TARGET_DIR/$triple/release/lib_native.so" "$dest/_native$suffix"
  built+=("$version")
done
echo "build-native.sh: built for Python ${built[*]} into layer/python/lambda_memory_profiler/"
