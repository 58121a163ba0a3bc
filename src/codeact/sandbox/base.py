"""`Sandbox`: the public entry point; constructing it returns the backend that will run the code."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from codeact.sandbox.interpreter import ExecutionResult, InterpreterError, LayerStatus
from codeact.tools import Tool, as_tool

log = logging.getLogger("codeact.sandbox")

BACKENDS = ("process", "pyodide")


def available_backends() -> list[str]:
    """The backends that can run on this machine, best first."""
    found = []
    if sys.platform.startswith("linux"):
        found.append("process")
    try:
        from codeact.sandbox import pyodide

        if pyodide.status().active:
            found.append("pyodide")
    except (ImportError, AttributeError):
        pass
    return found


def _backend_class(backend: str) -> type[Sandbox]:
    if backend == "auto":
        backends = available_backends()
        if not backends:
            raise InterpreterError(
                "no sandbox backend is available here: the native one needs Linux, the Pyodide one "
                "needs Deno and Pyodide (pip install 'codeact[pyodide]'; see `codeact doctor`)"
            )
        backend = backends[0]
        if backend != "process":
            log.warning("the native sandbox is unavailable here; using the %s backend", backend)
    if backend == "process":
        from codeact.sandbox.process.backend import ProcessInterpreter

        return ProcessInterpreter
    if backend == "pyodide":
        from codeact.sandbox.pyodide import PyodideInterpreter

        return PyodideInterpreter
    raise ValueError(f"unknown sandbox backend {backend!r}; choose one of {', '.join(BACKENDS)} or 'auto'")


class Sandbox:
    """A sandboxed Python session with `tools` callable inside (they run on the host).

    `Sandbox(tools, backend="auto", ...)` returns the native process sandbox on Linux and the
    Pyodide one elsewhere; every backend implements the `Interpreter` protocol and is a `Sandbox`.
    Options: read_paths, write_paths, env, network, timeout, memory_limit, preload, strict,
    submit_params (see the backend classes for the rest).
    """

    backend = ""
    layers: list[LayerStatus]

    def __new__(cls, *args: Any, backend: str = "auto", **options: Any) -> Sandbox:
        if cls is Sandbox:
            return super().__new__(_backend_class(backend))
        return super().__new__(cls)

    # Shared by the backends, which provide `_execute` and `_abort`; see the `Interpreter` protocol.
    tools: dict[str, Tool]
    submit_params: list[str]
    _definitions_sent: bool
    _tool_future: Future[Any] | None

    def start(self) -> None:
        raise NotImplementedError

    def set_tools(self, tools: Sequence[Any]) -> None:
        converted = [as_tool(t) for t in tools]
        names = [t.name for t in converted]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"two tools share the name {sorted(duplicates)[0]!r}; give one name='...'")
        if "submit" in names:
            raise ValueError("a tool may not be called 'submit': that name ends the task")
        self.tools = {t.name: t for t in converted}
        self._definitions_sent = False

    def set_submit(self, params: Sequence[str]) -> None:
        for p in params:
            if not str(p).isidentifier():
                raise ValueError(f"submit parameter {p!r} is not a Python identifier")
        self.submit_params = list(params)
        self._definitions_sent = False

    def execute(self, code: str, *, timeout: float | None = None) -> ExecutionResult:
        return self._execute(code, timeout, None)

    async def aexecute(self, code: str, *, timeout: float | None = None) -> ExecutionResult:
        """Run without blocking the event loop; async tools are awaited on this loop."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.to_thread(self._execute, code, timeout, loop)
        except asyncio.CancelledError:
            self._abort()
            raise

    def _execute(self, code: str, timeout: float | None, loop: asyncio.AbstractEventLoop | None) -> ExecutionResult:
        raise NotImplementedError

    def _abort(self) -> None:
        """End a running step from another thread (its caller was cancelled)."""
        raise NotImplementedError

    def _track(self, future: Future[Any] | None) -> None:
        self._tool_future = future

    def close(self) -> None:
        raise NotImplementedError

    @property
    def alive(self) -> bool:
        raise NotImplementedError

    def processes(self) -> list[int]:
        """Host pids of the session's live processes (for monitoring and clean-up checks)."""
        raise NotImplementedError

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
