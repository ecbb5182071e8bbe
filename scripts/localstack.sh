#!/usr/bin/env bash
# Local CloudWatch-compatible server for tests and the demo: LocalStack running on the host.
#   scripts/localstack.sh install            create .venv-localstack (pinned, Python >= 3.13)
#   scripts/localstack.sh run PORT STATE_DIR run in the foreground on 127.0.0.1:PORT
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv-localstack"

find_python() {
  for v in python3.13 python3.14; do
    if command -v "$v" >/dev/null 2>&1 && "$v" -c 'import sys; sys.exit(sys.version_info < (3, 13))' 2>/dev/null; then
      command -v "$v"; return 0
    fi
  done
  for p in "$HOME"/.pyenv/versions/3.13*/bin/python3 "$HOME"/.pyenv/versions/3.14*/bin/python3; do
    [ -x "$p" ] && { echo "$p"; return 0; }
  done
  echo "localstack.sh: no Python >= 3.13 found (LocalStack needs it)" >&2
  return 1
}

case "${1:-}" in
  install)
    req="$root/scripts/localstack-requirements.txt"
    if [ -f "$venv/.stamp" ] && cmp -s "$req" "$venv/.stamp"; then exit 0; fi
    py="$(find_python)"
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q -r "$req"
    cp "$req" "$venv/.stamp"
    ;;
  run)
    port="${2:?usage: localstack.sh run PORT STATE_DIR}"
    state="${3:?usage: localstack.sh run PORT STATE_DIR}"
    mkdir -p "$state"/{volume,fs,cache,tmp}
    # hypercorn binds the given loopback address only; the default server would bind 0.0.0.0.
    # TMPDIR per instance: LocalStack keeps its CloudWatch database under $TMPDIR, and instances
    # sharing it break each other when one stops.
    exec env GATEWAY_LISTEN="127.0.0.1:$port" GATEWAY_SERVER=hypercorn \
      SERVICES=cloudwatch,logs DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 \
      TMPDIR="$state/tmp" LOCALSTACK_VOLUME_DIR="$state/volume" FILESYSTEM_ROOT="$state/fs" XDG_CACHE_HOME="$state/cache" \
      "$venv/bin/python" -m localstack.runtime.main
    ;;
  *)
    echo "usage: $0 install | run PORT STATE_DIR" >&2
    exit 2
    ;;
esac
