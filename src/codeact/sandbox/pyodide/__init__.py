"""The Pyodide sandbox backend: CPython in WebAssembly under Deno, for machines without the native one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from codeact.sandbox.pyodide.installation import (
    PYODIDE_VERSION,
    build_snapshot,
    install,
    layers,
    status,
)

if TYPE_CHECKING:
    from codeact.sandbox.pyodide.backend import PyodideInterpreter


def __getattr__(name: str) -> Any:
    if name == "PyodideInterpreter":
        from codeact.sandbox.pyodide.backend import PyodideInterpreter

        return PyodideInterpreter
    raise AttributeError(name)


__all__ = ["PYODIDE_VERSION", "PyodideInterpreter", "build_snapshot", "install", "layers", "status"]
