#!/usr/bin/env bash
# Builds mcp-python-executor/base:latest with no container registry: debootstraps a minimal
# Debian with python3 from a Debian mirror, imports it as mcp-python-executor/rootfs:bookworm,
# then builds images/Dockerfile on top. For air-gapped hosts with a local Debian mirror.
#
#   images/bootstrap-offline.sh [--force]
#   DEBIAN_MIRROR=http://mirror.local/debian images/bootstrap-offline.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
rootfs_tag=mcp-python-executor/rootfs:$suite
image_tag=${PYEXEC_IMAGE_TAG:-mcp-python-executor/base:latest}
cache=${DEBOOTSTRAP_CACHE:-/var/cache/mcp-python-executor/debootstrap}
force=0
[ "${1:-}" = "--force" ] && force=1

say() { echo "bootstrap-offline: $*" >&2; }

command -v debootstrap >/dev/null 2>&1 || {
  say "debootstrap is not installed: apt-get install debootstrap"; exit 1; }
docker info >/dev/null 2>&1 || {
  say "cannot reach Docker — is dockerd running? (DOCKER_HOST=${DOCKER_HOST:-unset})"; exit 1; }

if [ "$force" = 1 ] || ! docker image inspect "$rootfs_tag" >/dev/null 2>&1; then
  target=$(mktemp -d /var/tmp/pyexec-rootfs.XXXXXX)
  trap 'rm -rf "$target"' EXIT
  mkdir -p "$cache"
  say "debootstrapping Debian $suite with python3 from $mirror (a few minutes)"
  debootstrap --variant=minbase --cache-dir="$cache" \
    --include=python3,python3-venv,ca-certificates \
    "$suite" "$target" "$mirror" >/dev/null
  # Trim what a sandbox never needs; keep python and its standard library whole.
  rm -rf "$target"/var/lib/apt/lists/* "$target"/var/cache/apt/*.bin \
         "$target"/var/cache/apt/archives/*.deb \
         "$target"/usr/share/doc/* "$target"/usr/share/man/* "$target"/usr/share/info/* \
         "$target"/var/log/* "$target"/tmp/*
  find "$target"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' \
       -exec rm -rf {} + 2>/dev/null || true
  say "importing the rootfs as $rootfs_tag"
  tar -C "$target" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$rootfs_tag" >/dev/null
else
  say "reusing $rootfs_tag (pass --force to rebuild it)"
fi

say "building $image_tag on $rootfs_tag"
DOCKER_BUILDKIT=0 docker build --quiet --build-arg BASE="$rootfs_tag" \
  --build-arg RECIPE="${PYEXEC_RECIPE:-$(sha256sum "$here/Dockerfile" | cut -c1-16)}" -t "$image_tag" "$here" >/dev/null
say "built $image_tag"
