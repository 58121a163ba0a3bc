"""The Python side of a Pyodide session: runs steps, forwards tool calls, reports results.

This module runs inside Pyodide (loaded by runtime.mjs as `_codeact_runtime`, beside the wire codec
as `_codeact_wire`), never on the host. It talks to the host only through the frames of the wire
protocol, read and written synchronously by the `_codeact_host` functions of runtime.mjs.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from typing import Any

import _codeact_step as step  # type: ignore[import-not-found]
import _codeact_wire as wire  # type: ignore[import-not-found]


class Session:
    """The variables, tools and submit function of one sandbox session."""

    def __init__(self, host: Any, output_limit: int, memory_limit: int, granted: list[str]) -> None:
        self.host = host
        self.granted = granted
        self.output_limit = output_limit
        self.memory_limit = memory_limit
        self.steps = 0
        self.baseline_modules = set(sys.modules)
        self.namespace = step.main_namespace()
        self.provided: dict[str, Any] = {}
        self.tools = step.ToolClient(lambda frame: send(host, frame), lambda: receive(host), clock=self._clock)
        step.adapt_asyncio(self.tools)
        self.deadline = 0.0
        self.left = 0.0

    def reset(self) -> None:
        """Forget every variable, the files in /tmp and the modules imported since the session
        started (the tools and submit are defined again by the next step). Changes made to modules
        that were already imported stay."""
        self.namespace = step.main_namespace()
        self.provided = {}
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
    def _clock(self, op: str) -> None:
        """The host waits for an approval ("pause") or got it ("resume"): that time does not count."""
        if not self.deadline:
            return
        if op == "pause":
            self.left = max(0.001, self.deadline - time.monotonic())
            self.host.disarm()
        else:
            self.deadline = time.monotonic() + self.left
            self.host.arm(self.left)

    def define(self, tools: list[dict[str, str]], submit: list[str] | None) -> None:
        step.define(self.namespace, self.provided, tools, submit, self.tools.call)

    # --- one step ----------------------------------------------------------------------------------
    def run(self, code: str, timeout: float, inputs: int = 0, value_limit: int = 20_000) -> dict[str, Any]:
        """Execute `code` in the session namespace and describe what happened."""
        self.steps += 1
        filename = f"<step {self.steps}>"
        stdout, stderr = step.Capture(self.output_limit), step.Capture(self.output_limit)
        saved_stdin = sys.stdin
        sys.stdin = io.StringIO()
        started = time.perf_counter()
        before = dict(self.namespace)
        self.tools.active = True
        self.deadline = time.monotonic() + timeout if timeout > 0 else 0.0
        if timeout > 0:
            self.host.arm(timeout)
        try:
            value, exc, values = step.run(
                code, filename, self.namespace, self.provided, stdout, stderr, value_limit, self.tools, inputs
            )
        finally:
            fired = bool(self.host.disarm())
            self.tools.active = False
            sys.stdin = saved_stdin
        error: dict[str, Any] | None = None
        timed_out = False
        if isinstance(exc, KeyboardInterrupt) and fired:
            timed_out = True
            error = step.plain_error(
                "Timeout",
                f"the step ran longer than the {timeout:g} s time limit and was stopped; "
                "variables from before this step are kept",
            )
        elif isinstance(exc, step.StepExpired):
            timed_out = True
            error = step.plain_error("Timeout", str(exc))
        elif exc is not None:
            error = step.describe(exc, filename, code, self.memory_limit)
        if timed_out:  # back to the variables from before the step (objects changed in place stay changed)
            self.namespace.clear()
            self.namespace.update(before)
        stdout.write(str(self.host.drain(1)))
        stderr.write(str(self.host.drain(2)))
        unsynced = str(self.host.sync())
        if unsynced and error is None:
            error = step.plain_error("OSError", f"a granted file could not be written back to the host: {unsynced}")
        return {"op": "result", **step.outcome(value, error, values, stdout, stderr, started), "timed_out": timed_out}


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
        result.update(error=step.plain_error("TypeError", f"the step's result cannot be sent: {exc}"))
    if not frame or len(frame) > wire.MAX_MESSAGE_BYTES:
        result.update(
            value=None, submitted=None, stdout=result["stdout"][: 1 << 20], stderr=result["stderr"][: 1 << 20]
        )
        if frame:
            result["error"] = step.plain_error(
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
    sys.path[:0] = [str(p) for p in init.get("sys_path") or []]  # package directories (packages=)
    with contextlib.suppress(OSError):  # the working directory mirrors the host's
        os.makedirs(str(init.get("cwd") or "/tmp"), exist_ok=True)
        os.chdir(str(init.get("cwd") or "/tmp"))
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
                    result = session.run(
                        str(message.get("code", "")),
                        timeout,
                        int(message.get("inputs") or 0),
                        int(message.get("value_limit") or 20_000),
                    )
                except KeyboardInterrupt:
                    result = {
                        "op": "result",
                        "stdout": "",
                        "stderr": "",
                        "value": None,
                        "submitted": None,
                        "stdout_truncated": 0,
                        "timed_out": True,
                        "error": step.plain_error(
                            "Timeout", f"the step ran longer than the {timeout:g} s time limit and was stopped"
                        ),
                    }
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
