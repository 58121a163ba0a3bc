"""CodeAct's own cost: prompt size for a two-tool task, and time per step beyond the LM and sandbox.

Run: .venv/bin/python bench/agent.py [--quick]

- Prompt: tokens of the first request (system rules + tool stubs + submit stub + task), counted
  with codeact's token estimator (`codeact.lm.tokens`).
- Framework overhead per step: runs with an instant ScriptedLM against an interpreter that returns
  at once, so all the time is the loop's own (prompt building, reply parsing, observation, records,
  validation). Also shown: the same loop through the real native sandbox, split into sandbox
  execution and the rest.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

import codeact
from codeact.lm.tokens import count_message_tokens, count_tokens
from codeact.sandbox.interpreter import ExecutionResult
from codeact.tools import Tool


def get_weather(city: str, unit: str = "celsius") -> float:
    """Current temperature in a city.

    Args:
        city: the city name, e.g. "Oslo"
        unit: "celsius" or "fahrenheit"
    """
    return 21.5


def convert_currency(amount: float, source: str, target: str) -> float:
    """Convert an amount of money between currencies (ISO codes like "EUR")."""
    return amount * 1.1


class InstantInterpreter:
    """Answers every step at once: `x = 1` steps print a line, `submit(...)` submits."""

    def start(self) -> None: ...
    def set_tools(self, tools: Sequence[Tool]) -> None: ...
    def set_submit(self, params: Sequence[str]) -> None: ...
    def close(self) -> None: ...

    def execute(self, code: str, *, timeout: float | None = None) -> ExecutionResult:
        if code.startswith("submit("):
            return ExecutionResult(submitted={"answer": 42}, duration_s=1e-9)
        return ExecutionResult(stdout="21.5\n", value="21.5", duration_s=1e-9)

    async def aexecute(self, code: str, *, timeout: float | None = None) -> ExecutionResult:
        return self.execute(code, timeout=timeout)


STEP = "The weather first.\n```python\nt = get_weather('Oslo')\nprint(t)\nt\n```"
SUBMIT = "Done.\n```python\nsubmit(answer=42)\n```"


def run_once(steps: int, **options: Any) -> codeact.Prediction:
    lm = codeact.ScriptedLM([STEP] * (steps - 1) + [SUBMIT])
    act = codeact.CodeAct(
        "question: str -> answer: int",
        tools=[get_weather, convert_currency],
        lm=lm,
        max_iters=steps,
        **options,
    )
    return act(question="How warm is it in Oslo, in tenths of a degree?")


def overhead_ms(prediction: codeact.Prediction) -> float:
    record = prediction.record
    own = record.duration_s - record.lm_s - record.exec_s - record.session_s
    return 1000 * own / len(record.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeats = 5 if args.quick else 20

    act = codeact.CodeAct("question: str -> answer: int", tools=[get_weather, convert_currency])
    messages = act.prompt.messages({"question": "How warm is it in Oslo?"}, [])
    print("prompt for a two-tool task (first request)")
    print(f"  system message: {len(messages[0]['content']):5d} chars, {count_tokens(messages[0]['content']):4d} tokens")
    print(f"  task message:   {len(messages[1]['content']):5d} chars, {count_tokens(messages[1]['content']):4d} tokens")
    print(f"  whole request:  {count_message_tokens(messages):4d} tokens (estimate, incl. chat framing)")

    print("\nframework overhead per step (instant LM, instant interpreter)")
    for steps in (2, 10, 30):
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            prediction = run_once(steps, interpreter=InstantInterpreter)
            total = time.perf_counter() - started
            assert prediction.end_reason == "submitted", prediction.record.error
            samples.append(1000 * total / steps)
        print(f"  {steps:3d}-step runs: {statistics.median(samples):.3f} ms per step (median of {repeats})")

    print("\nthrough the native sandbox (instant LM)")
    run_once(2)  # warm the zygote
    for steps in (2, 10):
        walls, starts, execs, rest = [], [], [], []
        for _ in range(max(3, repeats // 4)):
            started = time.perf_counter()
            prediction = run_once(steps)
            wall = time.perf_counter() - started
            assert prediction.end_reason == "submitted", prediction.record.error
            walls.append(1000 * wall)
            starts.append(1000 * prediction.record.session_s)
            execs.append(1000 * prediction.record.exec_s / steps)
            rest.append(overhead_ms(prediction))
        print(
            f"  {steps:3d}-step runs: {statistics.median(walls):6.1f} ms per run, of which session "
            f"start {statistics.median(starts):5.1f} ms; per step: sandbox execution "
            f"{statistics.median(execs):5.2f} ms, framework {statistics.median(rest):.2f} ms"
        )


if __name__ == "__main__":
    main()
