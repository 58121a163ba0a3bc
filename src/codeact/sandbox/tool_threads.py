"""Host threads that run tool calls.

A call is handed to an idle thread through one queue, with no future, condition or semaphore per
call. Threads start as calls need them, up to a limit shared by every sandbox of the process, and are
daemons: a tool that never returns, abandoned when its step's time ran out, does not keep the
interpreter from exiting, and its thread stops counting against the limit, so hung tools never leave
the process without threads for the next calls.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)
_QUEUED, _RUNNING, _FINISHED, _CANCELLED = "queued", "running", "finished", "cancelled"
_lock = threading.Lock()  # guards every call's state (it starts or is cancelled, never both) and the counts


class QueuedCall:
    """A tool call waiting for a host thread: it runs once in the caller's context, unless cancelled
    first. `done` is called once either way, with the call's value or error set. `serve` gets the call
    itself, to say how its work stops if the call is cancelled while it runs (`stop_with`)."""

    __slots__ = (
        "context",
        "done",
        "error",
        "on_idle",
        "on_release",
        "released",
        "serve",
        "state",
        "stop",
        "stopping",
        "value",
    )

    def __init__(self, serve: Callable[[QueuedCall], Any], done: Callable[[QueuedCall], None]) -> None:
        self.context = contextvars.copy_context()
        self.serve = serve
        self.done = done
        self.state = _QUEUED
        self.value: Any = None
        self.error: BaseException | None = None
        self.stop: Callable[[], object] | None = None
        self.stopping = False
        self.on_release: Callable[[], None] | None = None  # called under the lock when abandoned while running
        self.on_idle: Callable[[], None] | None = None  # called under the lock once its thread is free, before `done`
        self.released = False

    @property
    def cancelled(self) -> bool:
        return self.state == _CANCELLED

    def cancel(self) -> bool:
        """Keep the call from starting (True); once started, stop its work if it said how, and give its
        thread's place to the next calls while it runs on (False)."""
        with _lock:
            queued = self.state == _QUEUED
            if queued:
                self.state = _CANCELLED
            else:
                self.stopping = True
                stop, self.stop = self.stop, None
                if self.state == _RUNNING and not self.released and self.on_release is not None:
                    self.released = True
                    self.on_release()
        if queued:
            self.done(self)
        elif stop is not None:
            stop()
        return queued

    def stop_with(self, stop: Callable[[], object]) -> None:
        """From the running work: how to stop it when the call is cancelled (at once if it already was)."""
        with _lock:
            if not self.stopping:
                self.stop = stop
                return
        stop()

    def run(self) -> None:
        with _lock:
            if self.state != _QUEUED:
                if self.on_idle is not None:
                    self.on_idle()
                return
            self.state = _RUNNING
        try:
            self.value = self.context.run(self.serve, self)
        except BaseException as exc:  # even SystemExit: it is the tool's outcome, not this thread's
            self.error = exc
        with _lock:
            self.state = _FINISHED
            self.stop = None
            if not self.released and self.on_idle is not None:
                self.on_idle()
        self.done(self)


class ToolThreads:
    """Runs calls on daemon threads, started when no thread is idle, at most `limit` of them counted
    (a thread whose call was abandoned no longer counts, and ends when its call returns); calls beyond
    that wait for a thread to finish its call."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._calls: queue.SimpleQueue[QueuedCall] = queue.SimpleQueue()
        self._threads = 0
        self._idle = 0  # threads waiting for a call that no call put in the queue has claimed yet
        os.register_at_fork(after_in_child=self._forget_threads)

    def submit(self, call: QueuedCall) -> None:
        call.on_release, call.on_idle = self._release, self._idle_again
        with _lock:
            start = not self._idle and self._threads < self.limit
            if self._idle:
                self._idle -= 1
            elif start:
                self._threads += 1
        if start:
            threading.Thread(target=self._work, name="codeact-tool", daemon=True).start()
        self._calls.put(call)

    def _release(self) -> None:
        """A running call was abandoned (the caller holds the lock): its thread no longer counts."""
        self._threads -= 1

    def _idle_again(self) -> None:
        """A call's thread is free (the caller holds the lock): it counts as idle before the call's
        `done` replies, since the code's next call may come in as soon as it has, and must not start
        a second thread (two would take turns, waking each other for every call)."""
        self._idle += 1

    def _work(self) -> None:
        while True:
            call = self._calls.get()
            try:
                call.run()
            except BaseException:  # only by a bug in a call's `done`: the thread, counted idle, serves on
                logger.exception("a tool call's completion failed")
            if call.released:  # abandoned while it ran: this thread no longer counts, and ends
                return

    def _forget_threads(self) -> None:
        """In a forked child no thread of the parent runs: start afresh (calls queued there are lost)."""
        global _lock
        _lock = threading.Lock()
        self._calls = queue.SimpleQueue()
        self._threads = self._idle = 0
