"""Pyodide backend figures for `bench/sandbox.py`: start-up, round trips, compute, memory, throughput.

`figures(quick=False)` returns (name, value, unit) rows, medians of repeated runs; run
`python bench/sandbox_pyodide.py` to print them alone.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

from codeact.sandbox.base import Sandbox
from codeact.sandbox.pyodide import installation

COMPUTE = """
def work(n):
    total = 0
    for i in range(n):
        total += (i * i) % 7
    primes = [p for p in range(2, 30000) if all(p % d for d in range(2, int(p ** 0.5) + 1))]
    return total + len(primes)
"""

Row = tuple[str, float, str]


def _timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def start_to_first_result(repeat: int, *, snapshot: bool) -> float:
    original = installation.snapshot_path
    if not snapshot:
        installation.snapshot_path = lambda _dir: Path("/nonexistent/codeact-snapshot.bin")  # type: ignore[assignment]
        build = installation.build_snapshot
        installation.build_snapshot = _no_snapshot  # type: ignore[assignment]

    def once() -> None:
        with Sandbox(backend="pyodide") as sb:
            assert sb.execute("1 + 1").value == "2"

    try:
        return _ms(_timed(once, repeat))
    finally:
        installation.snapshot_path = original  # type: ignore[assignment]
        if not snapshot:
            installation.build_snapshot = build  # type: ignore[assignment]


def _no_snapshot(*_args: object, **_kwargs: object) -> Path:
    raise OSError("snapshot disabled for the cold-start figure")


def reset_to_first_result(sb: Sandbox, repeat: int) -> float:
    def once() -> None:
        sb.backend.reset()
        assert sb.execute("1 + 1").value == "2"

    return _ms(_timed(once, repeat))


def round_trip(sb: Sandbox, repeat: int) -> float:
    sb.execute("x = 1")
    return _ms(_timed(lambda: sb.execute("x"), repeat))


def tool_call_us(calls: int) -> float:
    def ping(x: int) -> int:
        return x

    with Sandbox([ping], backend="pyodide") as sb:
        sb.execute("ping(1)")
        per_call = []
        for _ in range(5):
            empty = sb.execute(f"for i in range({calls}): pass")
            full = sb.execute(f"for i in range({calls}): ping(i)")
            per_call.append((full.duration_s - empty.duration_s) / calls)
    return statistics.median(per_call) * 1e6


def compute_ratio(repeat: int, n: int = 300_000) -> float:
    scope: dict[str, object] = {}
    exec(COMPUTE, scope)
    work = scope["work"]
    native = statistics.median(_timed(lambda: work(n), repeat))  # type: ignore[operator]
    with Sandbox(timeout=300, backend="pyodide") as sb:
        sb.execute(COMPUTE)
        sb.execute(f"work({n})")
        sandboxed = statistics.median(r.duration_s for r in (sb.execute(f"work({n})") for _ in range(repeat)))
    return sandboxed / native


def idle_memory_mb(sessions: int = 4) -> float:
    """Unique memory (private pages) of one idle session's Deno process (Linux only)."""
    made = [Sandbox(backend="pyodide") for _ in range(sessions)]
    try:
        for sb in made:
            sb.start()
            sb.execute("x = 1")
        sizes = []
        for sb in made:
            private = 0
            with open(f"/proc/{sb.backend.pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith(("Private_Clean:", "Private_Dirty:")):
                        private += int(line.split()[1])
            sizes.append(private / 1024)
        return statistics.median(sizes)
    finally:
        for sb in made:
            sb.close()


def throughput(tasks: int, sessions: int, *, reuse: bool) -> float:
    """Short tasks per second: each task a fresh session, or a warm session reset between tasks."""
    task = "total = sum(i * i for i in range(1000))\ntotal"
    pool = [Sandbox(backend="pyodide") for _ in range(sessions)] if reuse else []
    for sb in pool:
        sb.start()
    done = [0]
    lock = threading.Lock()
    queue = list(range(tasks))

    def worker(index: int) -> None:
        while True:
            with lock:
                if not queue:
                    return
                queue.pop()
            if reuse:
                sb = pool[index]
                sb.backend.reset()
                assert sb.execute(task).error is None
            else:
                with Sandbox(backend="pyodide") as fresh:
                    assert fresh.execute(task).error is None
            with lock:
                done[0] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    for sb in pool:
        sb.close()
    return done[0] / elapsed


def figures(quick: bool = False) -> list[Row]:
    """The Pyodide rows of the sandbox benchmark."""
    installation.build_snapshot()
    reps = 3 if quick else 10
    rows: list[Row] = [
        (
            "pyodide: cold start to first result (no snapshot)",
            start_to_first_result(1 if quick else 3, snapshot=False),
            "ms",
        ),
        ("pyodide: start to first result (snapshot)", start_to_first_result(reps, snapshot=True), "ms"),
    ]
    with Sandbox(backend="pyodide") as sb:
        rows.append(("pyodide: warm execute round trip", round_trip(sb, 50 if quick else 300), "ms"))
        rows.append(("pyodide: reset + first result (warm session reused)", reset_to_first_result(sb, reps), "ms"))
    rows.append(("pyodide: host tool call round trip", tool_call_us(200 if quick else 1000), "us"))
    rows.append(("pyodide: pure-Python compute / unsandboxed CPython", compute_ratio(2 if quick else 5), "x"))
    rows.append(("pyodide: unique memory per idle session", idle_memory_mb(2 if quick else 4), "MB"))
    tasks = 8 if quick else 32
    rows.append(
        (
            f"pyodide: {tasks} short tasks, fresh session each (2 at a time)",
            throughput(tasks, 2, reuse=False),
            "tasks/s",
        )
    )
    rows.append(
        (
            f"pyodide: {tasks} short tasks, 4 warm sessions reset between tasks",
            throughput(tasks, 4, reuse=True),
            "tasks/s",
        )
    )
    return rows
