"""Drives the server with the official MCP Python SDK (PyPI `mcp`), as a third-party client.

Run by `make test` after the binary is built. Part 1 (execute_python): lists the tools, runs a
program, feeds stdin, sees a traceback reported as an error, and gets a slow program's output
live as progress notifications before the answer. Part 2 (packages, needs PyPI):
bad specs are refused, logging/setLevel filters pip's log messages, six==1.16.0 installs with progress and imports, a failing install
changes nothing, and a restart with PREINSTALLED_PACKAGES already baked installs nothing.
No container may be left behind.
Usage: python tests/official_client.py path/to/mcp-python-executor
"""

import asyncio
import os
import subprocess
import sys
import urllib.request
import uuid

from mcp import ClientSession, McpError, StdioServerParameters
from mcp.client.stdio import stdio_client


def text_of(result):
    return "\n".join(block.text for block in result.content if block.type == "text")


def docker(*args):
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def labelled_containers():
    return set(docker("ps", "-aq", "--filter", "label=mcp-python-executor").split())


def image_id(tag):
    return docker("image", "inspect", "--format", "{{.Id}}", tag).strip()


def pypi_reachable():
    try:
        urllib.request.urlopen("https://pypi.org/simple/six/", timeout=15)
        return True
    except OSError as error:
        print(f"SKIPPED official-client package checks: PyPI unreachable ({error})")
        return False


async def session_with(binary, env, body):
    server = StdioServerParameters(command=binary, args=[], env={**os.environ, **env})
    logs = []

    async def on_log(params):
        logs.append(params.data)

    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write, logging_callback=on_log) as session:
            await session.initialize()
            return await body(session, logs)


async def execute_checks(session, _logs):
    tools = await session.list_tools()
    names = sorted(tool.name for tool in tools.tools)
    assert names == [
        "close_session",
        "create_session",
        "execute_python",
        "install_packages",
        "list_packages",
    ], names
    schema = next(t for t in tools.tools if t.name == "execute_python").inputSchema
    assert schema["required"] == ["code"], schema
    assert "inputData" in schema["properties"], schema
    schema = next(t for t in tools.tools if t.name == "install_packages").inputSchema
    assert schema["required"] == ["packages"], schema

    hello = await session.call_tool("execute_python", {"code": "print('Hello, World!')"})
    assert not hello.isError, hello
    assert "Hello, World!" in text_of(hello), text_of(hello)

    echo = await session.call_tool(
        "execute_python",
        {"code": "a = input()\nb = input()\nprint(int(a) + int(b))", "inputData": ["2", "40"]},
    )
    assert not echo.isError, echo
    assert "42" in text_of(echo), text_of(echo)

    failure = await session.call_tool("execute_python", {"code": "import json\njson.loads('{')"})
    assert failure.isError, failure
    assert "Traceback" in text_of(failure) and "JSONDecodeError" in text_of(failure)

    # A session: state between calls, the structured status the output schema declares (the
    # SDK validates it), its end said in the answer, and the id unknown afterwards.
    opened = await session.call_tool("create_session", {})
    assert not opened.isError, opened
    session_id = opened.structuredContent["session_id"]
    kept = await session.call_tool(
        "execute_python", {"code": "total = 40", "session_id": session_id}
    )
    assert not kept.isError, kept
    used = await session.call_tool(
        "execute_python", {"code": "print(total + 2)\nexit()", "session_id": session_id}
    )
    assert "42" in text_of(used) and "The session has ended" in text_of(used), text_of(used)
    assert used.structuredContent["session_ended"] == "exited", used.structuredContent
    gone = await session.call_tool("execute_python", {"code": "1", "session_id": session_id})
    assert gone.isError and "create_session" in text_of(gone), text_of(gone)

    # Live output: with a progress token, printed text arrives while the program runs.
    progress = []

    async def on_progress(value, total, message):
        progress.append(message or "")

    ticking = "import time\nfor i in range(4):\n    print('tick', i)\n    time.sleep(1)"
    ticked = await session.call_tool(
        "execute_python", {"code": ticking}, progress_callback=on_progress
    )
    assert not ticked.isError, ticked
    assert text_of(ticked) == "stdout:\ntick 0\ntick 1\ntick 2\ntick 3\n", text_of(ticked)
    carrying = [message for message in progress if "tick" in message]
    assert len(carrying) >= 2, progress
    assert "".join(carrying) == "tick 0\ntick 1\ntick 2\ntick 3\n", carrying


async def refused(session, packages):
    try:
        result = await session.call_tool("install_packages", {"packages": packages})
    except McpError as error:
        return str(error)
    assert result.isError, (packages, result)
    return text_of(result)


async def install_checks(session, logs):
    for bad in (["--index-url=https://evil.example/simple"], ["six @ https://evil.example/x.whl"], []):
        message = await refused(session, bad)
        assert message, bad

    # logging/setLevel filters: pip's lines (without a progress token) are info messages.
    await session.set_logging_level("error")
    quiet = await session.call_tool("install_packages", {"packages": ["pyexec-not-on-any-index"]})
    assert quiet.isError, text_of(quiet)
    assert not logs, logs
    await session.set_logging_level("info")

    progress = []

    async def on_progress(value, total, message):
        progress.append(message)

    installed = await session.call_tool(
        "install_packages", {"packages": ["six==1.16.0"]}, progress_callback=on_progress
    )
    assert not installed.isError, text_of(installed)
    assert "six==1.16.0" in text_of(installed), text_of(installed)
    assert any("six" in (line or "") for line in progress + logs), (progress, logs)

    imported = await session.call_tool("execute_python", {"code": "import six\nprint(six.__version__)"})
    assert "1.16.0" in text_of(imported), text_of(imported)

    before = await session.call_tool("list_packages", {})
    failing = await session.call_tool(
        "install_packages", {"packages": ["pyexec-no-such-package-on-any-index"]}
    )
    assert failing.isError, text_of(failing)
    assert "unchanged" in text_of(failing), text_of(failing)
    assert any("pyexec-no-such-package-on-any-index" in str(line) for line in logs), logs
    after = await session.call_tool("list_packages", {})
    assert text_of(before) == text_of(after), (text_of(before), text_of(after))
    assert "six==1.16.0" in text_of(after), text_of(after)


async def restart_checks(session, _logs):
    listed = await session.call_tool("list_packages", {})
    assert "six==1.16.0" in text_of(listed), text_of(listed)
    imported = await session.call_tool("execute_python", {"code": "import six\nprint('six ok')"})
    assert "six ok" in text_of(imported), text_of(imported)


async def main(binary):
    before = labelled_containers()
    tag = f"mcp-python-executor/env:official-client-{uuid.uuid4().hex[:12]}"
    env = {"PYEXEC_ENV_TAG": tag}
    try:
        await session_with(binary, env, execute_checks)
        print("official MCP Python client: execute_python checks passed")
        if pypi_reachable():
            await session_with(binary, env, install_checks)
            baked = image_id(tag)
            await session_with(binary, {**env, "PREINSTALLED_PACKAGES": "six==1.16.0"}, restart_checks)
            assert image_id(tag) == baked, "PREINSTALLED_PACKAGES already baked made a new layer"
            print("official MCP Python client: install_packages checks passed")
    finally:
        subprocess.run([binary, "packages", "reset"], env={**os.environ, **env}, capture_output=True)
    left = labelled_containers() - before
    assert not left, f"containers left behind: {left}"


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
