"""The sandbox session of one run: made fresh (or borrowed from `interpreter=`), given the tools,
`submit` and the inputs, restarted after it dies, and forked when `step_samples` asks for it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from codeact.prompt import input_assignments
from codeact.run import RunSettings, RunState
from codeact.sandbox.base import SESSION_LOST_KINDS, Sandbox
from codeact.sandbox.interpreter import ExecutionError, ExecutionResult, Failure, Interpreter, InterpreterError


@dataclass
class SharedInterpreter:
    """A caller's interpreter instance that every run of one `CodeAct` uses, one run at a time."""

    interpreter: Interpreter
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: bool = False

    def __getstate__(self) -> dict[str, Any]:
        return {"interpreter": self.interpreter}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["interpreter"])  # type: ignore[misc]


class RunSession:
    """The sandbox session of one run: made fresh (or borrowed from `interpreter=`), given the
    tools, `submit` and the inputs, restarted after it dies."""

    def __init__(self, settings: RunSettings, run: RunState, shared: SharedInterpreter | None) -> None:
        self.settings = settings
        self.run = run
        self.shared = shared
        self.interpreter: Interpreter | None = None
        self.root: Interpreter | None = None  # the session first made; forks of it end with it
        self.owned = shared is None
        self.lost = False

    def _make(self) -> Interpreter:
        if self.shared is not None:
            return self.shared.interpreter
        spec = self.settings.interpreter
        if spec is not None:
            made = spec()  # type: ignore[operator]
            if not isinstance(made, Interpreter):
                raise InterpreterError(f"the interpreter factory returned {type(made).__name__}, not an Interpreter")
            return made
        return Sandbox(
            self.run.tools,
            submit_params=list(self.settings.signature.outputs),
            options=self.settings.sandbox_options,
            approve=self.settings.approve,
            max_tool_calls=self.settings.max_tool_calls,
        )

    def _setup(self, interpreter: Interpreter) -> str:
        interpreter.set_tools(self.run.tools)
        interpreter.set_submit(list(self.settings.signature.outputs))
        set_policy = getattr(interpreter, "set_policy", None)
        if callable(set_policy):  # a fresh tool-call budget for each run
            set_policy(approve=self.settings.approve, max_tool_calls=self.settings.max_tool_calls)
        elif self.settings.approve is not None or self.settings.max_tool_calls is not None:
            raise InterpreterError(
                f"{type(interpreter).__name__} has no set_policy(): approvals and tool-call budgets need "
                "codeact's Sandbox"
            )
        set_variables = getattr(interpreter, "set_variables", None)
        if callable(set_variables):  # inputs cross the wire as themselves; the empty step delivers them
            set_variables(self.run.inputs)
            return "" if not self.run.inputs else "pass"
        return input_assignments(self.run.inputs)

    def _start(self, interpreter: Interpreter) -> None:
        if self.owned:
            interpreter.start()
        elif not self.shared.started:
            interpreter.start()
            self.shared.started = True

    def open(self) -> None:
        if not self.owned:
            self.shared.lock.acquire()
        started = time.perf_counter()
        interpreter = self._make()
        self.interpreter = self.root = interpreter
        self._start(interpreter)
        code = self._setup(interpreter)
        if code:
            interpreter.execute(code)
        self.run.record.session_s += time.perf_counter() - started

    async def aopen(self) -> None:
        if not self.owned:
            await asyncio.to_thread(self.shared.lock.acquire)
        started = time.perf_counter()
        interpreter = self._make()
        self.interpreter = self.root = interpreter
        await asyncio.to_thread(self._start, interpreter)
        code = self._setup(interpreter)
        if code:
            await interpreter.aexecute(code)
        self.run.record.session_s += time.perf_counter() - started

    def execute(self, code: str) -> ExecutionResult:
        started = time.perf_counter()
        try:
            if self.lost:
                self._restart()
            assert self.interpreter is not None
            result = self.interpreter.execute(code, timeout=self.settings.step_timeout)
        except Exception as exc:
            result = self._crashed(exc)
        return self._after(result, started)

    async def aexecute(self, code: str) -> ExecutionResult:
        started = time.perf_counter()
        try:
            if self.lost:
                await asyncio.to_thread(self._restart)
            assert self.interpreter is not None
            result = await self.interpreter.aexecute(code, timeout=self.settings.step_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            result = self._crashed(exc)
        return self._after(result, started)

    def checkpoint(self) -> Interpreter | None:
        """A fork of the session as it is before a step, when `step_samples` asks for one."""
        fork = getattr(self.interpreter, "fork", None)
        if self.settings.step_samples < 2 or self.lost or not self.owned or fork is None:
            return None
        try:
            return fork()
        except InterpreterError as exc:
            warnings.warn(f"step_samples: the session could not be forked ({exc}); not sampling", stacklevel=2)
            return None

    def execute_from(self, saved: Interpreter, code: str) -> ExecutionResult:
        """Run `code` in a new fork of `saved`; when it does not fail, that fork becomes the session."""
        try:
            candidate = saved.fork()  # type: ignore[attr-defined]
        except InterpreterError as exc:
            return crash_result(exc)
        started = time.perf_counter()
        result = candidate.execute(code, timeout=self.settings.step_timeout)
        if result.error is None or result.submitted is not None:
            self.interpreter, retired = candidate, self.interpreter
            self.lost = False
            if retired is not self.root:  # the first session holds the family's namespaces: kept to the end
                self.discard(retired)
        else:
            candidate.close()
        return self._after(result, started)

    def discard(self, interpreter: Interpreter | None) -> None:
        if interpreter is not None:
            with contextlib.suppress(Exception):
                interpreter.close()

    def _crashed(self, exc: Exception) -> ExecutionResult:
        self.lost = True
        return crash_result(exc)

    def _after(self, result: ExecutionResult, started: float) -> ExecutionResult:
        if not result.duration_s:
            result.duration_s = time.perf_counter() - started
        if (
            result.error is not None
            and result.error.type in SESSION_LOST_KINDS
            and getattr(self.interpreter, "alive", True) is False
        ):
            self.lost = True  # the next step runs in a new session: define the inputs again
        return result

    def _restart(self) -> None:
        self.lost = False
        interpreter = self.interpreter
        if interpreter is None:
            return
        started = time.perf_counter()
        if self.owned:
            with contextlib.suppress(Exception):
                interpreter.close()
        interpreter.start()
        code = self._setup(interpreter)
        if code:
            interpreter.execute(code)
        self.run.record.session_s += time.perf_counter() - started

    def _close_interpreter(self) -> None:
        interpreter, self.interpreter = self.interpreter, None
        root, self.root = self.root, None
        if root is not None and root is not interpreter and self.owned:
            self.discard(root)
        if interpreter is not None and self.owned:
            try:
                interpreter.close()
            except Exception as exc:
                warnings.warn(f"closing the sandbox failed: {exc!r}", stacklevel=3)

    def close(self) -> None:
        had = self.interpreter is not None
        started = time.perf_counter()
        self._close_interpreter()
        if had:
            self.run.record.session_s += time.perf_counter() - started
        if had and not self.owned:
            self.shared.lock.release()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    async def aclose_soon(self, wait: float = 2.0) -> None:
        """Close from a cancelled run: a step may still hold the session, so wait only briefly."""
        closer = threading.Thread(target=self.close, name="codeact-close", daemon=True)
        closer.start()
        await asyncio.to_thread(closer.join, wait)


def is_interpreter_object(spec: object) -> bool:
    """An interpreter instance (shared by runs), as opposed to a class or factory making one."""
    return isinstance(spec, Interpreter) and not isinstance(spec, type)


def crash_result(exc: BaseException) -> ExecutionResult:
    return ExecutionResult(
        error=ExecutionError(Failure.CRASHED.value, f"the sandbox failed while running this step: {exc}")
    )
