"""MCP: tools from MCP servers for codeact, and codeact as a code-mode MCP server (extra `codeact[mcp]`).

    with codeact.mcp.tools("python weather_server.py") as weather:   # stdio command, or an http(s) URL
        act = codeact.CodeAct("question -> answer", tools=weather)

Each MCP tool becomes a typed Python function in the sandbox (parameters from its input schema, the
docstring from its description); calls go through one open MCP session on the host, served on a
background event loop, and structured results come back as values. `serve` is `codeact mcp serve`:
one MCP tool, `run_python(code)`, runs code in a persistent sandbox where the given tools (other MCP
servers' included) are callable; `list_functions()` shows their stubs.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import shlex
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from codeact.sandbox import Sandbox, SandboxOptions
from codeact.tools import Tool

_JSON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list,
    "object": dict,
    "null": type(None),
}


class MCPTools(Sequence[Tool]):
    """The tools of one MCP server, with the session that serves them; close it (or use `with`)."""

    def __init__(self, server: str | Sequence[str], *, timeout: float = 60.0) -> None:
        self.server = server
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="codeact-mcp", daemon=True)
        self._thread.start()
        self._client: Client | None = None
        self._tools: list[Tool] = []
        try:
            self._run(self._open(), timeout)
        except BaseException:
            self.close()
            raise

    async def _open(self) -> None:
        client = Client(_transport(self.server), read_timeout_seconds=self.timeout)
        await client.__aenter__()
        self._client = client
        listing = await client.list_tools()
        self._tools = [self._tool(t) for t in listing.tools]

    def _run(self, coroutine: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _tool(self, spec: Any) -> Tool:
        name = spec.name
        schema = spec.input_schema or {}
        parameters, annotations = _parameters(schema)

        def call(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            return self.call(name, dict(bound.arguments))

        signature = inspect.Signature(parameters)
        call.__signature__ = signature  # type: ignore[attr-defined]
        call.__name__ = call.__qualname__ = name
        call.__doc__ = spec.description or f"The MCP tool {name}."
        call.__annotations__ = annotations
        return Tool(call, name=_identifier(name))

    def call(self, name: str, arguments: dict[str, Any]) -> Any:
        """Call tool `name` on the server; its structured result, or its text."""
        if self._client is None:
            raise RuntimeError("the MCP session is closed")
        result = self._run(self._client.call_tool(name, arguments), self.timeout)
        text = "\n".join(getattr(part, "text", "") for part in result.content if getattr(part, "text", None))
        if result.is_error:
            raise RuntimeError(text or f"the MCP tool {name} failed")
        structured = result.structured_content
        if structured is not None:
            if isinstance(structured, dict) and list(structured) == ["result"]:
                return structured["result"]  # a plain return value, wrapped by the server
            return structured
        return text

    def close(self) -> None:
        """End the MCP session (and the server process it started)."""
        client, self._client = self._client, None
        if client is not None and self._loop.is_running():
            with contextlib.suppress(Exception):  # the session is going away either way
                self._run(client.__aexit__(None, None, None), 10)
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> MCPTools:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._tools)

    def __getitem__(self, index: Any) -> Any:
        return self._tools[index]

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools)


def tools(server: str | Sequence[str], *, timeout: float = 60.0) -> MCPTools:
    """Connect to an MCP server (a stdio command line, its argv list, or an http(s) URL) and return
    its tools as codeact tools; close the result to end the session."""
    return MCPTools(server, timeout=timeout)


def _transport(server: str | Sequence[str]) -> Any:
    if isinstance(server, str) and server.startswith(("http://", "https://")):
        return server
    argv = shlex.split(server) if isinstance(server, str) else list(server)
    if not argv:
        raise ValueError("an MCP server needs a command to start it, or an http(s) URL")
    return StdioServerParameters(command=argv[0], args=argv[1:])


def _parameters(schema: dict[str, Any]) -> tuple[list[inspect.Parameter], dict[str, Any]]:
    """Keyword parameters (required first) and their types from a JSON schema's properties."""
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    parameters, annotations = [], {}
    for name in sorted(properties, key=lambda n: n not in required):
        if not name.isidentifier():
            continue
        prop = properties[name] or {}
        kind = prop.get("type")
        annotation = _JSON_TYPES.get(kind, Any) if isinstance(kind, str) else Any
        default = inspect.Parameter.empty if name in required else prop.get("default")
        if default is None and name not in required and annotation is not Any:
            annotation = annotation | None
        annotations[name] = annotation
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation)
        )
    return parameters, annotations


def _identifier(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"tool_{cleaned}"


# --- codeact as a code-mode MCP server --------------------------------------------------------------
def server(tools: Sequence[Any], *, options: SandboxOptions | None = None, name: str = "codeact") -> MCPServer:
    """An MCP server whose `run_python(code)` runs code in one persistent sandbox with `tools`."""
    sandbox = Sandbox(tools=list(tools), options=options or SandboxOptions())
    lock = threading.Lock()
    app = MCPServer(
        name,
        instructions=(
            "run_python runs Python in a persistent, isolated sandbox: variables and imports stay between calls, "
            "the functions listed by list_functions are callable (they run on the host), print what you need."
        ),
    )

    @app.tool()
    def run_python(code: str) -> str:
        """Run Python code in the persistent sandbox; returns what it printed and the value of its last
        expression. The functions from list_functions are callable by name."""
        with lock:
            result = sandbox.execute(code)
        parts = [result.stdout] if result.stdout else []
        if result.stderr:
            parts.append(f"[stderr]\n{result.stderr}")
        if result.value is not None:
            parts.append(f"[value] {result.value}")
        if result.error is not None:
            detail = result.error.traceback or f"{result.error.type}: {result.error.message}"
            raise ToolError("\n".join([*parts, detail]))  # an MCP error result with this text
        return "\n".join(parts) or "(no output)"

    @app.tool()
    def list_functions() -> str:
        """The Python functions callable from run_python, with their signatures and docstrings."""
        return "\n\n".join(t.stub() for t in sandbox.tools.values()) or "(no functions)"

    app._codeact_sandbox = sandbox  # type: ignore[attr-defined]  # closed by serve()
    return app


def serve(app: MCPServer) -> None:
    """Serve `app` (from `server(...)`) over stdio until the client goes away, then close its sandbox."""
    try:
        app.run("stdio")
    finally:
        app._codeact_sandbox.close()  # type: ignore[attr-defined]


__all__ = ["MCPTools", "serve", "server", "tools"]
