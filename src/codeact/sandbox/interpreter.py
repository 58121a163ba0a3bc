"""The seam between the agent and any sandbox backend: the `Interpreter` protocol and its records."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from codeact.errors import CodeActError
from codeact.tools import Tool


class Failure(str, enum.Enum):
    """How a step can end without its code's own result; `ExecutionError.type` holds the value.

    After any of these the session may have been restarted (`Sandbox.alive` says); `ends_session`
    marks the kinds that always take the session (and its variables) with them.
    """

    TIMEOUT = "Timeout"
    MEMORY_LIMIT = "MemoryLimit"
    FILE_SIZE_LIMIT = "FileSizeLimit"
    CRASHED = "SandboxCrashed"
    PROTOCOL_ERROR = "SandboxProtocolError"

    @property
    def ends_session(self) -> bool:
        return self in (Failure.CRASHED, Failure.PROTOCOL_ERROR)

    def __str__(self) -> str:
        return self.value


@dataclass
class ExecutionError:
    """Why a step failed: an exception raised by sandboxed code, a limit that ended the step, or (in
    a run's record, as `StepError`) a submitted value that did not validate or was rejected.

    `type` is the exception class name (`"ZeroDivisionError"`), a `Failure` (`"Timeout"`,
    `"MemoryLimit"`, `"SandboxCrashed"`, ...) or `"SubmitValidationError"`/`"SubmitRejected"`;
    `line` is the failing source line of the executed code.
    """

    type: str
    message: str
    traceback: str = ""
    lineno: int | None = None
    line: str | None = None

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


@dataclass
class ToolCall:
    """One tool call made by the code during a step, as the host served it.

    `start_s` counts from the start of the step; `concurrent` is True when another call of the same
    step was running at the same time; `abandoned` when the step ended before the tool returned;
    `approval` is "approved", "denied" or "edited" when the call needed approval (`approval_s` the wait).
    """

    name: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: str | None = None
    start_s: float = 0.0
    duration_s: float = 0.0
    concurrent: bool = False
    abandoned: bool = False
    approval: str | None = None
    approval_s: float = 0.0


@dataclass
class Connection:
    """One connection the code opened through the sandbox's network proxy.

    `allowed` is None while the proxy decides; `refusal` says why a refused or failed one did not
    go through; `address` is the address connected to; bytes count what passed each way.
    """

    host: str
    port: int
    method: str = "CONNECT"
    allowed: bool | None = None
    refusal: str = ""
    address: str = ""
    bytes_sent: int = 0
    bytes_received: int = 0


@dataclass
class ExecutionResult:
    """What one `execute` call produced. `value` is the repr of the last expression, if any."""

    stdout: str = ""
    stderr: str = ""
    value: str | None = None
    error: ExecutionError | None = None
    duration_s: float = 0.0
    timed_out: bool = False
    submitted: dict[str, Any] | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    stdout_truncated: int = 0
    connections: list[Connection] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def tool_time_s(self) -> float:
        """Host time spent in the step's tool calls (overlapping calls counted once each)."""
        return sum(call.duration_s for call in self.tool_calls)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class InterpreterError(CodeActError, RuntimeError):
    """The sandbox could not be started or used (not an error of the executed code)."""


@runtime_checkable
class Interpreter(Protocol):
    """A persistent Python session that runs code and calls host tools.

    Variables persist across `execute` calls. Code may call `submit(...)`; the arguments come back
    in `ExecutionResult.submitted` (bound by name to `submit_params`) and end that execution.
    """

    def start(self) -> None: ...

    def set_tools(self, tools: Sequence[Tool]) -> None: ...

    def set_submit(self, params: Sequence[str]) -> None: ...

    def execute(self, code: str, *, timeout: float | None = None) -> ExecutionResult: ...

    async def aexecute(self, code: str, *, timeout: float | None = None) -> ExecutionResult: ...

    def close(self) -> None: ...


@dataclass
class LayerStatus:
    """One isolation layer: whether this machine can apply it, and why not."""

    name: str
    active: bool
    detail: str = ""
    remedy: str = ""


@dataclass
class SandboxInfo:
    backend: str
    layers: list[LayerStatus] = field(default_factory=list)
