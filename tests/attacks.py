"""Helpers for the security suite: run attack code in a sandbox and read back what it achieved.

An attack is the body of a function run inside the sandbox. `probe` wraps it so that whatever it
returns comes back as `Probe(status="ok", detail=repr(value))` and whatever it raises comes back
as `Probe(status="blocked", detail="Type: message")`. Tests then check the outcome and, where
possible, the evidence on the host (the file was not written, the connection never arrived).
"""

from __future__ import annotations

import ast
import contextlib
import os
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

_WRAPPER = """
def __codeact_probe():
    try:
        __value = __attack()
    except BaseException as __exc:
        return ("blocked", type(__exc).__name__ + ": " + str(__exc)[:400])
    return ("ok", repr(__value)[:4000])
__codeact_probe()
"""


# Errors of the step itself (outside the wrapped attack) that mean the test's program is wrong.
_HARNESS_BUGS = {"SyntaxError", "IndentationError", "TabError", "NameError", "AttributeError", "TypeError"}


@dataclass
class Probe:
    """What one attack achieved inside the sandbox."""

    status: str
    detail: str
    result: Any

    @property
    def blocked(self) -> bool:
        return self.status == "blocked"

    def __str__(self) -> str:
        error = self.result.error
        return (
            f"{self.status}: {self.detail}"
            + (f" [step error {error.type}: {error.message}]" if error else "")
            + (f" [stdout {self.result.stdout[:300]!r}]" if self.result.stdout else "")
        )


def attack_code(body: str, prelude: str = "") -> str:
    """The sandbox program for the attack `body` (the body of a function, may `return` a value)."""
    return (
        textwrap.dedent(prelude)
        + "\ndef __attack():\n"
        + textwrap.indent(textwrap.dedent(body).strip("\n") + "\n", "    ")
        + _WRAPPER
    )


def probe(sandbox: Any, body: str, *, prelude: str = "", timeout: float | None = None) -> Probe:
    """Run the attack `body` (after module-level `prelude`) in `sandbox`; report what it got."""
    result = sandbox.execute(attack_code(body, prelude), timeout=timeout)
    if result.error is not None and result.error.type in _HARNESS_BUGS:
        raise AssertionError(f"the attack program itself is broken, fix the test: {result.error}")
    if result.error is not None or result.value is None:
        # the step itself ended (killed, crashed, protocol error): the attack did not return
        return Probe("ended", result.error.type if result.error else "no value", result)
    try:
        status, detail = ast.literal_eval(result.value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        # not what the wrapper returns: the host took a forged result message for the step's end
        return Probe("ended", "the step's result was not the attack's own", result)
    return Probe(status, detail, result)


def assert_blocked(outcome: Probe, what: str) -> None:
    """The attack raised inside the sandbox (or its step ended) instead of returning."""
    print(f"[attack] {what} -> {outcome}")  # shown with `pytest -rP`: why each attack failed
    assert outcome.status in ("blocked", "ended"), f"ATTACK SUCCEEDED: {what}: {outcome}"


def assert_alive(sandbox: Any) -> None:
    """The sandbox still runs code correctly."""
    result = sandbox.execute("1 + 1", timeout=20)
    assert result.error is None and result.value == "2", f"sandbox no longer works after the attack: {result}"


def assert_new_sandbox_works(make_sandbox: Callable[..., Any]) -> None:
    """A fresh sandbox starts and runs code correctly: the host and its sandbox machinery survived."""
    assert_alive(make_sandbox())


# --- host-side process inspection --------------------------------------------------------------


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of `pid`, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19])


def processes() -> dict[int, tuple[int, str, int]]:
    """Every process on the host: pid -> (ppid, state, start time)."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            info = _stat(int(name))
            if info is not None:
                table[int(name)] = info
    return table


def descendants(root: int, *, min_depth: int = 1) -> dict[int, tuple[int, str, int]]:
    """Live (non-zombie) processes below `root`, at least `min_depth` generations down."""
    table = processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found = {}
    frontier = [(root, 0)]
    while frontier:
        pid, depth = frontier.pop()
        for child in children.get(pid, []):
            if depth + 1 >= min_depth and table[child][1] not in "ZX":
                found[child] = table[child]
            frontier.append((child, depth + 1))
    return found


def still_running(snapshot: dict[int, tuple[int, str, int]]) -> list[int]:
    """The pids of `snapshot` that still run (same start time, not a zombie)."""
    alive = []
    for pid, (_, _, started) in snapshot.items():
        info = _stat(pid)
        if info is not None and info[2] == started and info[1] not in "ZX":
            alive.append(pid)
    return alive


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@contextlib.contextmanager
def host_secret_env(name: str, value: str) -> Iterator[None]:
    """Set an environment variable in the test process for the duration of the block."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


# Sandbox-side code that finds the step's tool channel (a socket to the host). The attacker knows
# the implementation; a test that cannot find the channel fails rather than passing vacuously.
FIND_CHANNEL = """
import gc, socket
def __channel():
    for obj in gc.get_objects():
        channel = getattr(obj, "channel", None) if type(obj).__name__ == "Session" else None
        if isinstance(channel, socket.socket):
            return channel
    raise LookupError("NOCHANNEL: the attack could not find the tool channel")
"""

FIND_CONTROL = """
import gc, socket
def __control():
    for obj in gc.get_objects():
        control = getattr(obj, "control", None) if type(obj).__name__ == "Session" else None
        if isinstance(control, socket.socket):
            return control
    raise LookupError("NOCONTROL: the attack could not find the session's control socket")
"""


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_measuring_host_memory(action: Callable[[], Any]) -> tuple[Any, float]:
    """Run `action` in this process; return its result and how many MB the host's RSS rose at most."""
    start = _rss_kb()
    peak = [start]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_kb())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = action()
    finally:
        done.set()
        sampler.join()
    peak[0] = max(peak[0], _rss_kb())
    return result, (peak[0] - start) / 1024


def finding(reason: str) -> pytest.MarkDecorator:
    """Marks an attack that still succeeds and has been reported: the suite stays green, and the
    test fails loudly (strict xfail) as soon as the hole is fixed, so the marker gets removed."""
    return pytest.mark.xfail(strict=True, reason=f"FINDING (open): {reason}")
