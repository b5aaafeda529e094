#!/usr/bin/env bash
# Makes a rootful Podman serve the Docker API on $1 (default /run/podman/podman.sock) with the
# sandbox image in its store, for `make test-podman`. Starts `podman system service` when the
# socket does not answer; builds the image in Podman with the binary ($2).
set -euo pipefail
sock=${1:-/run/podman/podman.sock}
bin=${2:-target/release/mcp-python-executor}
image=mcp-python-executor/base:latest
rootfs=mcp-python-executor/rootfs:bookworm
say() { echo "podman-up: $*" >&2; }

command -v podman >/dev/null || { say "podman is not installed: apt-get install podman catatonit"; exit 1; }
answers() { curl -sf --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; }
if ! answers; then
  mkdir -p "$(dirname "$sock")"
  say "starting podman system service on $sock"
  # From / : conmon leaves an `oom` file in the service's working directory when a
  # container meets the OOM killer, which would litter the checkout.
  # exec, with every stream redirected: nothing of this script's (make's pipes) stays open.
  (cd / && exec podman system service --time=0 "unix://$sock" </dev/null >/tmp/podman-service.log 2>&1) &
  for _ in $(seq 1 30); do answers && break; sleep 1; done
  answers || { say "the service did not come up:"; tail -n 20 /tmp/podman-service.log >&2; exit 1; }
fi
# The sandbox image is built in Podman by the binary, through Podman's API (the test of
# `image build` on Podman), on the offline root filesystem that Docker's `make image` left.
# Without that image (a registry machine), the base is copied from Docker instead.
same_in_podman() {
  want=$(DOCKER_HOST= docker image inspect --format '{{.Id}}' "$1")
  have=$(podman image inspect --format '{{.Id}}' "$1" 2>/dev/null || true)
  [ "sha256:${have#sha256:}" = "$want" ]
}
if DOCKER_HOST= docker image inspect "$rootfs" >/dev/null 2>&1; then
  same_in_podman "$rootfs" || { say "loading $rootfs into Podman"; DOCKER_HOST= docker save "$rootfs" | podman load >/dev/null; }
  DOCKER_HOST="unix://$sock" "$bin" image build --offline
elif ! same_in_podman "$image"; then
  say "loading $image into Podman"
  DOCKER_HOST= docker save "$image" | podman load >/dev/null
fi
say "Podman $(podman version --format '{{.Server.Version}}' 2>/dev/null || podman --version) serves unix://$sock"
