# Runs in an install container as root: `python3 -c <this file>`, with one JSON request on
# stdin: {"args": [pip arguments], "env": {pip's variables}, "cert": PEM text or null}.
# pip runs with an argument vector (never a shell). On success the last line of stdout is
# the marker followed by JSON {"before": {name: version}, "after": {name: version}}: every
# installed distribution before and after pip ran.
import json
import os
import subprocess
import sys

MARKER = "PYEXEC-INSTALLED "

from importlib import metadata


def installed():
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() != "pip":
            found[name] = dist.version
    return found


request = json.loads(sys.stdin.buffer.read())
before = installed()
env = dict(os.environ)
env.update(request.get("env") or {})
if request.get("cert") is not None:
    # The CA bundle lives on the tmpfs, so it is never committed into the image.
    with open("/tmp/pip-cert.pem", "w") as file:
        file.write(request["cert"])
    env["PIP_CERT"] = "/tmp/pip-cert.pem"
code = subprocess.run(
    [sys.executable, "-m", "pip", *request["args"]], env=env, stdin=subprocess.DEVNULL
).returncode
if code:
    sys.exit(code)

# Forget cached path scans so the new distributions are seen.
import importlib

importlib.invalidate_caches()
print("\n" + MARKER + json.dumps({"before": before, "after": installed()}), flush=True)
