"""The zygote: a process with an empty environment and preloaded libraries that forks sessions.

Started by the host with a fresh exec. It talks to the host over one socket: the host asks for a
session, the zygote forks it and passes the host end of the session's socket back. When the host
goes away (its end of the socket closes) the zygote kills every session and exits.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
from typing import Any

from codeact.sandbox import wire
from codeact.sandbox.process import isolation, linux

SESSION_FD = 3


def main() -> None:
    config = json.loads(sys.argv[1])
    sys.path[:] = config["sys_path"]
    control = socket.socket(fileno=int(config["control_fd"]))
    for name, value in config.get("thread_env", {}).items():
        os.environ[name] = value
    preloaded, failed = [], {}
    for module in config.get("preload", []):
        try:
            importlib.import_module(module)
            preloaded.append(module)
        except Exception as exc:
            failed[module] = f"{type(exc).__name__}: {exc}"
    from codeact.sandbox.process import cgroup, runner  # noqa: F401 - warm for sessions

    os.environ.clear()
    root_dir = tempfile.mkdtemp(prefix="codeact-root-")
    tag = f"codeact-{os.getpid()}"
    tree = cgroup.CgroupTree.detect(tag)
    sessions: dict[int, Any] = {}
    gc.collect()
    gc.freeze()
    wire.send(control, {"op": "ready", "pid": os.getpid(), "preloaded": preloaded, "failed": failed,
                        "cgroup": tree.version if tree else None})
    counter = 0
    try:
        while True:
            ready, _, _ = select.select([control], [], [], 0.5)
            _reap(sessions, root_dir)
            if not ready:
                continue
            try:
                message = wire.recv(control)
            except (EOFError, OSError, wire.WireError):
                break
            if message.get("op") != "spawn":
                continue
            counter += 1
            spawn(control, message["config"], root_dir, tree, sessions, counter)
    finally:
        for pid in sessions:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(sessions):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            group = sessions.pop(pid)
            if group is not None:
                group.remove()
        if tree is not None:
            tree.remove()
        shutil.rmtree(root_dir, ignore_errors=True)
        os._exit(0)


def spawn(control: socket.socket, raw: dict[str, Any], root_dir: str, tree: Any,
          sessions: dict[int, Any], counter: int) -> None:
    from codeact.sandbox.process import runner

    config = isolation.SessionConfig(**raw)
    group = None
    group_error = ""
    if tree is not None:
        try:
            group = tree.session(f"s{counter}", config.memory_limit + (64 << 20), config.pids_max)
        except OSError as exc:
            group_error = str(exc)
    host_end, session_end = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
            os.dup2(session_end.fileno(), SESSION_FD, inheritable=False)
            os.closerange(SESSION_FD + 1, 1 << 16)
            for fd in (0, 1, 2):
                null = os.open("/dev/null", os.O_RDWR)
                os.dup2(null, fd)
                os.close(null)
            joined = ""
            if group is not None:
                try:
                    group.join()
                    joined = f"cgroup v{group.version}: memory {config.memory_limit >> 20} MB + 64 MB slack, " \
                             f"{config.pids_max} processes"
                except OSError as exc:
                    joined = ""
                    group_error = str(exc)
            layers = isolation.enter(config, root_dir, SESSION_FD, joined)
            sock = socket.socket(fileno=SESSION_FD)
            wire.send(sock, {"op": "hello", "layers": layers.to_list(), "cgroup_error": group_error,
                             "marks": layers.marks})
            runner.Session(sock, output_limit=config.output_limit, memory_limit=config.memory_limit,
                           rollback=config.rollback, network=config.network).keep()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                sock = socket.socket(fileno=SESSION_FD)
                wire.send(sock, {"op": "error", "message": f"{type(exc).__name__}: {exc}"})
        finally:
            os._exit(1)
    session_end.close()
    sessions[pid] = group
    try:
        wire.send_with_fds(control, {"op": "spawned", "pid": pid, "cgroup": group.dirs if group else []},
                           [host_end.fileno()])
    finally:
        host_end.close()


def _reap(sessions: dict[int, Any], root_dir: str) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        group = sessions.pop(pid, None)
        if group is not None:
            group.remove()
        shutil.rmtree(isolation.scratch_dir(root_dir, pid), ignore_errors=True)


if __name__ == "__main__":
    main()
