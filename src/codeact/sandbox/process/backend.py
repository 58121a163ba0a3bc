"""The host side of the native sandbox: a shared zygote per library set, and `ProcessInterpreter`."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from codeact.sandbox import bridge, wire
from codeact.sandbox.base import Sandbox
from codeact.sandbox.interpreter import (
    ExecutionResult,
    InterpreterError,
    LayerStatus,
)
from codeact.sandbox.process.isolation import SessionConfig
from codeact.tools import Tool

log = logging.getLogger("codeact.sandbox")

_BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1])['sys_path']; "
    "from codeact.sandbox.process.zygote import main; main()"
)
_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_GRACE_S = 5.0


class Zygote:
    """A running zygote process; `spawn` forks a new session from it."""

    def __init__(self, preload: tuple[str, ...]) -> None:
        self.preload = preload
        self.lock = threading.Lock()
        self.process: subprocess.Popen[bytes] | None = None
        self.control: socket.socket | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> None:
        host, child = socket.socketpair()
        config = {"sys_path": [p for p in sys.path if p], "control_fd": child.fileno(),
                  "preload": list(self.preload), "thread_env": _THREAD_ENV}
        errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed below once the zygote answered
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-c", _BOOT, json.dumps(config)],
                env={}, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                pass_fds=[child.fileno()], start_new_session=True,
            )
        finally:
            child.close()
        self.control = host
        ready, _, _ = select.select([host], [], [], 60)
        try:
            if not ready:
                raise EOFError("no answer within 60 s")
            self.info = wire.recv(host)
        except (EOFError, OSError, wire.WireError) as exc:
            errors.seek(0)
            detail = errors.read().decode(errors="replace")[-2000:]
            self.close()
            raise InterpreterError(f"the sandbox zygote failed to start ({exc}): {detail}") from None
        finally:
            errors.close()
        for module, why in self.info.get("failed", {}).items():
            log.warning("sandbox: could not preload %s: %s", module, why)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self, config: SessionConfig) -> tuple[socket.socket, int, list[str]]:
        with self.lock:
            if not self.alive:
                self.start()
            assert self.control is not None
            try:
                wire.send(self.control, {"op": "spawn", "config": config.to_dict()})
                message, fds = wire.recv_with_fds(self.control)
            except (EOFError, OSError, wire.WireError) as exc:
                self.close()
                raise InterpreterError(f"the sandbox zygote stopped answering: {exc}") from None
        if message.get("op") != "spawned" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise InterpreterError(f"unexpected answer from the sandbox zygote: {message}")
        return socket.socket(fileno=fds[0]), int(message["pid"]), list(message.get("cgroup", []))

    def close(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


_zygotes: dict[tuple[str, ...], Zygote] = {}
_warned: set[str] = set()
_zygotes_lock = threading.Lock()


def zygote_for(preload: Sequence[str]) -> Zygote:
    """The shared zygote that has `preload` imported, started on first use."""
    key = tuple(sorted(set(preload)))
    with _zygotes_lock:
        zygote = _zygotes.get(key)
        if zygote is None:
            zygote = _zygotes[key] = Zygote(key)
    with zygote.lock:
        if not zygote.alive:
            zygote.start()
    return zygote


@atexit.register
def _close_zygotes() -> None:
    with _zygotes_lock:
        for zygote in _zygotes.values():
            zygote.close()
        _zygotes.clear()


def import_paths() -> list[str]:
    """The host's import path minus the entry Python added for the main script or the working
    directory: that is the user's project, which may hold secrets, not an installed library."""
    paths = [p for p in sys.path if p and os.path.isabs(p)]
    if sys.path and sys.path[0]:
        first = os.path.realpath(sys.path[0])
        prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
        if not any(first == p or first.startswith(p + os.sep) for p in prefixes):
            paths = [p for p in paths if os.path.realpath(p) != first]
    return paths


class ProcessInterpreter(Sandbox):
    """A native sandboxed session: a process forked from the zygote into its own namespaces.

    Each step runs in a fork of the session: when it crashes, times out or runs out of memory, the
    variables from before it survive (`rollback=False` saves the fork per step and forbids fork to
    the code, at the price of losing the variables on such a step).
    """

    backend = "process"

    def __init__(
        self,
        tools: Sequence[Any] = (),
        *,
        backend: str = "process",
        read_paths: Sequence[str | os.PathLike[str]] = (),
        write_paths: Sequence[str | os.PathLike[str]] = (),
        env: dict[str, str] | None = None,
        network: bool = False,
        timeout: float = 30.0,
        memory_limit: int | str | None = "1GB",
        preload: Sequence[str] = (),
        strict: bool = False,
        submit_params: Sequence[str] | None = None,
        max_output: int = 1 << 20,
        max_processes: int = 64,
        max_file_size: int | str = "256MB",
        tmp_size: int | str = "256MB",
        rollback: bool = True,
    ) -> None:
        self.config = SessionConfig(
            read_paths=[bridge.granted_path(p, "read") for p in read_paths],
            write_paths=[bridge.granted_path(p, "write") for p in write_paths],
            env={str(k): str(v) for k, v in (env or {}).items()},
            network=network,
            memory_limit=bridge.parse_size(memory_limit),
            tmp_size=bridge.parse_size(tmp_size),
            max_file_size=bridge.parse_size(max_file_size),
            pids_max=max_processes,
            output_limit=max_output,
            rollback=rollback,
        )
        self.config.python_paths = import_paths()
        if timeout is None or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.timeout = float(timeout)
        self.preload = tuple(preload)
        self.strict = strict
        self.tools: dict[str, Tool] = {}
        self.submit_params: list[str] = list(submit_params or ["answer"])
        self._definitions_sent = False
        self.set_tools(tools)
        self.layers: list[LayerStatus] = []
        self._control: socket.socket | None = None
        self._pidfds: list[int] = []
        self._cgroup: list[str] = []
        self._root_pid = 0
        self._tool_future: Future[Any] | None = None
        self._aborted = False
        self._lock = threading.RLock()
        self._restarted = False

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._control is not None:
                return
            zygote = zygote_for(self.preload)
            requested = time.monotonic()
            control, pid, cgroup = zygote.spawn(self.config)
            self._cgroup = cgroup
            self._root_pid = pid
            self._pidfds = [_pidfd(pid)]
            try:
                hello = self._await_hello(control)
            except BaseException:
                control.close()
                self._kill(self._pidfds)
                self._pidfds = []
                raise
            self._control = control
            self.layers = [LayerStatus(**layer) for layer in hello["layers"]]
            self.start_marks = [("requested", requested)] + [
                (str(stage), float(t)) for stage, t in hello.get("marks", [])] + [("hello received", time.monotonic())]
            waived = {"net namespace"} if self.config.network else set()
            missing = [layer for layer in self.layers if not layer.active and layer.name not in waived]
            for layer in missing:
                if layer.name not in _warned:  # once per process, not per session
                    _warned.add(layer.name)
                    log.warning("sandbox layer %s is not active: %s", layer.name, layer.detail)
            if self.strict and missing:
                self.close()
                raise InterpreterError(
                    "strict sandbox refused to start; missing layers: "
                    + "; ".join(f"{m.name} ({m.detail}){' - ' + m.remedy if m.remedy else ''}" for m in missing)
                )
            self._definitions_sent = False
            self._aborted = False

    def _await_hello(self, control: socket.socket) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        hello: dict[str, Any] | None = None
        keeper = None
        while hello is None or keeper is None:
            ready, _, _ = select.select([control], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise InterpreterError("the sandbox session did not start within 30 s")
            try:
                message = wire.recv(control, 1 << 20)
            except (EOFError, OSError, wire.WireError) as exc:
                raise InterpreterError(f"the sandbox session failed to start: {exc}") from None
            if message["op"] == "keeper":
                keeper = int(message["pid"])
                self._pidfds.insert(0, _pidfd(keeper))
            elif message["op"] == "hello":
                hello = message
            elif message["op"] == "error":
                raise InterpreterError(f"the sandbox session failed to start: {message.get('message')}")
        return hello

    def close(self) -> None:
        """Kill the session and everything in it; leaves no process behind."""
        with self._lock:
            if self._control is not None:
                self._control.close()
                self._control = None
            self._kill(self._pidfds)
            self._pidfds = []

    @staticmethod
    def _kill(pidfds: list[int]) -> None:
        for fd in pidfds:  # keeper first: its death takes the whole pid namespace
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            with contextlib.suppress(OSError):
                select.select([fd], [], [], 5)
            os.close(fd)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    @property
    def alive(self) -> bool:
        return self._control is not None

    def processes(self) -> list[int]:
        """Host pids of every live process of this session, its root first."""
        if self._control is None:
            return []
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(entry))
        found, todo = [], [self._root_pid]
        while todo:
            pid = todo.pop(0)
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    # --- configuration -----------------------------------------------------------------------
    def _abort(self) -> None:
        """End a running step from another thread: kill the session, cancel a waiting async tool."""
        self._aborted = True  # whatever the session wrote last is not to be read: start afresh
        future = self._tool_future
        if future is not None:
            future.cancel()
        for fd in list(self._pidfds):
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)

    def _execute(self, code: str, timeout: float | None, loop: asyncio.AbstractEventLoop | None) -> ExecutionResult:
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, got {type(code).__name__}")
        limit = float(timeout) if timeout is not None else self.timeout
        with self._lock:
            notice = ""
            if self._aborted:
                self.close()
            if self._control is None:
                if self._restarted or self._pidfds:
                    notice = "[sandbox] the session had ended and was restarted: variables from earlier steps are lost\n"
                self._pidfds = []
                self.start()
            self._restarted = True
            result = self._run_step(code, limit, loop)
            if notice:
                result.stderr = notice + result.stderr
            return result

    def _run_step(self, code: str, limit: float, loop: asyncio.AbstractEventLoop | None) -> ExecutionResult:
        assert self._control is not None
        ours, theirs = socket.socketpair()
        message: dict[str, Any] = {"op": "exec", "code": code, "timeout": limit}
        if not self._definitions_sent:
            message["tools"] = bridge.definitions(self.tools)
            message["submit"] = self.submit_params
        oom_before = self._oom_kills()
        started = time.perf_counter()
        stats = {"calls": 0, "tool_time": 0.0}
        finished = False
        try:
            try:
                wire.send_with_fds(self._control, message, [theirs.fileno()])
            except OSError as exc:
                return self._session_lost(f"the sandbox session is gone ({exc})", started)
            finally:
                theirs.close()
            deadline = time.monotonic() + limit + _GRACE_S
            channel_open = True
            while True:
                watch = [self._control] + ([ours] if channel_open else [])
                wait = deadline - time.monotonic()
                ready, _, _ = select.select(watch, [], [], wait) if wait > 0 else ([], [], [])
                if not ready:
                    raise TimeoutError
                if ours in ready:
                    try:
                        reply = _recv_by(ours, deadline)
                    except (EOFError, ConnectionResetError):  # the step's process is gone: its report follows
                        channel_open = False
                        continue
                    if reply["op"] == "call":
                        stats["calls"] += 1
                        t0 = time.perf_counter()
                        response = bridge.serve_call(self.tools, reply, loop, self._track)
                        stats["tool_time"] += time.perf_counter() - t0
                        _send_by(ours, response, deadline)
                        continue
                    if reply["op"] != "result":
                        raise bridge.Malformed(f"unexpected message {reply['op']!r}")
                    result = bridge.parse_result(reply, started, stats["calls"], stats["tool_time"],
                                                 self.config.output_limit)
                    finished = True
                    self._definitions_sent = True
                    return result
                try:
                    report = _recv_by(self._control, deadline, 1 << 16)
                except EOFError:
                    return self._session_lost("the sandbox session ended unexpectedly", started)
                result = self._step_failed(report, limit, started, oom_before)
                finished = True
                return result
        except TimeoutError:
            self.close()
            return bridge.failure("Timeout", f"the step ran longer than the {limit:g} s time limit and the "
                                 "session was killed; variables from earlier steps are lost", started,
                                 timed_out=True)
        except (bridge.Malformed, wire.WireError, OSError) as exc:
            self.close()
            return bridge.failure("SandboxProtocolError", f"the sandbox broke the wire protocol ({exc}); the "
                                 "session was ended and the next step starts a new one", started)
        finally:
            ours.close()
            if not finished and self._control is not None:
                self.close()  # interrupted (e.g. KeyboardInterrupt): the step's state is unknown

    def _step_failed(self, report: dict[str, Any], limit: float, started: float, oom_before: int) -> ExecutionResult:
        """The holder's report of a step that did not complete."""
        kind, status = report.get("op") == "failed" and report.get("kind"), report.get("status", 0)
        if kind not in ("timeout", "died") or not isinstance(status, int) or not 0 <= status < 1 << 16:
            raise bridge.Malformed(f"unexpected report from the session: {str(report)[:200]}")
        self._definitions_sent = False
        kept = ("variables from before this step are kept" if report.get("state") == "kept"
                else "the session was reset and earlier variables are lost")
        if kind == "timeout":
            return bridge.failure("Timeout", f"the step ran longer than the {limit:g} s time limit and was "
                                 f"stopped; {kept}", started, timed_out=True)
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            if sig == signal.SIGKILL and self._oom_kills() > oom_before:
                mb = self.config.memory_limit >> 20
                return bridge.failure("MemoryLimit", f"the step used more than the {mb} MB memory limit and was "
                                     f"killed; {kept}", started)
            if sig == signal.SIGXCPU:
                return bridge.failure("Timeout", f"the step used more than its CPU time limit ({limit:g} s) and "
                                     f"was stopped; {kept}", started, timed_out=True)
            if sig == signal.SIGXFSZ:
                return bridge.failure("FileSizeLimit", f"the step wrote a file larger than the "
                                     f"{self.config.max_file_size >> 20} MB limit; {kept}", started)
            return bridge.failure("SandboxCrashed", f"the interpreter was killed by {name}; {kept}", started)
        code = os.waitstatus_to_exitcode(status) if status else 0
        return bridge.failure("SandboxCrashed", f"the code ended the interpreter (exit status {code}); {kept}", started)

    def _session_lost(self, why: str, started: float) -> ExecutionResult:
        self.close()
        return bridge.failure("SandboxCrashed", f"{why}; the next step starts a new session and earlier "
                             "variables are lost", started)

    def _oom_kills(self) -> int:
        if not self._cgroup:
            return 0
        for name, key in (("memory.oom_control", "oom_kill"), ("memory.events", "oom_kill")):
            with contextlib.suppress(OSError), open(os.path.join(self._cgroup[0], name)) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2 and parts[0] == key:
                        return int(parts[1])
        return 0


def _send_by(sock: socket.socket, message: dict[str, Any], deadline: float) -> None:
    """Send one frame, or TimeoutError when the sandbox does not take it by `deadline`."""
    sock.settimeout(max(0.001, deadline - time.monotonic()))
    try:
        wire.send(sock, message)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the step ended without reading its reply; its own report follows
    finally:
        sock.settimeout(None)


def _recv_by(sock: socket.socket, deadline: float, max_bytes: int = wire.MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """One frame, or TimeoutError when it has not fully arrived by `deadline`."""
    sock.settimeout(max(0.001, deadline - time.monotonic()))
    try:
        return wire.recv(sock, max_bytes, wire.MAX_VALUES)
    finally:
        sock.settimeout(None)


def _pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except OSError as exc:
        raise InterpreterError(f"the sandbox session process {pid} vanished at start: {exc}") from None
