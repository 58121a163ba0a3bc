"""The same tasks through `codeact.CodeAct` itself: our prompt, typed `submit`, one answer per run.

Unlike the paper's protocol there is no "try again" after a wrong answer: a run ends when the code
submits, so success is the submitted answer graded by the original rule, and turns are the run's
steps (at most 10, like the paper's turns).
"""

from __future__ import annotations

import time
from typing import Any

from codeact.lm.base import LM
from codeact.m3tooleval.grader import is_correct
from codeact.m3tooleval.harness import ACTION_TIMEOUT_S, MAX_TURNS, Episode, Turn
from codeact.m3tooleval.tasks import Task

SIGNATURE = "instruction: str -> answer: Any"


def run_codeact_episode(
    task: Task,
    lm: LM,
    *,
    max_turns: int = MAX_TURNS,
    sandbox: dict[str, Any] | None = None,
) -> Episode:
    """Run `task` with `codeact.CodeAct` and the task's host tools; never raises for run failures."""
    from codeact.agent import CodeAct

    started = time.perf_counter()
    tools = task.make_tools()
    episode = Episode(
        task=task.name,
        category=task.category,
        mode="codeact",
        model=getattr(lm, "model", "") or type(lm).__name__,
        correct=False,
        turns=0,
        end_reason="limit",
        expected=task.expected_output_repr,
    )
    try:
        act = CodeAct(
            SIGNATURE,
            tools=tools.host_tools(),
            lm=lm,
            max_iters=max_turns,
            fallback="partial",
            sandbox={"timeout": ACTION_TIMEOUT_S, **(sandbox or {})},
            temperature=0.0,
        )
        prediction = act(instruction=task.instruction)
    except Exception as exc:
        episode.end_reason = "error"
        episode.error = f"{type(exc).__name__}: {exc}"
        episode.duration_s = time.perf_counter() - started
        return episode
    steps = prediction.trajectory
    episode.turns = len(steps)
    for step in steps:
        episode.steps.append(
            Turn(
                reply=step.reply,
                kind="action" if step.code is not None else "invalid",
                content=step.code or "",
                observation=step.observation,
                lm_s=step.lm_s,
                action_s=step.exec_s,
                prompt_tokens=step.prompt_tokens,
                completion_tokens=step.completion_tokens,
            )
        )
    outputs = prediction.outputs or {}
    if "answer" in outputs:
        answer = outputs["answer"]
        episode.answer = repr(answer)
        episode.correct = is_correct(answer, task.expected_output)
        if episode.steps:
            episode.steps[-1].correct = episode.correct
    episode.end_reason = "correct" if episode.correct else str(prediction.end_reason)
    episode.error = prediction.error
    episode.duration_s = time.perf_counter() - started
    return episode
