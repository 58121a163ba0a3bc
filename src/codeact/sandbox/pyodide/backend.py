"""`PyodideInterpreter`: a sandbox session in Pyodide (CPython compiled to WebAssembly) under Deno.

Deno's permission flags are the boundary: the process may read the Pyodide files, its start-up
snapshot and the granted paths, write only the granted write paths, and reach the network only with
`network=True`; it cannot run programs, load native libraries or read host variables. Tools run on
the host and are called over Deno's stdin/stdout with the frames of `codeact.sandbox.wire`.

A step that overruns its time is interrupted inside Python and the variables survive; when it does
not stop (a long call into C code, or the interrupt caught and ignored) the Deno process is killed
and the next step starts a fresh session: its variables are lost. A step that runs out of memory
gets a MemoryError (WebAssembly memory cannot grow past `memory_limit`) and the session lives on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import IO, Any

from codeact.sandbox import bridge, wire
from codeact.sandbox.base import Sandbox
from codeact.sandbox.interpreter import (
    ExecutionResult,
    InterpreterError,
    LayerStatus,
)
from codeact.sandbox.pyodide import installation
from codeact.tools import Tool

log = logging.getLogger("codeact.sandbox")

_GRACE_S = 2.0
_START_TIMEOUT_S = 120.0
_EOF = object()


class PyodideInterpreter(Sandbox):
    """A sandboxed Python session in Pyodide under Deno: the same contract as the native sandbox.

    Third-party libraries with native code (numpy, pandas) are not available offline. `preload`
    names standard-library modules to import at start. Variables are lost when a step has to be
    killed (see the module docstring); `reset()` forgets them on purpose, keeping the process warm.
    """

    backend = "pyodide"

    def __init__(
        self,
        tools: Sequence[Any] = (),
        *,
        backend: str = "pyodide",
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
        max_file_size: int | str = "256MB",
        tmp_size: int | str = "256MB",
        **unsupported: Any,
    ) -> None:
        for name in unsupported:
            log.info("the pyodide sandbox ignores the option %s", name)
        self.read_paths = [_existing(p, "read") for p in read_paths]
        self.write_paths = [_existing(p, "write") for p in write_paths]
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.network = bool(network)
        if timeout is None or timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self.timeout = float(timeout)
        self.memory_limit = bridge.parse_size(memory_limit)
        self.preload = tuple(preload)
        self.strict = strict
        self.max_output = int(max_output)
        self.max_file_size = bridge.parse_size(max_file_size)
        self.tmp_size = bridge.parse_size(tmp_size)
        self.tools: dict[str, Tool] = {}
        self.submit_params: list[str] = list(submit_params or ["answer"])
        self.set_tools(tools)
        self.layers: list[LayerStatus] = []
        self.start_info: dict[str, Any] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._frames: queue.Queue[Any] = queue.Queue()
        self._stderr: collections.deque[bytes] = collections.deque(maxlen=64)
        self._lock = threading.RLock()
        self._readers: list[threading.Thread] = []
        self._tool_future: Future[Any] | None = None
        self._definitions_sent = False
        self._started_once = False
        self._lost_state = False

    # --- lifecycle -------------------------------------------------------------------------------
    def command(self, pyodide_dir: Path, snapshot: Path | None, deno: str) -> list[str]:
        """The Deno command line of a session: its permissions are the sandbox's boundary."""
        readable = [str(pyodide_dir), *self.read_paths, *self.write_paths]
        if snapshot is not None:
            readable.append(str(snapshot))
        command = [
            deno, "run", "--no-prompt", "--no-config", "--no-lock", "--no-remote", "--no-npm", "--quiet",
            "--allow-read=" + ",".join(readable),
            "--deny-run", "--deny-ffi", "--deny-env", "--deny-sys",
        ]
        if self.write_paths:
            command.append("--allow-write=" + ",".join(self.write_paths))
            nested = [p for p in self.read_paths if p not in self.write_paths and _inside_any(p, self.write_paths)]
            if nested:  # a read path inside a write path stays read-only
                command.append("--deny-write=" + ",".join(nested))
        command.append("--allow-net" if self.network else "--deny-net")
        if self.memory_limit:
            heap_mb = max(64, self.memory_limit >> 20)
            command.append(f"--v8-flags=--max-old-space-size={heap_mb}")
        command += [str(installation.RUNTIME_JS), str(pyodide_dir), str(snapshot) if snapshot else "-"]
        return command

    def start(self) -> None:
        with self._lock:
            if self._process is not None:
                return
            for path in self.read_paths:  # a grant may have been swapped for a link since it was checked
                _existing(path, "read")
            for path in self.write_paths:
                _existing(path, "write")
            deno, pyodide_dir = installation.find_deno(), installation.find_pyodide()
            if deno is None or pyodide_dir is None:
                raise InterpreterError(f"the Pyodide sandbox is not installed here; run: {installation.INSTALL_HINT}")
            snapshot: Path | None = installation.snapshot_path(pyodide_dir)
            if not snapshot.is_file():
                try:
                    snapshot = installation.build_snapshot(pyodide_dir, deno=deno)
                except (InterpreterError, OSError, subprocess.SubprocessError) as exc:
                    log.warning("pyodide sandbox: no start-up snapshot, starting cold: %s", exc)
                    snapshot = None
            requested = time.perf_counter()
            process = subprocess.Popen(
                self.command(pyodide_dir, snapshot, deno),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=installation.deno_environment(pyodide_dir), cwd=str(pyodide_dir),
                start_new_session=os.name == "posix",
            )
            self._process = process
            self._frames = queue.Queue()
            assert process.stdout is not None and process.stderr is not None
            self._readers = [
                threading.Thread(target=_read_frames, args=(process.stdout, self._frames), daemon=True,
                                 name="codeact-pyodide-out"),
                threading.Thread(target=_drain, args=(process.stderr, self._stderr), daemon=True,
                                 name="codeact-pyodide-err"),
            ]
            for reader in self._readers:
                reader.start()
            init = {
                "op": "init",
                "sources": installation.sources(),
                "env": self.env,
                "mounts": [{"at": p, "file": not os.path.isdir(p), "writable": p in self.write_paths}
                           for p in sorted({*self.read_paths, *self.write_paths}, key=len)],
                "memory_limit": self.memory_limit,
                "output_limit": self.max_output,
                "network": self.network,
                "max_file_size": self.max_file_size,
                "tmp_size": self.tmp_size,
            }
            try:
                self._send(init)
                ready = self._next(time.monotonic() + _START_TIMEOUT_S)
            except InterpreterError:
                self._kill()
                raise
            if not isinstance(ready, dict) or ready.get("op") != "ready":
                detail = self._stderr_text()
                self._kill()
                raise InterpreterError(f"the Pyodide sandbox failed to start: {ready!r} {detail}")
            self.start_info = {**ready, "start_s": time.perf_counter() - requested}
            self.layers = self._layers(ready, snapshot)
            missing = [layer for layer in self.layers if not layer.active]
            if self.strict and missing:
                self.close()
                raise InterpreterError("strict sandbox refused to start; missing: "
                                       + "; ".join(f"{m.name} ({m.detail})" for m in missing))
            self._definitions_sent = False
            self._started_once = True
            if self.preload:
                self._preload()

    def _preload(self) -> None:
        code = "\n".join(f"import {name}" for name in self.preload)
        result = self._run_step(code, self.timeout, None)
        if result.error is not None:
            log.warning("pyodide sandbox: could not preload %s: %s", ", ".join(self.preload), result.error)

    def _layers(self, ready: dict[str, Any], snapshot: Path | None) -> list[LayerStatus]:
        refused = ready.get("refused") or []
        return [
            LayerStatus("deno permissions", True, "reads only Pyodide and granted paths; no run, ffi, env or sys"),
            LayerStatus("network", not self.network, "denied" if not self.network else "allowed (network=True)"),
            LayerStatus("files", not refused, "granted paths mounted" if not refused else "; ".join(refused)),
            LayerStatus("memory limit", bool(self.memory_limit),
                        f"WebAssembly memory capped at {self.memory_limit >> 20} MB" if self.memory_limit else "none"),
            LayerStatus("time limit", True, "interrupt in Python, then kill of the Deno process"),
            LayerStatus("snapshot", bool(ready.get("snapshot")), str(snapshot) if ready.get("snapshot") else
                        "started cold", remedy="" if ready.get("snapshot") else "python -m codeact.sandbox.pyodide install"),
        ]

    def reset(self) -> None:
        """Forget the session's variables, /tmp files and newly imported modules, keeping its process
        warm for the next task (about 1 ms instead of a fresh start). Changes code made to modules
        imported before (monkeypatching) survive: reuse a session only between tasks you trust alike."""
        with self._lock:
            if self._process is None:
                return
            self._send({"op": "reset"})
            reply = self._next(time.monotonic() + 30)
            if not isinstance(reply, dict) or reply.get("op") != "reset":
                self._kill()
                raise InterpreterError("the Pyodide sandbox did not reset")
            self._definitions_sent = False

    def close(self) -> None:
        """End the session's Deno process; nothing is left running."""
        with self._lock:
            if self._process is None:
                return
            with contextlib.suppress(OSError, ValueError, InterpreterError):
                self._send({"op": "close"})
            self._kill(wait=0.5)

    def _kill(self, wait: float = 0.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert process.stdin is not None
            process.stdin.close()
        if wait:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=wait)
        if process.poll() is None:
            process.kill()
        process.wait()
        if sys.is_finalizing():
            return  # the reader threads may hold the streams' locks; the process is gone anyway
        for reader in self._readers:
            if reader is not threading.current_thread():
                reader.join(timeout=2)
        for stream in (process.stdout, process.stderr):
            with contextlib.suppress(OSError, ValueError):
                if stream is not None:
                    stream.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._kill()

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def processes(self) -> list[int]:
        """Host pids of this session's processes: its Deno process."""
        return [self._process.pid] if self.alive and self._process is not None else []

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # --- configuration ---------------------------------------------------------------------------------
    def _abort(self) -> None:
        """End a running step from another thread: kill the session, cancel a waiting async tool."""
        future = self._tool_future
        if future is not None:
            future.cancel()
        process = self._process
        if process is not None:
            with contextlib.suppress(OSError):
                process.kill()

    def _execute(self, code: str, timeout: float | None, loop: asyncio.AbstractEventLoop | None) -> ExecutionResult:
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, got {type(code).__name__}")
        limit = float(timeout) if timeout is not None else self.timeout
        with self._lock:
            notice = ""
            if self._process is None:
                if self._started_once:
                    notice = ("[sandbox] the session had ended and was restarted: variables from earlier "
                              "steps are lost\n")
                self.start()
            result = self._run_step(code, limit, loop)
            if notice:
                result.stderr = notice + result.stderr
            return result

    def _run_step(self, code: str, limit: float, loop: asyncio.AbstractEventLoop | None) -> ExecutionResult:
        message: dict[str, Any] = {"op": "exec", "code": code, "timeout": limit}
        if not self._definitions_sent:
            message["tools"] = bridge.definitions(self.tools)
            message["submit"] = self.submit_params
        started = time.perf_counter()
        stats = {"calls": 0, "tool_time": 0.0}
        finished = False
        try:
            try:
                self._send(message)
            except InterpreterError as exc:
                return self._session_lost(str(exc), started)
            deadline = time.monotonic() + limit + _GRACE_S
            while True:
                try:
                    reply = self._next(deadline)
                except InterpreterError as exc:
                    return self._session_lost(str(exc), started)
                if reply is None:
                    self._kill()
                    finished = True
                    return bridge.failure("Timeout", f"the step ran longer than the {limit:g} s time limit and did not "
                                    "stop when interrupted; the session was killed and its variables are lost",
                                    started, timed_out=True)
                if isinstance(reply, wire.WireError):
                    self._kill()
                    finished = True
                    return bridge.failure("SandboxProtocolError", f"the sandbox broke the wire protocol ({reply}); "
                                    "the session was ended", started)
                op = reply.get("op")
                if op == "call":
                    stats["calls"] += 1
                    t0 = time.perf_counter()
                    try:
                        response = bridge.serve_call(self.tools, reply, loop, self._track)
                    except (bridge.Malformed, wire.WireError) as exc:
                        self._kill()
                        finished = True
                        return bridge.failure("SandboxProtocolError", f"the sandbox sent a malformed tool call "
                                              f"({exc}); the session was ended", started)
                    spent = time.perf_counter() - t0
                    stats["tool_time"] += spent
                    deadline += spent
                    try:
                        self._send(response)
                    except InterpreterError as exc:
                        return self._session_lost(str(exc), started)
                    continue
                if op == "result":
                    finished = True
                    try:
                        result = bridge.parse_result(reply, started, stats["calls"], stats["tool_time"],
                                                     self.max_output)
                    except (bridge.Malformed, wire.WireError) as exc:
                        self._kill()
                        return bridge.failure("SandboxProtocolError", f"the sandbox broke the wire protocol "
                                              f"({exc}); the session was ended", started)
                    self._definitions_sent = True
                    return result
                self._kill()
                finished = True
                return bridge.failure("SandboxProtocolError", f"unexpected message {op!r} from the sandbox; the "
                                "session was ended", started)
        finally:
            if not finished and self._process is not None:
                self._kill()  # interrupted on the host (e.g. KeyboardInterrupt): the step's state is unknown

    def _session_lost(self, why: str, started: float) -> ExecutionResult:
        detail = self._stderr_text()
        memory = "out of memory" in detail.lower() or "heap limit" in detail.lower()
        self._kill()
        if memory:
            return bridge.failure("MemoryLimit", f"the sandbox ran out of its {self.memory_limit >> 20} MB memory limit "
                            "and was killed; the next step starts a new session and earlier variables are lost",
                            started)
        return bridge.failure("SandboxCrashed", f"{why}; the next step starts a new session and earlier variables "
                        "are lost", started)

    # --- frames ---------------------------------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        process = self._process
        if process is None or process.stdin is None:
            raise InterpreterError("the sandbox session is not running")
        try:
            process.stdin.write(wire.dumps(message))
            process.stdin.flush()
        except (OSError, ValueError) as exc:
            raise InterpreterError(f"the sandbox session is gone ({exc})") from None

    def _next(self, deadline: float) -> Any:
        """The next frame from the sandbox, None when `deadline` passes, or a WireError."""
        try:
            item = self._frames.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None
        if item is _EOF:
            time.sleep(0.05)  # let the stderr reader catch the last words
            raise InterpreterError("the sandbox process ended unexpectedly" + self._stderr_text())
        return item

    def _stderr_text(self) -> str:
        text = b"".join(self._stderr).decode(errors="replace").strip()
        return f" ({text[-600:]})" if text else ""


def _read_frames(stream: IO[bytes], frames: queue.Queue[Any]) -> None:
    """Parse frames from the sandbox's stdout; a broken frame ends the stream."""
    try:
        while True:
            header = stream.read(4)
            if len(header) < 4:
                break
            length = int.from_bytes(header, "big")
            if length > wire.MAX_MESSAGE_BYTES:
                frames.put(wire.WireError(f"message of {length} bytes exceeds the limit of "
                                          f"{wire.MAX_MESSAGE_BYTES} bytes"))
                return
            body = stream.read(length)
            if len(body) < length:
                break
            try:
                frames.put(wire.loads(body))
            except wire.WireError as exc:
                frames.put(exc)
                return
    except (OSError, ValueError):
        pass
    frames.put(_EOF)


def _drain(stream: IO[bytes], keep: collections.deque[bytes]) -> None:
    with contextlib.suppress(OSError, ValueError):
        while chunk := stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096):
            keep.append(chunk)


def _inside_any(path: str, parents: Sequence[str]) -> bool:
    return any(path == p or path.startswith(p.rstrip(os.sep) + os.sep) for p in parents)


def _existing(path: str | os.PathLike[str], kind: str) -> str:
    text = bridge.granted_path(path, kind)
    if "," in text:
        raise ValueError(f"{kind} path {text} contains a comma, which Deno's permission flags cannot express")
    return text
