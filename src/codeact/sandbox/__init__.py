"""Sandboxes that run generated code: one `Interpreter` protocol, several backends."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from codeact.sandbox.interpreter import (
    ExecutionError,
    ExecutionResult,
    Interpreter,
    InterpreterError,
    LayerStatus,
)
from codeact.sandbox.pool import SandboxPool

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


def Sandbox(tools: Sequence[Any] = (), *, backend: str = "auto", **options: Any) -> Any:
    """A sandboxed Python session with `tools` callable inside; see `ProcessInterpreter` for options.

    `backend="auto"` picks the native process sandbox on Linux and the Pyodide one elsewhere.
    """
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

        return ProcessInterpreter(tools, **options)
    if backend == "pyodide":
        from codeact.sandbox.pyodide import PyodideInterpreter  # type: ignore[attr-defined]

        return PyodideInterpreter(tools, **options)
    raise ValueError(f"unknown sandbox backend {backend!r}; choose one of {', '.join(BACKENDS)} or 'auto'")


def detect_layers() -> list[LayerStatus]:
    """Start a native session and report which isolation layers it could apply on this machine."""
    from codeact.sandbox.process.backend import ProcessInterpreter

    with ProcessInterpreter() as probe:
        return list(probe.layers)


__all__ = [
    "ExecutionError",
    "ExecutionResult",
    "Interpreter",
    "InterpreterError",
    "LayerStatus",
    "Sandbox",
    "SandboxPool",
    "available_backends",
    "detect_layers",
]
