"""`Sandbox`: the public entry point; constructing it returns the backend that will run the code."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Sequence
from typing import Any

from codeact.sandbox import bridge, wire
from codeact.sandbox.driver import (
    Approver,
    Channel,
    StepDriver,
    StepRequest,
    ToolPolicy,
    check_not_reentrant,
)
from codeact.sandbox.interpreter import ExecutionResult, Failure, InterpreterError, LayerStatus
from codeact.sandbox.options import SandboxOptions, positive
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

    `Sandbox(tools, backend="auto", **options)` returns the native process sandbox on Linux and the
    Pyodide one elsewhere; every backend implements the `Interpreter` protocol and is a `Sandbox`.
    The options are those of `SandboxOptions` (validated here: an unknown or malformed one raises);
    `options=SandboxOptions(...)` passes them as one value.
    """

    backend = ""
    layers: list[LayerStatus]

    def __new__(
        cls, *args: Any, backend: str | None = None, options: SandboxOptions | None = None, **settings: Any
    ) -> Sandbox:
        if cls is Sandbox:
            chosen = backend or (options.backend if isinstance(options, SandboxOptions) else "auto")
            return super().__new__(_backend_class(chosen))
        return super().__new__(cls)

    def __init__(
        self,
        tools: Sequence[Any] = (),
        *,
        backend: str | None = None,
        submit_params: Sequence[str] | None = None,
        options: SandboxOptions | None = None,
        approve: Approver | None = None,
        max_tool_calls: int | None = None,
        **settings: Any,
    ) -> None:
        self.options = SandboxOptions.of(options, **settings)
        self.policy = ToolPolicy()
        self.timeout = self.options.timeout
        self.tools: dict[str, Tool] = {}
        self.submit_params: list[str] = ["answer"]
        self.set_tools(tools)
        self.set_submit(submit_params or ["answer"])
        self.set_policy(approve=approve, max_tool_calls=max_tool_calls)
        self.layers = []
        self._driver = StepDriver(self)
        self._steps_run = 0
        self._inputs: dict[str, Any] = {}
        self._lock = threading.RLock()

    # --- what the backends provide ------------------------------------------------------------------
    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def alive(self) -> bool:
        raise NotImplementedError

    def processes(self) -> list[int]:
        """Host pids of the session's live processes (for monitoring and clean-up checks)."""
        raise NotImplementedError

    def _begin_step(self) -> tuple[Channel, str]:
        """Make sure the session runs (restarting it if it ended); the step's channel and a notice for
        its stderr when a restart lost variables."""
        raise NotImplementedError

    def _end_step(self, channel: Channel, result: ExecutionResult) -> None:
        """Tidy up after a step (the driver has already ended the session when it had to)."""

    def _kill_step(self) -> None:
        """End a running step from another thread (its caller was cancelled)."""
        raise NotImplementedError

    def fork(self) -> Sandbox:
        """A new, independent session holding a copy of this one's variables and imports; this one
        is unchanged. The caller owns the fork and closes it (it also ends with this session)."""
        raise InterpreterError(
            f"the {self.backend} backend cannot fork a session; use the native backend "
            "(backend='process') for Sandbox.fork()"
        )

    def _copy_settings_to(self, other: Sandbox) -> None:
        """Give a fork this session's tools, submit parameters, tool policy and pending inputs."""
        other.tools = dict(self.tools)
        other.submit_params = list(self.submit_params)
        other.policy = ToolPolicy(approve=self.policy.approve, max_tool_calls=self.policy.max_tool_calls)
        other.timeout = self.timeout
        other._inputs = dict(self._inputs)
        other._definitions_sent = self._definitions_sent

    # --- the contract ---------------------------------------------------------------------------------
    def set_tools(self, tools: Sequence[Any]) -> None:
        if callable(tools) or isinstance(tools, (Tool, str)):
            raise TypeError("tools must be a list of callables, e.g. tools=[add]")
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

    def set_policy(self, *, approve: Approver | None = None, max_tool_calls: int | None = None) -> None:
        """Who approves tool calls from code, and how many calls the code may make from now on (a
        fresh budget: the count starts again at zero). A tool marked `requires_approval` needs an
        approver."""
        ToolPolicy.check(approve, max_tool_calls, self.tools.values())
        self.policy = ToolPolicy(approve=approve, max_tool_calls=max_tool_calls)

    def set_variables(self, values: dict[str, Any]) -> None:
        """Define `values` as variables of the session, sent with the next step in the same encoding as
        tool values (DataFrames, arrays, datetimes, dataclasses... arrive as themselves; large values in
        parts). A value that cannot cross raises TypeError here, naming it."""
        for name, value in values.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"variable name {name!r} is not a Python identifier")
            try:
                self._inputs[name] = wire.encode(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"input {name!r} of type {type(value).__name__} cannot be sent into the sandbox: {exc}"
                ) from None

    def execute(self, code: str, *, timeout: float | None = None) -> ExecutionResult:
        return self._execute(code, timeout, None)

    async def aexecute(self, code: str, *, timeout: float | None = None) -> ExecutionResult:
        """Run without blocking the event loop; async tools are awaited on this loop."""
        check_not_reentrant(self)
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.to_thread(self._execute, code, timeout, loop)
        except asyncio.CancelledError:
            self._driver.abort()
            self._kill_step()
            raise

    def _execute(self, code: str, timeout: float | None, loop: asyncio.AbstractEventLoop | None) -> ExecutionResult:
        check_not_reentrant(self)
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, got {type(code).__name__}")
        limit = self.timeout if timeout is None else positive(timeout, "timeout")
        with self._lock:
            channel, notice = self._begin_step()
            request = StepRequest(
                code=code,
                timeout=limit,
                tools=self.tools,
                inputs=self._inputs,
                loop=loop,
                definitions=None if self._definitions_sent else bridge.definitions(self.tools),
                submit=self.submit_params,
                output_limit=self.options.max_output,
                value_limit=self.options.max_value_chars,
                policy=self.policy,
                number=self._steps_run,
            )
            self._steps_run += 1
            finished = False
            try:
                result = self._driver.run(channel, request)
                finished = True
            finally:
                if not finished:  # interrupted on the host (e.g. KeyboardInterrupt): the state is unknown
                    self._driver.abort()
                    self.close()
            if result.error is None or result.error.type not in SESSION_LOST_KINDS:
                self._definitions_sent = True  # a step that died rolled back to before them
                self._inputs = {}
            self._end_step(channel, result)
            if notice:
                result.stderr = notice + result.stderr
            return result

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


RESTARTED = "[sandbox] the session had ended and was restarted: variables from earlier steps are lost\n"
SESSION_LOST_KINDS = frozenset(kind.value for kind in Failure)  # after these, `alive` says whether it lived
