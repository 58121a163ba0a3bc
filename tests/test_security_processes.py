"""Attacks with processes and signals: exec, ptrace, signals to the host, privileges, leftovers."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from attacks import (
    assert_alive,
    assert_blocked,
    assert_new_sandbox_works,
    descendants,
    probe,
    still_running,
    wait_until,
)


def _zygotes() -> list[int]:
    """Host pids of the sandbox zygotes started by this test process."""
    found = []
    me = os.getpid()
    for pid, (ppid, _, _) in descendants(me, min_depth=1).items():
        if ppid != me:  # sessions are forks of the zygote and share its command line
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"sandbox.process.zygote" in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


# --- running other programs ---------------------------------------------------------------------


def _marker_attack(make_sandbox, tmp_path, launch: str) -> None:
    """Run `launch` (which should start a program that writes a marker) and check nothing ran."""
    out = tmp_path / "out"
    out.mkdir()
    marker = out / "marker"
    sb = make_sandbox(write_paths=[out], timeout=10)
    control = probe(
        sb,
        f"""
        import os, sys
        if not os.path.exists(sys.executable) and sys.platform != "emscripten":  # pyodide has no binary
            raise FileNotFoundError(sys.executable)
        open({str(out / "direct")!r}, "w").write("ok")
        return sys.executable
    """,
    )
    assert control.status == "ok", f"control: the interpreter binary exists and the write path works: {control}"
    program = f"open({str(marker)!r}, 'w').write('exec worked')"
    outcome = probe(
        sb,
        f"""
        import os, sys, subprocess
        program = {program!r}
        {textwrap.indent(textwrap.dedent(launch).strip(), "        ").strip()}
        import time
        for _ in range(20):
            if os.path.exists({str(marker)!r}):
                return "the program ran"
            time.sleep(0.05)
        raise PermissionError("the program did not run")
    """,
    )
    assert_blocked(outcome, f"start a program with: {launch.strip()}")
    assert not marker.exists(), f"a program started from the sandbox wrote {marker}"
    assert_alive(sb)


def test_execv_is_denied(make_sandbox, tmp_path):
    _marker_attack(make_sandbox, tmp_path, "os.execv(sys.executable, [sys.executable, '-c', program])")


def test_subprocess_is_denied(make_sandbox, tmp_path):
    _marker_attack(make_sandbox, tmp_path, "subprocess.run([sys.executable, '-c', program], timeout=5)")


def test_os_system_is_denied(make_sandbox, tmp_path):
    _marker_attack(make_sandbox, tmp_path, "os.system(f'{sys.executable} -c \"{program}\"')")


def test_posix_spawn_is_denied(make_sandbox, tmp_path):
    _marker_attack(
        make_sandbox,
        tmp_path,
        "pid = os.posix_spawn(sys.executable, [sys.executable, '-c', program], {})\nos.waitpid(pid, 0)",
    )


def test_exec_from_a_memfd_is_denied(make_sandbox, tmp_path):
    _marker_attack(
        make_sandbox,
        tmp_path,
        """
        fd = os.memfd_create("payload", 0)
        os.write(fd, open(sys.executable, "rb").read())
        os.execve(fd, [sys.executable, "-c", program], {})
    """,
    )


def test_fork_then_exec_in_the_child_is_denied(make_sandbox, tmp_path):
    _marker_attack(
        make_sandbox,
        tmp_path,
        """
        pid = os.fork()
        if pid == 0:
            try:
                os.execv(sys.executable, [sys.executable, "-c", program])
            finally:
                os._exit(3)
        os.waitpid(pid, 0)
    """,
    )


def test_exec_is_denied_in_the_step_after_one_that_died(make_sandbox, tmp_path):
    """pid 1 may exec (to become `sleep`); each worker it forks, a fresh one after a step died
    included, confines itself before it runs any code."""
    out = tmp_path / "out"
    out.mkdir()
    sb = make_sandbox(write_paths=[out], timeout=10)
    assert sb.execute("import os\nos._exit(3)").error is not None  # the first worker dies: pid 1 forks anew
    program = f"open({str(out / 'marker')!r}, 'w').write('exec worked')"
    outcome = probe(sb, f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {program!r}])")
    assert_blocked(outcome, "exec from the worker pid 1 forked after a step died")
    assert not (out / "marker").exists()
    assert_alive(sb)


PID_1_ATTACKS = {
    "read its memory": """
        with open("/proc/1/mem", "rb") as f:
            return f"opened pid 1's memory: {f!r}"
    """,
    "reopen its descriptors": """
        import os
        return [os.readlink(f"/proc/1/fd/{fd}") for fd in os.listdir("/proc/1/fd")]
    """,
}


@pytest.mark.parametrize("attack", list(PID_1_ATTACKS))
@pytest.mark.parametrize("steps_before", [0, 1], ids=["pid 1 holding the first state", "pid 1 as sleep"])
def test_the_code_cannot_reach_into_pid_1(make_sandbox, attack, steps_before):
    """pid 1, which may exec, is out of the code's reach: neither its memory nor its descriptors (the
    `sleep` binary's, the session's sockets) can be opened."""
    sb = make_sandbox()
    for _ in range(steps_before):
        assert sb.execute("x = 1").error is None
    assert_blocked(probe(sb, PID_1_ATTACKS[attack]), f"{attack}, pid 1's")
    assert_alive(sb)


# --- tracing and reading other processes ------------------------------------------------------


def test_ptrace_is_denied(make_sandbox):
    sb = make_sandbox()
    for request, target in (("16", "os.getppid()"), ("0x4206", "os.getppid()"), ("16", "1"), ("0", "0")):
        outcome = probe(
            sb,
            f"""
            import ctypes, os
            libc = ctypes.CDLL(None, use_errno=True)
            libc.ptrace.restype = ctypes.c_long
            rc = libc.ptrace(ctypes.c_long({request}), ctypes.c_long({target}), None, None)
            if rc == -1:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
            return rc
        """,
        )
        assert_blocked(outcome, f"ptrace request {request} on {target}")
    assert_alive(sb)


def test_process_vm_readv_on_the_host_is_denied(make_sandbox):
    host_pid = os.getpid()
    secret = ctypes.create_string_buffer(b"host-memory-secret-" + os.urandom(8).hex().encode())
    address = ctypes.addressof(secret)
    sb = make_sandbox()
    outcome = probe(
        sb,
        f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        class IOVec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
        buf = ctypes.create_string_buffer({len(secret)})
        local = IOVec(ctypes.cast(buf, ctypes.c_void_p), {len(secret)})
        got = []
        for pid in ({host_pid}, os.getppid(), 1):
            remote = IOVec({address}, {len(secret)})
            n = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
            if n > 0:
                got.append((pid, buf.raw[:n]))
        if not got:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        return got
    """,
    )
    assert_blocked(outcome, "read another process's memory with process_vm_readv")
    assert_alive(sb)


# --- signals -----------------------------------------------------------------------------------


def test_signals_cannot_reach_the_host_process(make_sandbox):
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda sig, frame: received.append(sig))
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert wait_until(lambda: bool(received), 2), "control: the handler sees SIGUSR1"
        received.clear()
        host_pid, host_pgid = os.getpid(), os.getpgid(0)
        sb = make_sandbox()
        outcome = probe(
            sb,
            f"""
            import os, signal
            sent = []
            for target in ({host_pid}, -{host_pgid}):
                try:
                    os.kill(target, signal.SIGUSR1)
                    sent.append(target)
                except OSError:
                    pass
            try:
                fd = os.pidfd_open({host_pid})
                signal.pidfd_send_signal(fd, signal.SIGUSR1)
                sent.append("pidfd")
            except OSError:
                pass
            if not sent:
                raise ProcessLookupError("the host process is out of reach")
            return sent
        """,
        )
        time.sleep(0.3)
        assert not received, f"the host process received a signal from the sandbox: {received}"
        assert_blocked(outcome, "signal the host process")
        assert_alive(sb)
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_the_zygote_cannot_be_killed_from_a_session(make_sandbox, backend):
    if backend != "process":
        pytest.skip("the zygote is part of the native backend")
    sb = make_sandbox()
    zygotes = _zygotes()
    assert zygotes, "control: the test sees the zygote process"
    before = {pid: descendants(os.getpid())[pid] for pid in zygotes}
    outcome = probe(
        sb,
        f"""
        import os, signal
        killed = []
        for pid in {zygotes!r}:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
        if not killed:
            raise ProcessLookupError("the zygote is out of reach")
        return killed
    """,
    )
    assert_blocked(outcome, f"kill the zygote {zygotes}")
    assert sorted(still_running(before)) == sorted(zygotes), "a zygote died"
    assert_alive(sb)
    assert_new_sandbox_works(make_sandbox)


def test_kill_everything_reaches_only_the_own_session(make_sandbox):
    victim = make_sandbox()
    assert victim.execute("x = 41").error is None
    attacker = make_sandbox()
    outcome = probe(
        attacker,
        """
        import os, signal
        os.kill(-1, signal.SIGKILL)
        return "survived kill(-1)"
    """,
    )
    # The attacker's own step may die; what matters is that nobody else did.
    assert outcome.status in ("ended", "ok", "blocked")
    result = victim.execute("x + 1")
    assert result.value == "42", f"another session was hurt by kill(-1, SIGKILL): {result}"
    assert_alive(attacker)
    assert_new_sandbox_works(make_sandbox)


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGSTOP"])
def test_signalling_pid_1_does_not_break_the_session(make_sandbox, sig):
    sb = make_sandbox()
    assert sb.execute("kept = 'still here'").error is None
    probe(sb, f"import os, signal\nos.kill(1, signal.{sig})\nreturn 'sent'")
    time.sleep(0.1)
    result = sb.execute("kept")
    assert result.value == "'still here'", f"{sig} sent to pid 1 by the code ended the session: {result}"


def assert_runaway_stopped(sb, code: str) -> None:
    """`code`, then an endless loop, ends in an error within a bounded time, and the sandbox lives on."""
    started = time.monotonic()
    result = sb.execute(code + "\nwhile True:\n    pass\n")
    elapsed = time.monotonic() - started
    assert result.error is not None, f"the runaway step was not stopped: {result}"
    assert elapsed < 15, f"the step ran {elapsed:.1f} s past a 1 s limit"
    assert_alive(sb)


def test_killing_the_supervisor_cannot_disable_the_time_limit(make_sandbox):
    sb = make_sandbox(timeout=1)
    assert sb.execute("warm = 1").error is None  # from now on the step's parent is a holder, not pid 1
    assert_runaway_stopped(
        sb,
        """
import os, signal
for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
    if pid not in (1, os.getpid()):
        os.kill(pid, signal.SIGKILL)
""",
    )


STOP_THE_CLOCK = """
import ctypes, os
libc = ctypes.CDLL(None)
stopped = 0
for fd in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    if "timerfd" in target:  # the clock the step's holder sleeps on: disarm it
        stopped += libc.timerfd_settime(int(fd), 0, (ctypes.c_long * 4)(), None) == 0
"""


def test_stopping_the_step_clock_cannot_disable_the_time_limit(make_sandbox, backend):
    if backend != "process":
        pytest.skip("the step clock (a timerfd) is part of the native backend")
    sb = make_sandbox(timeout=1)
    assert int(sb.execute(STOP_THE_CLOCK + "stopped").value) >= 1  # the attack reaches the clock
    assert_runaway_stopped(sb, STOP_THE_CLOCK)


# --- process and thread bombs --------------------------------------------------------------------


def test_fork_bomb_is_bounded_and_cleaned_up(make_sandbox):
    me = os.getpid()
    baseline = set(descendants(me))
    sb = make_sandbox(timeout=3)
    peak = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], len(set(descendants(me)) - baseline))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = sb.execute("""
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
""")
    finally:
        stop.set()
        watcher.join()
    assert result.error is not None, f"the fork bomb step did not end with an error: {result}"
    assert peak[0] <= 64 + 8, f"the fork bomb made {peak[0]} host processes (limit 64)"
    assert_alive(sb)
    host_view = descendants(me)
    session = {pid: host_view[pid] for pid in sb.processes() if pid in host_view}
    assert session, "control: the host sees the session's processes"
    sb.close()
    assert wait_until(lambda: not still_running(session), 5), "fork bomb processes outlived close()"
    assert_new_sandbox_works(make_sandbox)


def test_thread_bomb_is_bounded(make_sandbox):
    sb = make_sandbox(timeout=20)
    outcome = probe(
        sb,
        """
        import threading
        release = threading.Event()
        started = 0
        try:
            while started < 20000:
                threading.Thread(target=release.wait, daemon=True).start()
                started += 1
        finally:
            release.set()
        return started
    """,
    )
    assert_blocked(outcome, "start 20000 threads")
    assert_alive(sb)


def test_no_process_is_left_behind_after_close(make_sandbox, backend):
    if backend != "process":
        pytest.skip("checks the native backend's processes")
    me = os.getpid()
    baseline = set(descendants(me, min_depth=2))
    sb = make_sandbox()
    result = sb.execute("""
import os, signal, time
for _ in range(3):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                signal.signal(sig, signal.SIG_IGN)
            while True:
                time.sleep(1)
        os._exit(0)
time.sleep(0.2)
""")
    assert result.error is None, result
    host_view = descendants(me, min_depth=2)
    spawned = {pid: host_view[pid] for pid in sb.processes() if pid in host_view and pid not in baseline}
    assert len(spawned) >= 3, f"control: the host sees the session's daemons: {spawned}"
    sb.close()
    assert wait_until(lambda: not still_running(spawned), 5), (
        f"processes of a closed session still run on the host: {still_running(spawned)}"
    )


def test_killing_the_host_kills_every_sandbox_process(tmp_path):
    script = tmp_path / "host.py"
    daemons = "\n".join(
        [
            "import os, time",
            "for _ in range(3):",
            "    if os.fork() == 0:",
            "        os.setsid()",
            "        while True:",
            "            time.sleep(1)",
            "time.sleep(0.2)",
        ]
    )
    script.write_text(
        textwrap.dedent(f"""
        import time
        from codeact import Sandbox
        sb = Sandbox(timeout=10)
        sb.start()
        r = sb.execute({daemons!r})
        assert r.error is None, r
        print("READY", flush=True)
        time.sleep(60)
    """)
    )
    host = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    try:
        line = host.stdout.readline() if host.stdout else ""
        assert line.strip() == "READY", f"control: the host script started a sandbox (got {line!r})"
        tree = descendants(host.pid)
        assert len(tree) >= 5, f"control: the zygote, session and daemons run: {tree}"
    finally:
        host.kill()
        host.wait()
    assert wait_until(lambda: not still_running(tree), 10), (
        f"sandbox processes outlived their killed host: {still_running(tree)}"
    )


# --- privileges and namespaces --------------------------------------------------------------------


def test_cannot_become_root(make_sandbox):
    sb = make_sandbox()
    for call in ("os.setuid(0)", "os.setgid(0)", "os.setresuid(0, 0, 0)", "os.setgroups([0])", "os.seteuid(0)"):
        outcome = probe(sb, f"import os\n{call}\nreturn (os.getuid(), os.geteuid(), os.getgid())")
        assert_blocked(outcome, call)
    assert_alive(sb)


def test_capabilities_cannot_be_regained(make_sandbox):
    sb = make_sandbox()
    outcome = probe(
        sb,
        """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]
        data = (Data * 2)(Data(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), Data(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF))
        libc.capset(ctypes.byref(Header(0x20080522, 0)), data)
        libc.prctl(47, 2, 21, 0, 0)  # PR_CAP_AMBIENT_RAISE CAP_SYS_ADMIN
        status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
        caps = {k: int(status[k], 16) for k in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb")}
        if not any(caps.values()) and status["NoNewPrivs"].strip() == "1":
            raise PermissionError(f"no capabilities: {caps}")
        return caps, status["NoNewPrivs"]
    """,
    )
    assert_blocked(outcome, "regain capabilities")
    assert_alive(sb)


@pytest.mark.parametrize(
    "call",
    [
        "libc.unshare(0x10000000)",  # CLONE_NEWUSER: a fresh user namespace would grant all capabilities
        "libc.unshare(0x00020000)",  # CLONE_NEWNS
        "libc.unshare(0x40000000)",  # CLONE_NEWNET
        "libc.syscall(272, 0x02000000)",  # unshare(CLONE_NEWCGROUP) by number
        "libc.setns(os.open('/proc/1/ns/user', os.O_RDONLY), 0)",
        "libc.setns(os.open('/proc/self/ns/mnt', os.O_RDONLY), 0)",
    ],
)
def test_new_namespaces_cannot_be_entered(make_sandbox, call):
    sb = make_sandbox()
    outcome = probe(
        sb,
        f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        if {call} != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        return "entered"
    """,
    )
    assert_blocked(outcome, call)
    assert_alive(sb)


def test_clone_with_a_new_user_namespace_is_denied(make_sandbox):
    sb = make_sandbox()
    outcome = probe(
        sb,
        """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        pid = libc.syscall(56, ctypes.c_ulong(0x10000000 | 17), None, None, None, None)  # clone(NEWUSER|SIGCHLD)
        if pid == 0:
            os._exit(0)
        if pid < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        os.waitpid(pid, 0)
        return f"child {pid} ran in a new user namespace"
    """,
    )
    assert_blocked(outcome, "clone(CLONE_NEWUSER)")
    assert_alive(sb)


def test_mount_chroot_and_pivot_root_are_denied(make_sandbox):
    sb = make_sandbox()
    outcome = probe(
        sb,
        """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        os.makedirs("/tmp/m", exist_ok=True)
        done = []
        attempts = {
            "tmpfs": lambda: libc.mount(b"none", b"/tmp/m", b"tmpfs", 0, None),
            "proc": lambda: libc.mount(b"proc", b"/tmp/m", b"proc", 0, None),
            "sysfs": lambda: libc.mount(b"sysfs", b"/tmp/m", b"sysfs", 0, None),
            "cgroup": lambda: libc.mount(b"cgroup", b"/tmp/m", b"cgroup", 0, b"memory"),
            "remount rw": lambda: libc.mount(None, b"/", None, 32 | 4096, None),
            "bind /": lambda: libc.mount(b"/", b"/tmp/m", None, 4096 | 16384, None),
            "umount /proc": lambda: libc.umount2(b"/proc", 2),
            "chroot": lambda: libc.chroot(b"/tmp"),
            "pivot_root": lambda: libc.syscall(155, b"/tmp", b"/tmp/m"),
        }
        for name, attempt in attempts.items():
            if attempt() == 0:
                done.append(name)
        if not done:
            raise PermissionError("every mount, chroot and pivot_root was refused")
        return done
    """,
    )
    assert_blocked(outcome, "mount, unmount, chroot or pivot_root")
    assert_alive(sb)


def test_hostname_change_does_not_reach_the_host(make_sandbox):
    before = socket.gethostname()
    sb = make_sandbox()
    outcome = probe(
        sb,
        """
        import socket
        socket.sethostname("pwned-host")
        return socket.gethostname()
    """,
    )
    assert_blocked(outcome, "set the hostname")
    outcome = probe(
        sb,
        """
        with open("/proc/sys/kernel/hostname", "w") as f:
            f.write("pwned-host")
        return "written"
    """,
    )
    assert_blocked(outcome, "write /proc/sys/kernel/hostname")
    assert socket.gethostname() == before, "the host's hostname changed"
    assert_alive(sb)


def test_system_clock_cannot_be_set(make_sandbox):
    sb = make_sandbox()
    outcome = probe(
        sb,
        """
        import time
        time.clock_settime(time.CLOCK_REALTIME, time.time())  # same time: harmless if it were allowed
        return "clock set"
    """,
    )
    assert_blocked(outcome, "clock_settime")
    outcome = probe(
        sb,
        """
        import ctypes, os, time
        libc = ctypes.CDLL(None, use_errno=True)
        class TimeVal(ctypes.Structure):
            _fields_ = [("sec", ctypes.c_long), ("usec", ctypes.c_long)]
        now = time.time()
        if libc.settimeofday(ctypes.byref(TimeVal(int(now), 0)), None) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        return "time set"
    """,
    )
    assert_blocked(outcome, "settimeofday")
    assert_alive(sb)


def test_no_rollback_mode_refuses_fork_and_still_enforces_the_time_limit(make_sandbox, backend):
    if backend != "process":
        pytest.skip("rollback=False is an option of the native backend")
    sb = make_sandbox(rollback=False, timeout=2)
    outcome = probe(
        sb,
        """
        import os
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        return "forked"
    """,
    )
    assert_blocked(outcome, "fork in a session without rollback")
    started = time.monotonic()
    result = sb.execute("""
import os, signal
for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
    if pid not in (1, os.getpid()):
        os.kill(pid, signal.SIGKILL)
while True:
    pass
""")
    assert result.error is not None, result
    assert time.monotonic() - started < 15, "killing its supervisor let the step outrun the time limit"
    assert_alive(sb)
