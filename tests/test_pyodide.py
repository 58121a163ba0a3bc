"""The Pyodide backend's own promises, beyond the shared conformance and security suites.

Deno's permission flags are the boundary of this backend (Python reaches the whole Deno API through
the `js` module), so these tests attack through `js` directly, and check the session's lifecycle:
snapshot start, restart after a kill, reset, clean close, death with the host.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codeact import Sandbox
from codeact.sandbox.interpreter import InterpreterError
from codeact.sandbox.pyodide import installation, status

pytestmark = pytest.mark.skipif(not status().active, reason=f"pyodide backend not installed: {status().remedy}")


@pytest.fixture
def sandbox() -> Iterator[Any]:
    made: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        sb = Sandbox(*args, **kwargs, backend="pyodide")
        made.append(sb)
        sb.start()
        return sb

    yield make
    for sb in made:
        sb.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def _wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


# --- readiness and start-up --------------------------------------------------------------------------


def test_status_reports_each_part_and_how_to_install():
    parts = {p.name: p for p in installation.layers()}
    assert set(parts) == {"deno", "pyodide", "snapshot"}
    assert parts["deno"].active and "deno" in parts["deno"].detail
    assert parts["pyodide"].active and installation.PYODIDE_VERSION in parts["pyodide"].detail


def test_status_names_the_fix_when_pyodide_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(installation, "candidate_dirs", lambda: [tmp_path / "nowhere"])
    missing = installation.status()
    assert not missing.active
    assert "pyodide" in missing.detail and "python -m codeact.sandbox.pyodide install" in missing.remedy


def test_starts_from_the_snapshot_and_reports_its_layers(sandbox):
    sb = sandbox()
    assert sb.backend.start_info["snapshot"] is True
    names = {layer.name for layer in sb.layers}
    assert {"deno permissions", "network", "memory limit", "time limit", "snapshot"} <= names
    assert sb.execute("import sys\nsys.platform").value == "'emscripten'"


def test_deno_runs_with_no_permission_beyond_the_grants(sandbox, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    sb = sandbox(read_paths=[tmp_path / "in"], write_paths=[tmp_path / "out"])
    command = sb.backend.command(installation.find_pyodide(), None, "deno")
    joined = " ".join(command)
    assert "--deny-net" in command and "--deny-run" in command and "--deny-env" in command
    assert "--deny-ffi" in command and "--allow-net" not in joined and "--allow-env" not in joined
    assert f"--allow-write={tmp_path / 'out'}" in command
    readable = next(arg for arg in command if arg.startswith("--allow-read=")).split("=", 1)[1].split(",")
    assert set(readable) == {str(installation.find_pyodide()), str(tmp_path / "in"), str(tmp_path / "out")}
    assert "--allow-net" in sandbox(network=True).backend.command(installation.find_pyodide(), None, "deno")


def test_fork_is_refused_with_what_to_use_instead(sandbox):
    with pytest.raises(InterpreterError, match="native backend"):
        sandbox().fork()


def test_a_network_list_maps_to_denos_allow_net(sandbox):
    pyodide = installation.find_pyodide()
    command = sandbox(network=["api.example.com", "10.0.0.5:8080"]).backend.command(pyodide, None, "deno")
    assert "--allow-net=api.example.com:80,api.example.com:443,10.0.0.5:8080" in command
    with pytest.raises(InterpreterError, match="exact hosts"):
        sandbox(network=["*.github.com"]).backend.command(pyodide, None, "deno")
    with pytest.raises(InterpreterError, match="native backend"):
        sandbox(network=["api.example.com"], hosts={"api.example.com": "10.0.0.5"}).backend.command(
            pyodide, None, "deno"
        )


# --- attacks through the Deno API ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "code"),
    [
        ("read a host file", "js.Deno.readTextFileSync('/etc/passwd')"),
        ("list the host root", "list(js.Deno.readDirSync('/'))"),
        ("read a host variable", "js.Deno.env.get('PATH')"),
        ("dump the host environment", "js.Deno.env.toObject()"),
        ("run a program", 'js.Deno.Command.new(\'/bin/sh\', js.JSON.parse(\'{"args": ["-c", "id"]}\')).outputSync()'),
        ("open a socket", "js.Deno.listen(js.JSON.parse('{\"port\": 0}'))"),
        ("load a native library", "js.Deno.dlopen('/lib/x86_64-linux-gnu/libc.so.6', js.Object.new())"),
        ("read host system facts", "js.Deno.osRelease()"),
        ("write outside the write paths", "js.Deno.writeTextFileSync('/tmp/codeact-pyodide-pwned', 'x')"),
        ("node fs outside the grants", "pyodide_js.mountNodeFS('/mnt', '/etc') or os.listdir('/mnt')"),
        ("network through fetch", "await_fetch()"),
    ],
)
def test_deno_api_is_fenced_by_the_permission_flags(sandbox, what, code):
    sb = sandbox(env={"VISIBLE": "1"})
    prelude = textwrap.dedent("""
        import js, os, pyodide_js
        from pyodide.ffi import run_sync
        def await_fetch():
            return run_sync(js.fetch('http://127.0.0.1:9/'))
    """)
    assert sb.execute(prelude).error is None
    result = sb.execute(code)
    assert result.error is not None, f"ATTACK SUCCEEDED: {what}: {result.value}"
    assert not os.path.exists("/tmp/codeact-pyodide-pwned")
    assert sb.execute("1 + 1").value == "2", f"the session died after: {what}"


def test_granted_write_path_is_writable_through_deno_too(sandbox, tmp_path):
    sb = sandbox(write_paths=[tmp_path])
    r = sb.execute(f"import js\njs.Deno.writeTextFileSync({str(tmp_path / 'a.txt')!r}, 'via deno')")
    assert r.error is None, r.error
    assert (tmp_path / "a.txt").read_text() == "via deno"


# --- limits and failures -------------------------------------------------------------------------------


def test_soft_timeout_keeps_the_variables(sandbox):
    sb = sandbox()
    sb.execute("kept = 'yes'")
    pid = sb.backend.pid
    r = sb.execute("n = 0\nwhile True:\n    n += 1", timeout=0.5)
    assert r.timed_out and r.error is not None and r.error.type == "Timeout"
    assert "kept" in r.error.message
    assert sb.execute("kept").value == "'yes'"
    assert sb.backend.pid == pid


def test_step_that_ignores_the_interrupt_is_killed_and_the_session_restarts(sandbox):
    sb = sandbox()
    sb.execute("kept = 'yes'")
    pid = sb.backend.pid
    code = "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass"
    r = sb.execute(code, timeout=0.5)
    assert r.timed_out and r.error is not None and r.error.type == "Timeout"
    assert "variables are lost" in r.error.message
    assert _wait_dead(pid)
    after = sb.execute("kept")
    assert after.error is not None and after.error.type == "NameError"
    assert "restarted" in after.stderr
    assert sb.execute("2 * 21").value == "42"


def test_javascript_heap_bomb_ends_the_session_not_the_host(sandbox):
    sb = sandbox(memory_limit="256MB")
    r = sb.execute("import js\njs.eval('const a = []; while (true) a.push(new Array(1e6).fill(1.5))')", timeout=60)
    assert r.error is not None and r.error.type in ("MemoryLimit", "SandboxCrashed", "Timeout"), r.error
    assert sb.execute("1 + 1").value == "2"


def test_forged_frames_on_stdout_end_only_that_session(sandbox):
    sb = sandbox()
    other = sandbox()
    other.execute("mine = 1")
    r = sb.execute(
        "import js\njs.Deno.stdout.writeSync(js.Uint8Array.new([255, 255, 255, 255, 1, 2]))\nimport time\ntime.sleep(5)"
    )
    assert r.error is not None and r.error.type == "SandboxProtocolError"
    assert sb.execute("1 + 1").value == "2"
    assert other.execute("mine").value == "1"


def test_forged_result_message_is_taken_as_its_own_result_only(sandbox):
    sb = sandbox()
    forged = '{"op":"result","stdout":"forged","value":"1"}'
    code = (
        "import js, struct\n"
        f"body = {forged!r}.encode()\n"
        "js.Deno.stdout.writeSync(js.Uint8Array.new(list(struct.pack('>I', len(body)) + body)))\n"
        "x = 5"
    )
    sb.execute(code)  # whatever it reports, the session must recover for later steps
    for _ in range(3):
        r = sb.execute("40 + 2")
        if r.value == "42":
            break
    assert r.value == "42"


# --- lifecycle ----------------------------------------------------------------------------------------


def test_reset_forgets_variables_but_keeps_the_process(sandbox, tmp_path):
    def ping() -> str:
        return "pong"

    sb = sandbox(tools=[ping], write_paths=[tmp_path])
    kept = tmp_path / "result.txt"
    sb.execute(f"secret = 1\nopen('/tmp/left', 'w').write('x')\nimport fractions\nopen({str(kept)!r}, 'w').write('k')")
    pid = sb.backend.pid
    sb.backend.reset()
    assert sb.backend.pid == pid
    r = sb.execute("secret")
    assert r.error is not None and r.error.type == "NameError"
    assert (
        sb.execute("import os, sys\n(os.path.exists('/tmp/left'), 'fractions' in sys.modules)").value
        == "(False, False)"
    )
    assert kept.read_text() == "k", "reset removed a file of a granted write path"
    assert sb.execute("ping()").value == "'pong'"


async def test_cancelling_an_async_execute_ends_the_step_and_a_waiting_tool(sandbox):
    import asyncio

    async def never(x: int) -> int:
        await asyncio.sleep(1000)
        return x

    sb = sandbox(tools=[never])
    task = asyncio.create_task(sb.aexecute("never(1)"))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    result = await asyncio.wait_for(sb.aexecute("1 + 1"), timeout=30)
    assert result.value == "2"
    assert "restarted" in result.stderr


def test_close_leaves_no_process(sandbox):
    sb = sandbox()
    pid = sb.backend.pid
    sb.close()
    assert _wait_dead(pid, 5)
    assert not sb.alive


def test_deno_dies_with_the_host_even_in_a_runaway_loop(tmp_path):
    pid_file = tmp_path / "pid"
    host = textwrap.dedent(f"""
        import sys, time
        from codeact import Sandbox
        sb = Sandbox(timeout=600, backend="pyodide")
        sb.start()
        open({str(pid_file)!r}, "w").write(str(sb.backend.pid))
        sb.execute("while True: pass")
    """)
    proc = subprocess.Popen([sys.executable, "-c", host], env={**os.environ})
    try:
        deadline = time.monotonic() + 120
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        deno_pid = int(pid_file.read_text())
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _wait_dead(deno_pid, 15), "the Deno process outlived its host"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_session_without_snapshot_starts_cold_and_works(sandbox, monkeypatch):
    monkeypatch.setattr(installation, "snapshot_path", lambda _dir: Path("/nonexistent/snapshot.bin"))
    monkeypatch.setattr(installation, "build_snapshot", lambda *a, **k: (_ for _ in ()).throw(OSError("no")))
    sb = sandbox()
    assert sb.backend.start_info["snapshot"] is False
    assert sb.execute("sum(range(10))").value == "45"
