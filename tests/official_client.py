"""Drives the server with the official MCP Python SDK (PyPI `mcp`), as a third-party client.

Run by `make test` after the Rust tests: lists the tools, runs a program, feeds stdin, sees a
traceback reported as an error, and checks that no container is left behind.
Usage: python tests/official_client.py path/to/mcp-python-executor
"""

import asyncio
import subprocess
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def text_of(result):
    return "\n".join(block.text for block in result.content if block.type == "text")


def labelled_containers():
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=mcp-python-executor"],
        check=True, capture_output=True, text=True,
    ).stdout
    return out.split()


async def main(binary):
    before = set(labelled_containers())
    server = StdioServerParameters(command=binary, args=[])
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            names = [tool.name for tool in tools.tools]
            assert "execute_python" in names, names
            schema = next(t for t in tools.tools if t.name == "execute_python").inputSchema
            assert schema["required"] == ["code"], schema
            assert "inputData" in schema["properties"], schema

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
            assert "Traceback" in text_of(failure) and "JSONDecodeError" in text_of(failure), text_of(failure)
    left = set(labelled_containers()) - before
    assert not left, f"containers left behind: {left}"
    print("official MCP Python client: tools listed, hello, stdin and traceback checks all good")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
