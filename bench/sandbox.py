"""Native sandbox figures: start-up, round trips, tool calls, compute speed, memory, concurrency.

Run: .venv/bin/python bench/sandbox.py [--quick]. Prints medians of repeated runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from codeact.sandbox.process.backend import ProcessInterpreter, zygote_for

PRELOAD = ("numpy", "pandas")
COMPUTE = """
def work(n):
    total = 0
    for i in range(n):
        total += (i * i) % 7
    primes = [p for p in range(2, 30000) if all(p % d for d in range(2, int(p ** 0.5) + 1))]
    return total + len(primes)
"""


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def start_to_first_result(repeat: int) -> float:
    zygote_for(PRELOAD)  # the zygote is shared and started once per process

    def once() -> None:
        sb = ProcessInterpreter(preload=PRELOAD)
        sb.start()
        assert sb.execute("1 + 1").value == "2"
        sb.close()

    once()
    return median_ms(timed(once, repeat))


def round_trip(repeat: int, *, idle_s: float, rollback: bool = True) -> float:
    with ProcessInterpreter(preload=PRELOAD, rollback=rollback) as sb:
        sb.execute("x = 1")
        samples = []
        for _ in range(repeat):
            if idle_s:
                time.sleep(idle_s)
            t = time.perf_counter()
            sb.execute("x")
            samples.append(time.perf_counter() - t)
    return median_ms(samples)


def tool_call_us(calls: int) -> float:
    def ping(x: int) -> int:
        return x

    with ProcessInterpreter([ping], preload=PRELOAD) as sb:
        sb.execute("ping(1)")
        per_call = []
        for _ in range(5):
            empty = sb.execute(f"for i in range({calls}): pass")
            full = sb.execute(f"for i in range({calls}): ping(i)")
            per_call.append((full.duration_s - empty.duration_s) / calls)
    return statistics.median(per_call) * 1e6


def compute_ratio(repeat: int, n: int) -> tuple[float, float]:
    code = COMPUTE + f"import time\nt = time.perf_counter()\nwork({n})\ntime.perf_counter() - t"
    native = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", code.replace("time.perf_counter() - t", "print(time.perf_counter() - t)")],
                             capture_output=True, text=True, check=True)
        native.append(float(out.stdout))
    sandboxed = []
    with ProcessInterpreter(preload=PRELOAD, timeout=120) as sb:
        for _ in range(repeat):
            sandboxed.append(float(sb.execute(code).value or "nan"))
    return statistics.median(native), statistics.median(sandboxed)


def _uss_kb(pid: int) -> int:
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def idle_session_mb(count: int) -> float:
    sessions = [ProcessInterpreter(preload=PRELOAD) for _ in range(count)]
    per_session = []
    try:
        for sb in sessions:
            sb.start()
            sb.execute("import numpy as np, pandas as pd\nx = list(range(1000))")
        time.sleep(0.3)
        for sb in sessions:
            per_session.append(sum(_uss_kb(p) for p in sb.processes()) / 1024)
    finally:
        for sb in sessions:
            sb.close()
    return statistics.median(per_session)


def concurrent_throughput(sessions: int, steps: int) -> tuple[float, float]:
    boxes = [ProcessInterpreter(preload=PRELOAD) for _ in range(sessions)]
    start = time.perf_counter()
    threads = [threading.Thread(target=b.start) for b in boxes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    started = time.perf_counter() - start

    def run(box: ProcessInterpreter) -> None:
        for i in range(steps):
            box.execute(f"v = sum(range({i} * 100))")

    start = time.perf_counter()
    threads = [threading.Thread(target=run, args=(b,)) for b in boxes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for b in boxes:
        b.close()
    return started, sessions * steps / elapsed


def pool_tasks_per_s(tasks: int, workers: int) -> float:
    """Short tasks (two steps each) on `workers` threads sharing one warm SandboxPool."""
    from concurrent.futures import ThreadPoolExecutor

    from codeact.sandbox import SandboxPool

    with SandboxPool(size=workers, preload=PRELOAD) as pool:
        time.sleep(1)  # let the pool fill

        def task(i: int) -> None:
            with pool.session() as sb:
                sb.execute(f"x = {i}")
                assert sb.execute("x * 2").value == str(i * 2)

        start = time.perf_counter()
        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(task, range(tasks)))
        return tasks / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    r = 5 if args.quick else 20
    print(f"codeact native sandbox, preloaded: {', '.join(PRELOAD)} (medians; {r} repetitions)")
    rows = []
    rows.append(("session start to first result", f"{start_to_first_result(r):.2f} ms", "< 15 ms"))
    rows.append(("execute round trip, idle between steps", f"{round_trip(r * 10, idle_s=0.01):.3f} ms", "< 0.3 ms"))
    rows.append(("execute round trip, back to back", f"{round_trip(r * 10, idle_s=0):.3f} ms", ""))
    rows.append(("execute round trip, rollback=False", f"{round_trip(r * 10, idle_s=0, rollback=False):.3f} ms", ""))
    rows.append(("host tool call round trip", f"{tool_call_us(2000 if not args.quick else 500):.1f} us", "< 100 us"))
    native, boxed = compute_ratio(3 if args.quick else 5, 2_000_000)
    rows.append(("pure-Python compute, sandboxed / CPython", f"{boxed / native:.3f}x ({boxed:.3f} s / {native:.3f} s)", "< 1.05x"))
    rows.append(("unique memory per idle session", f"{idle_session_mb(8):.2f} MB", "< 10 MB"))
    started, rate = concurrent_throughput(32, 20 if args.quick else 50)
    rows.append(("32 concurrent sessions: start all", f"{started * 1000:.0f} ms", ""))
    rows.append(("32 concurrent sessions: throughput", f"{rate:.0f} executions/s", ""))
    rows.append(("short tasks through SandboxPool(size=8)", f"{pool_tasks_per_s(40 if args.quick else 200, 8):.0f} tasks/s", ""))
    width = max(len(name) for name, _, _ in rows)
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<34} {target}")


if __name__ == "__main__":
    main()
