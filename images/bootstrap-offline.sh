#!/usr/bin/env bash
# Kept for scripts that call it: the air-gapped path is `mcp-python-executor image build
# --offline` now (debootstrap of a minimal Debian with python3, imported and built on through
# the engine's API). DEBIAN_MIRROR, DEBIAN_SUITE and DEBOOTSTRAP_CACHE are read by the binary.
#   DEBIAN_MIRROR=http://mirror.local/debian images/bootstrap-offline.sh [--force]
set -euo pipefail
exec "$(cd "$(dirname "$0")" && pwd)/build.sh" --offline "$@"
