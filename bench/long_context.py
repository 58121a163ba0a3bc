"""Long-context tasks with exact grading: RLM mode (inputs stay in the sandbox, `llm_query` from code)
beside plain mode (inputs in the prompt), for one model, in one run.

Run: .venv/bin/python bench/long_context.py --model openai/gpt-4o-mini [--mode both] [--size 200000]
     .venv/bin/python bench/long_context.py --model reference   # scripted reference solutions: a self-check

Three task families over a generated document of `--size` characters (seeded, so runs compare):
needle (find the one code hidden among filler lines), count (how many log lines name a service at
level ERROR), sentiment (how many reviews are positive; the words make it exact, the count needs
every review read). Prints accuracy, steps, tokens and sub-calls per mode and family.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import codeact

FAMILIES = ("needle", "count", "sentiment")
POSITIVE = ("great", "excellent", "love", "wonderful", "perfect")
NEGATIVE = ("awful", "broken", "hate", "terrible", "useless")


@dataclass
class Task:
    family: str
    instructions: str
    document: str
    answer: int


def make_task(family: str, size: int, seed: int) -> Task:
    rng = random.Random(f"{family}-{size}-{seed}")
    lines: list[str] = []
    if family == "needle":
        code = rng.randrange(100_000, 999_999)
        while sum(len(x) + 1 for x in lines) < size:
            lines.append(f"note {rng.randrange(10**6)}: nothing of interest here")
        lines.insert(rng.randrange(len(lines)), f"the secret code is {code}")
        return Task(family, "Find the secret code hidden in the document and answer with it.", "\n".join(lines), code)
    if family == "count":
        errors = 0
        while sum(len(x) + 1 for x in lines) < size:
            level = rng.choice(["INFO", "INFO", "WARN", "ERROR"])
            service = rng.choice(["billing", "search", "auth"])
            errors += level == "ERROR" and service == "billing"
            lines.append(f"{level} {service}: request {rng.randrange(10**6)} done")
        return Task(family, "How many log lines are at level ERROR for the billing service?", "\n".join(lines), errors)
    positives = 0
    while sum(len(x) + 1 for x in lines) < size:
        good = rng.random() < 0.4
        positives += good
        word = rng.choice(POSITIVE if good else NEGATIVE)
        lines.append(f"review {len(lines)}: the product is {word}, bought it {rng.randrange(1, 30)} days ago")
    return Task(family, "How many of the reviews (one per line) are positive?", "\n".join(lines), positives)


def reference_reply(messages: list[dict[str, Any]]) -> str:
    """A scripted model that writes a correct solution for each family (RLM mode uses llm_query)."""
    task = messages[1]["content"]
    rlm = "llm_query" in messages[0]["content"]
    if "secret code" in task:
        code = "import re\nsubmit(answer=int(re.search(r'the secret code is (\\d+)', document).group(1)))"
    elif "ERROR" in task:
        code = "submit(answer=sum(1 for l in document.splitlines() if l.startswith('ERROR billing:')))"
    elif rlm:
        code = (
            "lines = document.splitlines()\nchunks = ['\\n'.join(lines[i:i + 50]) for i in range(0, len(lines), 50)]\n"
            "counts = llm_query_batched(['Count the positive reviews:\\n' + c for c in chunks], schema='int')\n"
            "submit(answer=sum(counts))"
        )
    else:
        words = ", ".join(repr(w) for w in POSITIVE)
        code = f"submit(answer=sum(any(w in l for w in ({words},)) for l in document.splitlines()))"
    return f"Solve it in code.\n```python\n{code}\n```"


def reference_sub_reply(messages: list[dict[str, Any]]) -> str:
    text = messages[-1]["content"]
    return str(sum(any(f" {w}," in line for w in POSITIVE) for line in text.splitlines()))


def run(model: str, mode: str, task: Task, max_iters: int) -> dict[str, Any]:
    if model == "reference":
        lm: Any = codeact.ScriptedLM([reference_reply] * max_iters)
        sub: Any = codeact.ScriptedLM([reference_sub_reply] * 10_000)
    else:
        lm = sub = model
    options: dict[str, Any] = {"sandbox": {"timeout": 120}, "max_iters": max_iters}
    if mode == "rlm":
        options.update(inputs_in_prompt="preview", sub_lm=sub, max_llm_calls=500)
    act = codeact.CodeAct(
        codeact.Signature("document: str -> answer: int", instructions=task.instructions),
        lm=lm,
        fallback="partial",
        **options,
    )
    started = time.perf_counter()
    prediction = act(document=task.document)
    record = prediction.record
    return {
        "right": prediction.answer == task.answer,
        "steps": len(record.steps),
        "tokens": record.usage.total_tokens,
        "sub_calls": record.sub_usage.calls,
        "seconds": time.perf_counter() - started,
        "end": record.end_reason,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="reference", help="a model name, 'local', or 'reference'")
    parser.add_argument("--mode", default="both", choices=["both", "plain", "rlm"])
    parser.add_argument("--size", type=int, default=200_000, help="characters per document")
    parser.add_argument("--tasks", type=int, default=2, help="tasks per family")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--max-iters", type=int, default=6)
    args = parser.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        parser.error(f"unknown family {unknown[0]!r}; the families are {', '.join(FAMILIES)}")
    modes = ["plain", "rlm"] if args.mode == "both" else [args.mode]
    print(f"long-context tasks: {args.tasks} per family, documents of {args.size:,} characters, model {args.model}")
    print(f"{'mode':<6} {'family':<10} {'right':>7} {'steps':>6} {'tokens':>10} {'sub-calls':>9} {'s/task':>7}")
    failures = 0
    for mode in modes:
        for family in families:
            rows = [
                run(args.model, mode, make_task(family, args.size, seed), args.max_iters) for seed in range(args.tasks)
            ]
            right = sum(r["right"] for r in rows)
            failures += len(rows) - right
            print(
                f"{mode:<6} {family:<10} {right:>3}/{len(rows):<3} {statistics.mean(r['steps'] for r in rows):>6.1f} "
                f"{statistics.mean(r['tokens'] for r in rows):>10,.0f} "
                f"{statistics.mean(r['sub_calls'] for r in rows):>9.1f} "
                f"{statistics.mean(r['seconds'] for r in rows):>7.2f}",
                flush=True,
            )
    if args.model == "reference" and failures:
        print(f"the reference solutions failed {failures} tasks", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
