"""The Pyodide sandbox backend: CPython in WebAssembly under Deno, for machines without the native one."""

from __future__ import annotations

from codeact.sandbox.pyodide.installation import (
    PYODIDE_VERSION,
    build_snapshot,
    install,
    layers,
    status,
)

__all__ = ["PYODIDE_VERSION", "build_snapshot", "install", "layers", "status"]
