"""The host side of a step, written once for every backend.

A backend supplies a `Channel` (send a frame, receive one before a deadline) and its process
lifecycle; `StepDriver.run` does the rest: it sends the code, the tool definitions and the inputs,
serves tool calls in host threads under the step's deadline, records each call, and checks the
result. Everything the sandbox sends is untrusted: a message that breaks the protocol ends the
session, never the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from codeact.sandbox import bridge, wire
from codeact.sandbox.interpreter import ExecutionResult, InterpreterError, ToolCall
from codeact.tools import Tool, ToolArgumentError

_GRACE_S = 2.0
_INPUT_PART = wire.MAX_MESSAGE_BYTES // 2
_pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="codeact-tool")
_serving: contextvars.ContextVar[object | None] = contextvars.ContextVar("codeact_serving", default=None)


class StepLost(Exception):
    """The step ended without a result of its own (the backend knows why)."""

    def __init__(self, kind: str, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.timed_out = timed_out


class Channel(Protocol):
    """What a backend gives the driver for one step."""

    def send(self, message: dict[str, Any]) -> None:
        """Send one frame; raises StepLost when the session is gone."""

    def receive(self, deadline: float) -> dict[str, Any] | None:
        """The next frame, or None when `deadline` (time.monotonic) passes first. Raises StepLost when
        the step ended without a result, wire.WireError when a frame broke the protocol."""

    def end(self) -> None:
        """End the session: the step's state is unknown (it did not stop, or broke the protocol)."""


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
    """One step as the driver sends it."""

    code: str
    timeout: float
    tools: dict[str, Tool]
    definitions: list[dict[str, str]] | None = None
    submit: list[str] | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    output_limit: int = 1 << 20
    value_limit: int = 20_000
    loop: asyncio.AbstractEventLoop | None = None


class StepDriver:
    """Runs steps of one sandbox through its channel."""

    def __init__(self, owner: object) -> None:
        self.owner = owner
        self._send_lock = threading.Lock()
        self._pending: dict[int, tuple[ToolCall, Future[Any]]] = {}

    def abort(self) -> None:
        """Cancel the tools of a running step (its caller was cancelled)."""
        for _, future in list(self._pending.values()):
            future.cancel()

    def run(self, channel: Channel, request: StepRequest) -> ExecutionResult:
        started = time.perf_counter()
        step_deadline = time.monotonic() + request.timeout
        hard_deadline = step_deadline + _GRACE_S
        calls: list[ToolCall] = []
        self._pending = {}
        message: dict[str, Any] = {"op": "exec", "code": request.code, "timeout": request.timeout,
                                   "value_limit": request.value_limit, "inputs": len(request.inputs)}
        if request.definitions is not None:
            message["tools"] = request.definitions
            message["submit"] = request.submit
        expired: str | None = None
        try:
            channel.send(message)
            for name, value in request.inputs.items():
                self._send_input(channel, name, value)
            while True:
                wait_until = hard_deadline if expired or not self._pending else step_deadline
                frame = channel.receive(wait_until)
                if frame is None:
                    if expired is None and self._pending and time.monotonic() >= step_deadline:
                        expired = self._expire(channel, request.timeout)
                        continue
                    channel.end()
                    return self._failed(calls, started, "Timeout", f"the step ran longer than the "
                                        f"{request.timeout:g} s time limit and did not stop; the session was ended "
                                        "and its variables are lost", timed_out=True)
                op = frame.get("op")
                if op == "call":
                    calls.append(self._start_call(channel, frame, request, started))
                    continue
                if op != "result":
                    raise bridge.Malformed(f"unexpected message {op!r} from the sandbox")
                result = bridge.parse_result(frame, started, calls, request.output_limit,
                                             request.value_limit + 200)
                if expired is not None:
                    result.error = bridge.failure("Timeout", expired, started).error
                    result.submitted = None
                    result.timed_out = True
                return result
        except StepLost as lost:
            kept = expired is not None and lost.kind == "Timeout" and lost.message.endswith("are kept")
            return self._failed(calls, started, lost.kind, expired if kept else lost.message,
                                timed_out=lost.timed_out)
        except (bridge.Malformed, wire.WireError) as exc:
            channel.end()
            return self._failed(calls, started, "SandboxProtocolError", f"the sandbox broke the wire protocol "
                                f"({exc}); the session was ended and the next step starts a new one")
        finally:
            self._pending = {}

    @staticmethod
    def _failed(calls: list[ToolCall], started: float, kind: str, message: str, *,
                timed_out: bool = False) -> ExecutionResult:
        result = bridge.failure(kind, message, started, timed_out=timed_out)
        result.tool_calls = calls
        return result

    # --- inputs ------------------------------------------------------------------------------------
    def _send_input(self, channel: Channel, name: str, value: Any) -> None:
        encoded = wire.encode(value)
        frame = {"op": "input", "name": name, "value": encoded}
        body = json.dumps(encoded, separators=(",", ":"), ensure_ascii=False)
        if len(body) < _INPUT_PART:
            channel.send(frame)
            return
        del encoded, frame
        for i in range(0, len(body), _INPUT_PART):
            channel.send({"op": "input_part", "data": body[i : i + _INPUT_PART]})
        channel.send({"op": "input", "name": name, "value": None})

    # --- tool calls --------------------------------------------------------------------------------
    def _start_call(self, channel: Channel, frame: dict[str, Any], request: StepRequest, started: float) -> ToolCall:
        call_id = frame.get("id", 0)
        name, args, kwargs = frame.get("tool"), wire.decode(frame.get("args")), wire.decode(frame.get("kwargs"))
        if not isinstance(name, str) or not isinstance(args, list) or not isinstance(kwargs, dict):
            raise bridge.Malformed("a tool call needs a name, a list of arguments and a dict of keywords")
        if not all(isinstance(k, str) for k in kwargs) or not isinstance(call_id, int):
            raise bridge.Malformed("tool call keywords must be strings and its id an integer")
        record = ToolCall(name=name, args=args, kwargs=kwargs, start_s=time.perf_counter() - started,
                          concurrent=bool(self._pending))
        for other, _ in self._pending.values():
            other.concurrent = True
        tool = request.tools.get(name)
        if tool is None:
            record.error = f"NameError: no tool named {name!r}"
            self._reply(channel, call_id, {"op": "raise", "type": "NameError", "message": f"no tool named {name!r}"})
            return record
        future = self._submit(tool, args, kwargs, request.loop)
        self._pending[call_id] = (record, future)
        t0 = time.perf_counter()

        def done(fut: Future[Any]) -> None:
            record.duration_s = time.perf_counter() - t0
            if self._pending.pop(call_id, None) is None:
                record.abandoned = record.abandoned or not fut.done()
                return  # the step ended without it
            self._reply(channel, call_id, _outcome(name, fut, record))

        future.add_done_callback(done)
        return record

    def _submit(self, tool: Tool, args: list[Any], kwargs: dict[str, Any],
                loop: asyncio.AbstractEventLoop | None) -> Future[Any]:
        owner = self.owner
        if tool.is_async and loop is not None and loop.is_running():
            async def call() -> Any:
                _serving.set(owner)
                return await tool.acall(*args, **kwargs)

            return asyncio.run_coroutine_threadsafe(call(), loop)

        def call_sync() -> Any:
            token = _serving.set(owner)
            try:
                return tool(*args, **kwargs)
            finally:
                _serving.reset(token)

        return _pool.submit(call_sync)

    def _reply(self, channel: Channel, call_id: int, message: dict[str, Any]) -> None:
        with self._send_lock, contextlib.suppress(StepLost, OSError):
            channel.send({**message, "id": call_id})

    def _expire(self, channel: Channel, timeout: float) -> str:
        """The step's time passed while tools ran: abandon them and end the step in the sandbox."""
        pending = list(self._pending.items())
        self._pending = {}
        names = sorted({record.name for _, (record, _) in pending})
        for call_id, (record, future) in pending:
            record.abandoned = True
            record.error = f"Timeout: still running when the step's {timeout:g} s time limit passed"
            future.cancel()
            self._reply(channel, call_id, {"op": "expired", "message": f"tool {record.name!r} ran past the "
                        f"step's {timeout:g} s time limit"})
        running = ", ".join(repr(n) for n in names)
        return (f"the step ran longer than the {timeout:g} s time limit while tool {running} was running; the tool "
                "was abandoned on the host (its thread may still run) and the step was stopped; variables from "
                "before this step are kept")


def _outcome(name: str, future: Future[Any], record: ToolCall) -> dict[str, Any]:
    """The reply to a finished tool call, recorded in `record`."""
    try:
        value = future.result()
    except ToolArgumentError as exc:
        record.error = f"TypeError: {exc}"
        return {"op": "raise", "type": "TypeError", "message": str(exc)}
    except (asyncio.CancelledError, Exception) as exc:  # a failing tool is an exception in the sandbox
        if isinstance(exc, asyncio.CancelledError) or type(exc).__name__ == "CancelledError":
            record.error = "RuntimeError: cancelled"
            return {"op": "raise", "type": "RuntimeError", "message": f"tool {name!r} was cancelled"}
        record.error = f"{type(exc).__name__}: {exc}"
        return {"op": "raise", "type": type(exc).__name__, "message": str(exc)}
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        with contextlib.suppress(Exception):
            value.close()  # type: ignore[union-attr]
        record.error = "TypeError: returned an awaitable"
        return {"op": "raise", "type": "TypeError", "message": f"tool {name!r} returned an awaitable; declare it "
                "with async def"}
    try:
        encoded = wire.encode(value)
    except (TypeError, ValueError) as exc:
        record.error = f"TypeError: {exc}"
        return {"op": "raise", "type": "TypeError", "message": f"tool {name!r} returned a value the sandbox "
                f"cannot receive: {exc}"}
    record.result = value
    return {"op": "return", "value": encoded}

