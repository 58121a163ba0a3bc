"""The host side of a step, written once for every backend.

A backend supplies a `Channel` (send a frame, receive one before a deadline, end the session) and
its process lifecycle; `StepDriver.run` does the rest: it sends the code, the tool definitions and
the inputs, serves tool calls in host threads (several at once when the code gathers them) under the
step's deadline, the run's tool-call budget and the user's approvals, records each call, and checks
the result. Everything the sandbox sends is untrusted: a message that breaks the protocol ends the
session, never the host.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from codeact.sandbox import bridge, wire
from codeact.sandbox.interpreter import ExecutionResult, Failure, InterpreterError, LayerStatus, ToolCall
from codeact.sandbox.tool_threads import QueuedCall, ToolThreads
from codeact.tools import Tool, ToolArgumentError

_GRACE_S = 2.0
_INPUT_PART = wire.MAX_MESSAGE_BYTES // 2
_MESSAGE_CHARS = 100_000  # of a tool's error, as the code sees it
_threads = ToolThreads(limit=64)
_serving: contextvars.ContextVar[object | None] = contextvars.ContextVar("codeact_serving", default=None)


class StepLost(Exception):
    """The step ended without a result of its own (the backend knows why)."""

    def __init__(self, kind: Failure, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.timed_out = timed_out


class Channel(Protocol):
    """What a backend gives the driver for one step."""

    def send(self, message: dict[str, Any]) -> None:
        """Send one frame (safe from several threads); raises StepLost when the session is gone."""

    def receive(self, deadline: float) -> dict[str, Any] | None:
        """The next frame, or None when `deadline` (time.monotonic) passes first. Raises StepLost when
        the step ended without a result, wire.WireError when a frame broke the protocol."""

    def end(self) -> None:
        """End the session: the step's state is unknown (it did not stop, or broke the protocol)."""


RESTARTED = "[sandbox] the session had ended and was restarted: variables from earlier steps are lost\n"
CLOSED = (
    "the sandbox was closed while the step ran (Sandbox.close() was called by a tool or another thread); "
    "the next step starts a new session and earlier variables are lost"
)


class Backend(Protocol):
    """Where a `Sandbox`'s session runs (the native process backend, Pyodide): its lifecycle, and a
    `Channel` per step. Everything else (tools, policy, inputs, results) is the `Sandbox`'s."""

    name: str
    layers: list[LayerStatus]
    #: how many sessions it has started, or reset to their first state: a new one needs the tool
    #: definitions and the given variables again
    generation: int

    def start(self) -> None:
        """Start the session if it is not running."""

    def close(self) -> None:
        """End the session and every process of it."""

    @property
    def alive(self) -> bool:
        """Whether the session runs."""

    def processes(self) -> list[int]:
        """Host pids of the session's live processes."""

    def begin_step(self) -> tuple[Channel, str]:
        """The step's channel, starting the session if it ended, and a notice for its stderr when
        that restart lost variables (`RESTARTED`)."""

    def end_step(self, channel: Channel, result: ExecutionResult) -> None:
        """Tidy up after a step (the driver has already ended the session when it had to)."""

    def kill_step(self) -> None:
        """End a running step from another thread (its caller was cancelled)."""

    def fork(self) -> Backend:
        """A new session holding a copy of this one's state; InterpreterError where it cannot."""


@dataclass(frozen=True)
class ApprovalRequest:
    """A tool call waiting for the user's approval: the tool, its arguments by parameter name, the step."""

    tool: str
    arguments: dict[str, Any]
    step: int


Approver = Callable[[ApprovalRequest], "bool | str | dict[str, Any] | Awaitable[Any] | None"]


@dataclass
class ToolPolicy:
    """Who may call what: the approver, the budget for tool calls, and what was spent of it.

    `approve` returns True (or None) to allow, False or a reason (str) to deny, or a dict of
    arguments to run the call with instead. It is asked for the tools marked `requires_approval`, or
    for every tool when none is marked. `max_tool_calls` caps the calls of all tools together; a
    tool's own `max_calls` caps its calls.
    """

    approve: Approver | None = None
    max_tool_calls: int | None = None
    calls: int = 0
    per_tool: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def check(approve: Any, max_tool_calls: Any, tools: Any) -> None:
        """Refuse a policy that cannot work, naming the parameter."""
        if approve is not None and not callable(approve):
            raise TypeError(f"approve must be a function of an ApprovalRequest, got {type(approve).__name__}")
        if max_tool_calls is not None and (
            isinstance(max_tool_calls, bool) or not isinstance(max_tool_calls, int) or max_tool_calls < 0
        ):
            raise ValueError(f"max_tool_calls must be a non-negative integer, got {max_tool_calls!r}")
        marked = [t.name for t in tools if t.requires_approval]
        if marked and approve is None:
            raise ValueError(
                f"tool {marked[0]!r} requires approval; pass approve=... (a function that returns "
                "True, False or a reason)"
            )

    def needs_approval(self, tool: Tool, tools: dict[str, Tool]) -> bool:
        if self.approve is None:
            return False
        return tool.requires_approval or not any(t.requires_approval for t in tools.values())

    def spend(self, tool: Tool) -> str | None:
        """Count one call; the reason it is over a budget, if it is."""
        self.calls += 1
        used = self.per_tool[tool.name] = self.per_tool.get(tool.name, 0) + 1
        if self.max_tool_calls is not None and self.calls > self.max_tool_calls:
            return (
                f"the budget of {self.max_tool_calls} tool calls for this run is used up; no more tools "
                "can be called: work with what you have and submit"
            )
        if tool.max_calls is not None and used > tool.max_calls:
            return (
                f"tool {tool.name!r} may be called at most {tool.max_calls} times in this run; it was "
                "not run: work with what you have"
            )
        return None


def serving(sandbox: object) -> bool:
    """Whether the current thread or task runs a tool for `sandbox`'s step."""
    return _serving.get() is sandbox


def check_not_reentrant(sandbox: object) -> None:
    if serving(sandbox):
        raise InterpreterError(
            "a tool called execute() on the sandbox that is running it; a tool cannot run code in its own "
            "sandbox while the step that called it waits (use another Sandbox)"
        )


@dataclass
class StepRequest:
    """One step as the driver sends it. `inputs` are already encoded for the wire."""

    code: str
    timeout: float
    tools: dict[str, Tool]
    definitions: list[dict[str, str]] | None = None
    submit: list[str] | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    output_limit: int = 1 << 20
    value_limit: int = 20_000
    loop: asyncio.AbstractEventLoop | None = None
    policy: ToolPolicy = field(default_factory=ToolPolicy)
    number: int = 0


@dataclass
class _Step:
    """What the driver tracks while one step runs."""

    channel: Channel
    request: StepRequest
    started: float
    calls: list[ToolCall] = field(default_factory=list)
    pending: dict[int, tuple[ToolCall, QueuedCall]] = field(default_factory=dict)
    paused: float = 0.0  # seconds spent waiting for approvals: not counted against the time limit
    approvals: int = 0
    paused_since: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)  # held while sending, and to end the step
    ended: bool = False  # the step answered or failed: tool threads send nothing more
    closed: bool = False  # the sandbox was closed under it: whatever came after is not its result

    def reply(self, call_id: int, message: dict[str, Any]) -> None:
        with self.lock, contextlib.suppress(StepLost, OSError):
            if not self.ended:
                self.channel.send({**message, "id": call_id})

    def pause(self) -> None:
        """An approval began: the step's clock stops (in the sandbox too) until no approval is open."""
        with self.lock, contextlib.suppress(StepLost, OSError):
            self.approvals += 1
            if self.approvals == 1 and not self.ended:
                self.paused_since = time.monotonic()
                self.channel.send({"op": "pause"})

    def resume(self) -> None:
        with self.lock, contextlib.suppress(StepLost, OSError):
            self.approvals -= 1
            if self.approvals == 0 and not self.ended:
                self.paused += time.monotonic() - self.paused_since
                self.channel.send({"op": "resume"})

    def take_pending(self) -> list[tuple[int, tuple[ToolCall, QueuedCall]]]:
        """The calls still running, by id; their own replies will not be sent (each call is answered once)."""
        with self.lock:
            taken, self.pending = list(self.pending.items()), {}
        return taken

    def end(self) -> list[tuple[ToolCall, QueuedCall]]:
        """No more sends for this step (one under way finishes first); returns the calls still running."""
        with self.lock:
            self.ended = True
        return [call for _, call in self.take_pending()]


class StepDriver:
    """Runs steps of one sandbox through its channel."""

    def __init__(self, owner: object) -> None:
        self.owner = owner
        self._step: _Step | None = None

    def abort(self) -> None:
        """Cancel the tools of a running step (its caller was cancelled)."""
        step = self._step
        if step is not None:
            for _, call in list(step.pending.values()):
                call.cancel()

    def closing(self) -> None:
        """The sandbox is being closed (from a tool or another thread): a running step ends with CLOSED."""
        step = self._step
        if step is not None:
            step.closed = True

    def run(self, channel: Channel, request: StepRequest) -> ExecutionResult:
        step = self._step = _Step(channel, request, time.perf_counter())
        base_deadline = time.monotonic() + request.timeout
        message: dict[str, Any] = {
            "op": "exec",
            "code": request.code,
            "timeout": request.timeout,
            "value_limit": request.value_limit,
            "inputs": len(request.inputs),
        }
        if request.definitions is not None:
            message["tools"] = request.definitions
            message["submit"] = request.submit
        expired: str | None = None
        try:
            channel.send(message)
            for name, encoded in request.inputs.items():
                self._send_input(channel, name, encoded)
            while True:
                waiting = bool(step.pending) and expired is None
                frame = channel.receive(self._deadline(step, base_deadline, waiting))
                if frame is None:
                    if time.monotonic() < self._deadline(step, base_deadline, waiting):
                        continue  # an approval moved the deadline while we waited
                    if waiting:
                        expired = self._expire(step)
                        continue
                    channel.end()
                    return self._failed(
                        step,
                        Failure.TIMEOUT,
                        f"the step ran longer than the {request.timeout:g} s time "
                        "limit and did not stop; the session was ended and its variables are lost",
                        timed_out=True,
                    )
                if step.closed:
                    return self._failed(step, Failure.CRASHED, CLOSED)
                op = frame.get("op")
                if op == "call":
                    self._start_call(step, frame)
                    continue
                if op != "result":
                    raise bridge.Malformed(f"unexpected message {op!r} from the sandbox")
                result = bridge.parse_result(
                    frame, step.started, step.calls, request.output_limit, request.value_limit + 200
                )
                for record, call in step.end():  # started, never awaited by the code
                    record.abandoned = True
                    call.cancel()
                if expired is not None:
                    result.error = bridge.failure(Failure.TIMEOUT, expired, step.started).error
                    result.submitted = None
                    result.timed_out = True
                return result
        except StepLost as lost:
            kept = expired is not None and lost.kind == Failure.TIMEOUT and lost.message.endswith("are kept")
            return self._failed(step, lost.kind, expired if kept else lost.message, timed_out=lost.timed_out)
        except (bridge.Malformed, wire.WireError) as exc:
            channel.end()
            return self._failed(
                step,
                Failure.PROTOCOL_ERROR,
                f"the sandbox broke the wire protocol ({exc}); the "
                "session was ended and the next step starts a new one",
            )
        finally:
            step.end()
            self._step = None

    @staticmethod
    def _deadline(step: _Step, base: float, waiting: bool) -> float:
        """When the step's time is up (plus a grace for the sandbox to report it when no tool runs);
        while an approval is open there is none."""
        if step.approvals:
            return time.monotonic() + 0.05
        return base + step.paused + (0.0 if waiting else _GRACE_S)

    @staticmethod
    def _failed(step: _Step, kind: Failure, message: str, *, timed_out: bool = False) -> ExecutionResult:
        """The step's failure; whatever went wrong after its sandbox was closed under it, it ends as CLOSED."""
        if step.closed:
            kind, message, timed_out = Failure.CRASHED, CLOSED, False
        result = bridge.failure(kind, message, step.started, timed_out=timed_out)
        result.tool_calls = step.calls
        return result

    # --- inputs ------------------------------------------------------------------------------------
    @staticmethod
    def _send_input(channel: Channel, name: str, encoded: Any) -> None:
        body = json.dumps(encoded, separators=(",", ":"), ensure_ascii=False)
        if len(body) < _INPUT_PART:
            channel.send({"op": "input", "name": name, "value": encoded})
            return
        for i in range(0, len(body), _INPUT_PART):
            channel.send({"op": "input_part", "data": body[i : i + _INPUT_PART]})
        channel.send({"op": "input", "name": name, "value": None})

    # --- tool calls --------------------------------------------------------------------------------
    def _start_call(self, step: _Step, frame: dict[str, Any]) -> None:
        call_id = frame.get("id", 0)
        name, args, kwargs = frame.get("tool"), wire.decode(frame.get("args")), wire.decode(frame.get("kwargs"))
        if not isinstance(name, str) or not isinstance(args, list) or not isinstance(kwargs, dict):
            raise bridge.Malformed("a tool call needs a name, a list of arguments and a dict of keywords")
        if not all(isinstance(k, str) for k in kwargs) or not isinstance(call_id, int):
            raise bridge.Malformed("tool call keywords must be strings and its id an integer")
        record = ToolCall(
            name=name,
            args=args,
            kwargs=kwargs,
            start_s=time.perf_counter() - step.started,
            concurrent=bool(step.pending),
        )
        step.calls.append(record)
        for other, _ in list(step.pending.values()):
            other.concurrent = True
        request = step.request
        tool = request.tools.get(name)
        if tool is None:
            record.error = f"NameError: no tool named {name!r}"
            step.reply(call_id, {"op": "raise", "type": "NameError", "message": f"no tool named {name!r}"})
            return
        if tool.requires_approval and request.policy.approve is None:
            refusal = f"tool {tool.name!r} requires approval and no approver is configured; it was not run"
            record.approval, record.error = "denied", f"PermissionError: {refusal}"
            step.reply(call_id, {"op": "raise", "type": "PermissionError", "message": refusal})
            return
        over = request.policy.spend(tool)
        if over is not None:
            record.error = f"ToolBudgetExceeded: {over}"
            step.reply(call_id, {"op": "raise", "type": "RuntimeError", "message": over})
            return
        approval = request.policy.approve if request.policy.needs_approval(tool, request.tools) else None
        t0 = time.perf_counter()

        def done(call: QueuedCall) -> None:
            record.duration_s = time.perf_counter() - t0
            with step.lock:
                if step.pending.pop(call_id, None) is None:
                    return  # the step ended or expired without it
            reply = _outcome(tool.name, call, record)
            try:
                step.reply(call_id, reply)
            except wire.FrameTooLarge as exc:
                why = (
                    f"tool {tool.name!r} returned {exc.size:,} bytes, over the limit of {wire.MAX_MESSAGE_BYTES:,} "
                    "bytes a reply can carry; return less (e.g. a file path, a slice or a summary)"
                )
                record.result, record.error = None, f"ValueError: {why}"
                step.reply(call_id, {"op": "raise", "type": "ValueError", "message": why})

        call = QueuedCall(lambda running: self._serve(step, tool, record, approval, running), done)
        step.pending[call_id] = (record, call)
        _threads.submit(call)

    def _serve(self, step: _Step, tool: Tool, record: ToolCall, approve: Approver | None, call: QueuedCall) -> Any:
        """In a host thread: ask for approval if needed, then run the tool. An async one runs on the
        caller's loop (or one of this thread's), where it is cancelled if the call is abandoned."""
        args, kwargs = record.args, record.kwargs
        if approve is not None:
            arguments = _bound(tool, args, kwargs)
            asked = time.monotonic()
            step.pause()
            try:
                decision = _resolve(
                    approve(ApprovalRequest(tool.name, arguments, step.request.number)), step.request.loop
                )
            except Exception as exc:  # the user's approver broke, not the tool: the call is refused
                record.approval = "denied"
                raise _Denied(
                    f"the call of tool {tool.name!r} was not run: its approver failed ({type(exc).__name__}: {exc})"
                ) from None
            finally:
                record.approval_s = time.monotonic() - asked
                step.resume()
            if decision is False or isinstance(decision, str):
                reason = decision if isinstance(decision, str) and decision else "the user did not allow it"
                record.approval = "denied"
                raise _Denied(f"the call of tool {tool.name!r} was denied: {reason}")
            if isinstance(decision, dict):
                record.approval = "edited"
                args, kwargs = [], dict(decision)
                record.args, record.kwargs = args, kwargs
                try:
                    tool.validate((), kwargs)
                except ToolArgumentError as exc:  # not the code's mistake: say whose
                    raise ToolArgumentError(
                        f"{exc} (in the arguments the approver gave in place of the call's)"
                    ) from None
            elif decision in (True, None):
                record.approval = "approved"
            else:
                raise TypeError(
                    f"the approver returned {decision!r}; return True, False, a reason or a dict of arguments"
                )
        token = _serving.set(self.owner)
        try:
            if not tool.is_async:
                return tool(*args, **kwargs)
            coroutine = _serving_coroutine(self.owner, tool, args, kwargs)
            loop = step.request.loop
            if loop is not None and loop.is_running():
                running = asyncio.run_coroutine_threadsafe(coroutine, loop)
                call.stop_with(running.cancel)
                value = running.result()
            else:
                value = asyncio.run(_cancellable(coroutine, call))
            if isinstance(value, _Escaped):
                raise value.exc
            return value
        finally:
            _serving.reset(token)

    def _expire(self, step: _Step) -> str | None:
        """The step's time passed while tools ran: abandon them and end the step in the sandbox. None
        when the last one finished meanwhile: the step's own time limit then ends it in the sandbox."""
        pending = step.take_pending()
        if not pending:
            return None
        timeout = step.request.timeout
        names = sorted({record.name for _, (record, _) in pending})
        for call_id, (record, call) in pending:
            record.abandoned = True
            record.error = f"Timeout: still running when the step's {timeout:g} s time limit passed"
            call.cancel()
            step.reply(
                call_id,
                {"op": "expired", "message": f"tool {record.name!r} ran past the step's {timeout:g} s time limit"},
            )
        running = ", ".join(repr(n) for n in names)
        return (
            f"the step ran longer than the {timeout:g} s time limit while tool {running} was running; the tool "
            "was abandoned on the host (its thread may still run) and the step was stopped; variables from "
            "before this step are kept"
        )


class _Denied(Exception):
    """The approver refused a call."""


@dataclass
class _Escaped:
    """SystemExit or KeyboardInterrupt from an async tool, carried out of the caller's event loop (which
    they would stop) to be raised in the tool's thread, as a sync tool's would be."""

    exc: BaseException


async def _serving_coroutine(owner: object, tool: Tool, args: list[Any], kwargs: dict[str, Any]) -> Any:
    _serving.set(owner)
    try:
        return await tool.acall(*args, **kwargs)
    except (SystemExit, KeyboardInterrupt) as exc:
        return _Escaped(exc)


async def _cancellable(coroutine: Awaitable[Any], call: QueuedCall) -> Any:
    """Await `coroutine` on this thread's own loop, cancelled from any thread if `call` is abandoned."""
    task, loop = asyncio.current_task(), asyncio.get_running_loop()

    def cancel() -> None:
        if task is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing is left to stop
                loop.call_soon_threadsafe(task.cancel)

    call.stop_with(cancel)
    return await coroutine


def _bound(tool: Tool, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by parameter name, as the approver sees them."""
    try:
        return dict(tool.signature.bind(*args, **kwargs).arguments)
    except TypeError:
        return {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}


def _resolve(decision: Any, loop: asyncio.AbstractEventLoop | None) -> Any:
    """An approver's answer; an async approver is awaited on the caller's loop, else on a new one."""
    if not inspect.isawaitable(decision):
        return decision
    if loop is not None and loop.is_running():
        return asyncio.run_coroutine_threadsafe(_awaited(decision), loop).result()
    return asyncio.run(_awaited(decision))


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _outcome(name: str, call: QueuedCall, record: ToolCall) -> dict[str, Any]:
    """The reply to a finished or cancelled tool call, recorded in `record`."""
    exc, value = call.error, call.value
    if call.cancelled or isinstance(exc, (asyncio.CancelledError, concurrent.futures.CancelledError)):
        record.error = "RuntimeError: cancelled"
        return {"op": "raise", "type": "RuntimeError", "message": f"tool {name!r} was cancelled"}
    if isinstance(exc, _Denied):
        record.error = f"PermissionError: {exc}"
        return {"op": "raise", "type": "PermissionError", "message": str(exc)}
    if isinstance(exc, ToolArgumentError):
        record.error = f"TypeError: {exc}"
        return {"op": "raise", "type": "TypeError", "message": str(exc)}
    if exc is not None:  # a failing tool is an exception in the sandbox, caught there as its builtin base
        message = _text(exc)
        record.error = f"{type(exc).__name__}: {message}"
        base = next(c.__name__ for c in type(exc).__mro__ if c.__module__ == "builtins")
        return {"op": "raise", "type": type(exc).__name__, "base": base, "message": message}
    if inspect.isawaitable(value):
        with contextlib.suppress(Exception):
            value.close()  # type: ignore[attr-defined]
        record.error = "TypeError: returned an awaitable"
        return {
            "op": "raise",
            "type": "TypeError",
            "message": f"tool {name!r} returned an awaitable; declare it with async def",
        }
    try:
        encoded = wire.encode(value)
    except Exception as exc:  # whatever reading the value raised: it cannot cross
        why = _text(exc) if isinstance(exc, (TypeError, ValueError)) else f"{type(exc).__name__}: {_text(exc)}"
        record.error = f"TypeError: {why}"
        return {
            "op": "raise",
            "type": "TypeError",
            "message": f"tool {name!r} returned a value the sandbox cannot receive: {why}",
        }
    record.result = value
    return {"op": "return", "value": encoded}


def _text(exc: BaseException) -> str:
    """An exception's message, even when its __str__ fails, its middle cut past _MESSAGE_CHARS."""
    try:
        text = str(exc)
    except Exception:
        return f"<{type(exc).__name__} whose message cannot be shown>"
    if len(text) > _MESSAGE_CHARS:
        half = _MESSAGE_CHARS // 2
        text = f"{text[:half]}\n... [{len(text) - 2 * half} characters cut] ...\n{text[-half:]}"
    return text
