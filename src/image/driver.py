# Runs in an install container as the installer user (uid 10002, never root), started as
#   /usr/bin/timeout -s KILL <deadline> /opt/venv/bin/python3 -I -S -u -c <this file>
# with one JSON request on stdin: {"args": [pip arguments], "env": {pip's variables},
# "cert": PEM text or null}.
#
# No code of any installed package runs here:
# - `-S` skips the site module, so no .pth file, sitecustomize or usercustomize of the
#   environment is processed; `-I` ignores PYTHON* variables and the user site.
# - pip is imported from /opt/pyexec (root-owned: no package can replace it) and runs in this
#   interpreter, with an argument vector (never a shell).
# - The environment's site-packages is on sys.path only so pip can see what is installed; a
#   finder refuses every import from it (pip would otherwise import an installed `keyring`).
# On success the last line of stdout is the marker followed by JSON
# {"before": {name: version}, "after": {name: version}}.
import importlib.machinery
import json
import os
import shutil
import sys

VENV = "/opt/venv"
PIP_HOME = "/opt/pyexec"
MARKER = "PYEXEC-INSTALLED "
SOURCE_ONLY = "PYEXEC-SOURCE-ONLY "
SITE = os.path.join(
    VENV, "lib", "python%d.%d" % sys.version_info[:2], "site-packages"
)
# pip unpacks wheels here: on the rootfs (the /tmp tmpfs is small and counts as memory), in
# the one tree the installer may write, and removed before the layer is checked.
SCRATCH = os.path.join(VENV, ".pyexec-tmp")


def fail(code, message):
    sys.stderr.write("pyexec install: " + message + "\n")
    sys.stderr.flush()
    os._exit(code)


if os.getuid() == 0:
    fail(3, "refusing to run pip as root")
if not os.access(SITE, os.W_OK):
    fail(
        4,
        "%s is not writable by uid %d: the base image predates the installer user; "
        "rebuild it with `make image-rebuild`" % (SITE, os.getuid()),
    )

request = json.loads(sys.stdin.buffer.read())

# What site.venv() would do, without processing any .pth file: pip then installs into the
# venv's scheme and sees that it runs in a virtual environment.
sys.prefix = sys.exec_prefix = VENV
sys.path.insert(0, PIP_HOME)
sys.path.append(SITE)


class RefuseEnvironmentImports:
    """A finder that lets nothing be imported from the environment being changed."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            return None
        places = [spec.origin or ""] + list(spec.submodule_search_locations or [])
        if any(place.startswith(SITE + os.sep) for place in places):
            raise ImportError("pyexec install: not importing %s from the environment" % name)
        return None


sys.meta_path.insert(0, RefuseEnvironmentImports)

from importlib import metadata  # noqa: E402  (stdlib; reads metadata files, runs nothing)


def installed():
    found = {}
    for dist in metadata.distributions(path=[SITE]):
        name = dist.metadata["Name"]
        if name and name.lower() != "pip":
            found[name] = dist.version
    return found


before = installed()
os.environ.update(request.get("env") or {})
if request.get("cert") is not None:
    # The CA bundle lives on the tmpfs, so it is never committed into the image.
    with open("/tmp/pip-cert.pem", "w") as file:
        file.write(request["cert"])
    os.environ["PIP_CERT"] = "/tmp/pip-cert.pem"
os.environ["HOME"] = "/tmp"
os.makedirs(SCRATCH, exist_ok=True)
os.environ["TMPDIR"] = SCRATCH
import tempfile  # noqa: E402

tempfile.tempdir = SCRATCH
try:
    from pip._internal.cli.main import main as pip_main

    try:
        code = pip_main(list(request["args"]))
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
finally:
    shutil.rmtree(SCRATCH, ignore_errors=True)


def source_only(args):
    """Names pip found no wheel for that the index has versions of: source-only packages.

    Asked only when sdists are refused and pip failed; `pip index versions` reads the index
    only (it runs nothing) and lists versions in any format. The server counts a name as
    source-only only where pip also said it found no version of it at all.
    """
    import contextlib
    import io
    import re

    if "--only-binary=:all:" not in args or "--" not in args:
        return []

    def has_versions(name):
        listing = io.StringIO()
        with contextlib.redirect_stdout(listing), contextlib.redirect_stderr(io.StringIO()):
            try:
                pip_main(["index", "versions", "--disable-pip-version-check", name])
            except SystemExit:
                pass
        return "Available versions:" in listing.getvalue()

    found = []
    for spec in args[args.index("--") + 1 :][:20]:
        name = re.match(r"[A-Za-z0-9._-]+", spec).group(0)
        if has_versions(name):
            found.append(name)
    return found


if code:
    for name in source_only(list(request["args"])):
        print("\n" + SOURCE_ONLY + name, flush=True)
sys.stdout.flush()
sys.stderr.flush()
if code:
    os._exit(code)

import importlib  # noqa: E402

# Forget cached path scans so the new distributions are seen.
importlib.invalidate_caches()
print("\n" + MARKER + json.dumps({"before": before, "after": installed()}), flush=True)
