"""The Python side of a Pyodide session: runs steps, forwards tool calls, reports results.

This module runs inside Pyodide (loaded by runtime.mjs as `_codeact_runtime`, beside the wire codec
as `_codeact_wire`), never on the host. It talks to the host only through the frames of the wire
protocol, read and written synchronously by the `_codeact_host` functions of runtime.mjs.
"""

from __future__ import annotations

import ast
import builtins
import collections
import contextlib
import io
import linecache
import os
import sys
import time
import traceback
from typing import Any

import _codeact_wire as wire  # type: ignore[import-not-found]

_VALUE_LIMIT = 20_000
_ANNOTATIONS = __import__("__future__").annotations.compiler_flag
_BUILTIN_EXCEPTIONS = {
    name: obj
    for name, obj in vars(builtins).items()
    if isinstance(obj, type) and issubclass(obj, Exception)
}


class _Submitted(BaseException):
    """Raised by `submit(...)`; a BaseException so `except Exception` in user code cannot catch it."""

    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__("submit")
        self.values = values


class ToolError(Exception):
    """A host tool failed with an exception that has no builtin equivalent here."""


class _Capture(io.TextIOBase):
    """A text stream that keeps the head and the tail of what is written, within a limit."""

    def __init__(self, limit: int) -> None:
        self.half = max(1, limit // 2)
        self.head: list[str] = []
        self.head_size = 0
        self.tail: collections.deque[str] = collections.deque()
        self.tail_size = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        n = len(text)
        room = self.half - self.head_size
        if room > 0:
            self.head.append(text[:room])
            self.head_size += len(self.head[-1])
            text = text[room:]
        if text:
            self.tail.append(text)
            self.tail_size += len(text)
            while self.tail and self.tail_size - len(self.tail[0]) >= self.half:
                self.dropped += len(self.tail[0])
                self.tail_size -= len(self.tail.popleft())
            if self.tail_size > self.half:
                cut = self.tail_size - self.half
                self.tail[0] = self.tail[0][cut:]
                self.tail_size -= cut
                self.dropped += cut
        return n

    def getvalue(self) -> str:
        head, tail = "".join(self.head), "".join(self.tail)
        if self.dropped:
            return f"{head}\n... [{self.dropped} characters cut] ...\n{tail}"
        return head + tail


class Session:
    """The variables, tools and submit function of one sandbox session."""

    def __init__(self, host: Any, output_limit: int, memory_limit: int, granted: list[str]) -> None:
        self.host = host
        self.granted = granted
        self.output_limit = output_limit
        self.memory_limit = memory_limit
        self.namespace: dict[str, Any] = {}
        self.steps = 0
        self.in_step = False
        self.baseline_modules = set(sys.modules)
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}

    def reset(self) -> None:
        """Forget every variable, the files in /tmp and the modules imported since the session
        started (the tools and submit are defined again by the next step). Changes made to modules
        that were already imported stay."""
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        for name in set(sys.modules) - self.baseline_modules:
            sys.modules.pop(name, None)
        import shutil

        with contextlib.suppress(OSError):
            for entry in os.scandir("/tmp"):
                if any(g == entry.path or g.startswith(entry.path + "/") for g in self.granted):
                    continue  # holds a granted path: those are the host's files
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)

    # --- tools and submit -------------------------------------------------------------------------
    def define(self, tools: list[dict[str, str]], submit: list[str] | None) -> None:
        helpers = {"__codeact_call__": self.call_tool, "__builtins__": builtins}
        for spec in tools:
            scope = dict(helpers)
            filename = f"<tool {spec['name']}>"
            try:  # real annotations where they are builtin types, strings where they name host types
                exec(compile(spec["source"], filename, "exec", dont_inherit=True), scope)
            except Exception:
                exec(compile(spec["source"], filename, "exec", flags=_ANNOTATIONS, dont_inherit=True), scope)
            self.namespace[spec["name"]] = scope[spec["name"]]
        params = submit or ["answer"]
        source = (
            f"def submit({', '.join(params)}):\n"
            f'    """End the task with the final {", ".join(params)}."""\n'
            f"    raise __codeact_submitted__({{{', '.join(f'{p!r}: {p}' for p in params)}}})\n"
        )
        scope = {"__codeact_submitted__": _Submitted, "__builtins__": builtins}
        exec(compile(source, "<submit>", "exec"), scope)
        self.namespace["submit"] = scope["submit"]
        self.namespace.setdefault("ToolError", ToolError)

    def call_tool(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Ask the host to run tool `name`; its exceptions are raised here."""
        if not self.in_step:
            raise RuntimeError(f"tool {name!r} can only be called while a step runs")
        try:
            frame = wire.dumps(
                {"op": "call", "tool": name, "args": wire.encode(list(args)), "kwargs": wire.encode(dict(kwargs))}
            )
        except (TypeError, ValueError) as exc:
            raise TypeError(f"cannot pass these arguments to tool {name!r}: {exc}") from None
        if len(frame) > wire.MAX_MESSAGE_BYTES:
            raise ValueError(
                f"arguments to tool {name!r} are {len(frame)} bytes, over the limit of "
                f"{wire.MAX_MESSAGE_BYTES} bytes; pass less data (e.g. a file path or a slice)"
            )
        send(self.host, frame)
        reply = receive(self.host)
        if reply is None:
            raise SystemExit("the host closed the session")
        if reply.get("op") == "return":
            return wire.decode(reply.get("value"))
        raise _exception(str(reply.get("type", "ToolError")), str(reply.get("message", "")))

    # --- one step ----------------------------------------------------------------------------------
    def run(self, code: str, timeout: float) -> dict[str, Any]:
        """Execute `code` in the session namespace and describe what happened."""
        self.steps += 1
        filename = f"<step {self.steps}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
        stdout, stderr = _Capture(self.output_limit), _Capture(self.output_limit)
        value: str | None = None
        error: dict[str, Any] | None = None
        submitted: Any = None
        timed_out = False
        saved = sys.stdout, sys.stderr, sys.stdin
        sys.stdout, sys.stderr, sys.stdin = stdout, stderr, io.StringIO()
        started = time.perf_counter()
        self.in_step = True
        if timeout > 0:
            self.host.arm(timeout)
        try:
            try:
                tree = ast.parse(code, filename)
                last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
                exec(compile(tree, filename, "exec"), self.namespace)
                if last is not None:
                    result = eval(compile(ast.Expression(last.value), filename, "eval"), self.namespace)
                    if result is not None:
                        value = _repr(result)
                        self.namespace["_"] = result
            finally:
                fired = bool(self.host.disarm())
                self.in_step = False
        except _Submitted as exc:
            try:
                submitted = wire.encode(exc.values)
            except (TypeError, ValueError) as enc_exc:
                error = _plain_error("TypeError", f"submit(): {enc_exc}")
        except KeyboardInterrupt as exc:
            if fired:
                timed_out = True
                error = _plain_error(
                    "Timeout",
                    f"the step ran longer than the {timeout:g} s time limit and was stopped; "
                    "variables from before this step are kept",
                )
            else:
                error = _describe(exc, filename, code)
        except BaseException as exc:
            error = _describe(exc, filename, code)
        finally:
            sys.stdout, sys.stderr, sys.stdin = saved
        stdout.write(str(self.host.drain(1)))
        stderr.write(str(self.host.drain(2)))
        unsynced = str(self.host.sync())
        if unsynced and error is None:
            error = _plain_error("OSError", f"a granted file could not be written back to the host: {unsynced}")
        if error and error["type"] == "MemoryError" and self.memory_limit:
            error["message"] = (error["message"] + " " if error["message"] else "") + (
                f"(the sandbox memory limit is {self.memory_limit >> 20} MB)"
            )
        return {
            "op": "result",
            "stdout": stdout.getvalue(),
            "stderr": stderr.getvalue(),
            "value": value,
            "error": error,
            "submitted": submitted,
            "duration": time.perf_counter() - started,
            "stdout_truncated": stdout.dropped,
            "timed_out": timed_out,
        }


def _plain_error(kind: str, message: str) -> dict[str, Any]:
    return {"type": kind, "message": message, "traceback": "", "lineno": None, "line": None}


def _exception(type_name: str, message: str) -> Exception:
    cls = _BUILTIN_EXCEPTIONS.get(type_name)
    if cls is not None:
        with contextlib.suppress(Exception):
            return cls(message)
    return ToolError(f"{type_name}: {message}")


def _repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:
        return f"<repr failed: {type(exc).__name__}: {exc}>"
    if len(text) > _VALUE_LIMIT:
        half = _VALUE_LIMIT // 2
        text = f"{text[:half]}\n... [{len(text) - _VALUE_LIMIT} characters cut] ...\n{text[-half:]}"
    return text


def _describe(exc: BaseException, filename: str, code: str) -> dict[str, Any]:
    lineno: int | None = None
    if isinstance(exc, SyntaxError) and exc.filename == filename:
        lineno = exc.lineno
    frames = traceback.extract_tb(exc.__traceback__)
    first = next((i for i, f in enumerate(frames) if f.filename == filename), None)
    lines: list[str] = []
    if first is not None:
        user = frames[first:]
        lineno = next((f.lineno for f in reversed(frames) if f.filename == filename), lineno)
        lines = ["Traceback (most recent call last):\n", *traceback.format_list(user)]
    try:
        lines += traceback.format_exception_only(type(exc), exc)
        message = str(exc) if not isinstance(exc, SyntaxError) else (exc.msg or "")
    except Exception as format_exc:  # a hostile __str__
        message = f"<str failed: {type(format_exc).__name__}>"
        lines.append(f"{type(exc).__name__}: {message}\n")
    if len(message) > _VALUE_LIMIT:
        message = message[:_VALUE_LIMIT] + f" ... [{len(message) - _VALUE_LIMIT} characters cut]"
    text = "".join(lines)
    if len(text) > 4 * _VALUE_LIMIT:
        text = text[: 2 * _VALUE_LIMIT] + "\n... [traceback cut] ...\n" + text[-2 * _VALUE_LIMIT :]
    source_lines = code.splitlines()
    line = source_lines[lineno - 1] if lineno and 0 < lineno <= len(source_lines) else None
    return {"type": type(exc).__name__, "message": message, "traceback": text, "lineno": lineno, "line": line}


# --- frames through runtime.mjs -------------------------------------------------------------------


def send(host: Any, frame: bytes) -> None:
    from pyodide.ffi import to_js  # type: ignore[import-not-found]

    host.send(to_js(frame))


def receive(host: Any) -> dict[str, Any] | None:
    data = host.recv()
    if data is None:
        return None
    return wire.loads(data.to_bytes())


def _clean(value: Any) -> Any:
    """`value` with lone surrogates in its strings replaced, so that it encodes as UTF-8."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _result_frame(result: dict[str, Any]) -> bytes:
    try:
        frame = wire.dumps(result)
    except UnicodeEncodeError:
        result = _clean(result)
        frame = wire.dumps(result)
    except (TypeError, ValueError) as exc:
        frame = b""
        result.update(error=_plain_error("TypeError", f"the step's result cannot be sent: {exc}"))
    if not frame or len(frame) > wire.MAX_MESSAGE_BYTES:
        result.update(value=None, submitted=None, stdout=result["stdout"][: 1 << 20], stderr=result["stderr"][: 1 << 20])
        if frame:
            result["error"] = _plain_error(
                "ValueError",
                f"the step's result is {len(frame)} bytes, over the limit of {wire.MAX_MESSAGE_BYTES} bytes; "
                "return or submit less data",
            )
        frame = wire.dumps(result)
    return frame


def _interruptible_sleep(host: Any) -> Any:
    """`time.sleep` in slices, so that the time limit can stop a sleeping step."""
    blocking_sleep = time.sleep

    def sleep(seconds: float, /) -> None:
        end = time.monotonic() + float(seconds)
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        while (left := end - time.monotonic()) > 0:
            if host.interrupted():
                raise KeyboardInterrupt
            blocking_sleep(min(left, 0.02))

    sleep.__doc__ = blocking_sleep.__doc__
    return sleep


def _no_process_crashes() -> None:
    """WebAssembly has no processes: fork is absent, and ending the process is an error of the step
    (it would otherwise end the whole session, which cannot roll back)."""
    for name in ("fork", "forkpty"):
        if hasattr(os, name):
            delattr(os, name)

    def _exit(status: int, /) -> None:
        raise SystemExit(f"os._exit({status}) ended the step (the sandbox session lives on)")

    def abort() -> None:
        raise SystemExit("os.abort() ended the step (the sandbox session lives on)")

    os._exit = _exit
    os.abort = abort
    own_kill = os.kill

    def kill(pid: int, sig: int, /) -> None:
        if pid in (0, -1, os.getpid()) and sig != 0:
            raise SystemExit(f"signal {sig} sent to the sandbox's own process ended the step")
        own_kill(pid, sig)

    kill.__doc__ = own_kill.__doc__
    os.kill = kill
    import signal

    def raise_signal(sig: int, /) -> None:
        raise SystemExit(f"signal {sig} raised in the sandbox ended the step")

    signal.raise_signal = raise_signal


def _disable_name_lookups() -> None:
    """Emscripten answers DNS lookups with made-up addresses; without network they fail instead."""
    import socket

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "network access is disabled in this sandbox")

    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo"):
        setattr(socket, name, refuse)


def serve(init: dict[str, Any]) -> None:
    """Answer the host's messages until it closes the session."""
    import _codeact_host as host  # type: ignore[import-not-found]

    time.sleep = _interruptible_sleep(host)
    _no_process_crashes()
    if not init.get("network"):
        _disable_name_lookups()

    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in dict(init.get("env") or {}).items()})
    with contextlib.suppress(OSError):
        os.chdir("/tmp")
    granted = [str(m["at"]) for m in init.get("mounts") or []]
    session = Session(host, int(init.get("output_limit") or 1 << 20), int(init.get("memory_limit") or 0), granted)
    while True:
        try:
            message = receive(host)
            if message is None or host.orphaned():
                return
            op = message.get("op")
            if op == "exec":
                if message.get("tools") is not None:
                    session.define(list(message["tools"]), message.get("submit"))
                timeout = float(message.get("timeout") or 0)
                try:
                    result = session.run(str(message.get("code", "")), timeout)
                except KeyboardInterrupt:
                    result = {"op": "result", "stdout": "", "stderr": "", "value": None, "submitted": None,
                              "stdout_truncated": 0, "timed_out": True,
                              "error": _plain_error("Timeout", f"the step ran longer than the {timeout:g} s "
                                                    "time limit and was stopped")}
                send(host, _result_frame(result))
            elif op == "reset":
                session.reset()
                send(host, wire.dumps({"op": "reset"}))
            elif op == "close":
                return
        except KeyboardInterrupt:  # a late time-limit signal between steps
            if host.orphaned():
                return
            continue
