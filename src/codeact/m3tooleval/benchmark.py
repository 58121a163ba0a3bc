"""Running many episodes in parallel, each with its own tools and session."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING

from codeact.lm.base import LM
from codeact.m3tooleval.agent_mode import run_codeact_episode
from codeact.m3tooleval.harness import MAX_NEW_TOKENS, MAX_TURNS, Episode, run_episode
from codeact.m3tooleval.tasks import Task

if TYPE_CHECKING:
    from codeact.ray import RayExecutor

LMFor = Callable[[Task, str], LM]
OnEpisode = Callable[[Episode, int, int], None]


FATAL_LM_ERRORS = ("LMAuthError", "LMConfigError", "LMModelNotFoundError", "LMQuotaError", "LMMissingExtraError")


def is_fatal(episode: Episode) -> bool:
    """Whether the episode failed because the model cannot be called at all (key, name, quota)."""
    error = episode.error or ""
    return episode.end_reason in ("lm_error", "error") and any(f"{name}:" in error for name in FATAL_LM_ERRORS)


def run_benchmark(
    tasks: Sequence[Task],
    modes: Sequence[str],
    lm_for: LMFor,
    *,
    workers: int = 4,
    max_turns: int = MAX_TURNS,
    max_tokens: int = MAX_NEW_TOKENS,
    on_episode: OnEpisode | None = None,
    executor: RayExecutor | None = None,
) -> list[Episode]:
    """Every task in every mode (`code`, `json`, `text`, `codeact`), `workers` at a time.

    `lm_for(task, mode)` gives the model of one episode (the same object for all, or a fresh
    scripted one per task). `on_episode(episode, done, total)` reports progress. Episodes come
    back in task-then-mode order whatever order they finished in. With `executor` (a
    `codeact.ray.RayExecutor`) the episodes run on a Ray cluster instead of local threads.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    jobs = [(task, mode) for task in tasks for mode in modes]
    results: list[Episode | None] = [None] * len(jobs)
    done = 0
    lock = threading.Lock()
    stop = threading.Event()  # the model cannot be called at all: the rest would fail the same way

    def run(index: int) -> Episode:
        episode = attempt(index)
        if is_fatal(episode):
            stop.set()
        return episode

    def attempt(index: int) -> Episode:
        task, mode = jobs[index]
        if stop.is_set():
            return _not_run(task, mode, "not run: an earlier episode found that the model cannot be called")
        return _run_job(jobs[index], lm_for, max_turns, max_tokens)

    if executor is not None:
        work = functools.partial(_run_job, lm_for=lm_for, max_turns=max_turns, max_tokens=max_tokens)
        for index, episode in executor.as_completed_calls(
            work, jobs, failed=lambda index, why: _not_run(*jobs[index], why, end_reason="error")
        ):
            results[index] = episode
            done += 1
            if on_episode is not None:
                on_episode(episode, done, len(jobs))
        return [e for e in results if e is not None]

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="m3tooleval") as pool:
        futures = {pool.submit(run, i): i for i in range(len(jobs))}
        for future in as_completed(futures):
            index = futures[future]
            episode = future.result()
            results[index] = episode
            with lock:
                done += 1
                if on_episode is not None:
                    on_episode(episode, done, len(jobs))
    return [e for e in results if e is not None]


def _run_job(job: tuple[Task, str], lm_for: LMFor, max_turns: int, max_tokens: int) -> Episode:
    """One episode; an exception becomes an `error` episode."""
    task, mode = job
    try:
        lm = lm_for(task, mode)
        if mode == "codeact":
            return run_codeact_episode(task, lm, max_turns=max_turns)
        return run_episode(task, lm, mode, max_turns=max_turns, max_tokens=max_tokens)  # type: ignore[arg-type]
    except Exception as exc:
        return _not_run(task, mode, f"{type(exc).__name__}: {exc}", end_reason="error")


def _not_run(task: Task, mode: str, why: str, *, end_reason: str = "skipped") -> Episode:
    return Episode(
        task=task.name,
        category=task.category,
        mode=mode,
        model="",
        correct=False,
        turns=0,
        end_reason=end_reason,
        expected=task.expected_output_repr,
        error=why,
    )
