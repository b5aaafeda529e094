#!/usr/bin/env bash
# What a make target needs on this machine, checked in about a second, before anything
# builds: one line per missing tool with the command that installs it (this system's), then
# exit 1. A suite that would fail minutes later deep inside a test stops here instead.
#
#   tests/prereqs.sh run        make run: Rust, a Docker engine that answers
#   tests/prereqs.sh test       make test: the above, cargo-nextest, the docker CLI, Python
#                               3.10+ with venv, Node.js 20+ with npm
#   tests/prereqs.sh engines    make test-engines: root, dockerd, openssl, iproute2, sshd, ssh
#   tests/prereqs.sh gvisor     make test-gvisor: runsc registered with the engine
#   tests/prereqs.sh podman     make test-podman: root, podman, catatonit, curl
# (the last three with cargo-nextest, and the engine where they use it)
#
# Everything is printed on stderr: `make run`'s stdout is the MCP channel.
set -uo pipefail

suite=${1:-test}
case $suite in run | test | engines | gvisor | podman) ;; *)
  echo "usage: tests/prereqs.sh run|test|engines|gvisor|podman" >&2
  exit 2
  ;;
esac
macos=false
[ "$(uname -s)" = Darwin ] && macos=true
missing=0

# missing WHAT DEBIAN-NEXT-STEP [MACOS-NEXT-STEP]: one line, with the next step on this system.
missing() {
  missing=$((missing + 1))
  local how=$2
  if $macos; then how=${3:-$2}; fi
  echo "make $target: missing $1 — $how" >&2
}
has() { command -v "$1" >/dev/null 2>&1; }
target=$suite
[ "$suite" = engines ] || [ "$suite" = gvisor ] || [ "$suite" = podman ] && target=test-$suite

# `docker version` with a bound: a DOCKER_HOST that points at a host that drops packets would
# otherwise hold the check for minutes. Sets $engine_error to docker's own first error line.
engine_answers() {
  local out
  out=$(mktemp)
  docker version --format '{{.Server.Version}}' >/dev/null 2>"$out" &
  local pid=$! waited=0
  while kill -0 "$pid" 2>/dev/null && [ $waited -lt 100 ]; do
    sleep 0.1
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    engine_error="no answer in 10 s"
    rm -f "$out"
    return 1
  fi
  wait "$pid"
  local status=$?
  engine_error=$(grep -v '^\s*$' "$out" | head -n 1)
  rm -f "$out"
  return $status
}

check_engine() {
  if ! has docker; then
    missing "the docker CLI (the tests call it)" "install: apt-get install docker.io" \
      "install: Docker Desktop, OrbStack, or brew install colima docker && colima start"
    return
  fi
  engine_answers && return
  local where=${DOCKER_HOST:-unix:///var/run/docker.sock}
  local next="start it: dockerd & (or systemctl start docker)"
  $macos && next="start it: open Docker Desktop (or colima start)"
  case $engine_error in
  *"permission denied"*)
    next="let this user reach it: sudo usermod -aG docker \$USER, then log in again" ;;
  esac
  missing "a Docker engine that answers at $where (${engine_error:-no answer})" "$next"
}

# 1.89: the newest rust-version among the locked dependencies (uuid's).
check_rust() {
  local how="install: rustup, from https://rustup.rs (Debian's cargo is too old)"
  if ! has cargo || ! has rustc; then
    missing "Rust 1.89+ (cargo and rustc)" "$how"
    return
  fi
  local version
  version=$(rustc --version 2>/dev/null | sed -n 's/^rustc \([0-9]*\.[0-9]*\).*/\1/p')
  local major=${version%%.*} minor=${version#*.}
  if [ -z "$version" ] || [ "$major" -lt 1 ] || { [ "$major" = 1 ] && [ "$minor" -lt 89 ]; }; then
    missing "Rust 1.89+ (rustc is ${version:-unusable})" "$how; or rustup update"
  fi
}

# Every suite runs under nextest: a process per test, and the timeouts in .config/nextest.toml.
check_nextest() {
  check_rust
  if has cargo && ! cargo nextest --version >/dev/null 2>&1; then
    missing "cargo-nextest (runs each test in its own process)" "install: cargo install cargo-nextest --locked"
  fi
}

# The sandbox image: from the engine's registry, or debootstrapped where there is none. Only a
# note: a machine that reaches a registry never needs debootstrap.
note_image() {
  $macos || has debootstrap || ! has docker && return
  docker image inspect mcp-python-executor/base:latest >/dev/null 2>&1 && return
  docker image inspect python:3.12-slim >/dev/null 2>&1 && return
  echo "make $target: note: no sandbox image yet; if no registry is reachable, make image builds it offline with debootstrap (apt-get install debootstrap, as root)" >&2
}

case $suite in
run)
  check_rust
  check_engine
  note_image
  ;;
test)
  check_nextest
  check_engine
  # The official MCP Python SDK (mcp>=1.10) needs Python 3.10, in a venv of its own.
  if ! has python3; then
    missing "Python 3.10+ with venv" "install: apt-get install python3 python3-venv" "install: brew install python"
  elif ! python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    missing "Python 3.10+ with venv (python3 is $(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo unusable), or lacks venv/ensurepip)" \
      "install: apt-get install python3 python3-venv" "install: brew install python"
  fi
  # The pinned MCP Inspector (tests/inspector) declares node >= 20.
  node_how="install: apt-get install nodejs npm where that is Node.js 20+ (Debian 13, Ubuntu 24.10), else Node.js 20+ from https://nodejs.org"
  if ! has node; then
    missing "Node.js 20+ (the MCP Inspector test)" "$node_how" "install: brew install node"
  elif ! node -e 'process.exit(+process.versions.node.split(".")[0] < 20 ? 1 : 0)' 2>/dev/null; then
    missing "Node.js 20+ (node is $(node --version 2>/dev/null))" "$node_how" "install: brew install node"
  fi
  has npm || missing "npm (installs the pinned MCP Inspector)" "install: apt-get install npm" "install: brew install node"
  note_image
  ;;
engines)
  if $macos; then
    echo "make $target: the engine tests start a dockerd and an sshd of their own: Linux only" >&2
    exit 1
  fi
  [ "$(id -u)" = 0 ] || missing "root (the tests start a dockerd and an sshd)" "run it as root: sudo make test-engines"
  has dockerd || missing "dockerd (tests/remote.rs starts a second one with TLS)" "install: apt-get install docker.io"
  has openssl || missing "openssl (makes the TLS certificates)" "install: apt-get install openssl"
  has ip || missing "ip (gives the second dockerd a bridge, the egress test hosts their namespaces)" "install: apt-get install iproute2"
  has unshare && has mount || missing "unshare and mount (the egress tests give the server its own /etc/hosts)" "install: apt-get install util-linux mount"
  [ -x /usr/sbin/sshd ] || missing "/usr/sbin/sshd (tests/ssh.rs starts its own)" "install: apt-get install openssh-server"
  has ssh && has ssh-keygen || missing "ssh and ssh-keygen" "install: apt-get install openssh-client"
  has pgrep || missing "pgrep" "install: apt-get install procps"
  check_nextest
  check_engine
  ;;
gvisor)
  check_nextest
  check_engine
  if [ $missing = 0 ] && ! docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'; then
    missing "runsc registered with dockerd" \
      "install: apt-get install runsc, add it to /etc/docker/daemon.json and reload dockerd (SECURITY.md, Enabling gVisor)"
  fi
  if [ $missing = 0 ] && ! docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc-egress"'; then
    missing "runsc-egress registered with dockerd (runsc with --host-uds=open, for the egress tests)" \
      "install: add it to /etc/docker/daemon.json next to runsc and reload dockerd (SECURITY.md, Egress under gVisor)"
  fi
  ;;
podman)
  [ "$(id -u)" = 0 ] || missing "root (the suite runs rootful Podman)" "run it as root: sudo make test-podman"
  has podman || missing "podman" "install: apt-get install podman"
  # Install containers ask for the engine's init; Podman's default init_path is catatonit.
  [ -x /usr/libexec/podman/catatonit ] ||
    missing "catatonit (Podman's init, which install containers use)" "install: apt-get install catatonit"
  has curl || missing "curl (asks Podman's socket whether it answers)" "install: apt-get install curl"
  has docker || missing "the docker CLI (copies the image into Podman)" "install: apt-get install docker.io"
  check_nextest
  ;;
esac

if [ $missing -gt 0 ]; then
  [ "$suite" = test ] && echo "make test: README.md, Set up, lists what it needs" >&2
  exit 1
fi
if [ "$suite" = test ]; then
  echo "make test: the everyday suite; make test-engines (remote TLS, ssh), make test-gvisor and make test-podman run the rest" >&2
fi
exit 0
