# mcp-python-executor — the commands a user and CI need.
#   make run           build what is missing (image, binary) and serve MCP on stdio
#   make test          build what is missing, then the everyday suite against real Docker
#                      (needs only what README.md, Set up, lists; checked first)
#   make test-engines  the tests that start engines of their own (dockerd with TLS, sshd): root
#   make test-gvisor   the isolation, attack and session tests again under runsc
#   make test-podman   the MCP, core, package and fault tests again on rootful Podman
#   make image         build the sandbox image (registry base if reachable, offline debootstrap if not)
# Each of run and the test targets first runs tests/prereqs.sh, which names in a second
# every tool that is missing and how to install it.

BIN        := target/release/mcp-python-executor
CLIENT_VENV := target/pyclient
INSPECTOR  := tests/inspector/node_modules/.bin/mcp-inspector

.PHONY: all build image image-rebuild run test test-rust test-client test-engines test-gvisor test-podman soak bench lint clean inspector

all: build

build:
	cargo build --release

image: build
	$(BIN) image build

image-rebuild: build
	$(BIN) image build --force

# prereqs-run, prereqs-test, …: what that target needs, checked before anything builds
# (listed first, so a serial make runs it first). Not phony: a phony target skips pattern rules.
prereqs-%:
	@tests/prereqs.sh $*

# Everything but the server itself goes to stderr: stdout is the MCP channel (make's own echo
# of a recipe there would be the client's first "message").
run: prereqs-run
	@$(MAKE) --no-print-directory image build >&2
	@exec $(BIN)

# The official MCP Python client first, then the Rust suite (its summary is the last line).
test: prereqs-test image build $(INSPECTOR) test-client test-rust

# The official MCP Inspector, pinned by tests/inspector/package-lock.json.
$(INSPECTOR): tests/inspector/package-lock.json
	npm ci --prefix tests/inspector --no-audit --no-fund --loglevel=error
	@touch $@

# The MCP Inspector's web UI on the built server, as the original's `npm run inspector`:
# open http://127.0.0.1:6274 (set PREINSTALLED_PACKAGES and PYEXEC_* here as for a client).
inspector: image build $(INSPECTOR)
	DANGEROUSLY_OMIT_AUTH=true MCP_AUTO_OPEN_ENABLED=false $(INSPECTOR) $(abspath $(BIN))

# Tests build in the release profile: they share `make build`'s compiled dependencies, and
# the flood tests (a gigabyte through the attach stream) are not bound by a debug build.
# The unit tests and every tests/*.rs but the engine ones, so a new file is in the everyday
# suite; named as targets, not filtered out, so the summary counts no test as skipped.
ENGINE_TESTS := remote ssh egress_hosts secrets
EVERYDAY_TESTS := $(filter-out $(ENGINE_TESTS),$(basename $(notdir $(wildcard tests/*.rs))))
test-rust:
	cargo nextest run --cargo-profile release --no-fail-fast --lib --bins $(EVERYDAY_TESTS:%=--test %)

# The tests that start an engine of their own, as root: a second dockerd with TLS certificates
# they make (tests/remote.rs) and an sshd in front of this machine's Docker (tests/ssh.rs);
# and the egress tests whose test hosts live in network namespaces they make
# (tests/egress_hosts.rs); then the attack and isolation corpus again with an allowlist set.
test-engines: prereqs-engines image build
	cargo nextest run --cargo-profile release --no-fail-fast $(ENGINE_TESTS:%=--test %)
	PYEXEC_ALLOW_HOSTS="example.com, 127.0.0.1:9" cargo nextest run --cargo-profile release \
		--no-fail-fast --test attacks --test isolation

# The MCP-level, core, session, attack, fault and install tests again, against rootful
# Podman's Docker-API socket (started, and given an image it built itself, by
# tests/podman-up.sh).
PODMAN_SOCK := /run/podman/podman.sock
test-podman: prereqs-podman image build
	tests/podman-up.sh $(PODMAN_SOCK) $(BIN)
	DOCKER_HOST=unix://$(PODMAN_SOCK) cargo nextest run --cargo-profile release --no-fail-fast \
		--test mcp --test execute --test isolation --test attacks --test pool --test reaper \
		--test faults --test cli --test packages --test install_attacks --test image_build \
		--test sessions --test egress_calls

# The isolation tests, the attack corpus and the sessions again, under gVisor (needs runsc
# registered with dockerd: see SECURITY.md).
test-gvisor: prereqs-gvisor image
	PYEXEC_RUNTIME=runsc cargo nextest run --cargo-profile release --no-fail-fast --test attacks --test isolation \
		--test sessions
	PYEXEC_RUNTIME=runsc-egress cargo nextest run --cargo-profile release --no-fail-fast --test egress_calls

# 1,000 mixed calls at concurrency 16 over MCP: failures, leaks and the server's peak RSS.
soak: image build
	cargo run --release --example soak -- $(BIN)

$(CLIENT_VENV)/bin/python:
	python3 -m venv $(CLIENT_VENV)
	$(CLIENT_VENV)/bin/pip install --quiet --disable-pip-version-check 'mcp>=1.10,<2'

test-client: $(CLIENT_VENV)/bin/python build
	$(CLIENT_VENV)/bin/python tests/official_client.py $(BIN)
	$(CLIENT_VENV)/bin/python tests/http_client.py $(BIN)

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

clean:
	cargo clean

# Latency, throughput, RSS and API calls per execution against the floors (host python,
# docker run); prints a markdown table. Not part of `make test`.
bench: image build
	cargo run --release --example bench -- $(BIN)
