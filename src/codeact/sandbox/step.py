"""Running one step of code inside a sandbox: the part every backend shares.

Pure standard library and, of codeact, only the wire codec, because it runs inside the sandbox: in
the native backend's worker process, and loaded as a module into Pyodide. It defines the tools and
`submit` in the session namespace, calls the host for tools (`ToolClient`, awaitable from async
code), runs code (top-level `await` included) with the value of its last expression, keeps tools and
`submit` from being replaced, captures output within a limit and describes errors.
"""

from __future__ import annotations

import ast
import asyncio
import bisect
import builtins
import collections
import collections.abc
import contextlib
import dis
import functools
import inspect
import io
import linecache
import os
import re
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable
from typing import Any

try:  # inside the sandbox the codec is a sibling module; on the host, codeact's
    import _codeact_wire as wire  # type: ignore[import-not-found]
except ImportError:
    from codeact.sandbox import wire

_ANNOTATIONS = __import__("__future__").annotations.compiler_flag
_BUILTIN_EXCEPTIONS = {
    name: obj for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, Exception)
}
# codeact's own frames (the tool bridge) are left out of tracebacks shown to the model
_OWN_DIR = "" if __file__.startswith("<") else os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


class Submitted(BaseException):
    """Raised by `submit(...)`; a BaseException so `except Exception` in user code cannot catch it."""

    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__("submit")
        self.values = values


_submissions: list[dict[str, Any]] = []  # the running step's submit() calls, from any thread or task


def _submit(values: dict[str, Any]) -> None:
    """What `submit(...)` does: record the values (a thread or a task that is never awaited still
    submits them), then end the code that called it."""
    _submissions.append(values)
    raise Submitted(values)


_last_tool_value: list[Any] = []  # the value the last tool call returned to code that did not await it


def _returned(value: Any) -> Any:
    """Note `value` as the last tool's, returned to code that did not await the call (only the last
    one is kept: a loop of large results is not held in memory)."""
    _last_tool_value[:] = [value]
    return value


def _is_tool_value(obj: Any) -> bool:
    return bool(_last_tool_value) and _last_tool_value[0] is obj


def adapt_asyncio(client: ToolClient) -> None:
    """Let the step's code drive tools with asyncio as it would drive coroutines: a tool called
    outside async code returns its value at once, which `asyncio.run(tool(x))` and
    `loop.run_until_complete(tool(x))` then give back; under Pyodide, whose own loop cannot block,
    `asyncio.run(main())` and its loop's `run_until_complete` run on a loop of the step's own, as
    top-level `await` does. Called once by each guest runtime, never on the host."""
    native_run = asyncio.run

    def run(main: Any, **options: Any) -> Any:
        if _is_tool_value(main):
            return main
        if sys.platform == "emscripten" and inspect.iscoroutine(main):
            if isinstance(asyncio.events._get_running_loop(), _TimerLoop):
                main.close()
                raise RuntimeError("asyncio.run() cannot be called from a running event loop")
            return _await(main, client)
        return native_run(main, **options)

    def until_complete(native: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def run_until_complete(loop: Any, future: Any) -> Any:
            if _is_tool_value(future):
                return future
            if sys.platform == "emscripten" and inspect.iscoroutine(future) and not isinstance(loop, _TimerLoop):
                return _await(future, client)
            return native(loop, future)

        return run_until_complete

    asyncio.run = asyncio.runners.run = run
    loops = [asyncio.BaseEventLoop]
    if sys.platform == "emscripten":
        loops.append(type(asyncio.get_event_loop()))  # Pyodide's WebLoop
    for cls in loops:
        cls.run_until_complete = until_complete(cls.run_until_complete)  # type: ignore[method-assign]


def _settle(future: asyncio.Future[dict[str, Any]], reply: dict[str, Any]) -> None:
    if not future.done():
        future.set_result(reply)


class ToolError(Exception):
    """A host tool failed with an exception that has no builtin equivalent here."""


class StepExpired(BaseException):
    """The host ended the step: its time limit passed while a host tool was running."""


class ToolClient:
    """The guest's side of tool calls, shared by every runner.

    Called from plain code, a tool blocks until its reply; called from async code (`await tool()`,
    `asyncio.gather(...)`), it returns an awaitable, and several calls are in flight at once, the
    host running them concurrently. Calls from several threads (a ThreadPoolExecutor) are in flight at
    once too: one waiting thread at a time reads the channel and hands each reply to its waiter.
    Replies carry the call's id.
    `send` writes one frame to the host; `receive` reads its next message (None when it has gone);
    `fileno` is the channel's descriptor where the step's loop can watch it (None in Pyodide, whose
    loop asks `pump` when it has nothing else to do). Arguments are checked against the frame limits
    here, before anything is sent.
    """

    def __init__(
        self,
        send: Callable[[bytes], None],
        receive: Callable[[], dict[str, Any] | None],
        fileno: Callable[[], int] | None = None,
        clock: Callable[[str], None] | None = None,
    ) -> None:
        self.send = send
        self.receive = receive
        self.fileno = fileno
        self.clock = clock
        self.next_id = 0
        self._reset()
        if hasattr(os, "register_at_fork"):  # not under WebAssembly
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        """No call in flight and tools off: the state of a new client, and of one in a forked process,
        where the threads that were calling, reading or holding a lock at the fork do not exist (a
        step of that process turns tools on; the code's own forks never do: the step's channel is
        their parent's)."""
        self.active = False
        self.lock = threading.Lock()  # sending, and the call ids
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}  # async calls
        self.watched: asyncio.AbstractEventLoop | None = None
        self.turn = threading.Condition()  # who reads the channel, and the replies it read for others
        self.reading = False
        self.blocked: set[int] = set()  # calls whose thread waits for the reply
        self.replies: dict[int, dict[str, Any]] = {}

    def call(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """What a tool stub returns: the value, or an awaitable when called from async code."""
        if not self.active:
            raise RuntimeError(f"tool {name!r} can only be called while a step runs")
        caller = sys._getframe(2)
        if (
            asyncio.events._get_running_loop() is not None
            and _from_async_code(caller)
            and _next_op(caller) != "POP_TOP"
        ):  # awaited, gathered, stored: sent now, awaitable for the value
            return self._begin(name, args, kwargs)
        with self.lock:
            call_id = self._start(name, args, kwargs, self._block)
        try:
            return _returned(self._value(name, self._reply_for(call_id)))
        finally:
            with self.turn:
                self.blocked.discard(call_id)
                self.replies.pop(call_id, None)

    def _block(self, call_id: int) -> None:
        with self.turn:
            self.blocked.add(call_id)

    def _reply_for(self, call_id: int) -> dict[str, Any]:
        """Wait for the reply to `call_id`: read the channel while no other thread does, else wait
        for the reader to hand the reply over (or to leave, and take its turn)."""
        with self.turn:
            while True:
                if call_id in self.replies:
                    return self.replies.pop(call_id)
                if not self.reading:
                    self.reading = True
                    break
                self.turn.wait()
        try:
            while True:
                reply = self._next()
                if reply.get("id") == call_id:
                    return reply
                self._dispatch(reply)
        finally:
            self._stop_reading()

    def _stop_reading(self) -> None:
        """Give up the channel: a waiting thread whose reply has not come takes its turn."""
        with self.turn:
            self.reading = False
            self.turn.notify_all()

    def _begin(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> PendingCall:
        """Send the call now (the host starts it at once) and return what awaits its reply."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        with self.lock:
            call_id = self._start(name, args, kwargs, lambda sent: self.waiting.__setitem__(sent, future))
        if self.fileno is not None and self.watched is not loop:
            self.watched = loop
            loop.add_reader(self.fileno(), self.pump)
        return PendingCall(self, name, call_id, future)

    async def _finish(self, name: str, call_id: int, future: asyncio.Future[dict[str, Any]]) -> Any:
        try:
            reply = await future
        finally:
            self.waiting.pop(call_id, None)
        return self._value(name, reply)

    def pump(self) -> bool:
        """Read one reply for a waiting async call (unless a thread is reading); False when none is
        waiting. Where the channel has a descriptor, the loop calls this when it was readable: a
        thread waiting for its own reply may have read what was there since, and then this returns
        without waiting (the loop would otherwise wait here for replies that came and were handed to
        it through that thread)."""
        if not self.waiting:
            return False
        with self.turn:
            if self.reading:
                return True
            self.reading = True
        try:
            if self.fileno is None or _readable(self.fileno()):
                self._dispatch(self._next())
        finally:
            self._stop_reading()
        return True

    def _start(self, name: str, args: list[Any], kwargs: dict[str, Any], expect: Callable[[int], None]) -> int:
        """Send a call (the caller holds `lock`); `expect` registers its id for the reply first, since
        another thread may read that reply as soon as it is sent."""
        self.next_id += 1
        try:
            frame = wire.dumps(
                {
                    "op": "call",
                    "id": self.next_id,
                    "tool": name,
                    "args": wire.encode(list(args)),
                    "kwargs": wire.encode(dict(kwargs)),
                }
            )
        except (TypeError, ValueError) as exc:
            raise TypeError(f"cannot pass these arguments to tool {name!r}: {exc}") from None
        if len(frame) > wire.MAX_MESSAGE_BYTES:
            raise ValueError(
                f"arguments to tool {name!r} are {len(frame)} bytes, over the limit of "
                f"{wire.MAX_MESSAGE_BYTES} bytes; pass less data (e.g. a file path or a slice)"
            )
        if wire.more_values_than(frame, wire.MAX_VALUES):
            raise ValueError(
                f"arguments to tool {name!r} hold more than {wire.MAX_VALUES:,} values; pass large "
                "data as bytes, a numpy array or a file"
            )
        expect(self.next_id)
        self.send(frame)
        return self.next_id

    def _next(self) -> dict[str, Any]:
        while True:
            reply = self.receive()
            if reply is None:
                raise SystemExit("the host closed the session")
            op = reply.get("op")
            if op not in ("pause", "resume"):
                return reply
            if self.clock is not None:  # the host waits for an approval: that time does not count
                self.clock(str(op))

    def _dispatch(self, reply: dict[str, Any]) -> None:
        """Hand a reply read by this thread to the call it answers."""
        call_id = reply.get("id")
        with self.turn:
            if call_id in self.blocked:
                self.replies[call_id] = reply  # type: ignore[index]
                self.turn.notify_all()
                return
        future = self.waiting.get(call_id)  # type: ignore[arg-type]
        if future is None or future.done():
            return
        loop = future.get_loop()
        if asyncio.events._get_running_loop() is loop:
            future.set_result(reply)
        else:  # read by a thread for a call awaited on the step's loop
            loop.call_soon_threadsafe(_settle, future, reply)

    @staticmethod
    def _value(name: str, reply: dict[str, Any]) -> Any:
        op = reply.get("op")
        if op == "return":
            try:
                return wire.decode(reply.get("value"), trusted=True)
            except wire.WireError as exc:  # a class here refused it, or its library is missing here
                raise ValueError(
                    f"tool {name!r} returned a value that could not be rebuilt in the sandbox ({exc})"
                ) from None
        if op == "expired":
            raise StepExpired(str(reply.get("message", "")))
        raise exception_for(
            str(reply.get("type", "ToolError")), str(reply.get("message", "")), str(reply.get("base", ""))
        )

    def receive_inputs(self, count: int, namespace: dict[str, Any]) -> None:
        """Read `count` inputs sent by the host before a step (large ones in parts) into `namespace`.
        All are read, so the step's next frames stay in order; an input that cannot be rebuilt here
        then raises ValueError, naming it."""
        parts: list[str] = []
        refused: list[str] = []
        while count > 0:
            message = self.receive()
            if message is None:
                raise SystemExit("the host closed the session")
            if message.get("op") == "input_part":
                parts.append(str(message.get("data", "")))
                continue
            if message.get("op") != "input":
                raise RuntimeError(f"expected an input from the host, got {message.get('op')!r}")
            encoded = wire.decode_json("".join(parts)) if parts else message.get("value")
            parts = []
            name = str(message["name"])
            try:
                namespace[name] = wire.decode(encoded, trusted=True)
            except wire.WireError as exc:  # a library or a class missing here, a constructor that refuses
                refused.append(f"input {name!r} could not be rebuilt in the sandbox ({exc})")
            count -= 1
        if refused:
            raise ValueError("; ".join(refused))


def _readable(fd: int) -> bool:
    import select  # only where the channel has a descriptor (not under WebAssembly)

    return bool(select.select([fd], [], [], 0)[0])


_INLINE = frozenset({"<listcomp>", "<genexpr>", "<setcomp>", "<dictcomp>", "<lambda>"})


_INSTRUCTIONS: dict[Any, tuple[list[int], list[str]]] = {}


def _next_op(frame: Any) -> str:
    """The instruction that will use the result of the call `frame` is making (the first one after
    `f_lasti`, which points at the call or, in 3.11, at its last inline cache entry)."""
    code = frame.f_code
    table = _INSTRUCTIONS.get(code)
    if table is None:
        if len(_INSTRUCTIONS) > 512:
            _INSTRUCTIONS.clear()
        instructions = list(dis.get_instructions(code))
        table = _INSTRUCTIONS[code] = ([i.offset for i in instructions], [i.opname for i in instructions])
    offsets, names = table
    index = bisect.bisect_right(offsets, frame.f_lasti)
    return names[index] if index < len(names) else ""


def _from_async_code(frame: Any) -> bool:
    """Whether the code that called a tool is a coroutine or an async generator (comprehensions and
    lambdas inside one count)."""
    while frame is not None and frame.f_code.co_name in _INLINE:
        frame = frame.f_back
    return frame is not None and bool(frame.f_code.co_flags & _ASYNC)


_ASYNC = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


class PendingCall(collections.abc.Coroutine):  # type: ignore[type-arg]
    """A tool call made from async code, already sent to the host: await it (or gather it) for the value.
    What awaits the reply is made on first use, so a call nobody awaited leaves nothing to warn about."""

    __slots__ = ("_client", "_coro", "_future", "_id", "_tool")

    def __init__(self, client: ToolClient, tool: str, call_id: int, future: asyncio.Future[dict[str, Any]]) -> None:
        self._client = client
        self._tool = tool
        self._id = call_id
        self._future = future
        self._coro: Any = None

    def _awaiting(self) -> Any:
        if self._coro is None:
            self._coro = self._client._finish(self._tool, self._id, self._future)
        return self._coro

    def send(self, value: Any) -> Any:
        return self._awaiting().send(value)

    def throw(self, *exc: Any) -> Any:
        return self._awaiting().throw(*exc)

    def close(self) -> None:
        if self._coro is not None:
            self._coro.close()

    def __await__(self) -> Any:
        return self._awaiting().__await__()

    def _hint(self) -> str:
        return f"{self._tool}(...) was called from async code without await: write `await {self._tool}(...)`"

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"{self._hint()} to get its value")

    def __getitem__(self, key: Any) -> Any:
        raise TypeError(f"{self._hint()} to get its value")

    def __iter__(self) -> Any:
        raise TypeError(f"{self._hint()} to get its value")

    def __repr__(self) -> str:
        return f"<call of tool {self._tool!r} not awaited yet: write `await {self._tool}(...)` for its value>"

    def _not_a_value(self, *_: Any) -> Any:
        raise TypeError(f"{self._hint()} to get its value")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _not_a_value
    __lt__ = __le__ = __gt__ = __ge__ = __len__ = __contains__ = __bool__ = _not_a_value


class StepStream(io.TextIOBase):
    """`sys.stdout` or `sys.stderr` while a step runs: what is written goes to the running step's
    `Capture`, so a stream kept from an earlier step (a `logging.StreamHandler`) still reaches the
    step that runs now."""

    def __init__(self) -> None:
        self.target: io.TextIOBase | None = None

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return self.target.write(text) if self.target is not None else len(text)


_STDOUT, _STDERR = StepStream(), StepStream()


class Capture(io.TextIOBase):
    """A text stream that keeps the head and the tail of what is written, within a limit."""

    def __init__(self, limit: int) -> None:
        self.half = max(1, limit // 2)
        self.head: list[str] = []
        self.head_size = 0
        self.tail: collections.deque[str] = collections.deque()
        self.tail_size = 0
        self.dropped = 0
        self.lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        n = len(text)
        with self.lock:
            room = self.half - self.head_size
            if room > 0:
                piece = text[:room]
                self.head.append(piece)
                self.head_size += len(piece)
                text = text[room:]
            if text:
                self.tail.append(text)
                self.tail_size += len(text)
                while self.tail_size - len(self.tail[0]) >= self.half:
                    self.dropped += len(self.tail[0])
                    self.tail_size -= len(self.tail.popleft())
                if self.tail_size > self.half:
                    cut = self.tail_size - self.half
                    self.tail[0] = self.tail[0][cut:]
                    self.tail_size -= cut
                    self.dropped += cut
        return n

    def getvalue(self) -> str:
        with self.lock:
            head, tail = "".join(self.head), "".join(self.tail)
        if self.dropped:
            return f"{head}\n... [{self.dropped} characters cut] ...\n{tail}"
        return head + tail


def main_namespace() -> dict[str, Any]:
    """The namespace of a new session: the dict of a fresh `__main__` module, registered as such, so
    what the code defines is found where a script's would be (by pickle and multiprocessing, and by
    typing for forward references)."""
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    return main.__dict__


def define(
    namespace: dict[str, Any],
    provided: dict[str, Any],
    tools: list[dict[str, str]],
    submit: list[str] | None,
    call_tool: Callable[[str, list[Any], dict[str, Any]], Any],
) -> None:
    """Define the tool stubs and `submit` in `namespace`; `provided` remembers them."""
    helpers = {"__codeact_call__": call_tool, "__builtins__": builtins}
    for spec in tools:
        scope = dict(helpers)
        filename = f"<tool {spec['name']}>"
        try:  # real annotations where they are builtin types, strings where they name host types
            exec(compile(spec["source"], filename, "exec", dont_inherit=True), scope)
        except Exception:
            try:
                exec(compile(spec["source"], filename, "exec", flags=_ANNOTATIONS, dont_inherit=True), scope)
            except Exception as exc:  # a definition that does not compile here is left out, not fatal
                sys.stderr.write(f"note: {spec['name']} could not be defined in the sandbox: {exc}\n")
                continue
        namespace[spec["name"]] = provided[spec["name"]] = scope[spec["name"]]
    params = submit or ["answer"]
    source = (
        f"def submit({', '.join(params)}):\n"
        f'    """End the task with the final {", ".join(params)}."""\n'
        f"    __codeact_submit__({{{', '.join(f'{p!r}: {p}' for p in params)}}})\n"
    )
    scope = {"__codeact_submit__": _submit, "__builtins__": builtins}
    exec(compile(source, "<submit>", "exec"), scope)
    namespace["submit"] = provided["submit"] = scope["submit"]
    namespace.setdefault("ToolError", ToolError)


_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
_VALUE = "__codeact_value__"  # holds the value of a last expression that awaits, for the step's result


def run(
    code: str,
    filename: str,
    namespace: dict[str, Any],
    provided: dict[str, Any],
    stdout: Capture,
    stderr: Capture,
    value_limit: int = 20_000,
    client: ToolClient | None = None,
    inputs: int = 0,
) -> tuple[str | None, BaseException | None, dict[str, Any] | None]:
    """Receive the step's `inputs` from `client`, then run `code` with its output in `stdout`/`stderr`:
    (repr of the last expression, the exception it or the inputs raised, the values it submitted,
    from its own flow or, when that ends without an error, the last from a thread or a task).
    Code compiles as plain Python would, with `await` allowed at the top level (the step then runs
    on an event loop of its own)."""
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
    value: str | None = None
    saved = sys.stdout, sys.stderr
    _STDOUT.target, _STDERR.target = stdout, stderr
    sys.stdout, sys.stderr = _STDOUT, _STDERR
    _submissions.clear()
    try:
        if inputs and client is not None:
            client.receive_inputs(inputs, namespace)
        body, expression = _compile(code, filename, provided, stderr)
        if body.co_flags & inspect.CO_COROUTINE:
            result = _await(_on_one_loop(body, expression, namespace), client)
        else:
            eval(body, namespace)
            result = None if expression is None else _await(eval(expression, namespace), client)
        result = namespace.pop(_VALUE, result)
        if result is not None:
            value = value_repr(result, value_limit)
            namespace["_"] = result
    except Submitted as exc:
        return value, None, exc.values
    except BaseException as exc:
        return value, exc, None
    finally:
        sys.stdout, sys.stderr = saved
        _STDOUT.target = _STDERR.target = None  # what a thread writes between steps is dropped
        _last_tool_value.clear()
        namespace.pop(_VALUE, None)
        namespace.update(provided)  # tools and submit cannot be replaced
    return value, None, (_submissions[-1] if _submissions else None)


def _compile(code: str, filename: str, provided: dict[str, Any], stderr: Capture) -> tuple[Any, Any]:
    """The step's statements, and its last expression apart (None when it ends otherwise, or awaits:
    the statements then keep its value in `_VALUE`). Top-level definitions of provided names are
    dropped, with a note in `stderr`."""
    split = _compile_split(code, filename, provided)
    if split is not None:
        return split
    tree = ast.parse(code, filename)
    skipped = _drop_redefinitions(tree, provided)
    if skipped:
        stderr.write(
            f"note: the sandbox provides {', '.join(skipped)}; the definition in your code "
            "was skipped, call the provided function instead\n"
        )
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    expression = None
    if last is not None:
        expression = compile(ast.Expression(last.value), filename, "eval", flags=_FLAGS, dont_inherit=True)
        if expression.co_flags & inspect.CO_COROUTINE:  # it awaits: the whole step is async code
            store = ast.Assign(targets=[ast.Name(_VALUE, ast.Store())], value=last.value)
            tree.body.append(ast.fix_missing_locations(ast.copy_location(store, last)))
            expression = None
    return compile(tree, filename, "exec", flags=_FLAGS, dont_inherit=True), expression


_LINE_START = re.compile(r"^[^\s#]", re.MULTILINE)  # a line that starts a top-level statement, or continues one


def _compile_split(code: str, filename: str, provided: dict[str, Any]) -> tuple[Any, Any] | None:
    """`_compile` from the source text, without the syntax tree's Python objects (which cost as much
    again as compiling): where the last line at column 0 starts an expression that does not await,
    what comes before it compiles on its own, and nothing defines a provided name. A cut that
    falls inside a string or brackets leaves text before it that does not compile, so the cut is
    where the last statement starts. None where any of that fails: the syntax tree decides."""
    if provided and re.search(rf"\b(?:def|class)[\s\\]+(?:{'|'.join(map(re.escape, provided))})\b", code):
        return None
    last = collections.deque(_LINE_START.finditer(code), maxlen=1)
    if not last:
        return None
    cut = last[0].start()
    try:
        expression = compile(
            "\n" * code.count("\n", 0, cut) + code[cut:], filename, "eval", flags=_FLAGS, dont_inherit=True
        )
        if expression.co_flags & inspect.CO_COROUTINE:
            return None
        return compile(code[:cut], filename, "exec", flags=_FLAGS, dont_inherit=True), expression
    except (SyntaxError, ValueError):  # ValueError: a null byte, before Python 3.12
        return None


async def _on_one_loop(body: Any, expression: Any, namespace: dict[str, Any]) -> Any:
    """A step whose statements await, and its last expression when that does not: both run on one
    loop, so the loop and the tasks the statements made still serve the expression."""
    await eval(body, namespace)
    if expression is None:
        return None
    result = eval(expression, namespace)
    return await result if inspect.iscoroutine(result) else result


class _TimerSelector:
    """What a loop without sockets waits on: replies to waiting tool calls, else time (WebAssembly has
    no socketpair for a self-pipe)."""

    def __init__(self, client: ToolClient | None) -> None:
        self.client = client

    def select(self, timeout: float | None) -> list[Any]:
        if timeout != 0 and self.client is not None and self.client.pump():
            return []
        if timeout is None:
            raise RuntimeError("the step's event loop has nothing left to wait for (an await that never ends)")
        if timeout > 0:
            time.sleep(timeout)
        return []

    def close(self) -> None:
        pass


class _TimerLoop(asyncio.BaseEventLoop):
    """An event loop of callbacks and timers, for sandboxes without sockets (Pyodide)."""

    def __init__(self, client: ToolClient | None) -> None:
        super().__init__()
        self._selector = _TimerSelector(client)

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass


def _await(result: Any, client: ToolClient | None) -> Any:
    """The value of a compiled step: code with top-level `await` compiles to a coroutine, run here on
    a loop of the step's own (Pyodide's own loop, which cannot block, is set aside meanwhile)."""
    if not inspect.iscoroutine(result):
        return result
    outer = asyncio.events._get_running_loop()
    asyncio.events._set_running_loop(None)
    loop = _TimerLoop(client) if sys.platform == "emscripten" else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(result)
    finally:
        _cancel_left_over(loop)
        if client is not None:
            client.watched = None
        loop.close()
        asyncio.events._set_running_loop(outer)


def _cancel_left_over(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks a step left running, as `asyncio.run` does at the end of a script, and say so
    in the step's output: its loop closes now, and a task awaited in a later step would otherwise fail
    with an error about another loop."""
    left = [task for task in asyncio.all_tasks(loop) if not task.done()]
    if not left:
        return
    for task in left:
        task.cancel("the step that created this task ended before it finished; await a task in its own step")
    loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
    names = sorted({_task_name(task) for task in left})
    sys.stderr.write(
        f"note: {len(left)} task{'s' if len(left) > 1 else ''} still running when the step ended "
        f"{'were' if len(left) > 1 else 'was'} cancelled ({', '.join(names)}); await tasks in the step "
        "that creates them\n"
    )


def _task_name(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    if isinstance(coro, PendingCall):
        return coro._tool
    return getattr(coro, "__qualname__", task.get_name())


def _drop_redefinitions(tree: ast.Module, provided: dict[str, Any]) -> list[str]:
    """Remove top-level definitions of provided names (models like to copy the tool stubs)."""
    kept, skipped = [], []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in provided:
            skipped.append(node.name)
        else:
            kept.append(node)
    tree.body = kept
    return skipped


def exception_for(type_name: str, message: str, base: str = "") -> Exception:
    """The exception to raise in sandboxed code for a tool's failure on the host: the builtin one of
    that name, or one named as the tool's that the code catches as its builtin `base` or as ToolError."""
    cls = _BUILTIN_EXCEPTIONS.get(type_name)
    if cls is None and type_name.isidentifier() and base in _BUILTIN_EXCEPTIONS:
        cls = _tool_exception(type_name, _BUILTIN_EXCEPTIONS[base])
    if cls is not None:
        with contextlib.suppress(Exception):
            return cls(message)
    return ToolError(f"{type_name}: {message}")


@functools.cache
def _tool_exception(name: str, base: type[Exception]) -> type[Exception]:
    bases = (ToolError,) if base is Exception else (base, ToolError)
    return type(name, bases, {"__module__": "builtins", "__doc__": f"The tool's {name}, raised on the host."})


def value_repr(value: Any, limit: int = 20_000) -> str:
    """The repr of a step's value, its head and tail kept within `limit` characters."""
    try:
        text = repr(value)
    except Exception as exc:
        return f"<repr failed: {type(exc).__name__}: {exc}>"
    if len(text) > limit:
        half = limit // 2
        text = (
            f"{text[:half]}\n... [{len(text) - 2 * half} characters cut; print slices of the value to see "
            f"them] ...\n{text[-half:]}"
        )
    return text


def outcome(
    value: str | None,
    error: dict[str, Any] | None,
    values: dict[str, Any] | None,
    stdout: Capture,
    stderr: Capture,
    started: float,
) -> dict[str, Any]:
    """A finished step as every backend reports it to the host. The values passed to `submit()` are
    encoded here; values that cannot cross become the step's error."""
    submitted = None
    if values is not None:
        try:
            submitted = wire.encode(values)
        except (TypeError, ValueError) as exc:
            error = plain_error("TypeError", f"submit(): {exc}")
    return {
        "stdout": stdout.getvalue(),
        "stderr": stderr.getvalue(),
        "value": value,
        "error": error,
        "submitted": submitted,
        "duration": time.perf_counter() - started,
        "stdout_truncated": stdout.dropped,
    }


def plain_error(kind: str, message: str) -> dict[str, Any]:
    return {"type": kind, "message": message, "traceback": "", "lineno": None, "line": None}


def describe(exc: BaseException, filename: str, code: str, memory_limit: int = 0) -> dict[str, Any]:
    """Type, message, traceback and failing line of an exception raised by the step's code.

    The traceback starts at the step's own code and leaves out codeact's frames, so it shows the
    model its code and the libraries it called, not the sandbox's machinery.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    first = next((i for i, f in enumerate(frames) if f.filename == filename), None)
    shown = [f for f in frames[first:] if not _hidden(f.filename)] if first is not None else []
    lineno = next((f.lineno for f in reversed(frames) if f.filename == filename), None)
    if isinstance(exc, SyntaxError) and exc.filename == filename:
        lineno = exc.lineno
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(shown)] if shown else []
    lines += traceback.format_exception_only(type(exc), exc)
    source_lines = code.splitlines()
    line = source_lines[lineno - 1] if lineno and 0 < lineno <= len(source_lines) else None
    message = exc.msg or "" if isinstance(exc, SyntaxError) else str(exc)
    if isinstance(exc, MemoryError) and memory_limit:
        message = (message + " " if message else "") + f"(the sandbox memory limit is {memory_limit >> 20} MB)"
    return {"type": type(exc).__name__, "message": message, "traceback": "".join(lines), "lineno": lineno, "line": line}


def _hidden(filename: str) -> bool:
    return filename.startswith("<_codeact") or (bool(_OWN_DIR) and filename.startswith(_OWN_DIR))
