"""The zygote: a process with an empty environment and preloaded libraries that forks sessions.

Started by the host with a fresh exec. It talks to the host over one socket: the host asks for a
session, the zygote forks it and passes the host end of the session's socket back. When the host
goes away (its end of the socket closes) the zygote kills every session and exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import importlib
import itertools
import json
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from codeact.sandbox import wire
from codeact.sandbox.process import isolation

SESSION_FD = 3


def _share_malloc_arenas() -> None:
    """Let threads share glibc's malloc arenas: each new arena reserves 64 MB of address space, so
    under a session's address-space limit the code could start only about 15 threads (a
    ThreadPoolExecutor of 16 failed); shared, the process limit is what bounds them. The GIL keeps
    contention for the shared arenas low."""
    with contextlib.suppress(Exception):  # not glibc: nothing to do
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 2)


_M_ARENA_MAX = -8


def main() -> None:
    config = json.loads(sys.argv[1])
    sys.argv[:] = [""]  # as in an interactive interpreter: the code's argparse sees no arguments
    sys.path[:] = config["sys_path"]
    control = socket.socket(fileno=int(config["control_fd"]))
    for name, value in config.get("thread_env", {}).items():
        os.environ[name] = value
    _share_malloc_arenas()
    preloaded, failed = [], {}
    for module in config.get("preload", []):
        try:
            importlib.import_module(module)
            preloaded.append(module)
        except Exception as exc:
            failed[module] = f"{type(exc).__name__}: {exc}"
    from codeact.sandbox.process import cgroup, runner, seccomp  # noqa: F401 - warm for sessions

    with contextlib.suppress(OSError):  # where there is no filter, sessions say so themselves
        seccomp.prepare()

    os.environ.clear()
    root_dir = tempfile.mkdtemp(prefix="codeact-root-")
    tag = f"{cgroup.TREE_PREFIX}{os.getpid()}-{os.urandom(4).hex()}"  # never an earlier zygote's left-over tree
    tree = cgroup.CgroupTree.detect(tag)
    sessions: dict[int, _Shell] = {}
    gc.collect()
    gc.freeze()
    wire.send(
        control,
        {
            "op": "ready",
            "pid": os.getpid(),
            "preloaded": preloaded,
            "failed": failed,
            "cgroup": tree.version if tree else None,
        },
    )
    numbers = itertools.count(1)

    def new_shell() -> _Shell:
        shell = fork_shell(root_dir, tree, next(numbers))
        sessions[shell.pid] = shell
        return shell

    # Two shells wait for requests: `blank`, forked and in its cgroup but not yet isolated (joining a
    # cgroup takes 8-40 ms here, an RCU grace period, which a request should not wait for), and
    # `isolated`, isolated in advance for the config asked for last.
    blank = new_shell()
    isolated: _Shell | None = None
    stale = True
    try:
        while True:
            ready, _, _ = select.select([control], [], [], 0.5)
            _reap(sessions, root_dir)
            if not ready:
                if stale and tree is not None:  # idle: clear what zygotes killed earlier left behind
                    stale = tree.sweep() > 0
                continue
            try:
                message = wire.recv(control)
            except (EOFError, OSError, wire.WireError):
                break
            if message.get("op") != "spawn":
                continue
            requested, raw = time.monotonic(), message["config"]
            if isolated is not None and isolated.config == raw and isolated.pid in sessions:
                shell, isolated = isolated, None
            else:
                if blank.pid not in sessions:  # it died waiting (killed from outside): reaped, replaced
                    blank = new_shell()
                shell = blank
                configure(shell, raw, [("request received", requested)])
            hand_over(control, shell)
            if shell is blank:
                blank = new_shell()
            if not raw.get("read_paths") and not raw.get("write_paths"):
                # The next session is likely to ask for the same: isolate it now. Never with grants,
                # whose paths the host checks just before each start.
                if isolated is not None:
                    _discard(isolated)
                isolated = new_shell()
                configure(isolated, raw, [("isolated in advance", time.monotonic())])
    finally:
        for pid in sessions:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(sessions):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            group = sessions.pop(pid).group
            if group is not None:
                group.remove()
        if tree is not None:
            tree.remove()
        shutil.rmtree(root_dir, ignore_errors=True)
        os._exit(0)


@dataclass
class _Shell:
    """A forked session: its keeper, already in its namespaces and cgroup, waiting for its config.

    One is kept ready so that the fork and the cgroup move (slow: the kernel waits for an RCU grace
    period) are paid between requests, not while the host waits; after a request without path
    grants, it is given that request's config at once and isolates itself, so that a next request
    for the same config is only handed a session that is already running.
    """

    pid: int
    number: int
    group: Any
    host_end: socket.socket
    config_pipe: int
    config: dict[str, Any] | None = None  # the config it was given, before it was asked for


def fork_shell(root_dir: str, tree: Any, counter: int) -> _Shell:
    """Fork session number `counter`'s keeper, which waits for its config (`configure`)."""
    group, group_error = None, ""
    if tree is not None:
        try:
            group = tree.session(f"s{counter}")
        except OSError as exc:
            group_error = str(exc)
    host_end, session_end = socket.socketpair()
    config_read, config_write = os.pipe()
    pid, layers = isolation.fork_session()
    if pid == 0:
        try:
            os.dup2(session_end.fileno(), SESSION_FD, inheritable=False)
            os.dup2(config_read, SESSION_FD + 1, inheritable=False)
            os.closerange(SESSION_FD + 2, 1 << 16)
            for fd in (0, 1, 2):
                null = os.open("/dev/null", os.O_RDWR)
                os.dup2(null, fd)
                os.close(null)
            if group is not None:
                try:
                    group.join()
                except OSError as exc:
                    group, group_error = None, str(exc)
            _session(group, group_error, layers, isolation.scratch_dir(root_dir, counter), root_dir)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                wire.send(socket.socket(fileno=SESSION_FD), {"op": "error", "message": f"{type(exc).__name__}: {exc}"})
        finally:
            os._exit(1)
    session_end.close()
    os.close(config_read)
    return _Shell(pid, counter, group, host_end, config_write)


def _session(group: Any, group_error: str, layers: isolation.Layers, scratch: str, root_dir: str) -> None:
    """In the session's keeper: wait for the config, isolate, and serve the session."""
    from codeact.sandbox.process import runner

    keeper = int(os.readlink("/proc/self"))  # its pid on the host, while the host's /proc is in view
    chunks = []
    while chunk := os.read(SESSION_FD + 1, 1 << 16):
        chunks.append(chunk)
    os.close(SESSION_FD + 1)
    if not chunks:
        return  # the zygote is shutting down
    raw = json.loads(b"".join(chunks))
    marks = [(str(n), float(t)) for n, t in raw.pop("marks")] + [("config received", time.monotonic())]
    if raw.get("cgroup_error"):
        group, group_error = None, raw["cgroup_error"]
    raw.pop("cgroup_error", None)
    config = isolation.SessionConfig(**raw)
    cgroup = (
        (
            True,
            f"cgroup v{group.version}: memory {config.memory_limit >> 20} MB + 64 MB slack, {config.pids_max} processes",
        )
        if group is not None
        else (False, group_error or "no writable cgroup tree")
    )
    sleep = isolation.enter(config, layers, root_dir, scratch, cgroup, marks)
    if config.sys_path:  # the host's import path may have grown since the zygote started
        sys.path[:] = config.sys_path
    sock = socket.socket(fileno=SESSION_FD)
    hello = {
        "op": "hello",
        "keeper": keeper,
        "layers": layers.to_list(),
        "cgroup_error": group_error,
        "marks": layers.marks,
    }
    if layers.proxy_listener >= 0:  # the host serves it; the session keeps no copy its code could use
        wire.send_with_fds(sock, hello, [layers.proxy_listener])
        os.close(layers.proxy_listener)
    else:
        wire.send(sock, hello)
    runner.Session(
        sock,
        output_limit=config.output_limit,
        memory_limit=config.memory_limit,
        rollback=config.rollback,
        prefork=config.prefork,
        confine_code=functools.partial(isolation.confine_code, layers, network=config.network, fork=config.rollback),
    ).keep(sleep)


def configure(shell: _Shell, raw: dict[str, Any], marks: list[tuple[str, float]]) -> None:
    """Give `shell` its session config: it isolates itself and starts the session."""
    config = isolation.SessionConfig(**raw)
    limits_error = ""
    if shell.group is not None:
        try:
            shell.group.set_limits(config.memory_limit + (64 << 20), config.pids_max)
        except OSError as exc:
            limits_error = f"cgroup limits could not be set: {exc}"
    payload = json.dumps({**raw, "marks": marks, "cgroup_error": limits_error}).encode()
    try:
        with contextlib.suppress(OSError):
            os.write(shell.config_pipe, payload)
    finally:
        os.close(shell.config_pipe)
    shell.config = raw


def hand_over(control: socket.socket, shell: _Shell) -> None:
    """Pass the host its end of the session's socket."""
    try:
        wire.send_with_fds(
            control,
            {"op": "spawned", "pid": shell.pid, "cgroup": shell.group.dirs if shell.group else []},
            [shell.host_end.fileno()],
        )
    finally:
        shell.host_end.close()


def _discard(shell: _Shell) -> None:
    """End a shell no request will take (its keeper dies with it); it is reaped like any session."""
    with contextlib.suppress(OSError):
        os.kill(shell.pid, signal.SIGKILL)
    shell.host_end.close()
    if shell.config is None:
        os.close(shell.config_pipe)


def _reap(sessions: dict[int, _Shell], root_dir: str) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        shell = sessions.pop(pid, None)
        if shell is None:
            continue
        if shell.group is not None:
            shell.group.remove()
        shutil.rmtree(isolation.scratch_dir(root_dir, shell.number), ignore_errors=True)


if __name__ == "__main__":
    main()
