#!/usr/bin/env bash
# `make image`: builds mcp-python-executor/base:latest. Uses the registry base
# (python:3.12-slim, or PYEXEC_BASE_IMAGE) when it can be had, and the offline debootstrap path
# when it cannot. Both give the same tag. Does nothing if the image exists, unless --force.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tag=${PYEXEC_IMAGE_TAG:-mcp-python-executor/base:latest}
base=${PYEXEC_BASE_IMAGE:-python:3.12-slim}
force=0
[ "${1:-}" = "--force" ] && force=1

say() { echo "image: $*" >&2; }

docker info >/dev/null 2>&1 || {
  say "cannot reach Docker — is dockerd running? Start it (e.g. systemctl start docker) or set DOCKER_HOST"
  exit 1
}

# The image records the hash of the Dockerfile it was built from; an image built from an older
# recipe (say, before the installer user existed) is rebuilt, not reused.
recipe=$(sha256sum "$here/Dockerfile" | cut -c1-16)
export PYEXEC_RECIPE=$recipe
built=$(docker image inspect --format '{{ index .Config.Labels "mcp-python-executor.recipe" }}' "$tag" 2>/dev/null || true)
if [ "$force" = 0 ] && [ "$built" = "$recipe" ]; then
  say "$tag is up to date (make image-rebuild to rebuild it)"
  exit 0
fi
[ -n "$built" ] && [ "$force" = 0 ] && say "$tag was built from another recipe ($built): rebuilding"

if docker image inspect "$base" >/dev/null 2>&1 || timeout 120 docker pull --quiet "$base" >/dev/null 2>&1; then
  say "building $tag on $base"
  DOCKER_BUILDKIT=0 docker build --quiet --build-arg BASE="$base" --build-arg RECIPE="$recipe" -t "$tag" "$here" >/dev/null
  say "built $tag"
else
  say "$base cannot be pulled (no registry?): using the offline path"
  PYEXEC_IMAGE_TAG=$tag exec "$here/bootstrap-offline.sh" ${1:+"$1"}
fi
