#!/usr/bin/env bash
# Runs the decorator's test suite on every CPython >= 3.9 found under ~/.pyenv/versions, each in
# a small venv (.venv-py3.X) holding only the pinned pytest. Says which versions ran and which
# were skipped. Exits non-zero when a version fails, or when none could run.
set -u
cd "$(dirname "$0")/../.."
PYENV_ROOT="${PYENV_ROOT:-$HOME/.pyenv}"
REQ=tests/python/requirements-matrix.txt
ran=() failed=() skipped=()
for minor in 9 10 11 12 13 14; do
  found=$(ls -d "$PYENV_ROOT"/versions/3."$minor".* 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$found" ] || [ ! -x "$found/bin/python3" ]; then
    skipped+=("3.$minor (absent)")
    continue
  fi
  venv=".venv-py3.$minor"
  if [ ! -f "$venv/.stamp" ] || [ "$REQ" -nt "$venv/.stamp" ]; then
    rm -rf "$venv"
    if ! "$found/bin/python3" -m venv "$venv" \
      || ! "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"; then
      failed+=("3.$minor (venv)")
      continue
    fi
    touch "$venv/.stamp"
  fi
  version=$("$venv/bin/python" -c 'import platform; print(platform.python_version())')
  echo "=== Python $version"
  if "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/python; then
    ran+=("$version")
  else
    failed+=("$version")
  fi
done
echo "py-test-matrix: passed: ${ran[*]:-none}"
echo "py-test-matrix: skipped: ${skipped[*]:-none}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "py-test-matrix: FAILED: ${failed[*]}"
  exit 1
fi
[ ${#ran[@]} -gt 0 ]
