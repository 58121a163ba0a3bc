"""Latency per call and tokens per second of the bundled SmolLM2 model, served by a real
`python -m llama_cpp.server` on loopback (through the OpenAI backend) and run in process (`LM("local")`);
with `--tasks`, the local model's success on a fixed set of easy tasks run through `codeact run`.

    .venv/bin/python bench/lm.py [--calls 8] [--max-tokens 64]
    .venv/bin/python bench/lm.py --tasks [--model local]

Prompts are fixed and temperature is 0, so the same work is timed on every run. Figures depend on
what else the machine is doing: compare runs made on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from codeact import LM
from codeact.lm.base import Completion, Message
from codeact.lm.local import bundled_model_path
from llama_server import MODEL_ALIAS, LlamaServer

PROMPTS: list[list[Message]] = [
    [{"role": "user", "content": "What is 17 plus 25? Answer with a Python code block."}],
    [{"role": "user", "content": "Count from 1 to 30, separated by commas."}],
    [{"role": "user", "content": "Write a Python function that reverses a string."}],
    [{"role": "user", "content": "Name three colours of the rainbow."}],
]


def timed_calls(lm: LM, calls: int, max_tokens: int, stream: bool) -> list[tuple[Completion, float]]:
    """(completion, seconds to first token) per call; first token time is 0 when not streaming."""
    results = []
    for index in range(calls):
        first: list[float] = []
        started = time.perf_counter()

        def on_token(text: str, first: list[float] = first, started: float = started) -> None:
            if not first:
                first.append(time.perf_counter() - started)

        completion = lm.complete(
            PROMPTS[index % len(PROMPTS)],
            max_tokens=max_tokens,
            temperature=0,
            on_token=on_token if stream else None,
        )
        results.append((completion, first[0] if first else 0.0))
    return results


def report(name: str, results: list[tuple[Completion, float]], stream: bool) -> None:
    latencies = [c.latency_s for c, _ in results]
    tokens = [c.usage.completion_tokens for c, _ in results]
    prompt_tokens = [c.usage.prompt_tokens for c, _ in results]
    print(f"\n{name}")
    for index, (completion, first) in enumerate(results):
        extra = f"  first token {first * 1000:7.1f} ms" if stream else ""
        print(
            f"  call {index + 1:2d}: {completion.latency_s * 1000:8.1f} ms  "
            f"{completion.usage.prompt_tokens:4d} prompt + {completion.usage.completion_tokens:4d} "
            f"completion tokens  {completion.usage.completion_tokens / completion.latency_s:6.1f} tok/s" + extra
        )
    print(
        f"  latency per call: median {statistics.median(latencies) * 1000:.1f} ms, "
        f"mean {statistics.mean(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    print(
        f"  throughput: {sum(tokens) / sum(latencies):.1f} completion tokens/s "
        f"({sum(tokens)} tokens in {sum(latencies):.2f} s; {sum(prompt_tokens)} prompt tokens)"
    )
    if stream:
        firsts = [first for _, first in results]
        print(f"  time to first token: median {statistics.median(firsts) * 1000:.1f} ms")


ROOT = Path(__file__).resolve().parent.parent

# (task, expected answer): one tool call or one expression each, with examples/math_tools.py.
EASY_TASKS: list[tuple[str, float]] = [
    ("What is 17 plus 25? Use the add tool.", 42),
    ("What is 2 plus 3? Use the add tool.", 5),
    ("What is 1000 plus 234? Use the add tool.", 1234),
    ("What is 9 times 7? Use the multiply tool.", 63),
    ("What is 100 minus 58? Use the subtract tool.", 42),
    ("What is 84 divided by 2? Use the divide tool.", 42),
    ("What is the square root of 144? Use the sqrt tool.", 12),
    ("What is 6 times 7?", 42),
    ("What is 10 plus 15?", 25),
    ("What is 3 + 4?", 7),
]


def run_tasks(model: str, max_iters: int) -> None:
    """Each easy task through `codeact run --json`; prints per task and the success rate."""
    codeact = Path(sys.executable).with_name("codeact")
    print(f"model {model}; {len(EASY_TASKS)} tasks; codeact run --max-iters {max_iters}")
    submitted_right = answered_right = 0
    durations: list[float] = []
    for task, expected in EASY_TASKS:
        command = [
            str(codeact), "run", "--model", model, "--tools", "examples/math_tools.py",
            "--signature", "question -> answer: float", "--max-iters", str(max_iters),
            "--json", task,
        ]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
        durations.append(time.perf_counter() - started)
        try:
            result = json.loads(done.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            print(f"  {task!r}: no JSON (exit {done.returncode}): {done.stderr.strip()[-200:]}")
            continue
        answer = (result.get("outputs") or {}).get("answer")
        right = isinstance(answer, (int, float)) and abs(answer - expected) < 1e-6
        answered_right += right
        submitted_right += right and result["end_reason"] == "submitted"
        print(
            f"  {'OK ' if right else 'no '} {task!r}: answer={answer!r} "
            f"end_reason={result['end_reason']} steps={result['steps']} "
            f"fallback={result.get('fallback')} {durations[-1]:.1f}s"
        )
    print(
        f"right answer: {answered_right}/{len(EASY_TASKS)}; of those submitted by code: "
        f"{submitted_right}/{len(EASY_TASKS)}; median {statistics.median(durations):.1f}s per task"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads (server and local)")
    parser.add_argument("--tasks", action="store_true", help="measure success on easy tasks")
    parser.add_argument("--model", default="local", help="model for --tasks (default: local)")
    parser.add_argument("--max-iters", type=int, default=3, help="steps per task for --tasks")
    args = parser.parse_args()
    if args.tasks:
        run_tasks(args.model, args.max_iters)
        return
    model = bundled_model_path()
    print(f"model: {model.name}; {args.calls} calls of up to {args.max_tokens} tokens; {args.threads} threads")

    with LlamaServer(model, api_key="bench", n_threads=args.threads) as server:
        lm = LM(f"openai/{MODEL_ALIAS}", api_base=server.base_url, api_key="bench")
        timed_calls(lm, 1, 8, stream=False)  # warm up
        report(
            "llama_cpp.server over HTTP (OpenAI backend)",
            timed_calls(lm, args.calls, args.max_tokens, stream=False),
            stream=False,
        )
        report(
            "llama_cpp.server over HTTP, streaming",
            timed_calls(lm, args.calls, args.max_tokens, stream=True),
            stream=True,
        )

    local = LM("local", n_threads=args.threads)
    timed_calls(local, 1, 8, stream=False)
    report(
        'in process (LM("local"))',
        timed_calls(local, args.calls, args.max_tokens, stream=True),
        stream=True,
    )


if __name__ == "__main__":
    main()
