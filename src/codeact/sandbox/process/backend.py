"""The host side of the native sandbox: a shared zygote per library set, and `ProcessBackend`."""

from __future__ import annotations

import atexit
import contextlib
import functools
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
from typing import Any

from codeact.sandbox import bridge, packages, wire
from codeact.sandbox.driver import RESTARTED, Channel, StepLost
from codeact.sandbox.interpreter import ExecutionResult, Failure, InterpreterError, LayerStatus
from codeact.sandbox.network import NetworkPolicy, Proxy
from codeact.sandbox.options import PACKAGE_DIR, SandboxOptions, granted_path, python_installation
from codeact.sandbox.process import cgroup
from codeact.sandbox.process.isolation import PROXY_PORT, SessionConfig

log = logging.getLogger("codeact.sandbox")

# The zygote loads codeact's in-sandbox modules without running the packages' __init__ files, so it
# carries the standard library, the preloaded libraries and nothing of codeact's host side.
_BOOT = (
    "import json, sys, types; c = json.loads(sys.argv[1]); sys.path[:] = c['sys_path']\n"
    "for name, path in c['packages']:\n"
    "    m = sys.modules[name] = types.ModuleType(name); m.__path__ = [path]\n"
    "from codeact.sandbox.process.zygote import main; main()"
)
_SEND_FLOOR_S = 5.0  # how long a frame may take to be read even when the step's time is up (after an approval)
_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class Zygote:
    """A running zygote process; `spawn` forks a new session from it."""

    def __init__(self, preload: tuple[str, ...], paths: tuple[str, ...] = ()) -> None:
        self.preload = preload
        self.paths = paths  # package directories, first on its import path
        self.lock = threading.Lock()
        self.process: subprocess.Popen[bytes] | None = None
        self.control: socket.socket | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> None:
        host, child = socket.socketpair()
        here = os.path.dirname(os.path.abspath(__file__))
        bare = [
            ["codeact", os.path.dirname(os.path.dirname(here))],
            ["codeact.sandbox", os.path.dirname(here)],
            ["codeact.sandbox.process", here],
        ]
        config = {
            "sys_path": [*self.paths, *(p for p in sys.path if p)],
            "control_fd": child.fileno(),
            "packages": bare,
            "preload": list(self.preload),
            "thread_env": _THREAD_ENV,
        }
        errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed below once the zygote answered
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-c", _BOOT, json.dumps(config)],
                env={},
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                pass_fds=[child.fileno()],
                start_new_session=True,
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


def zygote_for(preload: Sequence[str], paths: Sequence[str] = ()) -> Zygote:
    """The shared zygote that has `preload` imported (from `paths` first), started on first use."""
    key = (*sorted(set(preload)), "\0", *paths)
    with _zygotes_lock:
        zygote = _zygotes.get(key)
        if zygote is None:
            zygote = _zygotes[key] = Zygote(tuple(sorted(set(preload))), tuple(paths))
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


class _StepChannel:
    """One step of a native session: the step's socket, and the session's control socket on which the
    holder reports a step that died or overran its time.

    A step gets a socket of its own, so that nothing a step left unread reaches the next one. Without
    rollback one worker serves every step, and a step whose only traffic was its command and its
    result leaves nothing behind: its socket is `kept` for the next step (a socketpair and the passing
    of a descriptor cost about a fifth of a short round trip)."""

    def __init__(self, backend: ProcessBackend, control: socket.socket, kept: socket.socket | None) -> None:
        self.backend = backend
        self.control = control
        self.ours, self.theirs = (kept, None) if kept is not None else socket.socketpair()
        self.frames = wire.FrameBuffer()
        self.open = True
        self.answered = False  # the step's result came
        self.traffic = 0  # frames sent after the command and received before the result
        self.sent_exec = False
        self.limit = 0.0
        self.send_by = 0.0  # the end of the step's time: a frame it has not read by then is given up
        self.gone = ""
        backend._steps += 1
        self.number = backend._steps

    def send(self, message: dict[str, Any]) -> None:
        try:
            if not self.sent_exec:
                self.sent_exec = True
                self.limit = float(message.get("timeout") or 0)
                self.send_by = time.monotonic() + (self.limit or 30.0)
                if self.theirs is None:
                    wire.send(self.control, {**message, "step": self.number})
                    return
                try:
                    wire.send_with_fds(self.control, {**message, "step": self.number}, [self.theirs.fileno()])
                finally:
                    self.theirs.close()
                return
            self.traffic += 1
            frame = wire.dumps(message, wire.MAX_MESSAGE_BYTES)
            try:
                sent = self.ours.send(frame, socket.MSG_DONTWAIT)  # a reply usually fits the socket's buffer
            except BlockingIOError:
                sent = 0
            if sent < len(frame):
                self.ours.settimeout(max(_SEND_FLOOR_S, self.send_by - time.monotonic()))
                try:
                    self.ours.sendall(memoryview(frame)[sent:])
                finally:
                    with contextlib.suppress(OSError):
                        self.ours.settimeout(None)
        except (BrokenPipeError, ConnectionResetError):
            if message.get("op") not in ("return", "raise", "expired"):  # a reply the step no longer waits for
                raise self.lost("the sandbox session is gone") from None
        except TimeoutError:
            raise self.lost("the step stopped reading what the host sent it") from None
        except OSError as exc:
            raise self.lost(f"the sandbox session is gone ({exc})") from None

    def receive(self, deadline: float) -> dict[str, Any] | None:
        while True:
            if self.gone:  # a reply could not be delivered and the session was ended
                raise self.lost(self.gone)
            frame = self.frames.next()
            if frame is not None:
                if frame.get("op") == "result":
                    self.answered = True
                else:
                    self.traffic += 1
                return frame
            watch = [self.control] + ([self.ours] if self.open else [])
            wait = deadline - time.monotonic()
            try:
                ready, _, _ = select.select(watch, [], [], wait) if wait > 0 else ([], [], [])
            except (ValueError, OSError):  # a socket of the session was closed under the step (Sandbox.close)
                raise self.lost("the sandbox session was closed") from None
            if not ready:
                return None  # also when a frame began and did not finish in time
            if self.ours in ready:
                with contextlib.suppress(OSError):
                    if self.frames.fill(self.ours):
                        continue
                self.open = False  # the step's process is gone: its report follows
                continue
            try:
                report = _recv_by(self.control, deadline, 1 << 16)
            except TimeoutError:
                return None
            except (EOFError, OSError):
                raise self.lost("the sandbox session ended unexpectedly") from None
            if report.get("step") not in (self.number, None):
                continue  # about an earlier step that had already answered: the state is rolled back
            self.backend._step_failed(report, self.limit)

    def end(self) -> None:
        self.backend.close()

    def lost(self, why: str) -> StepLost:
        """End the session (its sockets close); the step's next `receive` reports `why` as well."""
        family = self.backend._family
        if family is not None and not family.alive:  # closing a session ends its forks
            why = "the session it was forked from was closed, which ends its forks"
        self.gone = why
        self.backend.close()
        return StepLost(Failure.CRASHED, f"{why}; the next step starts a new session and earlier variables are lost")

    def reusable(self) -> bool:
        """Whether the next step may use this step's socket: nothing but its command and its result
        went through it, completely."""
        return self.answered and not self.traffic and self.open and not self.gone and not self.frames.data

    def close(self) -> None:
        self.ours.close()
        if self.theirs is not None:
            with contextlib.suppress(OSError):
                self.theirs.close()


def import_paths() -> list[str]:
    """What a session sees of the host's import path: the Python installation, its installed
    packages (editable ones included) and codeact itself; other import directories (the user's
    project, a test directory, /tmp) must be granted."""
    return sorted({*python_installation(), os.path.dirname(PACKAGE_DIR)})


@functools.cache
def certificate_paths() -> list[str]:
    """Where OpenSSL looks for the system's certificate authorities when no variable says otherwise
    (the session's environment is only what the caller passed), as the real paths that exist."""
    import ssl

    defaults = ssl.get_default_verify_paths()
    found = {os.path.realpath(p) for p in (defaults.openssl_cafile, defaults.openssl_capath) if p}
    return sorted(p for p in found if os.path.exists(p))


class ProcessBackend:
    """A native sandboxed session: a process forked from the zygote into its own namespaces.

    Each step runs in a fork of the session: when it crashes, times out or runs out of memory, the
    variables from before it survive (`rollback=False` saves the fork per step and forbids fork to
    the code, at the price of losing the variables on such a step). `start_marks` times the stages
    of the last start.
    """

    name = "process"

    def __init__(self, options: SandboxOptions) -> None:
        self.options = options
        self.layers: list[LayerStatus] = []
        self.generation = 0
        self.start_marks: list[tuple[str, float]] = []
        self._lock = threading.RLock()
        self.network = NetworkPolicy.of(options.network, options.hosts)
        proxy = f"http://127.0.0.1:{PROXY_PORT}"
        proxy_env = (
            {
                name: proxy
                for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
            }
            if self.network
            else {}
        )
        self.config = SessionConfig(
            read_paths=list(options.read_paths),
            write_paths=list(options.write_paths),
            env={**options.env, **proxy_env},
            network=self.network is not None,
            memory_limit=options.memory_limit,
            tmp_size=options.tmp_size,
            max_file_size=options.max_file_size,
            pids_max=options.max_processes,
            output_limit=options.max_output,
            rollback=options.rollback,
            prefork=options.prefork,
            cwd=os.getcwd(),
            sys_path=[p for p in sys.path if p],
        )
        self.config.python_paths = import_paths()
        if self.network is not None:  # HTTPS clients that trust the system's authorities (urllib, aiohttp)
            self.config.certificates = certificate_paths()
        self._control: socket.socket | None = None
        self._family: ProcessBackend | None = None  # a fork: the session whose namespaces it shares
        self._proxy: Proxy | None = None
        self._pidfds: list[int] = []
        self._cgroup: list[str] = []
        self._root_pid = 0
        self._oom_seen = 0  # the cgroup's OOM kills counted so far
        self._aborted = False
        self._restarted = False
        self._steps = 0
        self._kept_channel: socket.socket | None = None  # the last step's socket, for the next (`_StepChannel`)

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._control is not None:
                return
            for path in self.config.read_paths:  # a grant may have been swapped for a link since
                granted_path(path, "read")
            for path in self.config.write_paths:
                granted_path(path, "write")
            paths: tuple[str, ...] = ()
            if self.options.packages:
                paths = (str(packages.install(self.options.packages)),)
                self.config.python_paths = sorted({*self.config.python_paths, *paths})
                self.config.sys_path = [*paths, *self.config.sys_path]
            zygote = zygote_for(self.options.preload, paths)
            requested = time.monotonic()
            control, pid, cgroup = zygote.spawn(self.config)
            self._cgroup = cgroup
            self._oom_seen = self._oom_kills()
            self._root_pid = pid
            self._pidfds = [_pidfd(pid)]
            try:
                hello, fds = self._await_hello(control)
                if self.network is not None:
                    if len(fds) != 1:
                        detail = next((x["detail"] for x in hello["layers"] if x["name"] == "net namespace"), "")
                        raise InterpreterError(
                            "network access needs the session's own network namespace, where codeact's proxy "
                            f"is the only way out, and it is not available here ({detail}); run `codeact doctor`"
                        )
                    self._proxy = Proxy(socket.socket(fileno=fds.pop()), self.network)
                for fd in fds:
                    os.close(fd)
            except BaseException:
                control.close()
                self._kill(self._pidfds)
                self._pidfds = []
                raise
            self._control = control
            self.layers = [LayerStatus(**layer) for layer in hello["layers"]]
            self.start_marks = (  # a session isolated in advance did its stages before it was asked for
                [("requested", requested)]
                + [(str(stage), float(t)) for stage, t in hello.get("marks", []) if float(t) >= requested]
                + [("hello received", time.monotonic())]
            )
            missing = [layer for layer in self.layers if not layer.active]
            for layer in missing:
                if layer.name not in _warned:  # once per process, not per session
                    _warned.add(layer.name)
                    log.warning("sandbox layer %s is not active: %s", layer.name, layer.detail)
            if self.options.strict and missing:
                self.close()
                raise InterpreterError(
                    "strict sandbox refused to start; missing layers: "
                    + "; ".join(f"{m.name} ({m.detail}){' - ' + m.remedy if m.remedy else ''}" for m in missing)
                )
            self.generation += 1
            self._aborted = False

    def _await_hello(self, control: socket.socket) -> tuple[dict[str, Any], list[int]]:
        deadline = time.monotonic() + 30
        hello: dict[str, Any] | None = None
        fds: list[int] = []
        while hello is None:
            ready, _, _ = select.select([control], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise InterpreterError("the sandbox session did not start within 30 s")
            try:
                message, received = wire.recv_with_fds(control, 1 << 20)
                fds += received
            except (EOFError, OSError, wire.WireError) as exc:
                raise InterpreterError(f"the sandbox session failed to start: {exc}") from None
            if message["op"] == "hello":
                hello = message
            elif message["op"] == "error":
                raise InterpreterError(f"the sandbox session failed to start: {message.get('message')}")
        if hello["keeper"] != self._root_pid:  # a root outside the namespaces forked it
            self._pidfds.insert(0, _pidfd(int(hello["keeper"])))
        return hello, fds

    def close(self) -> None:
        """Kill the session and everything in it; leaves no process behind."""
        with self._lock:
            if self._control is not None:
                self._control.close()
                self._control = None
            if self._kept_channel is not None:
                self._kept_channel.close()
                self._kept_channel = None
            if self._proxy is not None and self._family is None:
                self._proxy.close()
            self._proxy = None
            self._family = None  # restarted, a fork is a session of its own
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

    # --- steps ----------------------------------------------------------------------------------
    def kill_step(self) -> None:
        """End a running step from another thread: kill the session (a fork's, its whole family)."""
        self._aborted = True  # whatever the session wrote last is not to be read: start afresh
        for fd in list((self._family or self)._pidfds):
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)

    def fork(self) -> ProcessBackend:
        """A copy of this session made by forking its state inside the sandbox: variables, imports and
        the interpreter's state, in about a millisecond. The fork shares this session's namespaces,
        files (its /tmp and working directory are the same, not copies), memory and process limits;
        a timeout or crash in one rolls back only that one, while a step killed from the host
        (cancelled) ends the whole family. Closing this session ends its forks."""
        if not self.options.rollback:
            raise InterpreterError("Sandbox.fork() needs rollback=True: without it the code's process may not fork")
        with self._lock:
            if self._aborted:
                self.close()
            if self._control is None:
                self.start()
            assert self._control is not None
            branch_control, theirs = socket.socketpair()
            reply, reply_theirs = socket.socketpair()
            try:
                wire.send_with_fds(self._control, {"op": "fork"}, [reply_theirs.fileno(), theirs.fileno()])
                reply_theirs.close()
                theirs.close()
                ready, _, _ = select.select([reply], [], [], 30)
                answer = wire.recv(reply, 1 << 10) if ready else {}
            except (EOFError, OSError, wire.WireError) as exc:
                branch_control.close()
                raise InterpreterError(f"the sandbox session could not be forked: {exc}") from None
            finally:
                for sock in (reply, reply_theirs, theirs):
                    sock.close()
            if answer.get("op") != "forked":
                branch_control.close()
                raise InterpreterError("the sandbox session did not answer the fork request")
            branch = ProcessBackend(self.options)
            branch.generation = self.generation
            branch._control, branch._family, branch._proxy = branch_control, self._family or self, self._proxy
            branch._cgroup, branch._restarted, branch._root_pid = self._cgroup, True, self._root_pid
            branch._oom_seen = self._oom_seen
            branch.layers, branch.start_marks = list(self.layers), []
            return branch

    def begin_step(self) -> tuple[_StepChannel, str]:
        notice = ""
        family = self._family
        if self._aborted or (family is not None and (not family.alive or family._root_pid != self._root_pid)):
            self.close()  # a fork whose family ended (or restarted) ended with it
        if self._control is None:
            if self._restarted or self._pidfds:
                notice = RESTARTED
            self._pidfds = []
            self.start()
        self._restarted = True
        assert self._control is not None
        kept, self._kept_channel = self._kept_channel, None
        return _StepChannel(self, self._control, kept), notice

    def end_step(self, channel: Channel, result: ExecutionResult) -> None:
        assert isinstance(channel, _StepChannel)
        if not self.options.rollback and self._control is not None and channel.reusable():
            self._kept_channel = channel.ours
        else:
            channel.close()
        if self._proxy is not None:
            result.connections = self._proxy.drain()

    def _step_failed(self, report: dict[str, Any], limit: float) -> None:
        """Raise StepLost for the holder's report of a step that did not complete."""
        if report.get("op") == "error":  # the session itself failed (its fork of the next worker, say) and ended
            self.close()
            raise StepLost(
                Failure.CRASHED,
                f"the sandbox session failed ({str(report.get('message'))[:200]}); the next step starts a "
                "new session and earlier variables are lost",
            )
        kind, status = report.get("op") == "failed" and report.get("kind"), report.get("status", 0)
        if kind not in ("timeout", "died") or not isinstance(status, int) or not 0 <= status < 1 << 16:
            raise bridge.Malformed(f"unexpected report from the session: {str(report)[:200]}")
        if not self.options.rollback:  # the next worker starts from the session's first state: a new session
            self.generation += 1
        kept = (
            "variables from before this step are kept"
            if report.get("state") == "kept"
            else "the session was reset and earlier variables are lost"
        )
        if kind == "timeout":
            raise StepLost(
                Failure.TIMEOUT,
                f"the step ran longer than the {limit:g} s time limit and was stopped; {kept}",
                timed_out=True,
            )
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            oom_before, self._oom_seen = self._oom_seen, self._oom_kills()  # read only when a step died
            if sig == signal.SIGKILL and self._oom_seen > oom_before:
                mb = self.config.memory_limit >> 20
                raise StepLost(
                    Failure.MEMORY_LIMIT, f"the step used more than the {mb} MB memory limit and was killed; {kept}"
                )
            if sig == signal.SIGXCPU:
                raise StepLost(
                    Failure.TIMEOUT,
                    f"the step used more than its CPU time limit ({limit:g} s) and was stopped; {kept}",
                    timed_out=True,
                )
            if sig == signal.SIGXFSZ:
                raise StepLost(
                    Failure.FILE_SIZE_LIMIT,
                    f"the step wrote a file larger than the {self.config.max_file_size >> 20} MB limit; {kept}",
                )
            raise StepLost(Failure.CRASHED, f"the interpreter was killed by {name}; {kept}")
        code = os.waitstatus_to_exitcode(status) if status else 0
        raise StepLost(Failure.CRASHED, f"the code ended the interpreter (exit status {code}); {kept}")

    def _oom_kills(self) -> int:
        return cgroup.oom_kills(self._cgroup[0]) if self._cgroup else 0


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
