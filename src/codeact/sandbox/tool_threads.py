"""Host threads that run tool calls.

A call is handed to an idle thread through one queue, with no future, condition or semaphore per
call. Threads start as calls need them, up to a limit shared by every sandbox of the process, and are
daemons: a tool that never returns, abandoned when its step's time ran out, does not keep the
interpreter from exiting.
"""

from __future__ import annotations

import contextvars
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

_QUEUED, _RUNNING, _FINISHED, _CANCELLED = "queued", "running", "finished", "cancelled"
_states = threading.Lock()  # a call starts or is cancelled, never both


class QueuedCall:
    """A tool call waiting for a host thread: it runs once in the caller's context, unless cancelled
    first. `done` is called once either way, with the call's value or error set. `serve` gets the call
    itself, to say how its work stops if the call is cancelled while it runs (`stop_with`)."""

    __slots__ = ("context", "done", "error", "serve", "state", "stop", "stopping", "value")

    def __init__(self, serve: Callable[[QueuedCall], Any], done: Callable[[QueuedCall], None]) -> None:
        self.context = contextvars.copy_context()
        self.serve = serve
        self.done = done
        self.state = _QUEUED
        self.value: Any = None
        self.error: BaseException | None = None
        self.stop: Callable[[], object] | None = None
        self.stopping = False

    @property
    def cancelled(self) -> bool:
        return self.state == _CANCELLED

    def cancel(self) -> bool:
        """Keep the call from starting (True); once started, stop its work if it said how (False)."""
        with _states:
            queued = self.state == _QUEUED
            if queued:
                self.state = _CANCELLED
            else:
                self.stopping = True
                stop, self.stop = self.stop, None
        if queued:
            self.done(self)
        elif stop is not None:
            stop()
        return queued

    def stop_with(self, stop: Callable[[], object]) -> None:
        """From the running work: how to stop it when the call is cancelled (at once if it already was)."""
        with _states:
            if not self.stopping:
                self.stop = stop
                return
        stop()

    def run(self) -> None:
        with _states:
            if self.state != _QUEUED:
                return
            self.state = _RUNNING
        try:
            self.value = self.context.run(self.serve, self)
        except BaseException as exc:  # even SystemExit: it is the tool's outcome, not this thread's
            self.error = exc
        self.state = _FINISHED
        self.stop = None
        self.done(self)


class ToolThreads:
    """Runs calls on daemon threads, started when no thread is idle, at most `limit` of them; calls
    beyond that wait for a thread to finish its call."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._calls: queue.SimpleQueue[QueuedCall] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads waiting for a call that no call put in the queue has claimed yet
        os.register_at_fork(after_in_child=self._forget_threads)

    def submit(self, call: QueuedCall) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
            elif self._threads < self.limit:
                self._threads += 1
                threading.Thread(target=self._work, name=f"codeact-tool-{self._threads}", daemon=True).start()
        self._calls.put(call)

    def _work(self) -> None:
        try:
            while True:
                self._calls.get().run()
                with self._lock:
                    self._idle += 1
        finally:  # only a bug in a call's `done` ends a thread: the next call starts another
            with self._lock:
                self._threads -= 1

    def _forget_threads(self) -> None:
        """In a forked child no thread of the parent runs: start afresh (calls queued there are lost)."""
        self._calls = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = self._idle = 0
