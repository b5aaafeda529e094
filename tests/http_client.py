"""Drives `mcp-python-executor --http` with the official MCP Python SDK's Streamable HTTP
client, as a team's clients would, and checks the HTTP surface's defences.

- start-up refusals: no token; an address other machines reach without a token; a port in use;
- with the token: tools, execute_python, install_packages (local index; the token has `install`), list_packages; a colleague's token without `install` refused install_packages; 10 clients at once, one session each;
  /metrics behind the token, counting exactly those calls;
- no token or a wrong one: 401 with `WWW-Authenticate: Bearer`; a foreign Origin and a
  wrong Host: 403; a body over the limit: 413; /healthz answers without a token;
- SIGHUP rereads the tokens file (a rotated token works, the old one stops working);
- a client that disconnects during `time.sleep(100)`: its container is removed at once;
- SIGTERM with calls in flight: a clean exit and no container left.
Usage: python tests/http_client.py path/to/mcp-python-executor
"""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

TOKEN = "test-token-0123456789abcdef"
COLLEAGUE = "colleague-token-0123456789abcdef"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def labelled_containers():
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=mcp-python-executor"],
        check=True, capture_output=True, text=True,
    ).stdout
    return set(out.split())


def refused_at_start(binary, args, env, why):
    done = subprocess.run(
        [binary, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode != 0, (args, done.stderr)
    assert why in done.stderr, (args, done.stderr)


def local_index():
    """The hermetic package index of the Rust tests, serving pyexec-http==1.0."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "index_server.py")
    index = subprocess.Popen([sys.executable, script, "pyexec-http==1.0"], stdout=subprocess.PIPE, text=True)
    port = int(index.stdout.readline())
    return index, f"http://127.0.0.1:{port}/simple"


def start(binary, port, index_url, tag, tokens_file):
    # No warm pool: every container that appears belongs to a call, so a test can tell which.
    env = {
        **os.environ, "PYEXEC_POOL_SIZE": "0", "RUST_LOG": "info",
        "PIP_INDEX_URL": index_url, "PYEXEC_INSTALL_NETWORK": "host", "PYEXEC_ENV_TAG": tag,
    }
    server = subprocess.Popen(
        [binary, "--http", f"127.0.0.1:{port}", "--http-tokens", tokens_file],
        env=env, stdin=subprocess.DEVNULL,
        stderr=open(f"/tmp/pyexec-http-{port}.log", "w"),
    )
    for _ in range(100):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    server.kill()
    raise AssertionError("the server never became healthy")


def status_of(port, headers, body=b'{"jsonrpc":"2.0","id":1,"method":"ping"}'):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/mcp", data=body, method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


def text_of(result):
    return "\n".join(block.text for block in result.content if block.type == "text")


async def session(port, body, token=TOKEN):
    url = f"http://127.0.0.1:{port}/mcp"
    async with streamablehttp_client(url, headers={"Authorization": f"Bearer {token}"}) as (r, w, _):
        async with ClientSession(r, w) as s:
            await s.initialize()
            return await body(s)


async def basics(s):
    tools = sorted(t.name for t in (await s.list_tools()).tools)
    assert tools == [
        "close_session",
        "create_session",
        "execute_python",
        "install_packages",
        "list_packages",
    ], tools
    result = await s.call_tool("execute_python", {"code": "print(6 * 7)"})
    assert text_of(result) == "stdout:\n42\n", text_of(result)
    installed = await s.call_tool("install_packages", {"packages": ["pyexec-http==1.0"]})
    assert not installed.isError, text_of(installed)
    imported = await s.call_tool("execute_python", {"code": "import pyexec_http\nprint(pyexec_http.VALUE)"})
    assert text_of(imported) == "stdout:\npyexec-http 1.0\n", text_of(imported)
    listed = await s.call_tool("list_packages", {})
    assert "pyexec-http==1.0" in text_of(listed), text_of(listed)
    return True


async def no_install(s):
    refused = await s.call_tool("install_packages", {"packages": ["pyexec-http==1.0"]})
    assert refused.isError and "not allowed for your token" in text_of(refused), text_of(refused)
    return True


async def one_of_ten(i, port):
    async def body(s):
        result = await s.call_tool("execute_python", {"code": f"import time\ntime.sleep(0.5)\nprint({i} * 2)"})
        return text_of(result)
    return await session(port, body)


async def disconnects(port):
    url = f"http://127.0.0.1:{port}/mcp"

    async def sleeping():
        async with streamablehttp_client(url, headers={"Authorization": f"Bearer {TOKEN}"}) as (r, w, _):
            async with ClientSession(r, w) as s:
                await s.initialize()
                await s.call_tool("execute_python", {"code": "import time\ntime.sleep(100)"})

    before = labelled_containers()
    task = asyncio.create_task(sleeping())
    await asyncio.sleep(3)
    running = labelled_containers() - before
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass
    return running


async def main(binary):
    refused_at_start(binary, ["--http", "127.0.0.1:1"], {}, "needs a token")
    refused_at_start(
        binary, ["--http", "0.0.0.0:1", "--http-insecure-no-auth"], {}, "reachable from other machines"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        refused_at_start(
            binary, ["--http", busy], {"PYEXEC_HTTP_TOKEN": TOKEN}, f"cannot listen on {busy}"
        )
    before = labelled_containers()
    port = free_port()
    index, index_url = local_index()
    tag = f"mcp-python-executor/env:http-client-{os.getpid()}"
    tokens_file = f"/tmp/pyexec-http-tokens-{os.getpid()}"
    with open(tokens_file, "w") as f:
        # This test's token may install (`install` after it); a colleague's may not.
        f.write(f"# the team\n{TOKEN} install\n{COLLEAGUE}\n")
    server = start(binary, port, index_url, tag, tokens_file)
    try:
        assert await session(port, basics)
        assert await session(port, no_install, token=COLLEAGUE)
        code, headers = status_of(port, {})
        assert code == 401 and headers.get("www-authenticate", headers.get("WWW-Authenticate")) == "Bearer", (code, headers)
        code, _ = status_of(port, {"Authorization": "Bearer wrong-token-0123456789"})
        assert code == 401, code
        auth = {"Authorization": f"Bearer {TOKEN}"}
        code, _ = status_of(port, {**auth, "Origin": "https://evil.example"})
        assert code == 403, code
        code, _ = status_of(port, {**auth, "Host": "evil.example"})
        assert code == 403, code
        # A body past the intake limit (twice --max-input, 4 MiB by default): 413.
        code, _ = status_of(port, auth, body=b" " * (9 << 20))
        assert code == 413, code
        answers = await asyncio.gather(*(one_of_ten(i, port) for i in range(10)))
        assert answers == [f"stdout:\n{i * 2}\n" for i in range(10)], answers
        print("HTTP: tokens, Origin, Host and 10 concurrent sessions checked")

        # /metrics: behind the token, and its counts are what this test did.
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
            raise AssertionError("/metrics answered without a token")
        except urllib.error.HTTPError as error:
            assert error.code == 401, error.code
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=auth)
        with urllib.request.urlopen(request, timeout=5) as r:
            metrics = {}
            for line in r.read().decode().splitlines():
                if line and not line.startswith("#"):
                    name, value = line.rsplit(" ", 1)
                    metrics[name] = float(value)
        assert metrics['pyexec_executions_total{outcome="ok"}'] == 12, metrics
        assert metrics['pyexec_executions_total{outcome="error"}'] == 0, metrics
        assert metrics["pyexec_execution_duration_seconds_count"] == 12, metrics
        takes = metrics['pyexec_pool_takes_total{result="hit"}'] + metrics['pyexec_pool_takes_total{result="miss"}']
        assert takes == 12, metrics
        assert metrics['pyexec_installs_total{outcome="ok"}'] == 1, metrics
        print("HTTP: /metrics counted what the test did")

        # SIGHUP rereads the tokens file: the new token works, the old one no longer does.
        new_token = "rotated-token-0123456789abcdef"
        with open(tokens_file, "w") as f:
            f.write(new_token + "\n")
        server.send_signal(signal.SIGHUP)
        for _ in range(50):
            if status_of(port, {"Authorization": f"Bearer {TOKEN}"})[0] == 401:
                break
            time.sleep(0.1)
        assert status_of(port, {"Authorization": f"Bearer {TOKEN}"})[0] == 401
        assert status_of(port, {"Authorization": f"Bearer {new_token}"})[0] != 401
        with open(tokens_file, "w") as f:
            f.write(f"{TOKEN} install\n")
        server.send_signal(signal.SIGHUP)
        for _ in range(50):
            if status_of(port, auth)[0] != 401:
                break
            time.sleep(0.1)
        print("HTTP: a body over the limit got 413; SIGHUP reloaded the tokens")

        # A client that goes away mid-call: its container goes at once.
        gone = await disconnects(port)
        assert gone, "the sleeping call had a container"
        for _ in range(100):
            if not (gone & labelled_containers()):
                break
            time.sleep(0.1)
        assert not (gone & labelled_containers()), "the disconnected call's container is still there"
        print("HTTP: a disconnected client's container was removed")

        # SIGTERM with calls in flight: clean exit, nothing left.
        async def in_flight():
            async def body(s):
                return await s.call_tool("execute_python", {"code": "import time\ntime.sleep(60)"})
            try:
                return await session(port, body)
            except Exception as error:  # the session ends with the server
                return error

        calls = [asyncio.create_task(in_flight()) for _ in range(3)]
        await asyncio.sleep(3)
        server.send_signal(signal.SIGTERM)
        code = await asyncio.get_running_loop().run_in_executor(None, lambda: server.wait(timeout=30))
        assert code == 0, code
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        left = labelled_containers() - before
        assert not left, f"containers left behind: {left}"
        print("HTTP: SIGTERM with calls in flight exited cleanly, no container left")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        index.kill()
        os.unlink(tokens_file)
        subprocess.run(
            [binary, "packages", "reset"], env={**os.environ, "PYEXEC_ENV_TAG": tag}, capture_output=True
        )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
