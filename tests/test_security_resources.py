"""Resource bombs: memory, CPU, disk, descriptors, crashes. Each is stopped with a clear error and the
host, and the session's earlier variables, survive."""

from __future__ import annotations

import time

import pytest

from attacks import (
    assert_alive,
    assert_blocked,
    assert_new_sandbox_works,
    probe,
    run_measuring_host_memory,
)


def _limits(backend: str, **process_options: object) -> dict[str, object]:
    """Options only some backends take (smaller limits keep the tests fast)."""
    return dict(process_options) if backend in ("process", "pyodide") else {}


def test_memory_bomb_ends_with_an_error_naming_the_limit(make_sandbox, backend):
    sb = make_sandbox(memory_limit="256MB", timeout=20)
    assert sb.execute("kept = 'before the bomb'").error is None
    # pyodide: 4 GB does not fit a 32-bit WebAssembly index (OverflowError); 1 GB asks the limit
    size = "1024 ** 3" if backend == "pyodide" else "4 * 1024 ** 3"
    result = sb.execute(f"hog = bytearray({size})")
    assert result.error is not None, f"a 4 GB allocation succeeded under a 256 MB limit: {result}"
    assert result.error.type in ("MemoryError", "MemoryLimit"), result.error
    assert "256" in result.error.message, f"the error does not name the 256 MB limit: {result.error}"
    assert sb.execute("kept").value == "'before the bomb'", "the session lost its variables"


def test_gradual_memory_growth_is_stopped(make_sandbox):
    sb = make_sandbox(memory_limit="256MB", timeout=30)
    assert sb.execute("kept = 7").error is None
    result = sb.execute("""
chunks = []
while True:
    chunks.append(bytearray(16 * 1024 * 1024))
""")
    assert result.error is not None and result.error.type in ("MemoryError", "MemoryLimit"), result
    assert "256" in result.error.message, result.error
    assert sb.execute("kept").value == "7"


def test_memory_spread_over_many_processes_is_bounded(make_sandbox, backend):
    sb = make_sandbox(memory_limit="256MB", timeout=30)
    cgroup = next((layer for layer in getattr(sb, "layers", []) if layer.name == "cgroup"), None)
    if backend == "process" and not (cgroup and cgroup.active):
        pytest.skip("no writable cgroup here: per-process limits only")
    # Each child stays under the per-process limit; together they would hold 1.2 GB.
    outcome = probe(
        sb,
        """
        import os, time
        holding = []
        reader, writer = os.pipe()
        for _ in range(6):
            pid = os.fork()
            if pid == 0:
                try:
                    block = bytearray(200 * 1024 * 1024)
                    for i in range(0, len(block), 4096):
                        block[i] = 1
                    os.write(writer, b"x")
                    time.sleep(5)
                finally:
                    os._exit(0)
            holding.append(pid)
        got = 0
        deadline = time.time() + 3
        os.set_blocking(reader, False)
        while time.time() < deadline and got < 6:
            try:
                got += len(os.read(reader, 16))
            except BlockingIOError:
                time.sleep(0.05)
        for pid in holding:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
        if got * 200 <= 256 + 64:
            raise MemoryError(f"only {got} children could hold 200 MB at once")
        return f"{got} children held {got * 200} MB together"
    """,
    )
    assert_blocked(outcome, "hold more than the memory limit spread over child processes")
    assert_alive(sb)


def test_cpu_spin_is_killed_at_the_time_limit(make_sandbox):
    sb = make_sandbox(timeout=1)
    assert sb.execute("kept = [1, 2, 3]").error is None
    started = time.monotonic()
    result = sb.execute("while True:\n    pass")
    elapsed = time.monotonic() - started
    assert result.timed_out and result.error is not None and result.error.type == "Timeout", result
    assert elapsed < 8, f"a 1 s limit took {elapsed:.1f} s to enforce"
    assert sb.execute("kept").value == "[1, 2, 3]"


def test_sleeping_and_ignoring_signals_does_not_escape_the_time_limit(make_sandbox):
    sb = make_sandbox(timeout=1)
    started = time.monotonic()
    result = sb.execute("""
import signal, time
for sig in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT, signal.SIGALRM, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGXCPU, signal.SIGINT})
time.sleep(3600)
""")
    elapsed = time.monotonic() - started
    assert result.timed_out, f"a sleeping step that ignores signals was not stopped: {result}"
    assert elapsed < 8, f"a 1 s limit took {elapsed:.1f} s to enforce"
    assert_alive(sb)


def test_background_child_cannot_outlive_a_timed_out_step(make_sandbox, backend):
    if backend == "pyodide":
        pytest.skip("pyodide: WebAssembly has no processes to fork")
    sb = make_sandbox(timeout=1)
    result = sb.execute("""
import os, time
if os.fork() == 0:
    os.setsid()
    while True:
        time.sleep(0.05)
while True:
    pass
""")
    assert result.timed_out, result
    outcome = probe(
        sb,
        """
        import os
        others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid(), os.getppid())]
        alive = []
        for pid in others:
            try:
                state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state not in "ZX":
                alive.append((pid, state))
        if not alive:
            raise ProcessLookupError("the step's children are gone")
        return alive
    """,
    )
    assert_blocked(outcome, "keep a child of a timed-out step running")


def test_huge_file_in_tmp_is_stopped(make_sandbox, backend):
    sb = make_sandbox(timeout=30, **_limits(backend, max_file_size="32MB", tmp_size="64MB"))
    assert sb.execute("kept = 'x'").error is None
    outcome = probe(
        sb,
        """
        chunk = b"\\0" * (4 * 1024 * 1024)
        written = 0
        with open("/tmp/huge", "wb") as f:
            while written < 2 * 1024 ** 3:
                f.write(chunk)
                f.flush()
                written += len(chunk)
        return written
    """,
    )
    assert_blocked(outcome, "write a 2 GB file to /tmp")
    if outcome.status == "ended":
        assert outcome.result.error.type in ("FileSizeLimit", "SandboxCrashed"), outcome.result.error
    assert sb.execute("kept").value == "'x'"
    assert_alive(sb)


def test_huge_file_in_a_write_path_stops_at_the_file_size_limit(make_sandbox, backend, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    limit = 32 << 20 if backend == "process" else 256 << 20
    sb = make_sandbox(write_paths=[out], timeout=30, **_limits(backend, max_file_size="32MB"))
    outcome = probe(
        sb,
        f"""
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # turn the kill into an error the attack could skip
        chunk = b"\\0" * (4 * 1024 * 1024)
        written = 0
        with open({str(out / "huge.bin")!r}, "wb") as f:
            while written < 2 * 1024 ** 3:
                try:
                    f.write(chunk)
                    f.flush()
                except OSError:
                    f.seek(0, 2)
                    f.write(chunk)
                written += len(chunk)
        return written
    """,
    )
    assert_blocked(outcome, "write a 2 GB file into a write path")
    size = (out / "huge.bin").stat().st_size if (out / "huge.bin").exists() else 0
    assert size <= limit, f"the sandbox wrote {size} bytes to the host disk past the {limit} byte limit"
    assert_alive(sb)


def test_many_small_files_cannot_fill_the_host(make_sandbox, backend):
    sb = make_sandbox(timeout=30, **_limits(backend, tmp_size="16MB"))
    outcome = probe(
        sb,
        """
        import os
        os.makedirs("/tmp/many", exist_ok=True)
        block = b"x" * 65536
        for i in range(4096):  # 256 MB in total
            with open(f"/tmp/many/{i}", "wb") as f:
                f.write(block)
        return "wrote 256 MB of small files"
    """,
    )
    assert_blocked(outcome, "fill the scratch space with small files")
    assert_alive(sb)


def test_descriptor_exhaustion_is_bounded(make_sandbox):
    sb = make_sandbox()
    outcome = probe(
        sb,
        """
        import os, socket
        held = []
        try:
            while len(held) < 100000:
                held.append(os.open("/dev/null", os.O_RDONLY))
                a, b = socket.socketpair()
                held.append(a)
                held.append(b)
        finally:
            count = len(held)
            for h in held:
                h.close() if hasattr(h, "close") else os.close(h)
        return count
    """,
    )
    assert_blocked(outcome, "open 100000 descriptors")
    assert "Too many open files" in outcome.detail or outcome.status == "ended", outcome
    assert_alive(sb)


def test_descriptors_held_by_the_variables_do_not_end_the_session(make_sandbox, backend):
    def ping(x: int) -> int:
        return x

    sb = make_sandbox([ping])
    opened = sb.execute("""
import os
kept = []
try:
    while True:
        kept.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
len(kept)
""")
    assert opened.error is None and int(opened.value) > 100, opened
    result = sb.execute("len(kept), ping(3)")  # every descriptor is still taken
    assert result.error is None, result.error
    assert result.value == f"({opened.value}, 3)"


def test_stack_overflow_crash_keeps_the_session(make_sandbox, backend):
    sb = make_sandbox(timeout=20)
    assert sb.execute("kept = {'a': 1}").error is None
    result = sb.execute("""
import sys
sys.setrecursionlimit(10 ** 8)
nested = []
for _ in range(300_000):
    nested = [nested]
repr(nested)  # recursion in C: overflows the stack
""")
    assert result.error is not None, result
    if backend != "pyodide":  # pyodide: a C stack overflow ends the WebAssembly runtime; the session restarts
        assert sb.execute("kept").value == "{'a': 1}", "a crashing step took the session's variables with it"
    assert_new_sandbox_works(make_sandbox)


def test_segfault_and_abort_keep_the_session(make_sandbox, backend):
    sb = make_sandbox()
    assert sb.execute("kept = 3.5").error is None
    for crash in (
        "import ctypes\nctypes.string_at(0)",
        "import os\nos.abort()",
        "import os\nos._exit(9)",
        "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)",
    ):
        if backend == "pyodide" and "ctypes" in crash:
            continue  # pyodide: WebAssembly memory has no unmapped page; address 0 reads as zeros
        result = sb.execute(crash)
        assert result.error is not None, f"{crash!r} did not end with an error: {result}"
        assert sb.execute("kept").value == "3.5", f"{crash!r} took the session's variables with it"


def test_host_survives_a_burst_of_resource_bombs(make_sandbox):
    sb = make_sandbox(timeout=2, memory_limit="256MB")

    def bombard() -> None:
        for bomb in ("bytearray(8 * 1024 ** 3)", "while True: pass", "import os\nos._exit(1)"):
            sb.execute(bomb)

    _, grown_mb = run_measuring_host_memory(bombard)
    assert grown_mb < 200, f"the host process grew {grown_mb:.0f} MB while the sandbox was bombed"
    assert_alive(sb)


def test_limits_cannot_be_raised_from_inside(make_sandbox):
    sb = make_sandbox()
    outcome = probe(
        sb,
        """
        import resource
        raised = []
        for name in ("RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC"):
            which = getattr(resource, name)
            soft, hard = resource.getrlimit(which)
            if hard == resource.RLIM_INFINITY:
                raised.append(f"{name} has no hard limit")
                continue
            try:
                resource.setrlimit(which, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
                raised.append(name)
            except (ValueError, OSError):
                pass
        if not raised:
            raise PermissionError("no limit could be raised")
        return raised
    """,
    )
    assert_blocked(outcome, "raise the address space, file size, open files or process limits")
    assert_alive(sb)
