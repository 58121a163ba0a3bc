"""The session inside the sandbox: a keeper, a state holder, and a worker per step.

The keeper is pid 1 of the session's pid namespace and only reaps. The holder keeps the variables
as they were after the last completed step and forks a worker, which waits for the next command.
The worker runs the step; when it completes, it reports, tells the holder to exit, and becomes the
holder itself, forking the next worker when the next command comes or (with prefork) a few
milliseconds later.
When the worker dies or overruns its time (the holder sleeps on a `StepClock` the worker sets), the
holder kills it (and everything it started), reports why, and forks a fresh worker: the variables
from before the step survive.

Without rollback the worker serves every step itself and may not fork at all (seccomp); a step that
dies then costs the session's variables.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import errno
import functools
import io
import linecache
import math
import mmap
import os
import resource
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from codeact.sandbox import step, wire
from codeact.sandbox.process.code_signals import CodeSignals

# what a worker tells its holder (a step's start, end and approvals go through the `StepClock`)
_COMMIT = b"c"
_ABANDON = b"a"
_QUIT = b"q"
_FORKED = b"f"  # the session was forked: another branch shares the pid namespace from now on
_NEXT_WORKER_DELAY_S = 0.003  # how long a new holder waits for the host to close the session
_WARM_COMMAND = b'{"op":"exec","code":"x","timeout":30.0,"value_limit":20000,"inputs":0,"step":1}'


class Session:
    """State and behaviour of one sandboxed interpreter session."""

    def __init__(
        self,
        control: socket.socket,
        *,
        output_limit: int,
        memory_limit: int,
        rollback: bool,
        prefork: bool,
        confine_code: Callable[[], None],
    ) -> None:
        self.control = control
        self.confine_code = confine_code
        self.sleep = -1  # pid 1's `sleep` binary (`keep`)
        self.rollback = rollback
        self.prefork = prefork
        self.own_pid_namespace = os.getpid() == 1
        self.output_limit = output_limit
        self.memory_limit = memory_limit
        self.namespace: dict[str, Any] = step.main_namespace()
        self.steps = 0
        self.channel: socket.socket | None = None
        self.tools = step.ToolClient(self._send, self._receive, self._fileno, self._clock)
        step.adapt_asyncio(self.tools)
        self.clock = StepClock()
        os.system = _system  # type: ignore[assignment]
        self.limits_set = False
        self.cpu_limit = 0  # the soft RLIMIT_CPU last set
        self.expired = False
        self.provided: dict[str, Any] = {}
        self.replies = HostWait()
        self.commands = HostWait()  # without rollback, this worker waits for the next step too
        self.signals = CodeSignals()

    # --- process structure -------------------------------------------------------------------
    def keep(self, sleep: int = -1) -> None:
        """Run as pid 1: hold the session's first state, then reap until no process is left.

        Once a step has committed pid 1 only reaps: it becomes `sleep` (by `sleep`, the binary's
        descriptor) with SIGCHLD ignored, so that the kernel reaps for it, and drops the interpreter's
        memory: about 2 MB of pages that later holders no longer share with it.
        """
        # Default dispositions make pid 1 immune to signals sent from inside its namespace; Python's
        # own SIGINT handler would instead raise KeyboardInterrupt here and end the session.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _capture_stdio()
        self.signals.hold()
        self.sleep = sleep
        verdict = self.hold(keeper=True)
        self.control.close()
        if verdict == "commit" and sleep >= 0 and os.getpid() == 1:
            signal.signal(signal.SIGCHLD, signal.SIG_IGN)
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            with contextlib.suppress(OSError):
                os.execve(sleep, ["codeact-session", "2147483647"], {})
        while True:
            try:
                os.wait()
            except ChildProcessError:
                os._exit(0)
            except InterruptedError:
                continue

    def hold(self, *, keeper: bool = False) -> str:
        """Keep the current state; fork a worker per step and roll back when a step dies.

        The keeper (pid 1) holds only the first state: when a step commits it returns to reaping,
        since pid 1 must outlive the session. Later holders exit when their worker commits.
        """
        while True:
            self.clock.stop()  # no step runs now, whatever the last worker left in the shared memory
            read_end, write_end = os.pipe()
            threaded = threading.active_count() > 1  # threads a step left running here
            worker = _fork_when_possible()
            if worker == 0:
                os.close(read_end)
                if threaded:
                    _reopen_stdio()
                if keeper:
                    if self.sleep >= 0:
                        os.close(self.sleep)
                    self.confine_code()
                signal.signal(signal.SIGINT, signal.default_int_handler)
                with contextlib.suppress(OSError):
                    os.setpgid(0, 0)  # so a holder outside a pid namespace can kill the step's processes
                outcome = "done"
                while outcome == "done":
                    outcome = self.work(write_end)
                if outcome == "quit":
                    os._exit(0)
                keeper = False
                if not self._next_step_may_come():
                    os._exit(0)
                continue  # this worker is now the holder: it forks the next step's worker
            os.close(write_end)
            verdict = "done"
            while verdict == "done":
                verdict = self._supervise(worker, read_end)
            os.close(read_end)
            if verdict in ("commit", "quit"):
                if keeper:
                    return verdict
                os._exit(0)

    def _next_step_may_come(self) -> bool:
        """Wait before forking the next worker: False when the host closed the session meanwhile, which
        then costs no fork. With prefork the wait is brief, and when it runs out the next step finds
        its worker ready; without, it lasts until the next command."""
        with contextlib.suppress(OSError, ValueError):
            ready, _, _ = select.select([self.control], [], [], _NEXT_WORKER_DELAY_S if self.prefork else None)
            if ready:
                return self.control.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        return True

    def _supervise(self, worker: int, pipe: int) -> str:
        """Wait for the worker to commit, quit or die, or for its step to overrun its time limit."""
        while True:
            ready, _, _ = select.select([pipe, self.clock.fd], [], [])
            if pipe in ready:
                break
            overrun = self.clock.overrun()
            if overrun is not None:
                timeout, number, duration = overrun
                self._kill_step(worker)
                _reap(worker)
                return self._failed("timeout", number, duration, timeout=timeout)
        message = os.read(pipe, 1)
        if message == _FORKED:  # kill only the step's own process group from now on, never the other branch
            self.own_pid_namespace = False
            return "done"
        if message == _COMMIT:
            return "commit"
        if message == _ABANDON:  # the host stopped the step: back to the state from before it
            _reap(worker)
            return "rollback"
        running = self.clock.running()
        if message == _QUIT or running is None:  # asked to, or gone while no step ran
            _reap(worker)
            return "quit"
        number, duration = running
        status = _reap(worker)
        self._kill_step(worker)
        return self._failed("died", number, duration, status=status)

    def _failed(self, kind: str, number: int, duration: float, **detail: Any) -> str:
        """Report to the host why step `number` ended without its result; the state rolls back."""
        state = "kept" if self.rollback else "lost"
        self._report({"op": "failed", "kind": kind, **detail, "state": state, "step": number, "duration": duration})
        return "rollback"

    def _kill_step(self, worker: int) -> None:
        """Kill the step's worker and whatever it started."""
        if self.own_pid_namespace:  # every process here but pid 1 and this one belongs to the step
            with contextlib.suppress(OSError):
                os.kill(-1, signal.SIGKILL)
        else:
            with contextlib.suppress(OSError):
                os.killpg(worker, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(worker, signal.SIGKILL)

    def _report(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            wire.send(self.control, message)

    # --- one step -------------------------------------------------------------------------------
    def work(self, pipe: int) -> str:
        """Wait for a command and run it; returns "commit" after a completed step, or "quit"."""
        # Without rollback no fork follows a step: nothing to pre-fault. A command already waiting would
        # only wait longer: the warm-up touches more than one step does.
        if (self.rollback or not self.steps) and not select.select([self.control], [], [], 0)[0]:
            with contextlib.suppress(Exception):  # only a speed-up: a session out of descriptors still runs
                self._warm()
        try:
            if not self.rollback:
                self.commands.wait(self.control)
            message, fds = wire.recv_with_fds(self.control)
        except (EOFError, OSError, wire.WireError):
            with contextlib.suppress(OSError):
                os.write(pipe, _QUIT)
            return "quit"
        if message.get("op") == "fork" and len(fds) == 2:
            self._fork(pipe, socket.socket(fileno=fds[0]), fds[1])
            return "done"
        if message.get("op") != "exec" or len(fds) > 1 or (not fds and self.channel is None):
            for fd in fds:
                os.close(fd)
            os.write(pipe, _QUIT)
            return "quit"
        timeout = float(message.get("timeout") or 0)
        self.clock.start(timeout, int(message.get("step") or 0))
        if fds:  # else the last step's socket, kept (without rollback) when it carried nothing else
            if self.channel is not None:
                self.channel.close()
            self.channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fileno=fds[0])  # no probing
        self._apply_step_limits(timeout)
        if message.get("tools") is not None:
            self._define(message["tools"], message.get("submit"))
        worker = os.getpid()
        self.tools.active = True
        try:
            code, inputs = str(message.get("code", "")), int(message.get("inputs") or 0)
            result = self.run(code, int(message.get("value_limit") or 20_000), inputs)
        finally:
            self.tools.active = False
        if os.getpid() != worker:
            os._exit(0)  # a process the code forked ran off the end of the step: it must not report
        body = wire.dumps({"op": "result", **result})
        if len(body) > wire.MAX_MESSAGE_BYTES:
            result["value"] = None
            result["stdout"] = result["stdout"][: 1 << 20]
            result["submitted"] = None
            result["error"] = step.plain_error("ValueError", "the step's result is too large to return")
            body = wire.dumps({"op": "result", **result})
        with contextlib.suppress(OSError):
            self.channel.sendall(body)
        if self.rollback:
            self.channel.close()
            self.channel = None
        self.clock.stop()
        if self.rollback and self.expired:
            os.write(pipe, _ABANDON)
            os._exit(0)
        if not self.rollback:
            return "done"
        os.write(pipe, _COMMIT)
        os.close(pipe)
        return "commit"

    def _fork(self, pipe: int, reply: socket.socket, control_fd: int) -> None:
        """Start a branch: a copy of this state with its own control socket, serving its own steps."""
        os.write(pipe, _FORKED)
        self.own_pid_namespace = False
        child = os.fork()
        if child == 0:
            try:
                if os.fork():  # the branch is orphaned to pid 1, which reaps it: no zombie here
                    os._exit(0)
                os.close(pipe)
                reply.close()
                self.control.close()
                self.control = socket.socket(fileno=control_fd)
                _capture_stdio()
                self.clock.close()
                self.clock = StepClock()  # the branch's steps are timed apart from this one's
                self.hold()
            finally:
                os._exit(0)
        os.close(control_fd)
        with contextlib.suppress(OSError):
            wire.send(reply, {"op": "forked"})
        reply.close()
        _reap(child)

    def _warm(self) -> None:
        """Run a throwaway step through the code a step runs, while idle: the copy-on-write faults
        after fork are paid before the next command arrives instead of during it."""
        started = time.perf_counter()
        ours, theirs = socket.socketpair()  # a command read and its step's socket adopted, as from the host
        with ours, theirs:  # (the code may not send descriptors: this one comes without)
            wire.send(ours, wire.loads(_WARM_COMMAND))
            message, _ = wire.recv_with_fds(theirs)
            self.channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fileno=os.dup(theirs.fileno()))
            wire.send(ours, {"op": "return", "id": self.tools.next_id + 1, "value": wire.encode(None)})
            self.tools.active = True
            try:  # a tool call whose reply is already there
                self.tools.call("_warm", [], {})
            finally:
                self.tools.active = False
                self.channel.close()
                self.channel = None
        self.clock.idle()
        self._apply_step_limits(float(message["timeout"]))
        stdout, stderr = step.Capture(self.output_limit), step.Capture(self.output_limit)
        value, _, values = step.run("_ = None\n_", "<warm>", {"__builtins__": builtins}, {}, stdout, stderr)
        linecache.cache.pop("<warm>", None)
        self.namespace.update(self.provided)  # as every step ends
        wire.dumps({"op": "result", **step.outcome(value, None, values, stdout, stderr, started)})

    def _apply_step_limits(self, timeout: float) -> None:
        if timeout > 0:  # RLIMIT_CPU counts the process's whole life: a worker serving many steps has used some
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu = math.ceil(usage.ru_utime + usage.ru_stime + timeout) + 1
            if cpu != self.cpu_limit:
                self.cpu_limit = cpu
                with contextlib.suppress(OSError, ValueError):
                    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
                    resource.setrlimit(resource.RLIMIT_CPU, (cpu, hard))
        if not self.limits_set and self.memory_limit > 0:
            self.limits_set = True
            with contextlib.suppress(OSError, ValueError):
                limit = _address_space() + self.memory_limit
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    def _define(self, tools: list[dict[str, str]], submit: list[str] | None) -> None:
        step.define(self.namespace, self.provided, tools, submit, self.tools.call)

    def _fileno(self) -> int:
        assert self.channel is not None
        return self.channel.fileno()

    def _clock(self, op: str) -> None:
        if op == "pause":
            self.clock.pause()
        else:
            self.clock.resume()

    def _send(self, frame: bytes) -> None:
        assert self.channel is not None
        self.channel.sendall(frame)

    def _receive(self) -> dict[str, Any] | None:
        assert self.channel is not None
        self.replies.wait(self.channel)
        try:
            return wire.recv(self.channel)
        except EOFError:
            return None

    def run(self, code: str, value_limit: int, inputs: int = 0) -> dict[str, Any]:
        """Receive the step's inputs, execute `code` in the session namespace and describe what happened."""
        self.steps += 1
        filename = f"<step {self.steps}>"
        stdout, stderr = step.Capture(self.output_limit), step.Capture(self.output_limit)
        started = time.perf_counter()
        self.signals.release(stderr.write)
        try:
            value, exc, values = step.run(
                code, filename, self.namespace, self.provided, stdout, stderr, value_limit, self.tools, inputs
            )
        finally:
            stderr.write(self.signals.hold())
        self.expired = isinstance(exc, step.StepExpired)
        if self.expired:
            error = step.plain_error("Timeout", str(exc))
        else:
            error = None if exc is None else step.describe(exc, filename, code, self.memory_limit)
        _flush_stdio()
        stdout.write(_drain(1, self.output_limit))
        stderr.write(_drain(2, self.output_limit))
        return step.outcome(value, error, values, stdout, stderr, started)


class HostWait:
    """Waits until the host's next message (a tool's reply, a step) can be read. While they come
    quickly it waits awake, polling, for up to `awake_s` first: waking a sleeping process costs more
    than a quick tool takes to answer or a host running steps back to back takes to send the next.
    One slower than that sends the next wait straight to sleep, so slow tools and the pauses between
    an agent's steps cost no CPU. It sleeps in poll, not in the read: a blocked read is also woken
    whenever the host reads what this side sent, one more sleep and wake-up for every call. On one
    CPU it never waits awake: the host could not answer meanwhile."""

    _now = staticmethod(time.perf_counter)  # bound here: code that replaces time's functions does not stop it

    def __init__(self, awake_s: float | None = None) -> None:
        if awake_s is None:
            awake_s = 0.0002 if len(os.sched_getaffinity(0)) > 1 else 0.0
        self.awake_s = awake_s
        self.quick = True  # the last reply came within `awake_s`

    def wait(self, channel: socket.socket) -> None:
        """Return once `channel` can be read (or is closed: the read then says so). What the code's own
        signal handlers raise meanwhile propagates, as it would from a read."""
        readable = select.poll()
        try:
            readable.register(channel, select.POLLIN)
        except ValueError:  # closed here already
            return
        started = self._now()
        if self.quick:
            awake_until = started + self.awake_s
            while self._now() < awake_until:
                if readable.poll(0):
                    return
        readable.poll()
        self.quick = self._now() - started < self.awake_s


class StepClock:
    """A step's time limit as a timer its holder sleeps on, set by the worker without waking the
    holder: armed when a step starts and stopped while the host waits for an approval. Only a timer
    that fires wakes the holder, which then finds in memory the two share whether a step runs past
    its deadline, and its number. The step's code can reach both; what it could do with them (stop
    the clock) the host's own deadline for the step still bounds."""

    _SHARED = struct.Struct("qqddd")  # running, number, timeout, started, deadline (time.monotonic)
    _now = staticmethod(time.monotonic)  # bound here: code that replaces time.monotonic does not stop it

    def __init__(self) -> None:
        self.fd = _libc().timerfd_create(time.CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.shared = mmap.mmap(-1, self._SHARED.size)  # shared with the processes forked from here
        self.left = 0.0  # seconds of the step's time left when the clock was paused
        self.spec = (ctypes.c_long * 4)()  # struct itimerspec

    def start(self, timeout: float, number: int) -> None:
        now = self._now()
        self._SHARED.pack_into(self.shared, 0, 0, number, timeout, now, math.inf)
        if timeout > 0:
            self._arm(now, timeout)
        self.shared[:8] = _RUNNING  # last: the holder reads a step as running once all of it is written

    def pause(self) -> None:
        running, number, timeout, started, deadline = self._SHARED.unpack_from(self.shared)
        if running and deadline != math.inf:
            self.left = max(0.0, deadline - self._now())  # a timer firing meanwhile finds no deadline
            self._SHARED.pack_into(self.shared, 0, running, number, timeout, started, math.inf)

    def resume(self) -> None:
        running, _, timeout, _, deadline = self._SHARED.unpack_from(self.shared)
        if running and deadline == math.inf and timeout > 0:
            self._arm(self._now(), self.left)

    def idle(self) -> None:
        """Arm the timer far ahead while no step runs: the same calls as a step's start, without effect."""
        if not self.running():
            self._arm(self._now(), 86400.0)

    def stop(self) -> None:
        """The step ended. The timer stays armed (the next start re-arms it): should it fire between
        steps, the holder finds no step running and sleeps on."""
        self.shared[:8] = _IDLE

    def running(self) -> tuple[int, float] | None:
        """The running step's number and how long it has run; None between steps."""
        running, number, _, started, _ = self._SHARED.unpack_from(self.shared)
        return (number, self._now() - started) if running else None

    def overrun(self) -> tuple[float, int, float] | None:
        """After the timer fired: the step's time limit, number and duration when it is past its
        deadline; None when it ended, paused or was restarted in the meantime."""
        with contextlib.suppress(OSError):
            os.read(self.fd, 8)
        running, number, timeout, started, deadline = self._SHARED.unpack_from(self.shared)
        now = self._now()
        return (timeout, number, now - started) if running and now >= deadline else None

    def close(self) -> None:
        os.close(self.fd)
        self.shared.close()

    def _arm(self, now: float, seconds: float) -> None:
        self.shared[_DEADLINE] = struct.pack("d", now + seconds)
        seconds = max(seconds, 1e-9)  # zero would disarm it
        whole = int(seconds)
        self.spec[2], self.spec[3] = whole, int((seconds - whole) * 1e9)  # it_value; no interval
        _libc().timerfd_settime(self.fd, 0, self.spec, None)


_RUNNING, _IDLE = struct.pack("q", 1), struct.pack("q", 0)  # the first field of StepClock._SHARED
_DEADLINE = slice(32, 40)  # its last
_TFD_NONBLOCK, _TFD_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC


def _fork_when_possible() -> int:
    """os.fork(), waiting a little while the session's process limit is full: threads the last step
    started and released (a thread bomb) count against it until they have exited."""
    for _ in range(_FORK_TRIES):
        try:
            return os.fork()
        except BlockingIOError:
            time.sleep(0.01)
    return os.fork()


_FORK_TRIES = 500  # 5 s


def _system(command: str) -> int:
    """`os.system` in the sandbox: it would start a shell, and the sandbox starts no programs (the
    shell's exit status, 127, would say nothing of why)."""
    raise PermissionError(
        errno.EPERM,
        f"os.system({command!r}) cannot run: the sandbox starts no programs, a shell included; do it in "
        "Python (os, shutil, pathlib, ...) or with one of the tools",
    )


_ABANDONED_STREAMS: list[Any] = []  # never flushed nor freed: that would wait for their lock


def _reopen_stdio() -> None:
    """In a worker forked while other threads ran: `sys.__stdout__` and `sys.__stderr__` anew on fds 1
    and 2, since a thread writing to one at the fork left its lock taken, and no thread here would
    ever release it (the step's end flushes both)."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        old = getattr(sys, f"__{name}__")
        if old is None:
            continue
        _ABANDONED_STREAMS.append(old)
        new = io.TextIOWrapper(
            io.BufferedWriter(io.FileIO(fd, "w", closefd=False)),
            encoding=old.encoding,
            errors=old.errors,
            line_buffering=old.line_buffering,
            write_through=old.write_through,
        )
        setattr(sys, f"__{name}__", new)
        if getattr(sys, name) is old:
            setattr(sys, name, new)


def _capture_stdio() -> None:
    """Point fds 1 and 2 at fresh memfds: what C code and os.write send there, read after each step."""
    for fd in (1, 2):
        memfd = os.memfd_create(f"fd{fd}", 0)
        os.dup2(memfd, fd)
        os.close(memfd)


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)  # opened once: a dlopen per step costs tens of microseconds


def _flush_stdio() -> None:
    """Write out what Python's and C's own buffers hold for fds 1 and 2 (`print(file=sys.__stdout__)`)."""
    for stream in (sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()  # type: ignore[union-attr]
    with contextlib.suppress(Exception):
        _libc().fflush(None)


def _drain(fd: int, limit: int) -> str:
    """What was written to `fd` (a memfd) during the step, emptied for the next one."""
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        if not size:
            return ""
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, min(size, limit))
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        return ""
    text = data.decode(errors="replace")
    return text + (f"\n... [{size - len(data)} bytes cut] ...\n" if size > len(data) else "")


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _reap(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return status
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
