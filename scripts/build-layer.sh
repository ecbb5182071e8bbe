#!/usr/bin/env bash
# Build the Lambda layer: build/layer.zip holding
#   extensions/lambda-memory-profiler   the extension, linked against glibc 2.17 symbols only
#   python/lambda_memory_profiler/      the decorator package
#   lambda-memory-profiler              the exec wrapper (AWS_LAMBDA_EXEC_WRAPPER=/opt/lambda-memory-profiler)
# so the same zip runs on Amazon Linux 2 (glibc 2.26) and Amazon Linux 2023 (glibc 2.34).
#
#   ARCH=x86_64|arm64 (default x86_64)   LMP_GLIBC=2.17 (oldest glibc the binary may need)
# Needs the tools from `make tools`: zig (PyPI `ziglang`, in .venv-tools) and cargo-zigbuild
# (in build/tools). arm64 needs the Rust target aarch64-unknown-linux-gnu installed (rustup).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
arch="${ARCH:-x86_64}"
glibc="${LMP_GLIBC:-2.17}"
case "$arch" in
  x86_64 | amd64) triple=x86_64-unknown-linux-gnu ;;
  arm64 | aarch64) triple=aarch64-unknown-linux-gnu ;;
  *) echo "build-layer.sh: unknown ARCH '$arch' (x86_64 or arm64)" >&2; exit 2 ;;
esac
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$triple"; then
  echo "build-layer.sh: Rust target $triple is not installed (rustup target add $triple)" >&2
  exit 2
fi

# zig comes from the tools venv (cargo-zigbuild falls back to `python3 -m ziglang`).
export PATH="$root/.venv-tools/bin:$root/build/tools/bin:$PATH"
# A separate target dir: the cross build neither waits for nor invalidates the host build.
export CARGO_TARGET_DIR="$root/build/target"
(cd "$root" && cargo zigbuild --release --bin lambda-memory-profiler --target "$triple.$glibc")

bin="$CARGO_TARGET_DIR/$triple/release/lambda-memory-profiler"
stage="$root/build/layer-$arch"
rm -rf "$stage"
mkdir -p "$stage/extensions" "$stage/python"
install -m 0755 "$bin" "$stage/extensions/lambda-memory-profiler"
cp -R "$root/layer/python/lambda_memory_profiler" "$stage/python/"
install -m 0755 "$root/layer/lambda-memory-profiler" "$stage/lambda-memory-profiler"
find "$stage" -name __pycache__ -prune -exec rm -rf {} +
# Fixed timestamps and sorted entries: the same inputs give the same zip.
find "$stage" -exec touch -h -d @1700000000 {} +

zip_name=layer.zip
[ "$arch" = x86_64 ] || zip_name="layer-$arch.zip"
rm -f "$root/build/$zip_name"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | sed 's|^\./||' | zip -X -q -@ "$root/build/$zip_name")
echo "build-layer.sh: build/$zip_name ($(stat -c %s "$root/build/$zip_name") bytes)," \
  "extension $(stat -c %s "$stage/extensions/lambda-memory-profiler") bytes"
