"""Behaviour specific to the native process sandbox: layers, rollback, clean-up, pools."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest

from attacks import descendants
from codeact import Sandbox
from codeact.sandbox import SandboxPool, detect_layers
from codeact.sandbox.process.isolation import LAYER_NAMES

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the native sandbox needs Linux")


def _pid_of(pidfd: int) -> int:
    with open(f"/proc/self/fdinfo/{pidfd}") as f:
        return int(f.read().split("Pid:")[1].split()[0])


def _gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def test_every_layer_is_reported_and_active_here():
    layers = detect_layers()
    assert [layer.name for layer in layers] == LAYER_NAMES
    missing = [f"{layer.name}: {layer.detail}" for layer in layers if not layer.active]
    assert not missing, f"isolation layers missing on this machine: {missing}"


def test_strict_starts_when_every_layer_is_there():
    with Sandbox(strict=True, backend="process") as sb:
        assert sb.execute("1 + 1").value == "2"


_DEGRADED = textwrap.dedent(
    """
    import json, sys
    from codeact import Sandbox
    from codeact.sandbox import InterpreterError
    out = {}
    try:
        Sandbox(strict=True, backend="process").start()
        out["strict"] = "started"
    except InterpreterError as exc:
        out["strict"] = str(exc)
    with Sandbox(backend="process") as sb:
        out["missing"] = [layer.name for layer in sb.layers if not layer.active]
        out["secret"] = sb.execute("open(sys_secret).read()".replace("sys_secret", repr(sys.argv[1]))).error is not None
        out["exec"] = sb.execute("import os\\nos.execv('/bin/true', ['true'])").error is not None
        out["sum"] = sb.execute("sum(range(10))").value
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_without_user_namespaces_strict_refuses_and_the_rest_still_holds(tmp_path):
    """Run the host in a user namespace that cannot map ids, as on hosts with userns locked down."""
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    proc = subprocess.run(
        ["unshare", "-U", sys.executable, "-c", _DEGRADED, str(secret)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["strict"].startswith("strict sandbox refused to start; missing layers: user namespace")
    assert "unprivileged_userns_clone" in out["strict"]  # says what to do
    assert "user namespace" in out["missing"] and "landlock" not in out["missing"]
    assert out["secret"] is True  # Landlock still hides files that were not granted
    assert out["exec"] is True  # seccomp still forbids exec
    assert out["sum"] == "45"


def test_close_leaves_no_process_or_cgroup_behind():
    sb = Sandbox(backend="process")
    sb.start()
    sb.execute("import os, time\nif os.fork() == 0:\n    time.sleep(60)")
    pids = sb.processes()
    assert len(pids) >= 3  # keeper, holder or worker, and the sleeping child
    cgroup = list(sb.backend._cgroup)
    sb.close()
    assert all(_gone(pid) for pid in pids)
    deadline = time.monotonic() + 5
    while cgroup and any(os.path.exists(d) for d in cgroup) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(os.path.exists(d) for d in cgroup)


def test_a_zygote_removes_cgroup_trees_that_killed_zygotes_left_behind():
    with Sandbox(backend="process") as sb:
        sb.execute("1")
        groups = list(sb.backend._cgroup)
    if not groups:
        pytest.skip("no writable cgroup tree here")
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = [os.path.join(os.path.dirname(os.path.dirname(d)), f"codeact-{dead.pid}-left") for d in groups]
    for tree in left:
        os.makedirs(os.path.join(tree, "s1"))  # a session cgroup inside, as a killed zygote leaves them
    try:
        # a zygote of its own (another preload) sweeps when it is idle
        with Sandbox(backend="process", preload=["colorsys"]) as sb:
            assert sb.execute("1").value == "1"
            deadline = time.monotonic() + 20
            while any(os.path.exists(t) for t in left) and time.monotonic() < deadline:
                time.sleep(0.1)
        assert not any(os.path.exists(t) for t in left)
    finally:
        for tree in left:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(tree, "s1"))
                os.rmdir(tree)


def test_sessions_die_when_the_host_is_killed():
    host = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
            import time
            from codeact import Sandbox
            from codeact.sandbox.process.backend import zygote_for
            sb = Sandbox(backend="process")
            sb.start()
            sb.execute("x = 1")
            with open(f"/proc/self/fdinfo/{sb.backend._pidfds[0]}") as f:
                keeper = f.read().split("Pid:")[1].split()[0]
            print(zygote_for(()).process.pid, keeper, flush=True)
            time.sleep(60)
            """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert host.stdout is not None
    zygote, keeper = (int(p) for p in host.stdout.readline().split())
    host.send_signal(signal.SIGKILL)
    host.wait()
    assert _gone(keeper), "the session outlived its host"
    assert _gone(zygote), "the zygote outlived its host"


def test_a_crash_keeps_the_variables_from_before_it():
    with Sandbox(backend="process") as sb:
        sb.execute("data = [1, 2, 3]")
        r = sb.execute("import ctypes\nctypes.string_at(0)")
        assert r.error is not None and r.error.type == "SandboxCrashed"
        assert "SIGSEGV" in r.error.message and "kept" in r.error.message
        r = sb.execute("import os\ndata.append(4)\nos._exit(7)")
        assert "exit status 7" in r.error.message
        assert sb.execute("data").value == "[1, 2, 3]"


def test_timeout_kills_processes_the_step_started():
    with Sandbox(timeout=1, backend="process") as sb:
        r = sb.execute("import os, time\nif os.fork() == 0:\n    while True: pass\ntime.sleep(30)")
        assert r.timed_out
        r = sb.execute("import os\nsorted(int(p) for p in os.listdir('/proc') if p.isdigit())")
        assert len(eval(r.value)) <= 3  # keeper, holder and worker; no leftover spinner


def test_without_rollback_fork_is_denied_and_a_crash_resets_the_session():
    with Sandbox(rollback=False, backend="process") as sb:
        sb.execute("data = 1")
        assert sb.execute("data + 1").value == "2"
        r = sb.execute("import os\nos.fork()")
        assert r.error is not None and r.error.type == "PermissionError"
        r = sb.execute("import os\nos._exit(1)")
        assert r.error is not None and "lost" in r.error.message
        assert sb.execute("'data' in dir()").value == "False"
        assert sb.execute("1 + 1").value == "2"


def _ping(x: int) -> int:
    """Return x."""
    return x


@pytest.mark.parametrize("ending", ["import os\nos._exit(1)", "while True:\n    pass"], ids=["crash", "timeout"])
def test_without_rollback_a_reset_session_has_its_tools_submit_and_given_variables_again(ending):
    # The next worker starts from the session's first state, which never had them: they are sent again.
    with Sandbox([_ping], rollback=False, timeout=2, backend="process") as sb:
        sb.set_variables({"given": 5})
        assert sb.execute("made = _ping(given)\nmade").value == "5"
        r = sb.execute(ending)
        assert r.error is not None and "lost" in r.error.message
        assert sb.execute("'made' in dir()").value == "False"
        assert sb.execute("_ping(given + 1)").value == "6"
        assert sb.execute("submit(answer=given)").submitted == {"answer": 5}


def test_without_rollback_nothing_a_step_left_unread_reaches_the_next():
    """One worker serves every step: a step whose code never read its inputs, or never awaited its
    tool call, must not leave a frame behind for the next one, and many steps leak no descriptor."""
    with Sandbox([_ping], rollback=False, backend="process") as sb:
        count_fds = "import os\nlen(os.listdir('/proc/self/fd'))"
        before = sb.execute(count_fds).value
        for i in range(10):
            sb.set_variables({"given": i, "other": -i})
            assert sb.execute("given +").error is not None  # does not compile: its inputs stay unread
            started = (
                "async def main():\n    calls = [_ping(-n) for n in range(5)]\n    return len(calls)\nawait main()"
            )
            assert sb.execute(started).value == "5"  # calls started, never awaited
            assert sb.execute(f"_ping({i})").value == str(i)
            assert sb.execute(f"{i} + 1").value == str(i + 1)
        assert sb.execute(count_fds).value == before


def test_a_restarted_session_has_the_given_variables_again():
    with Sandbox(backend="process") as sb:
        sb.set_variables({"given": 5})
        assert sb.execute("given").value == "5"
        keeper = _pid_of(sb.backend._pidfds[0])
        os.kill(keeper, signal.SIGKILL)
        assert _gone(keeper)  # and with it the whole pid namespace: a step sent sooner could still answer
        r = sb.execute("given")
        assert r.error is not None and r.error.type == "SandboxCrashed"
        r = sb.execute("given")
        assert r.value == "5" and "restarted" in r.stderr


def test_without_rollback_each_step_gets_its_full_cpu_time():
    # One worker serves every step, and RLIMIT_CPU counts a process's whole life: the limit must
    # follow the CPU the earlier steps used, or the sixth step here dies of SIGXCPU. Each step
    # uses a quarter of its time limit, so a loaded machine still finishes it in time.
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0:\n    pass\n'ok'"
    with Sandbox(rollback=False, timeout=4, backend="process") as sb:
        sb.execute("kept = 1")
        for _ in range(6):
            r = sb.execute(burn)
            assert r.error is None and r.value == "'ok'", r.error
        assert sb.execute("kept").value == "1"


def test_session_killed_from_outside_is_restarted_with_a_notice():
    with Sandbox(backend="process") as sb:
        sb.execute("x = 1")
        keeper = _pid_of(sb.backend._pidfds[0])
        os.kill(keeper, signal.SIGKILL)
        assert _gone(keeper)
        time.sleep(0.1)
        r = sb.execute("x")
        assert r.error is not None and r.error.type == "SandboxCrashed"
        r = sb.execute("1 + 1")
        assert r.value == "2"
        assert "restarted" in r.stderr


def test_the_code_has_a_home_and_a_user_name():
    # Libraries find their config and cache directories through these; neither needs the environment.
    with Sandbox(backend="process") as sb:
        r = sb.execute(
            "import getpass, os, pathlib\n"
            "os.makedirs(os.path.expanduser('~/.cache/lib'))\n"
            "str(pathlib.Path.home()), getpass.getuser(), os.path.isdir('/tmp/.cache/lib')"
        )
        assert r.error is None, r.error
        assert r.value == "('/tmp', 'sandbox', True)"
        assert sb.execute("import os\ndict(os.environ)").value == "{}"


def test_the_code_sees_no_command_line_arguments():
    with Sandbox(backend="process") as sb:
        r = sb.execute("import argparse, sys\nparser = argparse.ArgumentParser()\nparser.parse_args(), sys.argv")
        assert r.error is None, r.error
        assert r.value == "(Namespace(), [''])"


def test_the_code_can_start_threads_up_to_the_process_limit():
    # glibc gives each new thread's allocations an arena that reserves 64 MB of address space: under the
    # session's address-space limit only about 15 threads could start
    code = (
        "import threading\nrelease = threading.Event()\nthreads = []\n"
        "for _ in range(48):\n    threads.append(threading.Thread(target=release.wait))\n    threads[-1].start()\n"
        "release.set()\nfor t in threads:\n    t.join()\nlen(threads)"
    )
    with Sandbox(backend="process") as sb:
        r = sb.execute(code)
        assert r.error is None, r.error
        assert r.value == "48"


def threads_until_the_limit(target: str) -> str:
    """Code that starts daemon threads running `target` until no more can start; `started` counts them."""
    return (
        "import threading, time\nstarted = 0\ntry:\n    while started < 1000:\n"
        f"        threading.Thread(target={target}, daemon=True).start()\n        started += 1\n"
        "except RuntimeError:\n    pass\n"
    )


def test_threads_that_fill_the_process_limit_and_outlive_their_step_leave_the_session_working():
    # the next step's worker is forked once they have exited (it used to fail: the session ended)
    with Sandbox(backend="process", timeout=30) as sb:
        assert sb.execute(threads_until_the_limit("time.sleep, args=(0.5,)") + "kept = started").error is None
        r = sb.execute("kept > 30")
        assert r.error is None and r.value == "True", r.error


def test_threads_that_keep_the_process_limit_full_end_the_session_saying_so():
    with Sandbox(backend="process", timeout=30) as sb:
        assert (
            sb.execute(
                "import threading\nforever = threading.Event()\n" + threads_until_the_limit("forever.wait")
            ).error
            is None
        )
        r = sb.execute("1 + 1")  # no worker can be forked for it
        assert r.error is not None and r.error.type == "SandboxCrashed", r.error
        assert "the sandbox session failed" in r.error.message and "a new session" in r.error.message
        assert sb.execute("1 + 1").value == "2"


def test_a_thread_left_waiting_on_a_tool_leaves_the_next_steps_tools_working():
    # The thread still reads the step's channel for its reply when its step ends, and the next step's
    # worker is forked from that state: it used to wait forever for that reader (every later call
    # timed out).
    gate = threading.Event()

    def slow(x: int) -> int:
        """Answers once the test lets it."""
        gate.wait(30)
        return x

    def ping(x: int) -> int:
        """Answers at once."""
        return x

    try:
        with Sandbox([slow, ping], backend="process", timeout=10) as sb:
            started = sb.execute(
                "import threading, time\nkeep = 41\nthreading.Thread(target=slow, args=(1,), daemon=True).start()\n"
                "time.sleep(0.5)"
            )
            assert started.error is None, started.error
            assert [(call.name, call.abandoned) for call in started.tool_calls] == [("slow", True)]
            for expected in ("41", "41"):
                r = sb.execute("ping(keep)")
                assert r.error is None and r.value == expected, r.error
    finally:
        gate.set()


def test_a_process_forked_while_a_thread_waits_for_a_tools_reply_reads_its_own_replies():
    # A worker is forked from the state its last step left: there, a thread may still be the one
    # reading the channel for a reply. The fork has no such thread, so it must read for itself.
    from codeact.sandbox import step as guest
    from codeact.sandbox import wire

    host, guest_end = socket.socketpair()
    channel = [guest_end]
    client = guest.ToolClient(lambda frame: channel[0].sendall(frame), lambda: wire.recv(channel[0]))
    client.active = True
    waiting = threading.Thread(target=client.call, args=("slow", [], {}), daemon=True)
    waiting.start()
    assert wire.recv(host)["tool"] == "slow"
    for _ in range(500):  # it sent its call; it reads for the reply next
        if client.reading:
            break
        time.sleep(0.01)
    assert client.reading
    next_host, next_guest = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            signal.alarm(20)  # without the fix: waits for the missing reader until this ends it
            channel[0] = next_guest
            client.active = True
            wire.send(next_host, {"op": "return", "id": 2, "value": wire.encode(5)})
            os._exit(0 if client.call("ping", [], {}) == 5 else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    wire.send(host, {"op": "return", "id": 1, "value": wire.encode(1)})
    waiting.join()
    for sock in (host, guest_end, next_host, next_guest):
        sock.close()


def test_a_thread_blocked_writing_to_stderr_leaves_the_next_steps_working():
    # After its step, the thread blocks in a write to sys.__stderr__ (fd 2 is now a pipe nobody
    # reads), holding the stream's lock. Without prefork the next worker is forked when its command
    # comes, from that state; it used to wait for the lock forever when the step's end flushed stderr.
    with Sandbox(backend="process", timeout=10, prefork=False) as sb:
        started = sb.execute(
            "import os, sys, threading, time\nkeep = 41\nread_end, write_end = os.pipe()\n"
            "def shout():\n    time.sleep(0.3)\n    os.dup2(write_end, 2)\n"
            "    sys.__stderr__.write('x' * (1 << 20))\n    sys.__stderr__.flush()\n"
            "writer = threading.Thread(target=shout, daemon=True)\nwriter.start()"
        )
        assert started.error is None, started.error
        time.sleep(1)  # the thread's write is blocked by now, its lock taken
        for expected in ("42", "42"):
            r = sb.execute("keep + 1")
            assert r.error is None and r.value == expected, r.error


@pytest.mark.parametrize("threads", [0, 3], ids=["no threads", "threads left running"])
@pytest.mark.parametrize("rollback", [True, False], ids=["rollback", "no rollback"])
def test_an_alarm_the_code_left_armed_costs_no_variables(rollback, threads):
    # It fires between steps: with rollback in the holder that keeps the variables, without in the
    # worker waiting for the next step. Its handler raised there and ended the session. With threads
    # left running a thread takes the signal, and CPython runs the handler in the main thread.
    with Sandbox(backend="process", timeout=10, rollback=rollback) as sb:
        armed = sb.execute(
            f"import signal, threading\nkeep = 41\nidle = threading.Event()\nfor _ in range({threads}):\n"
            "    threading.Thread(target=idle.wait, daemon=True).start()\n"
            "def on_alarm(*_):\n    raise TimeoutError('too slow')\n"
            "previous = signal.signal(signal.SIGALRM, on_alarm)\nsignal.setitimer(signal.ITIMER_REAL, 0.05)\n"
            "previous is signal.SIG_DFL"
        )
        assert armed.error is None and armed.value == "True", armed.error  # signal.signal as the code knows it
        time.sleep(0.5)  # it has fired by now
        first, second = sb.execute("keep + 1"), sb.execute("keep + 1")
        for r in (first, second):
            assert r.error is None and r.value == "42", r.error
        if not rollback:  # the worker that got it runs the code's handler as the next step starts
            assert "[sandbox] a signal handler raised TimeoutError between steps: too slow" in first.stderr


def test_a_signal_the_code_sends_the_state_holder_does_not_cost_the_variables():
    with Sandbox(backend="process", timeout=10) as sb:
        assert sb.execute("keep = 41").error is None
        r = sb.execute("import os, signal\nos.kill(os.getppid(), signal.SIGTERM)\nos._exit(1)")
        assert r.error is not None and r.error.type == "SandboxCrashed", r.error
        assert "variables from before this step are kept" in r.error.message
        assert sb.execute("keep + 1").value == "42"


def test_code_that_freezes_the_clock_still_has_a_runaway_step_stopped_keeping_the_variables():
    # As freezegun does, or a test double: the session's own clock must not stop with the code's.
    with Sandbox(backend="process", timeout=3) as sb:
        frozen = sb.execute("import time\nkeep = 41\ntime.monotonic = time.perf_counter = lambda: 0.0")
        assert frozen.error is None, frozen.error
        r = sb.execute("while True:\n    pass")
        assert r.error is not None and r.error.type == "Timeout", r.error
        assert "variables from before this step are kept" in r.error.message
        assert sb.execute("keep + 1").value == "42"


def test_code_that_replaces_json_functions_keeps_its_session():
    def ping(x: int) -> dict:
        """Answers at once."""
        return {"x": x}

    with Sandbox([ping], backend="process", timeout=10) as sb:
        replaced = sb.execute(
            "import json\nkeep = 41\njson.loads = lambda *a, **k: {}\njson.dumps = lambda *a, **k: 'nope'"
        )
        assert replaced.error is None, replaced.error
        r = sb.execute("ping(keep)")
        assert r.error is None and r.value == "{'x': 41}", r.error
        assert sb.execute("json.dumps([1])").value == "'nope'"  # the code's own choice still holds


def test_a_process_pool_runs_functions_the_code_defined():
    with Sandbox(backend="process") as sb:
        r = sb.execute(
            "from multiprocessing import Pool\ndef square(x):\n    return x * x\nwith Pool(2) as pool:\n    squares = pool.map(square, range(5))\nsquares"
        )
        assert r.error is None, r.error
        assert r.value == "[0, 1, 4, 9, 16]"


def test_with_network_the_code_trusts_the_systems_certificate_authorities():
    from codeact.sandbox.process.backend import certificate_paths

    if not certificate_paths():
        pytest.skip("this machine has no CA certificates where OpenSSL looks by default")
    count = "import ssl\nssl.create_default_context().cert_store_stats()['x509_ca']"
    with Sandbox(backend="process", network=True) as sb:
        r = sb.execute(count)
        assert r.error is None, r.error
        assert int(r.value) > 0
    with Sandbox(backend="process") as sb:
        assert sb.execute(count).value == "0"  # without network the root holds nothing it needs


def test_preloaded_libraries_are_imported_before_the_first_step():
    pytest.importorskip("numpy")
    with Sandbox(preload=["numpy"], backend="process") as sb:
        assert sb.execute("import sys\n'numpy' in sys.modules").value == "True"


def test_unknown_preload_is_reported_not_fatal(caplog):
    with Sandbox(preload=["no_such_module_xyz"], backend="process") as sb:
        assert sb.execute("1").value == "1"
    assert "no_such_module_xyz" in caplog.text


def test_pool_serves_fresh_sessions_with_tools():
    def triple(x: int) -> int:
        return 3 * x

    with SandboxPool(size=2) as pool:
        for i in range(6):
            with pool.session(tools=[triple]) as sb:
                assert sb.execute("'leak' in dir()").value == "False"
                sb.execute(f"leak = {i}")
                assert sb.execute(f"triple({i})").value == str(3 * i)


def test_codeact_runs_take_fresh_sessions_from_a_pool():
    from codeact import CodeAct, ScriptedLM

    reply = "```python\ntry:\n    leak\n    seen = 'leaked'\nexcept NameError:\n    seen = 'fresh'\nleak = 1\nsubmit(answer=seen)\n```"
    with SandboxPool(size=1) as pool:
        act = CodeAct("q -> answer", lm=ScriptedLM([reply] * 3), interpreter=pool.take)
        assert [act(q="?").answer for _ in range(3)] == ["fresh"] * 3


def test_bad_options_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match=r"read path .* does not exist"):
        Sandbox(read_paths=[tmp_path / "missing"], backend="process")
    with pytest.raises(ValueError, match="512MB"):
        Sandbox(memory_limit="lots", backend="process")
    with pytest.raises(ValueError, match="may not be called 'submit'"):
        Sandbox(tools=[submit], backend="process")
    with pytest.raises(ValueError, match="share the name"):
        Sandbox(tools=[submit_twice, submit_twice], backend="process")
    with pytest.raises(ValueError, match="timeout"):
        Sandbox(timeout=0, backend="process")


def submit(x: int) -> int:
    return x


def submit_twice(x: int) -> int:
    return x


def test_output_written_below_python_is_captured():
    with Sandbox(backend="process") as sb:
        r = sb.execute(
            'import os, ctypes\nprint("py")\nos.write(1, b"raw\\n")\nos.write(2, b"err\\n")\n'
            'ctypes.CDLL(None).printf(b"from C\\n")'
        )
        assert r.stdout == "py\nraw\nfrom C\n"
        assert r.stderr == "err\n"
        assert sb.execute("print('next')").stdout == "next\n"  # drained between steps


async def test_cancelling_an_async_execute_ends_the_step_and_a_waiting_tool():
    import asyncio

    async def never(x: int) -> int:
        await asyncio.sleep(1000)
        return x

    sb = Sandbox(tools=[never], backend="process")
    sb.start()
    try:
        task = asyncio.create_task(sb.aexecute("never(1)"))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        result = await asyncio.wait_for(sb.aexecute("1 + 1"), timeout=10)
        assert result.value == "2", result.error
        assert "restarted" in result.stderr
    finally:
        sb.close()


def test_strict_allows_the_network_it_was_asked_for():
    with Sandbox(strict=True, network=True, backend="process") as sb:  # the proxy is the way out: every layer stays
        assert next(layer for layer in sb.layers if layer.name == "net namespace").active
        assert sb.execute("import os\nos.environ['HTTPS_PROXY']").value == "'http://127.0.0.1:3128'"


# --- the seam: fork, mounts, what the zygote carries ----------------------------------------------------
def test_a_forked_child_that_runs_off_the_step_does_not_break_the_session():
    with Sandbox(backend="process") as sb:
        r = sb.execute("import os\nchild = os.fork()\nx = 5")  # the child neither execs nor exits
        assert r.error is None, r.error
        r = sb.execute("x + 1")
        assert r.error is None and r.value == "6"
        r = sb.execute("x * 2")
        assert r.value == "10"


def test_import_directories_of_the_host_are_not_visible_unless_granted(tmp_path, monkeypatch):
    secret_dir = tmp_path / "project"
    secret_dir.mkdir()
    (secret_dir / ".env").write_text("API_KEY=hunter2\n")
    monkeypatch.syspath_prepend(str(secret_dir))
    monkeypatch.syspath_prepend("/tmp")  # a host that runs from /tmp (pytest does) must not expose it
    marker = tempfile.NamedTemporaryFile(dir="/tmp", prefix="codeact-host-only-", delete=False)  # noqa: SIM115
    marker.close()
    try:
        with Sandbox(backend="process") as sb:
            r = sb.execute(
                f"import os\nprint(os.path.exists({str(secret_dir)!r}), os.path.exists({marker.name!r}),"
                f" {os.path.basename(marker.name)!r} in os.listdir('/tmp'))"
            )
    finally:
        os.unlink(marker.name)
    assert r.error is None, r.error
    assert r.stdout == "False False False\n"
    with Sandbox(read_paths=[str(secret_dir)], backend="process") as sb:
        assert sb.execute(f"open({str(secret_dir / '.env')!r}).read()").value == repr("API_KEY=hunter2\n")


def test_write_grants_over_a_host_import_directory_are_refused(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="an import directory of the host"):
        Sandbox(write_paths=[str(tmp_path)], backend="process")


def test_the_zygote_carries_only_the_standard_library_and_codeacts_guest_modules():
    with Sandbox(backend="process") as sb:
        r = sb.execute("import sys\nsorted(m for m in sys.modules if not m.startswith('_'))")
    modules = eval(r.value)  # a list of str, printed by our own session
    stdlib = set(sys.stdlib_module_names)
    foreign = [m for m in modules if m.split(".")[0] not in stdlib and m.split(".")[0] != "codeact"]
    assert foreign == [], f"third-party modules in the zygote: {foreign}"
    ours = {m for m in modules if m.startswith("codeact")}
    guest = {"codeact", "codeact.sandbox", "codeact.sandbox.wire", "codeact.sandbox.step", "codeact.sandbox.process"}
    guest |= {
        f"codeact.sandbox.process.{m}"
        for m in ("zygote", "isolation", "linux", "landlock", "seccomp", "cgroup", "runner", "code_signals")
    }
    assert ours <= guest, f"codeact host modules in the zygote: {sorted(ours - guest)}"


def test_multiprocessing_says_processes_are_limited_or_works():
    with Sandbox(timeout=60, backend="process") as sb:
        r = sb.execute(
            "import multiprocessing\nwith multiprocessing.Pool(2) as pool:\n    out = pool.map(abs, [-1, -2])\nout"
        )
    if r.error is None:
        assert r.value == "[1, 2]"
    else:
        assert "process" in r.error.message.lower() and "sandbox" in r.error.message.lower(), r.error


def test_every_session_process_killed_between_steps_is_a_crash_not_an_exception():
    with Sandbox(backend="process") as sb:
        sb.execute("x = 1")
        keeper = _pid_of(sb.backend._pidfds[0])
        for fd in sb.backend._pidfds:  # the keeper (and with it the whole pid namespace) and the session's root
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        assert _gone(keeper)
        r = sb.execute("x")
        assert r.error is not None and r.error.type == "SandboxCrashed"
        assert sb.execute("2 + 2").value == "4"


def test_a_session_isolated_in_advance_has_the_settings_it_was_asked_for(tmp_path):
    # After a session without grants, the zygote isolates the next one with the same settings before
    # it is asked for; a request with other settings must never be handed that one.
    def started(**options):
        with Sandbox(backend="process", **options) as sb:
            seen = sb.execute(
                "import os\nos.environ.get('MARK'), open('/proc/self/status').read().count('Seccomp:\\t2')"
            )
            return seen.value, [(layer.name, layer.active) for layer in sb.layers]

    first = started(env={"MARK": "a"})
    assert first[0] == "('a', 1)"
    for mark in ("a", "a", "b", "a"):  # the same settings (taken in advance), then others, then back
        value, layers = started(env={"MARK": mark})
        assert value == f"('{mark}', 1)"
        assert layers == first[1]
    granted = tmp_path / "granted"
    granted.mkdir()
    (granted / "f.txt").write_text("grant")
    with Sandbox(backend="process", env={"MARK": "a"}, read_paths=[str(granted)]) as sb:
        assert sb.execute(f"open({str(granted / 'f.txt')!r}).read()").value == "'grant'"
    with Sandbox(backend="process", env={"MARK": "a"}) as sb:  # grants never come from one made in advance
        assert sb.execute(f"import os\nos.path.exists({str(granted)!r})").value == "False"


def test_a_tool_call_puts_the_sandbox_to_sleep_at_most_once():
    """Waiting for a reply sleeps once: a wait woken by the host reading the call (not by the reply)
    costs a sleep and a wake-up more a call, in CPU as well as in time."""

    def ping(x: int) -> int:
        return x

    code = (
        "import resource\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw\n"
        "for i in range(500): ping(i)\n"
        "resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before"
    )
    with Sandbox([ping], backend="process") as sb:
        sb.execute("ping(0)")
        assert int(sb.execute(code).value) <= 500 + 50


def test_a_wait_for_slow_replies_sleeps_without_polling():
    """Quick replies are waited for awake, polling; one slower than that sends the next waits to sleep
    at once, so a sandbox whose tools are slow spends no CPU waiting for them."""
    import socket
    import threading

    from codeact.sandbox.process.runner import HostWait

    ours, theirs = socket.socketpair()
    waiter, calls = HostWait(awake_s=0.002), 20

    def answer_slowly() -> None:
        for _ in range(calls):
            theirs.recv(1)
            time.sleep(0.01)
            theirs.send(b"r")

    answering = threading.Thread(target=answer_slowly)
    answering.start()
    cpu = time.thread_time()
    for _ in range(calls):
        ours.send(b"c")
        waiter.wait(ours)
        assert ours.recv(1) == b"r"
    cpu = time.thread_time() - cpu
    answering.join()
    ours.close(), theirs.close()
    assert not waiter.quick
    assert cpu < calls * waiter.awake_s / 2  # awake for each wait, it would be calls * awake_s at least


def test_a_pool_refills_on_one_thread_of_its_own():
    """Taking sessions starts no thread in the caller's time: the pool's one refill thread replaces them."""

    def refilling() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "codeact-pool-refill"}

    earlier = refilling()  # other tests' pools may have left theirs
    with SandboxPool(size=2) as pool:
        taken = [pool.take() for _ in range(4)]
        assert len(refilling() - earlier) == 1
        for sb in taken:
            assert sb.execute("1 + 1").value == "2"
            sb.close()


def test_a_pooled_session_forks_no_process_for_a_step_that_may_never_come():
    """A pool's tasks close their session after their last step: its next worker waits for a next
    command, where a session of its own forks one in advance once the host is quiet."""
    with SandboxPool(size=1) as pool, pool.session() as pooled, Sandbox(backend="process") as alone:
        pooled.execute("x = 1")
        alone.execute("x = 1")
        for _ in range(500):  # keeper, the holder of x and the worker forked in advance
            if len(alone.processes()) == 3:
                break
            time.sleep(0.01)
        assert len(alone.processes()) == 3
        assert len(pooled.processes()) == 2  # keeper, the holder of x
        assert pooled.execute("x + 1").value == "2"


def test_os_system_says_the_sandbox_starts_no_programs():
    """It would start a shell, which the sandbox refuses: an error that says so, not a bare exit status."""
    with Sandbox(backend="process") as sb:
        result = sb.execute("import os\nos.system('ls /')")
        assert result.error is not None and result.error.type == "PermissionError"
        assert "os.system('ls /')" in result.error.message and "starts no programs" in result.error.message
        assert sb.execute("1 + 1").value == "2"


def test_a_signal_handler_that_raises_interrupts_a_wait_for_a_tool():
    """The code's own timeout (an alarm whose handler raises) ends its wait for a slow tool."""

    def slow() -> str:
        time.sleep(3)
        return "late"

    code = textwrap.dedent(
        """
        import signal
        def on_alarm(signum, frame):
            raise TimeoutError("too slow")
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        try:
            outcome = slow()
        except TimeoutError as exc:
            outcome = str(exc)
        outcome
        """
    )
    with Sandbox([slow], backend="process") as sb:
        result = sb.execute(code)
        assert result.error is None, result.error
        assert result.value == "'too slow'"
        assert result.tool_calls[0].abandoned


def _pid_namespace_ids(pid: int) -> list[int]:
    """A process's pid in each pid namespace it is in, the host's first."""
    with open(f"/proc/{pid}/status") as f:
        return next([int(n) for n in line.split()[1:]] for line in f if line.startswith("NSpid:"))


def _private_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith(("Private_Clean:", "Private_Dirty:")))


def test_every_process_of_a_session_is_inside_its_namespaces():
    """The zygote clones a session's keeper straight into its namespaces: no process of the session
    stays outside them, whether it was isolated when asked for or in advance."""
    for env in ({"MARK": "a"}, {"MARK": "b"}, {"MARK": "b"}):  # the last was isolated in advance
        with Sandbox(backend="process", env=env) as sb:
            sb.execute("import os\nif os.fork() == 0:\n    import time; time.sleep(60)")
            pids = sb.processes()
            assert len(pids) >= 3  # keeper, holder or worker, and the sleeping child
            assert _pid_namespace_ids(pids[0])[1:] == [1], "the session's first process is not its pid 1"
            assert all(len(_pid_namespace_ids(pid)) == 2 for pid in pids), "a process outside the namespaces"


@pytest.mark.skipif(not any(os.access(p, os.X_OK) for p in ("/usr/bin/sleep", "/bin/sleep")), reason="no sleep binary")
def test_a_zygote_with_threads_still_isolates_fully_and_keeps_no_interpreter_outside(tmp_path, monkeypatch):
    """A preloaded library that starts a thread keeps the zygote from cloning itself into namespaces:
    a plain fork stays outside as `sleep` (none of the interpreter's memory) and clones the keeper."""
    (tmp_path / "starts_a_thread.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for mark in range(3):  # isolated when asked for (its root moved meanwhile), then in advance
        with Sandbox(backend="process", preload=["starts_a_thread"], env={"MARK": str(min(mark, 1))}) as sb:
            assert sb.execute("x = 41\nx + 1").value == "42"
            assert all(layer.active for layer in sb.backend.layers), sb.backend.layers
            root, keeper = sb.processes()[:2]
            assert len(_pid_namespace_ids(root)) == 1 and _pid_namespace_ids(keeper)[1:] == [1]
            for _ in range(200):  # its exec may not have run yet on a loaded machine
                if _private_kb(root) < 1024:
                    break
                time.sleep(0.01)
            assert _private_kb(root) < 1024, f"session {mark}: its root still holds an interpreter"
            pids = sb.processes()
        assert all(_gone(pid) for pid in pids), "close() left a process of the session running"


@pytest.mark.skipif(not any(os.access(p, os.X_OK) for p in ("/usr/bin/sleep", "/bin/sleep")), reason="no sleep binary")
def test_pid_1_keeps_no_interpreter_once_a_step_committed_and_still_reaps():
    """Once a step has committed pid 1 only reaps: it becomes `sleep` (none of the interpreter's
    memory) with the kernel reaping for it, so the holder each later step leaves is gone, not a zombie."""
    with Sandbox(backend="process") as sb:
        for i in range(20):
            assert sb.execute(f"x = {i}").error is None
        keeper = sb.processes()[0]
        for _ in range(500):  # the last holder's exit and the worker forked in advance may still be under way
            pids = sb.processes()
            if len(pids) <= 3 and _private_kb(keeper) < 1024:
                break
            time.sleep(0.01)
        with open(f"/proc/{keeper}/cmdline") as f:
            assert f.read().split("\0")[0] == "codeact-session", "pid 1 is still the interpreter"
        assert _private_kb(keeper) < 1024
        states = {pid: _state(pid) for pid in pids}
        assert len(pids) <= 3 and "Z" not in states.values(), f"holders left behind: {states}"
        assert sb.execute("x").value == "19"


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_each_session_has_its_own_config_whichever_waiting_shell_serves_it(tmp_path):
    """The zygote serves a request from the shell isolated in advance when it was isolated for the
    same config, else from one still waiting for any config: either way the session has the config
    it asked for (its environment, its grants) and no other's."""
    granted = tmp_path / "granted"
    granted.mkdir()
    write = f"import os\ntry:\n    open({str(granted / 'w')!r}, 'w').close()\n    wrote = True\nexcept OSError:\n    wrote = False\n"
    for mark in ["a", "a", "b", "a", "grant", "grant", "b", "b", "grant", "a"]:
        options = {"write_paths": [granted]} if mark == "grant" else {"env": {"MARK": mark}}
        with Sandbox(backend="process", **options) as sb:
            r = sb.execute(write + "(os.environ.get('MARK'), wrote)")
            assert r.value == repr((None, True) if mark == "grant" else (mark, False)), (mark, r)


def test_a_waiting_shell_killed_from_outside_is_replaced():
    """The zygote keeps shells waiting for requests; one killed from outside meanwhile is replaced, and
    the session it would have served starts all the same."""
    from codeact.sandbox.process.backend import zygote_for

    with Sandbox(backend="process", env={"MARK": "a"}) as first:
        first.execute("1")
        zygote, ours = zygote_for(()).process.pid, set(first.processes())
        for _ in range(500):  # both are forked once the first session has been handed over
            live = descendants(zygote)
            waiting = [pid for pid, (ppid, _, _) in live.items() if ppid == zygote and pid not in ours]
            if len(waiting) == 2:
                break
            time.sleep(0.01)
        assert len(waiting) == 2, waiting  # one isolated for MARK=a, one for any settings
        for pid in waiting:
            os.kill(pid, signal.SIGKILL)
        assert all(_gone(pid) for pid in waiting)
        for mark in ("b", "a"):  # unlike the settings isolated in advance, then like them
            with Sandbox(backend="process", env={"MARK": mark}) as sb:
                assert sb.execute("import os\nos.environ['MARK']").value == repr(mark)
