"""`SandboxPool`: warm sessions ready for many short tasks, each task in a fresh session."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from codeact.sandbox.base import Sandbox
from codeact.sandbox.options import SandboxOptions


class SandboxPool:
    """Keeps `size` started sessions so a task never waits for start-up.

    `with pool.session(tools=[...]) as sb:` hands out a started session with the tools set; the
    session is closed after use (no state leaks between tasks) and a new one is started in the
    background to take its place.
    """

    def __init__(self, size: int = 4, **options: Any) -> None:
        if size < 1:
            raise ValueError("a SandboxPool needs size >= 1")
        self.size = size
        self.options = SandboxOptions.of(options)
        self._idle: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        self._refills: list[threading.Thread] = []
        for _ in range(size):
            self._refill()

    def _new(self) -> Sandbox:
        sandbox = Sandbox(options=self.options)
        sandbox.start()
        return sandbox

    def _refill(self, used: Any = None) -> None:
        """In the background: close `used` (a task's finished session), then start its replacement."""

        def work() -> None:
            if used is not None:
                with contextlib.suppress(Exception):
                    used.close()
            try:
                sandbox = self._new()
            except Exception:
                return
            with self._lock:
                if self._closed:
                    sandbox.close()
                    return
            self._idle.put(sandbox)

        thread = threading.Thread(target=work, daemon=True, name="codeact-pool-refill")
        thread.start()
        with self._lock:
            self._refills = [t for t in self._refills if t.is_alive()] + [thread]

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
            refills = list(self._refills)
        for thread in refills:
            thread.join(timeout=30)
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                break

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
