"""`SandboxPool`: warm sessions ready for many short tasks, each task in a fresh session."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from codeact.sandbox.base import Sandbox
from codeact.sandbox.options import SandboxOptions

_STOP = object()  # ends the refill thread


class SandboxPool:
    """Keeps `size` started sessions so a task never waits for start-up.

    `with pool.session(tools=[...]) as sb:` hands out a started session with the tools set; the
    session is closed after use (no state leaks between tasks) and a new one is started in the
    background to take its place. Its sessions default to `prefork=False`: a task closes its session
    after its last step, so a process forked in advance for a next step would be wasted.
    """

    def __init__(self, size: int = 4, **options: Any) -> None:
        if size < 1:
            raise ValueError("a SandboxPool needs size >= 1")
        self.size = size
        self.options = SandboxOptions.of({"prefork": False, **options})
        self._idle: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        # Sessions to replace (a task's used one, closed first, or None): one thread of the pool's own
        # starts the replacements, so a caller never waits for a thread to start.
        self._replace: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._refiller = threading.Thread(target=self._refill_all, daemon=True, name="codeact-pool-refill")
        self._refiller.start()
        for _ in range(size):
            self._refill()

    def _new(self) -> Sandbox:
        sandbox = Sandbox(options=self.options)
        sandbox.start()
        return sandbox

    def _refill(self, used: Any = None) -> None:
        """In the background: close `used` (a task's finished session), then start its replacement."""
        self._replace.put(used)

    def _refill_all(self) -> None:
        while (used := self._replace.get()) is not _STOP:
            if used is not None:
                with contextlib.suppress(Exception):
                    used.close()
            if self._closed:
                continue
            try:
                sandbox = self._new()
            except Exception:
                continue
            with self._lock:
                if self._closed:
                    sandbox.close()
                    continue
                self._idle.put(sandbox)

    def acquire(self, tools: Sequence[Any] = (), submit_params: Sequence[str] | None = None) -> Any:
        """A started session for one task; give it back with `release` (or use `session`)."""
        if self._closed:
            raise RuntimeError("this SandboxPool is closed")
        try:
            sandbox = self._idle.get_nowait()
        except queue.Empty:
            sandbox = self._new()
        if not getattr(sandbox, "alive", True):
            sandbox.close()
            sandbox = self._new()
        sandbox.set_tools(tools)
        if submit_params is not None:
            sandbox.set_submit(submit_params)
        return sandbox

    def take(self) -> Any:
        """A started session that is the caller's to close, its replacement starting at once: what
        `CodeAct(interpreter=pool.take)` uses, so that each run starts from a warm session."""
        sandbox = self.acquire()
        if not self._closed:
            self._refill()
        return sandbox

    def release(self, sandbox: Any) -> None:
        """Give back a task's session: it is closed (in the background) and a fresh one takes its place."""
        if self._closed:
            sandbox.close()
        else:
            self._refill(sandbox)

    @contextlib.contextmanager
    def session(self, tools: Sequence[Any] = (), submit_params: Sequence[str] | None = None) -> Iterator[Any]:
        sandbox = self.acquire(tools, submit_params)
        try:
            yield sandbox
        finally:
            self.release(sandbox)

    @contextlib.asynccontextmanager
    async def asession(
        self, tools: Sequence[Any] = (), submit_params: Sequence[str] | None = None
    ) -> AsyncIterator[Any]:
        import asyncio

        sandbox = await asyncio.to_thread(self.acquire, tools, submit_params)
        try:
            yield sandbox
        finally:
            await asyncio.to_thread(self.release, sandbox)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._replace.put(_STOP)
        self._refiller.join(timeout=30)
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                break

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
