"""`Sandbox`: the public entry point: tools, policy, inputs and steps, over a `Backend` that runs the session."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Sequence
from typing import Any

from codeact.sandbox import bridge, pyodide, wire
from codeact.sandbox.driver import (
    Approver,
    Backend,
    StepDriver,
    StepRequest,
    ToolPolicy,
    check_not_reentrant,
)
from codeact.sandbox.interpreter import ExecutionResult, Failure, InterpreterError, LayerStatus
from codeact.sandbox.options import SandboxOptions, positive
from codeact.sandbox.process.backend import ProcessBackend
from codeact.sandbox.pyodide.backend import PyodideBackend
from codeact.tools import Tool, as_tool

log = logging.getLogger("codeact.sandbox")

BACKENDS = ("process", "pyodide")


def available_backends() -> list[str]:
    """The backends that can run on this machine, best first."""
    found = []
    if sys.platform.startswith("linux"):
        found.append("process")
    if pyodide.status().active:
        found.append("pyodide")
    return found


def open_backend(name: str, options: SandboxOptions) -> Backend:
    """The backend called `name` ("auto": the best one available here) for a session with `options`."""
    if name == "auto":
        # The native backend needs nothing but Linux: asking whether Pyodide is there too runs `deno`.
        names = ["process"] if sys.platform.startswith("linux") else available_backends()
        if not names:
            raise InterpreterError(
                "no sandbox backend is available here: the native one needs Linux, the Pyodide one "
                "needs Deno and Pyodide (pip install 'codeact[pyodide]'; see `codeact doctor`)"
            )
        name = names[0]
        if name != "process":
            log.warning("the native sandbox is unavailable here; using the %s backend", name)
    if name == "process":
        return ProcessBackend(options)
    if name == "pyodide":
        return PyodideBackend(options)
    raise ValueError(f"unknown sandbox backend {name!r}; choose one of {', '.join(BACKENDS)} or 'auto'")


class Sandbox:
    """A sandboxed Python session with `tools` callable inside (they run on the host).

    `Sandbox(tools, backend="auto", **options)` runs on the native process backend on Linux and the
    Pyodide one elsewhere (`sb.backend`); `backend=` also takes a `Backend` object of your own. The
    options are those of `SandboxOptions` (validated here: an unknown or malformed one raises);
    `options=SandboxOptions(...)` passes them as one value.
    """

    def __init__(
        self,
        tools: Sequence[Any] = (),
        *,
        backend: str | Backend | None = None,
        submit_params: Sequence[str] | None = None,
        options: SandboxOptions | None = None,
        approve: Approver | None = None,
        max_tool_calls: int | None = None,
        **settings: Any,
    ) -> None:
        if isinstance(backend, str):
            settings["backend"] = backend
        self.options = SandboxOptions.of(options, **settings)
        self.backend: Backend = (
            open_backend(self.options.backend, self.options) if backend is None or isinstance(backend, str) else backend
        )
        self.policy = ToolPolicy()
        self.timeout = self.options.timeout
        self.tools: dict[str, Tool] = {}
        self.submit_params: list[str] = ["answer"]
        self.set_tools(tools)
        self.set_submit(submit_params or ["answer"])
        self.set_policy(approve=approve, max_tool_calls=max_tool_calls)
        self._driver = StepDriver(self)
        self._steps_run = 0
        self._definitions_for: int | None = None  # the backend's generation that has the tool definitions
        self._variables: dict[str, Any] = {}  # every variable given, encoded: a new session gets them all again
        self._variables_for: int | None = None  # the backend's generation that has them
        self._inputs: dict[str, Any] = {}  # given since the last step that completed
        self._lock = threading.RLock()

    # --- the session, run by the backend -------------------------------------------------------------
    def start(self) -> None:
        self.backend.start()

    def close(self) -> None:
        self._driver.closing()
        self.backend.close()

    @property
    def alive(self) -> bool:
        return self.backend.alive

    @property
    def layers(self) -> list[LayerStatus]:
        """The isolation layers of the running session, and whether each is active."""
        return self.backend.layers

    def processes(self) -> list[int]:
        """Host pids of the session's live processes (for monitoring and clean-up checks)."""
        return self.backend.processes()

    def fork(self) -> Sandbox:
        """A new, independent session holding a copy of this one's variables and imports; this one
        is unchanged. The caller owns the fork and closes it (it also ends with this session)."""
        check_not_reentrant(self)
        with self._lock:
            branch = Sandbox(options=self.options, backend=self.backend.fork())
            self._copy_settings_to(branch)
            return branch

    def _copy_settings_to(self, other: Sandbox) -> None:
        """Give a fork this session's tools, submit parameters, tool policy and pending inputs."""
        other.tools = dict(self.tools)
        other.submit_params = list(self.submit_params)
        other.policy = ToolPolicy(approve=self.policy.approve, max_tool_calls=self.policy.max_tool_calls)
        other.timeout = self.timeout
        other._variables, other._inputs = dict(self._variables), dict(self._inputs)
        other._definitions_for, other._variables_for = self._definitions_for, self._variables_for

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
        self._definitions_for = None

    def set_submit(self, params: Sequence[str]) -> None:
        for p in params:
            if not str(p).isidentifier():
                raise ValueError(f"submit parameter {p!r} is not a Python identifier")
        self.submit_params = list(params)
        self._definitions_for = None

    def set_policy(self, *, approve: Approver | None = None, max_tool_calls: int | None = None) -> None:
        """Who approves tool calls from code, and how many calls the code may make from now on (a
        fresh budget: the count starts again at zero). A tool marked `requires_approval` needs an
        approver."""
        ToolPolicy.check(approve, max_tool_calls, self.tools.values())
        self.policy = ToolPolicy(approve=approve, max_tool_calls=max_tool_calls)

    def set_variables(self, values: dict[str, Any]) -> None:
        """Define `values` as variables of the session, sent with the next step in the same encoding as
        tool values (DataFrames, arrays, datetimes, dataclasses... arrive as themselves; large values in
        parts), and again, like the tools, to a session that starts anew (a restart, or a reset without
        rollback). A value that cannot cross raises TypeError here, naming it."""
        for name, value in values.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"variable name {name!r} is not a Python identifier")
            try:
                self._variables[name] = self._inputs[name] = wire.encode(value)
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
            self.backend.kill_step()
            raise

    def _execute(self, code: str, timeout: float | None, loop: asyncio.AbstractEventLoop | None) -> ExecutionResult:
        check_not_reentrant(self)
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, got {type(code).__name__}")
        limit = self.timeout if timeout is None else positive(timeout, "timeout")
        with self._lock:
            channel, notice = self.backend.begin_step()
            generation = self.backend.generation
            request = StepRequest(
                code=code,
                timeout=limit,
                tools=self.tools,
                inputs=self._inputs if self._variables_for == generation else self._variables,
                loop=loop,
                definitions=None if self._definitions_for == generation else bridge.definitions(self.tools),
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
                self._definitions_for = self._variables_for = generation  # a step that died rolled back to before them
                self._inputs = {}
            self.backend.end_step(channel, result)
            if notice:
                result.stderr = notice + result.stderr
            return result

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


SESSION_LOST_KINDS = frozenset(kind.value for kind in Failure)  # after these, `alive` says whether it lived
