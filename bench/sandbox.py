"""Native sandbox figures: start-up, round trips, tool calls, compute speed, memory, concurrency.

Run: .venv/bin/python bench/sandbox.py [--quick]. Prints medians of repeated runs, each beside a
baseline measured in the same run of what this machine can do without codeact (a plain fork of a
process with the same libraries, a plain pipe round trip between two processes, plain `exec` in a
fresh namespace), the ratio, and the target. A second table sets the same figures beside the floor
of the mechanism behind them, built in plain Python in the same run (a step server in a child
process, with and without a fork per step; a call answered by a host thread; the forks a pooled
task needs), which is what bounds them here. Then the start-up stages of one session, and
pydantic-monty's figures for the same work, measured in the same run (it is a dev dependency).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import queue
import resource
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from codeact import Sandbox
from codeact.sandbox.process.backend import zygote_for

PRELOAD = ("numpy", "pandas")
# a step as a model writes one: data in, a helper, a loop, a comprehension, a print, a last expression
AGENT_STEP = """
orders = [{"id": i, "total": (i * 37) % 101, "region": "north" if i % 3 else "south"} for i in range(60)]


def summarize(rows, region):
    picked = [r["total"] for r in rows if r["region"] == region]
    return {"region": region, "count": len(picked), "mean": sum(picked) / max(len(picked), 1)}


summaries = []
for region in ("north", "south"):
    summary = summarize(orders, region)
    if summary["count"] > 10:
        summaries.append(summary)
    else:
        print("few orders in", region)
largest = max(orders, key=lambda r: r["total"])
report = ", ".join(f"{s['region']}: {s['mean']:.1f}" for s in summaries)
print(report, largest["id"])
len(summaries)
"""
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


def start_to_first_result(repeat: int, *, pause_s: float = 0.0, new_config: bool = False) -> float:
    """A new session until its first result. The zygote isolates the next session in advance (for
    the same config); back to back, a request waits for that isolation to finish. With `new_config`
    each session's config is unlike the last, so it is isolated when asked for."""
    zygote_for(PRELOAD)  # the zygote is shared and started once per process
    samples = []
    for i in range(repeat + 1):
        time.sleep(pause_s)
        t = time.perf_counter()
        sb = Sandbox(preload=PRELOAD, backend="process", env={"CODEACT_BENCH": str(i)} if new_config else {})
        sb.start()
        assert sb.execute("1 + 1").value == "2"
        samples.append(time.perf_counter() - t)
        sb.close()
    return median_ms(samples[1:])


def round_trip_and_host_cpu(
    repeat: int, *, idle_s: float, rollback: bool = True, code: str = "x"
) -> tuple[float, float]:
    """Milliseconds an `execute(code)` takes, and the CPU this thread spends on it (the same code each
    time: what it costs after an idle pause against back to back says how cold the caches were)."""
    with Sandbox(preload=PRELOAD, rollback=rollback, backend="process") as sb:
        sb.execute("x = 1")
        samples, cpu = [], []
        for _ in range(repeat):
            if idle_s:
                time.sleep(idle_s)
            t, c = time.perf_counter(), time.thread_time()
            sb.execute(code)
            cpu.append(time.thread_time() - c)
            samples.append(time.perf_counter() - t)
    return median_ms(samples), median_ms(cpu)


def tool_call_us(calls: int) -> tuple[float, float, float]:
    """Microseconds a call, and the times a call puts the sandbox and the host to sleep (voluntary
    context switches: each sleep and wake-up costs CPU as well as time)."""

    def ping(x: int) -> int:
        return x

    loop = f"for i in range({calls}): ping(i)"
    counted = f"import resource\nr = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw\n{loop}\n"
    counted += f"(resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - r) / {calls}"
    with Sandbox([ping], preload=PRELOAD, backend="process") as sb:
        sb.execute("ping(1)")
        per_call, guest, host = [], [], []
        for _ in range(5):
            empty = sb.execute(f"for i in range({calls}): pass")
            before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
            full = sb.execute(loop)
            host.append((resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before) / calls)
            per_call.append((full.duration_s - empty.duration_s) / calls)
            guest.append(float(sb.execute(counted).value or "nan"))
    return statistics.median(per_call) * 1e6, statistics.median(guest), statistics.median(host)


def compute_ratio(repeat: int, n: int) -> tuple[float, float]:
    code = COMPUTE + f"import time\nt = time.perf_counter()\nwork({n})\ntime.perf_counter() - t"
    native = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", code.replace("time.perf_counter() - t", "print(time.perf_counter() - t)")],
            capture_output=True,
            text=True,
            check=True,
        )
        native.append(float(out.stdout))
    sandboxed = []
    with Sandbox(preload=PRELOAD, timeout=120, backend="process") as sb:
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
    sessions = [Sandbox(preload=PRELOAD, backend="process") for _ in range(count)]
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
    boxes = [Sandbox(preload=PRELOAD, backend="process") for _ in range(sessions)]
    start = time.perf_counter()
    threads = [threading.Thread(target=b.start) for b in boxes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    started = time.perf_counter() - start

    def run(box: Sandbox) -> None:
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


def pool_start_to_first_result(repeat: int) -> float:
    """A session taken from a warm SandboxPool (started in the background) to its first result."""
    from codeact.sandbox import SandboxPool

    samples = []
    with SandboxPool(size=2, preload=PRELOAD) as pool:
        for _ in range(repeat):
            time.sleep(0.1)  # the pool refills between tasks, as it does between a user's requests
            started = time.perf_counter()
            sb = pool.take()
            assert sb.execute("1 + 1").value == "2"
            samples.append(time.perf_counter() - started)
            sb.close()
    return median_ms(samples)


def _machine_usage() -> tuple[float, float, int]:
    """What the whole machine has spent so far (every process, kernel included): CPU seconds in user
    mode, CPU seconds in the kernel, and page faults."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    with open("/proc/vmstat") as f:
        faults = next(int(line.split()[1]) for line in f if line.startswith("pgfault "))
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice) / tick, (system + irq + softirq + steal) / tick, faults


def pool_tasks_per_s(tasks: int, workers: int) -> tuple[float, tuple[float, float, float]]:
    """Short tasks (two steps each) on `workers` threads sharing one warm SandboxPool: tasks a second,
    and what the machine spent a task (user CPU s, kernel CPU s, page faults)."""
    from codeact.sandbox import SandboxPool

    with SandboxPool(size=workers, preload=PRELOAD) as pool:
        time.sleep(1)  # let the pool fill

        def task(i: int) -> None:
            with pool.session() as sb:
                sb.execute(f"x = {i}")
                assert sb.execute("x * 2").value == str(i * 2)

        start, before = time.perf_counter(), _machine_usage()
        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(task, range(tasks)))
        rate, after = tasks / (time.perf_counter() - start), _machine_usage()
        user, kernel, faults = ((a - b) / tasks for a, b in zip(after, before, strict=True))
        return rate, (user, kernel, faults)


# --- baselines: what the machine does without codeact ----------------------------------------------
def _import_preloaded() -> None:
    """Import the preloaded libraries here, so a fork of this process is the size of the zygote."""
    for module in PRELOAD:
        __import__(module)


def plain_fork_ms(repeat: int) -> float:
    """fork + exit + wait of this process, which has imported the preloaded libraries like the zygote."""
    _import_preloaded()

    def once() -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)

    once()
    return median_ms(timed(once, repeat))


def plain_pipe_round_trip_ms(repeat: int, idle_s: float = 0.0, *, one_cpu: bool = False) -> float:
    """One byte there and back between this process and a forked child over a socketpair; with
    `one_cpu`, both run on one CPU, so neither wake-up crosses CPUs."""
    with _on_one_cpu(one_cpu):
        return _pipe_round_trip_ms(repeat, idle_s)


@contextlib.contextmanager
def _on_one_cpu(pin: bool) -> Iterator[None]:
    """Run this process (and what it forks meanwhile) on one CPU."""
    allowed = os.sched_getaffinity(0)
    if pin:
        os.sched_setaffinity(0, {min(allowed)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def _pipe_round_trip_ms(repeat: int, idle_s: float) -> float:
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        ours.close()
        while data := theirs.recv(1):
            theirs.sendall(data)
        os._exit(0)
    theirs.close()
    samples = []
    for _ in range(repeat):
        if idle_s:
            time.sleep(idle_s)
        t = time.perf_counter()
        ours.sendall(b"x")
        ours.recv(1)
        samples.append(time.perf_counter() - t)
    ours.close()
    os.waitpid(pid, 0)
    return median_ms(samples)


def plain_exec_ms(repeat: int) -> float:
    """`x = 1` then `x` compiled and run in a fresh namespace, in this process."""

    def once() -> None:
        namespace: dict[str, object] = {}
        exec(compile("x = 1", "<step>", "exec"), namespace)
        eval(compile("x", "<step>", "eval"), namespace)

    return median_ms(timed(once, repeat))


def plain_agent_step_ms(repeat: int) -> float:
    """`AGENT_STEP` compiled and run in a fresh namespace, in this process, its prints kept apart."""

    def once() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(AGENT_STEP, "<step>", "exec"), {})

    return median_ms(timed(once, repeat))


def plain_fork_uss_mb() -> float:
    """Unique memory of an idle fork of this process (with the preloaded libraries)."""
    _import_preloaded()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(write)
        os.read(read, 1)
        os._exit(0)
    os.close(read)
    time.sleep(0.3)
    uss = _uss_kb(pid) / 1024
    os.close(write)
    os.waitpid(pid, 0)
    return uss


# --- design floors: codeact's mechanisms in plain Python, without its checks ------------------------
def _step_server(sock: socket.socket, fork_per_step: bool) -> None:
    """A child that reads a JSON step, compiles and runs it, and answers in JSON. With `fork_per_step`
    each step runs in a fresh fork made after the last one committed, as rollback does."""
    namespace: dict[str, object] = {}
    while True:
        if fork_per_step:  # the parent holds the state until its worker commits, then exits
            read, write = os.pipe()
            if os.fork():
                os.close(write)
                os.read(read, 1)
                os._exit(0)
            os.close(read)
        data = sock.recv(1 << 16)
        if not data:
            os._exit(0)
        exec(compile(json.loads(data)["code"], "<step>", "exec"), namespace)
        sock.sendall(json.dumps({"op": "result", "value": None, "stdout": ""}).encode())
        if fork_per_step:
            os.write(write, b"c")
            os.close(write)


def step_server_round_trip_ms(repeat: int, *, idle_s: float, fork_per_step: bool, one_cpu: bool = False) -> float:
    """A step there and back through `_step_server`, forked from this process (which has the preloaded
    libraries imported, like the zygote); with `one_cpu`, the two run on one CPU."""
    _import_preloaded()
    with _on_one_cpu(one_cpu):
        return _step_server_round_trips(repeat, idle_s, fork_per_step)


def _step_server_round_trips(repeat: int, idle_s: float, fork_per_step: bool) -> float:
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        ours.close()
        _step_server(theirs, fork_per_step)
    theirs.close()
    message = json.dumps({"op": "exec", "code": "x = 1"}).encode()
    samples = []
    for _ in range(repeat):
        time.sleep(idle_s)
        t = time.perf_counter()
        ours.sendall(message)
        ours.recv(1 << 16)
        samples.append(time.perf_counter() - t)
    ours.close()
    os.waitpid(pid, 0)
    return median_ms(samples)


def thread_answered_call_ms(calls: int) -> tuple[float, float, float]:
    """A call sent by a child over a socketpair and answered by another thread of this process, handed
    the call through a queue, as a host runs a tool while its main thread watches the step's deadline:
    milliseconds a call, and the sleeps a call costs the child and this process (as in `tool_call_us`)."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        ours.close()
        t, switches = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
        for _ in range(calls):
            theirs.sendall(b"c")
            theirs.recv(1)
        switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - switches
        theirs.sendall(struct.pack("dd", time.perf_counter() - t, switches))
        os._exit(0)
    theirs.close()
    handed: queue.SimpleQueue[int] = queue.SimpleQueue()

    def answer() -> None:
        for _ in range(calls):
            handed.get()
            ours.sendall(b"r")

    answering = threading.Thread(target=answer)
    ours_before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
    answering.start()
    for _ in range(calls):
        ours.recv(1)
        handed.put(1)
    elapsed, switches = struct.unpack("dd", ours.recv(16))
    answering.join()
    ours_switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - ours_before
    ours.close()
    os.waitpid(pid, 0)
    return elapsed / calls * 1000, switches / calls, ours_switches / calls


def start_stages(*, in_advance: bool) -> list[tuple[str, float]]:
    """The start-up stages of one session (ms each), from the backend's `start_marks`: one isolated
    when asked for (a config unlike the last), or one the zygote isolated in advance."""
    zygote_for(PRELOAD)
    env = {} if in_advance else {"CODEACT_BENCH": str(time.time())}
    if in_advance:  # a session of this config makes the zygote isolate the next one in advance
        with Sandbox(preload=PRELOAD, backend="process"):
            pass
        time.sleep(0.2)
    with Sandbox(preload=PRELOAD, env=env, backend="process") as sb:
        sb.execute("1")
        marks = sb.backend.start_marks
    return [(stage, (t - marks[i][1]) * 1000) for i, (stage, t) in enumerate(marks[1:])]


def monty_figures(repeat: int) -> dict[str, float]:
    """pydantic-monty's figures for the same work as codeact's, measured in this run when it is
    installed (its 1.x API: a pool of worker processes, one session a checkout); none otherwise. Its
    sessions have no rollback: they compare with codeact's `rollback=False`."""
    try:
        import pydantic_monty  # type: ignore[import-not-found]

        pool = pydantic_monty.Monty(min_processes=2)
    except (ImportError, TypeError):  # not installed, or an API before 1.0
        return {}

    def ping(x: int) -> int:
        return x

    figures: dict[str, float] = {}
    with pool:
        firsts = []
        for _ in range(repeat):
            time.sleep(0.1)  # as codeact's pool gets between tasks
            started = time.perf_counter()
            with pool.checkout() as session:
                session.feed_run("1 + 1")
                firsts.append(time.perf_counter() - started)
        figures["pool"] = median_ms(firsts)
        with pool.checkout() as session:
            session.feed_run("x = 1")
            figures["back"] = median_ms(timed(lambda: session.feed_run("x"), repeat * 10))
            idle = []
            for _ in range(repeat * 10):
                time.sleep(0.01)
                started = time.perf_counter()
                session.feed_run("x")
                idle.append(time.perf_counter() - started)
            figures["idle"] = median_ms(idle)
            session.feed_run(COMPUTE)
            figures["compute"] = statistics.median(timed(lambda: session.feed_run("work(2_000_000)"), 3))
        calls, per_call = 900, []  # a session may suspend for the host 1,000 times
        for _ in range(5):
            with pool.checkout() as session:
                started = time.perf_counter()
                session.feed_run(f"for i in range({calls}): pass")
                empty = time.perf_counter() - started
                session.feed_run(f"for i in range({calls}): ping(i)", external_lookup={"ping": ping})
                per_call.append((time.perf_counter() - started - 2 * empty) / calls)
        figures["call"] = statistics.median(per_call) * 1000
    return figures


def print_table(rows: list[tuple[str, float, str, float, str, str]]) -> None:
    width = max(len(name) for name, *_ in rows)
    print(f"{'figure':<{width}}  {'codeact':>12}  {'baseline':>12}  {'ratio':>7}  target  (baseline)")
    for name, value, unit, baseline, baseline_name, target in rows:
        print(
            f"{name:<{width}}  {value:>9.3f} {unit:<3}  {baseline:>9.3f} {unit:<3}  {value / baseline:>6.2f}x  "
            f"{target:<13} ({baseline_name})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    r = 5 if args.quick else 20
    print(f"codeact native sandbox, preloaded: {', '.join(PRELOAD)} (medians; {r} repetitions)")
    fork_ms = plain_fork_ms(r)
    pipe_ms = plain_pipe_round_trip_ms(r * 10)
    pipe_idle_ms = plain_pipe_round_trip_ms(r * 10, idle_s=0.01)
    exec_ms = plain_exec_ms(r * 10)
    rows: list[tuple[str, float, str, float, str, str]] = []  # name, value, unit, baseline, baseline name, target

    def row(name: str, value: float, unit: str, baseline: float, baseline_name: str, target: str) -> None:
        rows.append((name, value, unit, baseline, baseline_name, target))

    row(
        "session start to first result, 100 ms apart",
        start_to_first_result(r, pause_s=0.1),
        "ms",
        fork_ms,
        "plain fork of the zygote",
        "< 5 ms",
    )
    row(
        "session start, a config unlike the last, 100 ms apart",
        start_to_first_result(r, pause_s=0.1, new_config=True),
        "ms",
        fork_ms,
        "plain fork of the zygote",
        "",
    )
    row(
        "session start to first result, back to back",
        start_to_first_result(r),
        "ms",
        fork_ms,
        "plain fork of the zygote",
        "",
    )
    pool_first_ms = pool_start_to_first_result(r)
    row(
        "session from a warm SandboxPool to first result",
        pool_first_ms,
        "ms",
        pipe_idle_ms,
        "pipe round trip after 10 ms idle",
        "< 5 ms",
    )
    idle_ms, back_ms = (round_trip_and_host_cpu(r * 10, idle_s=i)[0] for i in (0.01, 0))
    (plain_idle_ms, idle_cpu_ms), (plain_ms, back_cpu_ms) = (
        round_trip_and_host_cpu(r * 10, idle_s=i, rollback=False) for i in (0.01, 0)
    )
    call_us, call_guest_sleeps, call_host_sleeps = tool_call_us(2000 if not args.quick else 500)
    call_ms = call_us / 1000
    row(
        "execute round trip after 10 ms idle",
        idle_ms,
        "ms",
        pipe_idle_ms,
        "pipe round trip after 10 ms idle",
        "< 0.2 ms",
    )
    row(
        "execute round trip, back to back", back_ms, "ms", pipe_ms + exec_ms, "pipe round trip + plain exec", "< 1.5 ms"
    )
    row(
        "execute round trip, rollback=False",
        plain_ms,
        "ms",
        pipe_ms + exec_ms,
        "pipe round trip + plain exec",
        "< 0.1 ms",
    )
    row(
        "execute round trip, rollback=False, after 10 ms idle",
        plain_idle_ms,
        "ms",
        pipe_idle_ms,
        "pipe round trip after 10 ms idle",
        "",
    )
    row(
        f"execute round trip, a {AGENT_STEP.count(chr(10))}-line step, rollback=False",
        round_trip_and_host_cpu(r * 5, idle_s=0, rollback=False, code=AGENT_STEP)[0],
        "ms",
        pipe_ms + plain_agent_step_ms(r * 5),
        "pipe round trip + plain compile and exec",
        "",
    )
    row("host tool call round trip", call_ms, "ms", pipe_ms, "pipe round trip", "< 0.06 ms")
    native, boxed = compute_ratio(3 if args.quick else 5, 2_000_000)
    row("pure-Python compute", boxed, "s", native, "CPython in a fresh process", "<= 1.02x")
    row("unique memory per idle session", idle_session_mb(8), "MB", plain_fork_uss_mb(), "an idle plain fork", "< 6 MB")
    started, rate = concurrent_throughput(32, 20 if args.quick else 50)
    row("32 concurrent sessions: start all", started * 1000, "ms", fork_ms * 32, "32 plain forks, one by one", "")
    row(
        "32 concurrent sessions: executions/s",
        1 / rate,
        "s each",
        pipe_ms / 1000 + exec_ms / 1000,
        "pipe round trip + plain exec",
        "",
    )
    tasks, (task_user_s, task_kernel_s, task_faults) = pool_tasks_per_s(40 if args.quick else 200, 8)
    task_cpu_s = task_user_s + task_kernel_s
    row(
        "short two-step tasks, SandboxPool(8)",
        1 / tasks,
        "s each",
        2 * (pipe_ms + exec_ms) / 1000 + fork_ms / 1000,
        "a plain fork + two pipe round trips",
        "> 150 tasks/s",
    )
    print_table(rows)
    forks_per_task = 3  # the keeper, and a worker before each step
    server_ms = step_server_round_trip_ms(r * 10, idle_s=0, fork_per_step=False)
    answered_ms, answered_child_sleeps, answered_parent_sleeps = thread_answered_call_ms(r * 100)
    floors = [
        (
            "execute round trip after 10 ms idle",
            idle_ms,
            "ms",
            step_server_round_trip_ms(r * 10, idle_s=0.01, fork_per_step=True),
            "a step server forking a worker per step",
            "",
        ),
        (
            "execute round trip, back to back",
            back_ms,
            "ms",
            step_server_round_trip_ms(r * 10, idle_s=0, fork_per_step=True),
            "a step server forking a worker per step",
            "",
        ),
        (
            "execute round trip, rollback=False",
            plain_ms,
            "ms",
            server_ms,
            "a step server: JSON, compile, exec, JSON",
            "",
        ),
        (
            "execute round trip, rollback=False, after 10 ms idle",
            plain_idle_ms,
            "ms",
            step_server_round_trip_ms(r * 10, idle_s=0.01, fork_per_step=False),
            "a step server: JSON, compile, exec, JSON",
            "",
        ),
        (
            "host tool call round trip",
            call_ms,
            "ms",
            answered_ms,
            "a call answered by a thread",
            "",
        ),
        (
            "short two-step tasks, SandboxPool(8)",
            1 / tasks,
            "s each",
            forks_per_task * fork_ms / 1000 / (os.cpu_count() or 1),
            f"{forks_per_task} plain forks a task over {os.cpu_count()} cores",
            "",
        ),
    ]
    print("\nthe same mechanisms in plain Python, without codeact's checks and isolation:")
    print_table(floors)
    cores = os.cpu_count() or 1
    print(
        f"\nshort tasks through SandboxPool(8): {tasks:.0f} tasks/s; the machine spent {task_cpu_s * 1000:.0f} ms "
        f"of CPU a task (all processes: {task_user_s * 1000:.0f} ms user, {task_kernel_s * 1000:.0f} ms kernel, "
        f"{task_faults:.0f} page faults), which bounds {cores} cores at {cores / task_cpu_s:.0f} tasks/s"
    )
    print(
        f"\nsleeps a tool call (voluntary context switches, each a wake-up to pay for): the sandbox "
        f"{call_guest_sleeps:.2f} (it waits awake for a quick reply), the host {call_host_sleeps:.2f} (its "
        f"reading thread and the tool's); a call answered by a thread: the caller {answered_child_sleeps:.2f}, "
        f"the answering process {answered_parent_sleeps:.2f}"
    )
    print(
        f"\nthe host's own CPU for one execute without rollback (the same code each time): {back_cpu_ms:.3f} ms "
        f"back to back, {idle_cpu_ms:.3f} ms after 10 ms idle ({idle_cpu_ms / back_cpu_ms:.1f}x: caches gone cold)"
    )
    one_cpu_pipe_ms = plain_pipe_round_trip_ms(r * 10, one_cpu=True)
    one_cpu_server_ms = step_server_round_trip_ms(r * 10, idle_s=0, fork_per_step=False, one_cpu=True)
    print(
        "\nwake-ups across CPUs (a round trip has two): pipe round trip "
        f"{pipe_ms:.3f} ms, on one CPU {one_cpu_pipe_ms:.3f} ms; step server {server_ms:.3f} ms, on one CPU "
        f"{one_cpu_server_ms:.3f} ms"
    )
    for label, in_advance in (("isolated when asked for", False), ("isolated in advance", True)):
        print(f"\nstart-up stages of one session, {label} (ms):")
        for stage, ms in start_stages(in_advance=in_advance):
            print(f"  {stage:<28} {ms:7.2f}")
    monty = monty_figures(r)
    if not monty:
        print("\npydantic-monty is not installed (pip install pydantic-monty): no figures beside it")
        return
    compared = [
        ("session from a warm pool to first result", pool_first_ms, "ms", monty["pool"], "its warm pool"),
        ("execute round trip, rollback=False", plain_ms, "ms", monty["back"], "back to back"),
        (
            "execute round trip, rollback=False, after 10 ms idle",
            plain_idle_ms,
            "ms",
            monty["idle"],
            "after 10 ms idle",
        ),
        ("host tool call round trip", call_ms, "ms", monty["call"], "an external function"),
        ("pure-Python compute", boxed, "s", monty["compute"], "its own interpreter"),
    ]
    print("\npydantic-monty, measured in this run (its sessions have no rollback):")
    print_table(
        [(name, ours, unit, theirs, f"pydantic-monty: {what}", "") for name, ours, unit, theirs, what in compared]
    )


if __name__ == "__main__":
    main()
