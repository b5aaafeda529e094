#!/usr/bin/env bash
# Kept for scripts that call it: the binary builds the image now, through the engine's API, so
# this is `mcp-python-executor image build` (see its --help). PYEXEC_IMAGE_TAG still names the
# tag; PYEXEC_BASE_IMAGE, DEBIAN_MIRROR, DEBIAN_SUITE and DEBOOTSTRAP_CACHE are read by the binary.
#   images/build.sh [--force]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${PYEXEC_BIN:-$here/../target/release/mcp-python-executor}
[ -x "$bin" ] || bin=$(command -v mcp-python-executor) || {
  echo "image: build the binary first (cargo build --release) or put it on PATH" >&2; exit 1; }
exec "$bin" ${PYEXEC_IMAGE_TAG:+--image "$PYEXEC_IMAGE_TAG"} image build "$@"
