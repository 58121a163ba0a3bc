"""`PyodideBackend`: a sandbox session in Pyodide (CPython compiled to WebAssembly) under Deno.

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
from pathlib import Path
from typing import IO, Any

from codeact.sandbox import packages, wire
from codeact.sandbox.driver import RESTARTED, StepDriver, StepLost, StepRequest
from codeact.sandbox.interpreter import ExecutionResult, Failure, InterpreterError, LayerStatus
from codeact.sandbox.network import Rule
from codeact.sandbox.options import SandboxOptions, granted_path
from codeact.sandbox.pyodide import installation

log = logging.getLogger("codeact.sandbox")

_GRACE_S = 2.0
_START_TIMEOUT_S = 120.0
_EOF = object()


class PyodideBackend:
    """A sandboxed Python session in Pyodide under Deno: the same contract as the native sandbox.

    Third-party libraries with native code (numpy, pandas) are not available offline. `preload`
    names standard-library modules to import at start. Variables are lost when a step has to be
    killed (see the module docstring); `reset()` forgets them on purpose, keeping the process warm.
    """

    name = "pyodide"

    def __init__(self, options: SandboxOptions) -> None:
        self.options = options
        self.layers: list[LayerStatus] = []
        self.generation = 0
        self._lock = threading.RLock()
        for path in [*self.options.read_paths, *self.options.write_paths]:
            if "," in path:
                raise ValueError(f"path {path} contains a comma, which Deno's permission flags cannot express")
        self.cwd = os.getcwd()
        self._package_dirs: list[str] = []
        self.start_info: dict[str, Any] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._frames: queue.Queue[Any] = queue.Queue()
        self._stderr: collections.deque[bytes] = collections.deque(maxlen=64)
        self._readers: list[threading.Thread] = []
        self._send_lock = threading.Lock()
        self._started_once = False

    # --- lifecycle -------------------------------------------------------------------------------
    def command(self, pyodide_dir: Path, snapshot: Path | None, deno: str) -> list[str]:
        """The Deno command line of a session: its permissions are the sandbox's boundary."""
        readable = [str(pyodide_dir), *self.options.read_paths, *self.options.write_paths, *self._package_dirs]
        if snapshot is not None:
            readable.append(str(snapshot))
        command = [
            deno,
            *installation.DENO_RUN,
            "--allow-read=" + ",".join(readable),
            "--deny-run",
            "--deny-ffi",
            "--deny-env",
            "--deny-sys",
        ]
        if self.options.write_paths:
            command.append("--allow-write=" + ",".join(self.options.write_paths))
            nested = [
                p
                for p in self.options.read_paths
                if p not in self.options.write_paths and _inside_any(p, self.options.write_paths)
            ]
            if nested:  # a read path inside a write path stays read-only
                command.append("--deny-write=" + ",".join(nested))
        if self.options.hosts:
            raise InterpreterError("hosts= needs the native backend: Deno resolves names itself")
        command.append(_deno_net(self.options.network))
        if self.options.memory_limit:
            heap_mb = max(64, self.options.memory_limit >> 20)
            command.append(f"--v8-flags=--max-old-space-size={heap_mb}")
        command += [str(installation.RUNTIME_JS), str(pyodide_dir), str(snapshot) if snapshot else "-"]
        return command

    def start(self) -> None:
        with self._lock:
            if self._process is not None:
                return
            for path in self.options.read_paths:  # a grant may have been swapped for a link since it was checked
                granted_path(path, "read")
            for path in self.options.write_paths:
                granted_path(path, "write")
            if self.options.packages:  # pure-Python packages only: WebAssembly loads no native extension
                self._package_dirs = [str(packages.install(self.options.packages))]
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
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=installation.deno_environment(pyodide_dir),
                cwd=str(pyodide_dir),
                start_new_session=os.name == "posix",
            )
            self._process = process
            self._frames = queue.Queue()
            assert process.stdout is not None and process.stderr is not None
            self._readers = [
                threading.Thread(
                    target=_read_frames, args=(process.stdout, self._frames), daemon=True, name="codeact-pyodide-out"
                ),
                threading.Thread(
                    target=_drain, args=(process.stderr, self._stderr), daemon=True, name="codeact-pyodide-err"
                ),
            ]
            for reader in self._readers:
                reader.start()
            init = {
                "op": "init",
                "sources": installation.sources(),
                "env": self.options.env,
                "mounts": [
                    {"at": p, "file": not os.path.isdir(p), "writable": p in self.options.write_paths}
                    for p in sorted({*self.options.read_paths, *self.options.write_paths, *self._package_dirs}, key=len)
                ],
                "sys_path": self._package_dirs,
                "memory_limit": self.options.memory_limit,
                "output_limit": self.options.max_output,
                "network": self.options.network,
                "max_file_size": self.options.max_file_size,
                "tmp_size": self.options.tmp_size,
                "cwd": self.cwd,
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
            if self.options.strict and missing:
                self.close()
                raise InterpreterError(
                    "strict sandbox refused to start; missing: " + "; ".join(f"{m.name} ({m.detail})" for m in missing)
                )
            self.generation += 1
            self._started_once = True
            if self.options.preload:
                self._preload()

    def _preload(self) -> None:
        code = "\n".join(f"import {name}" for name in self.options.preload)
        result = StepDriver(self).run(self, StepRequest(code=code, timeout=self.options.timeout, tools={}))
        if result.error is not None:
            log.warning("pyodide sandbox: could not preload %s: %s", ", ".join(self.options.preload), result.error)

    def _layers(self, ready: dict[str, Any], snapshot: Path | None) -> list[LayerStatus]:
        refused = ready.get("refused") or []
        return [
            LayerStatus("deno permissions", True, "reads only Pyodide and granted paths; no run, ffi, env or sys"),
            LayerStatus(
                "network",
                self.options.network is not True,
                "denied"
                if not self.options.network
                else "allowed (network=True)"
                if self.options.network is True
                else "only " + ", ".join(self.options.network) + " (Deno --allow-net)",
            ),
            LayerStatus("files", not refused, "granted paths mounted" if not refused else "; ".join(refused)),
            LayerStatus(
                "memory limit",
                bool(self.options.memory_limit),
                f"WebAssembly memory capped at {self.options.memory_limit >> 20} MB"
                if self.options.memory_limit
                else "none",
            ),
            LayerStatus("time limit", True, "interrupt in Python, then kill of the Deno process"),
            LayerStatus(
                "snapshot",
                bool(ready.get("snapshot")),
                str(snapshot) if ready.get("snapshot") else "started cold",
                remedy="" if ready.get("snapshot") else "python -m codeact.sandbox.pyodide install",
            ),
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
            self.generation += 1

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

    # --- steps: the driver's channel ------------------------------------------------------------------
    def kill_step(self) -> None:
        """End a running step from another thread: kill the session."""
        process = self._process
        if process is not None:
            with contextlib.suppress(OSError):
                process.kill()

    def begin_step(self) -> tuple[PyodideBackend, str]:
        notice = ""
        if self._process is None:
            if self._started_once:
                notice = RESTARTED
            self.start()
        return self, notice

    def end_step(self, channel: Any, result: ExecutionResult) -> None:
        """Nothing to tidy: the session is its own channel."""

    def fork(self) -> PyodideBackend:
        raise InterpreterError(
            "the pyodide backend cannot fork a session; use the native backend (backend='process') for Sandbox.fork()"
        )

    def send(self, message: dict[str, Any]) -> None:
        try:
            self._send(message)
        except InterpreterError as exc:
            raise StepLost(*self._lost(str(exc))) from None

    def receive(self, deadline: float) -> dict[str, Any] | None:
        try:
            frame = self._next(deadline)
        except InterpreterError as exc:
            raise StepLost(*self._lost(str(exc))) from None
        if isinstance(frame, wire.WireError):
            raise frame
        return frame

    def end(self) -> None:
        self._kill()

    def _lost(self, why: str) -> tuple[Failure, str]:
        detail = self._stderr_text()
        memory = "out of memory" in detail.lower() or "heap limit" in detail.lower()
        self._kill()
        if memory:
            return Failure.MEMORY_LIMIT, (
                f"the sandbox ran out of its {self.options.memory_limit >> 20} MB memory limit and was "
                "killed; the next step starts a new session and earlier variables are lost"
            )
        return Failure.CRASHED, f"{why}; the next step starts a new session and earlier variables are lost"

    # --- frames ---------------------------------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        process = self._process
        if process is None or process.stdin is None:
            raise InterpreterError("the sandbox session is not running")
        try:
            with self._send_lock:
                process.stdin.write(wire.dumps(message, wire.MAX_MESSAGE_BYTES))
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
            try:
                length = wire.frame_length(header)
            except wire.WireError as exc:
                frames.put(exc)
                return
            body = stream.read(length)
            if len(body) < length:
                break
            try:
                frames.put(wire.loads(body, wire.MAX_VALUES))
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


def _deno_net(network: bool | tuple[str, ...]) -> str:
    """Deno's permission for `network`: hosts and ports map to --allow-net; Deno has no wildcards,
    no address ranges and no proxy, so those entries are refused here rather than widened."""
    if network is True:
        return "--allow-net"
    if not network:
        return "--deny-net"
    allowed = []
    for entry in network:
        rule = Rule.parse(entry)
        if rule.name.startswith("*") or (rule.network is not None and rule.network.num_addresses > 1):
            raise InterpreterError(
                f"network entry {entry!r}: the Pyodide backend (Deno --allow-net) takes exact "
                "hosts and addresses only; use the native backend for wildcards and ranges"
            )
        host = rule.name or str(rule.network.network_address if rule.network else "")
        host = f"[{host}]" if ":" in host else host
        allowed += [f"{host}:{port}" for port in rule.ports] if rule.ports else [host]
    return "--allow-net=" + ",".join(allowed)
