#!/usr/bin/env bash
# check-glibc.sh BINARY [MAX]: fail when BINARY needs a glibc symbol version newer than MAX
# (default 2.17), i.e. when it would fail on an older OS with "GLIBC_x.y not found".
set -euo pipefail
bin="${1:?usage: check-glibc.sh BINARY [MAX_GLIBC]}"
max="${2:-2.17}"
[ -f "$bin" ] || { echo "check-glibc.sh: no such file: $bin" >&2; exit 2; }
# objdump fails on anything that is not an object file; that must fail the check too.
symbols="$(objdump -T "$bin")"
versions="$(grep -oE 'GLIBC_[0-9]+(\.[0-9]+)+' <<<"$symbols" | sed 's/^GLIBC_//' | sort -uV || true)"
if [ -z "$versions" ]; then
  echo "check-glibc.sh: $bin references no versioned glibc symbol (static or not glibc)"
  exit 0
fi
newest="$(tail -n1 <<<"$versions")"
if [ "$(printf '%s\n%s\n' "$newest" "$max" | sort -V | tail -n1)" != "$max" ]; then
  echo "check-glibc.sh: FAIL: $bin needs GLIBC_$newest (> $max). Symbols newer than $max:" >&2
  while read -r v; do
    [ "$(printf '%s\n%s\n' "$v" "$max" | sort -V | tail -n1)" = "$max" ] && continue
    grep -E "GLIBC_$v([^.0-9]|$)" <<<"$symbols" | awk '{print "  " $NF " (GLIBC_'"$v"')"}' >&2
  done <<<"$versions"
  exit 1
fi
echo "check-glibc.sh: ok: $bin needs at most GLIBC_$newest (limit $max)"
