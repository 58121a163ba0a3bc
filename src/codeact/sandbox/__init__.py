"""Sandboxes that run generated code: one `Interpreter` protocol, several backends."""

from __future__ import annotations

from codeact.sandbox.base import BACKENDS, Sandbox, available_backends
from codeact.sandbox.interpreter import (
    Connection,
    ExecutionError,
    ExecutionResult,
    Failure,
    Interpreter,
    InterpreterError,
    LayerStatus,
    ToolCall,
)
from codeact.sandbox.options import SandboxOptions
from codeact.sandbox.pool import SandboxPool


def detect_layers() -> list[LayerStatus]:
    """Start a native session and report which isolation layers it could apply on this machine."""
    with Sandbox(backend="process") as probe:
        return list(probe.layers)


__all__ = [
    "BACKENDS",
    "Connection",
    "ExecutionError",
    "ExecutionResult",
    "Failure",
    "Interpreter",
    "InterpreterError",
    "LayerStatus",
    "Sandbox",
    "SandboxOptions",
    "SandboxPool",
    "ToolCall",
    "available_backends",
    "detect_layers",
]
