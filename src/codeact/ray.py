"""Batches on a Ray cluster: `act.batch(inputs, executor=codeact.ray.RayExecutor())`.

The `CodeAct` (signature, tools, LM settings) is put in Ray's object store once and each worker
(a Ray actor) loads it once, starts its own sandbox zygote, and runs tasks on threads. The driver
hands out tasks, collects predictions (in input order from `map`, as they finish from
`as_completed`), retries the tasks of a worker that died on another worker, and turns a task that
keeps killing its worker into an `error` prediction instead of sinking the batch.

Tools travel to the workers by value (cloudpickle). A tool that holds something that cannot travel
(a connection, a client with a lock, a secret kept out of pickles) is built on each worker instead:
`per_worker(factory)` calls `factory()` once per worker process and uses what it returns. Calls do
not come back to the driver: that would put a network round trip and the driver itself in the path
of every tool call of every worker.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import functools
import inspect
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

try:
    import ray
    import ray.exceptions
    from ray import cloudpickle
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("codeact.ray needs Ray: pip install 'codeact[ray]'") from exc

from codeact.lm.base import Usage
from codeact.sandbox.pool import SandboxPool

if TYPE_CHECKING:
    from codeact.agent import CodeAct
    from codeact.prediction import Prediction

__all__ = ["RayExecutor", "per_worker"]


# --- tools built on each worker -------------------------------------------------------------------
_built: dict[str, Callable[..., Any]] = {}
_built_lock = threading.Lock()


class _PerWorker:
    """A tool whose callable `factory()` builds once per process; only the factory travels."""

    def __init__(self, factory: Callable[[], Callable[..., Any]], template: Callable[..., Any], key: str) -> None:
        self.factory, self.key = factory, key
        functools.update_wrapper(self, template)
        self.__signature__ = inspect.signature(template)

    def _target(self) -> Callable[..., Any]:
        with _built_lock:
            if self.key not in _built:
                _built[self.key] = self.factory()
            return _built[self.key]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    def __reduce__(self) -> Any:
        return (_rebuild, (self.factory, self.key))


def _rebuild(factory: Callable[[], Callable[..., Any]], key: str) -> _PerWorker:
    with _built_lock:
        target = _built.get(key)
        if target is None:
            target = _built[key] = factory()
    return _PerWorker(factory, target, key)


def per_worker(factory: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
    """A tool built by `factory()` in each process that runs it (the driver and each Ray worker).

    Use it for a tool that holds a connection or client: `tools=[per_worker(lambda: Database(url).query)]`.
    The factory must be picklable; the tool's name, signature and docstring are those of what it returns.
    """
    if not callable(factory):
        raise TypeError("per_worker() takes a function that returns the tool, e.g. per_worker(lambda: db.query)")
    key = f"{os.getpid()}-{id(factory)}"
    with _built_lock:
        template = _built[key] = factory()
    if not callable(template):
        raise TypeError(f"the per_worker factory returned {type(template).__name__}, not a callable tool")
    return _PerWorker(factory, template, key)


# --- the executor -----------------------------------------------------------------------------------
@dataclass
class BatchStats:
    """What the last batch took: its usage and cost summed over workers, retries, and where tasks ran."""

    usage: Usage = field(default_factory=Usage)
    retries: int = 0
    failed: int = 0
    workers: collections.Counter[str] = field(default_factory=collections.Counter)


class _Worker:
    """One Ray actor: the work function loaded once (and prepared, when it has a `prepare`), tasks
    on threads."""

    def __init__(self, work: Callable[[Any], Any], threads: int) -> None:
        self.work = work
        self.where = f"{socket.gethostname()}:{os.getpid()}"
        prepare = getattr(work, "prepare", None)
        if prepare is not None:
            prepare(threads)

    def run(self, index: int, item: Any) -> tuple[int, Any, str]:
        return index, self.work(item), self.where


class _ActTask:
    """A CodeAct's runs on a worker: sessions come from the worker's own warm `SandboxPool`."""

    def __init__(self, act: CodeAct) -> None:
        self.act = act

    def prepare(self, threads: int) -> None:
        if self.act.interpreter is not None:
            return
        options = self.act.sandbox_options
        pool = SandboxPool(size=threads, **{f.name: getattr(options, f.name) for f in dataclasses.fields(options)})
        self.act = copy.copy(self.act)
        self.act.interpreter = pool.take  # a started session per run, its replacement warming meanwhile

    def __call__(self, inputs: dict[str, Any]) -> Prediction:
        return self.act._run_safely(inputs)


class RayExecutor:
    """Runs `CodeAct.batch` (or any function over items, with `as_completed_calls`) on a Ray cluster.

    `address`: the cluster to join (`"auto"`, `"ray://host:10001"`, ...); None joins the cluster
    this process is already connected to, or starts a local one (`init_options` go to `ray.init`).
    `workers`: Ray actors (default: one per CPU of the cluster); `threads`: tasks each runs at a time;
    a task whose worker died is tried again on a worker of its own (so an innocent neighbour of the
    task that killed it is not blamed), and `max_retries` is how many deaths of its own worker a task
    may cause before it ends as an `error` prediction; `on_result(index, result)` is called on the
    driver as each finishes, and `progress=True` shows a progress bar there (on stderr). After a
    batch, `stats` holds its usage, cost and retries.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        workers: int | None = None,
        threads: int = 2,
        max_retries: int = 2,
        on_result: Callable[[int, Any], None] | None = None,
        progress: bool = False,
        init_options: dict[str, Any] | None = None,
    ) -> None:
        for name, value, least in (("threads", threads, 1), ("max_retries", max_retries, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer of at least {least}, got {value!r}")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self.address = address
        self.workers = workers
        self.threads = threads
        self.max_retries = max_retries
        self.on_result = on_result
        self.progress = progress
        self.init_options = dict(init_options or {})
        self.stats = BatchStats()

    def _connect(self) -> None:
        if not ray.is_initialized():
            ray.init(
                address=self.address,
                ignore_reinit_error=True,
                include_dashboard=False,
                log_to_driver=False,
                **self.init_options,
            )

    def map(self, act: CodeAct, inputs: Sequence[dict[str, Any]]) -> list[Prediction]:
        """The predictions of `inputs`, in input order."""
        items = list(inputs)
        results: list[Prediction | None] = [None] * len(items)
        with _progress_bar(self.progress, len(items)) as advance:
            for index, prediction in self.as_completed(act, items):
                results[index] = prediction
                advance()
        return [p for p in results if p is not None]

    def as_completed(self, act: CodeAct, inputs: Iterable[dict[str, Any]]) -> Iterator[tuple[int, Prediction]]:
        """(index, prediction) pairs as tasks finish; each index exactly once."""
        items = list(inputs)
        for index, prediction in self.as_completed_calls(
            _ActTask(_shippable(act)), items, failed=lambda index, why: act._failed_prediction(items[index], why)
        ):
            self.stats.usage = self.stats.usage + prediction.usage
            yield index, prediction

    def as_completed_calls(
        self,
        work: Callable[[Any], Any],
        items: Sequence[Any],
        *,
        failed: Callable[[int, str], Any],
    ) -> Iterator[tuple[int, Any]]:
        """(index, work(item)) pairs as tasks finish on the workers; each index exactly once.

        `work` travels to each worker once; a task whose worker died is tried again on another
        up to `max_retries` times, then `failed(index, why)` stands for its result.
        """
        self.stats = BatchStats()
        if not items:
            return
        self._connect()
        work_ref = ray.put(work)
        count = min(self.workers or max(1, int(ray.cluster_resources().get("CPU", 1))), len(items))
        actor_class = ray.remote(num_cpus=1, max_restarts=0, max_concurrency=self.threads)(_Worker)
        actors = [actor_class.remote(work_ref, self.threads) for _ in range(count)]
        todo: collections.deque[int] = collections.deque(range(len(items)))
        suspects: collections.deque[int] = collections.deque()  # on a worker that died: run alone
        attempts, blamed = [0] * len(items), [0] * len(items)
        running: dict[Any, tuple[int, int, Any, bool]] = {}  # ref -> (index, slot, actor handle, alone)
        load, alone = [0] * count, [False] * count
        try:
            while todo or suspects or running:
                while suspects:  # a task whose worker died runs alone, so a death is its own doing
                    free = [a for a in range(count) if load[a] == 0]
                    if not free:
                        break
                    self._submit(actors, free[0], suspects.popleft(), items, attempts, running, load, solo=True)
                    alone[free[0]] = True
                while todo:  # keep each worker's threads busy, and one task queued behind them
                    open_slots = [a for a in range(count) if not alone[a] and load[a] <= self.threads]
                    if not open_slots:
                        break
                    actor = min(open_slots, key=load.__getitem__)
                    self._submit(actors, actor, todo.popleft(), items, attempts, running, load, solo=False)
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    index, actor, handle, solo = running.pop(ref)
                    load[actor] -= 1
                    alone[actor] = alone[actor] and not solo
                    try:
                        _, result, where = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        died = isinstance(exc, ray.exceptions.RayActorError)
                        if died and actors[actor] is handle:
                            actors[actor] = actor_class.remote(work_ref, self.threads)  # a fresh worker
                        if died and not solo:  # it shared the worker: not known to be the cause
                            self.stats.retries += 1
                            suspects.append(index)
                            continue
                        blamed[index] += 1
                        if blamed[index] <= self.max_retries:
                            self.stats.retries += 1
                            suspects.append(index)
                            continue
                        self.stats.failed += 1
                        result, where = (
                            failed(
                                index,
                                f"the task failed on {attempts[index]} Ray workers; last: "
                                f"{type(exc).__name__}: {_first_line(exc)}",
                            ),
                            "driver",
                        )
                    self.stats.workers[where] += 1
                    if self.on_result is not None:
                        self.on_result(index, result)
                    yield index, result
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
            for handle in actors:
                ray.kill(handle)

    @staticmethod
    def _submit(
        actors: list[Any],
        actor: int,
        index: int,
        items: Sequence[Any],
        attempts: list[int],
        running: dict[Any, tuple[int, int, Any, bool]],
        load: list[int],
        *,
        solo: bool,
    ) -> None:
        attempts[index] += 1
        running[actors[actor].run.remote(index, items[index])] = (index, actor, actors[actor], solo)
        load[actor] += 1


@contextlib.contextmanager
def _progress_bar(shown: bool, total: int) -> Iterator[Callable[[], None]]:
    """A function to call per finished task: a progress bar on stderr when `shown`."""
    if not shown:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("codeact batch on Ray", total=total)
        yield lambda: bar.advance(task)


def _shippable(act: CodeAct) -> CodeAct:
    """`act` if it can travel to the workers; else a clear error naming what cannot."""
    try:
        cloudpickle.dumps(act)
    except Exception as exc:
        for tool in act.tools:
            try:
                cloudpickle.dumps(tool)
            except Exception as tool_exc:
                raise TypeError(
                    f"tool {tool.name!r} cannot be sent to Ray workers ({type(tool_exc).__name__}: "
                    f"{_first_line(tool_exc)}); build what it holds inside the function, or pass "
                    f"codeact.ray.per_worker(lambda: ...) to build it on each worker"
                ) from None
        raise TypeError(
            f"this CodeAct cannot be sent to Ray workers ({type(exc).__name__}: {_first_line(exc)}); "
            "an LM with an api_key= is not pickled: set the key in the workers' environment "
            "(Ray's runtime_env) instead"
        ) from None
    return act


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
