"""MCP both ways, against real servers over stdio: tools from an MCP server (one written with the SDK's
server API, run as a subprocess), and `codeact mcp serve` driven by the SDK's client."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp")

from mcp import Client
from mcp.client.stdio import StdioServerParameters

import codeact
from codeact import mcp as codeact_mcp

ROOT = Path(__file__).resolve().parents[1]
SERVER = [sys.executable, str(ROOT / "tests" / "mcp_server.py")]
MATH_TOOLS = ROOT / "examples" / "math_tools.py"

pytestmark = pytest.mark.skipif(
    not __import__("codeact.sandbox", fromlist=["available_backends"]).available_backends(),
    reason="no sandbox backend on this machine",
)


# --- tools from an MCP server -----------------------------------------------------------------------
def test_mcp_tools_become_typed_functions_in_the_sandbox():
    with codeact_mcp.tools(SERVER) as tools:
        by_name = {t.name: t for t in tools}
        assert set(by_name) == {"add", "forecast", "shout", "fail"}
        assert by_name["add"].stub().startswith("def add(a: int, b: int = 2)")
        assert "Add two integers." in by_name["add"].stub()
        with codeact.Sandbox(tools=list(tools)) as sb:
            r = sb.execute(
                "f = forecast('Paris')\nprint(add(40), add(1, b=1), f['celsius'], shout('hi'))\n"
                "try:\n    fail('no reason')\nexcept Exception as exc:\n    print('failed:', exc)"
            )
    assert r.error is None, r.error
    lines = r.stdout.splitlines()
    assert lines[0] == "42 2 21.5 HI"
    assert lines[1].startswith("failed: ") and lines[1].endswith("failed because no reason")


def test_a_codeact_run_uses_mcp_tools_and_the_session_closes():
    lm = codeact.ScriptedLM(["```python\nsubmit(answer=add(20, 22))\n```"])
    tools = codeact_mcp.tools(SERVER)
    with tools:
        prediction = codeact.CodeAct("q -> answer: int", tools=tools, lm=lm)(q="go")
    assert prediction.answer == 42
    with pytest.raises(RuntimeError, match="the MCP session is closed"):
        tools[0](a=1)


def test_codeact_run_takes_mcp_servers(tmp_path):
    script = tmp_path / "replies.json"
    script.write_text(json.dumps(["```python\nsubmit(answer=shout('mcp'))\n```"]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "codeact",
            "run",
            "go",
            "--model",
            f"scripted:{script}",
            "--json",
            "--mcp",
            " ".join(SERVER),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outputs"] == {"answer": "MCP"}


# --- codeact as a code-mode MCP server ----------------------------------------------------------------
async def _session(extra: list[str], calls: list[tuple[str, dict]]) -> list:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "codeact", "mcp", "serve", "--tools", str(MATH_TOOLS), "--timeout", "2", *extra],
        cwd=str(ROOT),
    )
    results = []
    async with Client(params) as client:
        listing = await client.list_tools()
        results.append(sorted(t.name for t in listing.tools))
        for name, arguments in calls:
            results.append(await client.call_tool(name, arguments))
    return results


def _text(result) -> str:
    return "\n".join(part.text for part in result.content if getattr(part, "text", None))


def test_serve_runs_code_with_tools_keeps_state_and_reports_errors():
    listing, functions, first, second, error, slow = asyncio.run(
        _session(
            [],
            [
                ("list_functions", {}),
                ("run_python", {"code": "x = add(17, 25)\nprint('sum', x)"}),
                ("run_python", {"code": "x * 2"}),
                ("run_python", {"code": "1 / 0"}),
                ("run_python", {"code": "while True:\n    pass"}),
            ],
        )
    )
    assert listing == ["list_functions", "run_python"]
    assert "def add(a: float, b: float) -> float" in _text(functions)
    assert not first.is_error and "sum 42" in _text(first)
    assert "[value] 84" in _text(second)  # the variable survived between calls
    assert error.is_error and "ZeroDivisionError" in _text(error)
    assert slow.is_error and "time limit" in _text(slow)  # the sandbox's limits apply


def test_serve_offers_other_mcp_servers_tools():
    only_shout = [*SERVER, "--only", "shout,forecast"]
    _, result = asyncio.run(
        _session(
            ["--mcp", " ".join(only_shout)],
            [
                ("run_python", {"code": "print(shout('through'), forecast('Oslo')['city'], add(1, 2))"}),
            ],
        )
    )
    assert not result.is_error, _text(result)
    assert "THROUGH Oslo 3" in _text(result)
