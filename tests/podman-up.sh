#!/usr/bin/env bash
# Makes a rootful Podman serve the Docker API on $1 (default /run/podman/podman.sock) with the
# sandbox image in its store, for `make test-podman`. Starts `podman system service` when the
# socket does not answer; loads the image from Docker when Podman lacks it or has another id.
set -euo pipefail
sock=${1:-/run/podman/podman.sock}
image=mcp-python-executor/base:latest
say() { echo "podman-up: $*" >&2; }

command -v podman >/dev/null || { say "podman is not installed: apt-get install podman"; exit 1; }
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
want=$(DOCKER_HOST= docker image inspect --format '{{.Id}}' "$image")
have=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
if [ "sha256:${have#sha256:}" != "$want" ]; then
  say "loading $image into Podman"
  DOCKER_HOST= docker save "$image" | podman load >/dev/null
fi
say "Podman $(podman version --format '{{.Server.Version}}' 2>/dev/null || podman --version) serves unix://$sock"
