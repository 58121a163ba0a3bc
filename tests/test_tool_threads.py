"""The host threads that run tool calls: each call once, cancelled calls never, in forked children too."""

from __future__ import annotations

import subprocess
import sys
import threading

from codeact.sandbox.tool_threads import QueuedCall, ToolThreads


def test_a_call_runs_once_and_reports_its_value_or_error():
    threads = ToolThreads(limit=2)
    event, seen = threading.Event(), []
    threads.submit(QueuedCall(lambda _: 6 * 7, lambda call: (seen.append(call), event.set())))
    assert event.wait(30)
    assert [c.value for c in seen] == [42] and seen[0].error is None
    event.clear()
    threads.submit(QueuedCall(lambda _: 1 / 0, lambda call: (seen.append(call), event.set())))
    assert event.wait(30)
    assert isinstance(seen[1].error, ZeroDivisionError) and len(seen) == 2


def test_calls_beyond_the_limit_wait_for_a_thread_and_cancelled_ones_never_run():
    threads = ToolThreads(limit=1)
    release, ran = threading.Event(), []
    blocker_done = threading.Event()
    threads.submit(QueuedCall(lambda _: release.wait(30), lambda call: blocker_done.set()))
    waiting = QueuedCall(lambda _: ran.append("waiting"), lambda call: None)
    threads.submit(waiting)  # the only thread is busy: it waits in the queue
    assert waiting.cancel() and waiting.cancelled
    later_done = threading.Event()
    threads.submit(QueuedCall(lambda _: ran.append("later"), lambda call: later_done.set()))
    release.set()
    assert blocker_done.wait(30) and later_done.wait(30)
    assert ran == ["later"]
    assert not waiting.cancel()  # cancelled once


def test_a_running_call_that_said_how_to_stop_is_stopped_when_cancelled():
    threads = ToolThreads(limit=2)
    started, stopped, finished = threading.Event(), threading.Event(), threading.Event()

    def work(call: QueuedCall) -> str:
        call.stop_with(stopped.set)
        started.set()
        return "stopped" if stopped.wait(30) else "ran on"

    running = QueuedCall(work, lambda call: finished.set())
    threads.submit(running)
    assert started.wait(30)
    assert running.cancel() is False  # it had started: stopped, not cancelled
    assert finished.wait(30) and running.value == "stopped" and not running.cancelled


def test_work_cancelled_before_it_says_how_to_stop_is_stopped_when_it_does():
    threads = ToolThreads(limit=2)
    started, cancelled, stops, finished = threading.Event(), threading.Event(), [], threading.Event()

    def work(call: QueuedCall) -> None:
        started.set()
        cancelled.wait(30)
        call.stop_with(lambda: stops.append("stopped"))  # already cancelled: runs at once

    running = QueuedCall(work, lambda call: finished.set())
    threads.submit(running)
    assert started.wait(30)
    assert running.cancel() is False
    cancelled.set()
    assert finished.wait(30) and stops == ["stopped"]


def test_a_call_abandoned_while_it_runs_gives_its_place_to_the_next_calls():
    threads = ToolThreads(limit=1)
    release, started, hung_done = threading.Event(), threading.Event(), threading.Event()
    hung = QueuedCall(lambda _: (started.set(), release.wait(120)), lambda call: hung_done.set())
    threads.submit(hung)
    assert started.wait(30)
    hung.cancel()  # like a step whose time ran out while this sync tool ran: it cannot be stopped
    try:
        for n in range(3):  # the limit is 1 and the hung call still holds its thread
            done = threading.Event()
            threads.submit(QueuedCall(lambda _, n=n: n, lambda call, done=done: done.set()))
            assert done.wait(30), f"call {n} waited behind the abandoned one"
    finally:
        release.set()
    assert hung_done.wait(30)
    done = threading.Event()
    threads.submit(QueuedCall(lambda _: None, lambda call: done.set()))
    assert done.wait(30)


def test_a_forked_child_runs_calls_on_threads_of_its_own():
    script = (
        "import os, threading\n"
        "from codeact.sandbox.tool_threads import QueuedCall, ToolThreads\n"
        "threads = ToolThreads(limit=4)\n"
        "def run_one():\n"
        "    done = threading.Event()\n"
        "    threads.submit(QueuedCall(lambda _: 1, lambda call: done.set()))\n"
        "    return done.wait(20)\n"
        "assert run_one()  # the parent now has an idle thread, which a child does not inherit\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0 if run_one() else 1)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print(os.waitstatus_to_exitcode(status))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "0"


def test_calls_one_after_another_are_served_by_one_thread():
    """The next call often arrives while the thread that ran the last one is still sending its reply:
    that thread is idle by then, and no second thread starts (two would wake each other for every call)."""
    threads = ToolThreads(limit=4)
    ran_on, finished = set(), threading.Event()
    earlier = {t for t in threading.enumerate() if t.name == "codeact-tool"}  # other tests' threads

    def serve(_: QueuedCall) -> None:
        ran_on.add(threading.get_ident())

    def reply(call: QueuedCall, left: int) -> None:  # the reply went out; the code's next call comes in
        if left:
            threads.submit(QueuedCall(serve, lambda call: reply(call, left - 1)))
        else:
            finished.set()

    threads.submit(QueuedCall(serve, lambda call: reply(call, 50)))
    assert finished.wait(60)
    assert len(ran_on) == 1
    assert len({t for t in threading.enumerate() if t.name == "codeact-tool"} - earlier) == 1
