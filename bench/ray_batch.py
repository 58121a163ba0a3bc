"""Batch throughput on a one-node Ray cluster beside the thread-based batch, in the same run.

Run: .venv/bin/python bench/ray_batch.py [--tasks 64] [--cpus 2] [--threads 2]
Each task is a two-step scripted run (one tool call, then submit) in its own sandbox session. The
baseline is `act.batch(..., num_threads=cpus * threads)` in this process; the Ray figure includes
shipping the CodeAct to the workers and their zygote starts, and is printed once more warm (the
cluster already up) so start-up and steady state read apart.
"""

from __future__ import annotations

import argparse
import time

import ray

from codeact import CodeAct, ScriptedLM
from codeact.ray import RayExecutor

STEPS = ["```python\ny = bump(x)\nprint(y)\n```", "```python\nsubmit(answer=y)\n```"]


def reply(messages: list) -> str:
    """The first step's code for a fresh task, the second's once it has an observation."""
    return STEPS[0] if len(messages) <= 2 else STEPS[1]


def bump(x: int) -> int:
    """x plus one."""
    return x + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    act = CodeAct("x: int -> answer: int", tools=[bump], lm=ScriptedLM([reply] * 2 * args.tasks))
    inputs = [{"x": i} for i in range(args.tasks)]

    started = time.perf_counter()
    local = act.batch(inputs, num_threads=args.cpus * args.threads)
    threads_s = time.perf_counter() - started
    assert [p.answer for p in local] == [i + 1 for i in range(args.tasks)]

    started = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - started
    figures = []
    for label in ("first batch (workers start)", "second batch (cluster up)"):
        executor = RayExecutor(workers=args.cpus, threads=args.threads)
        act = CodeAct("x: int -> answer: int", tools=[bump], lm=ScriptedLM([reply] * 2 * args.tasks))
        started = time.perf_counter()
        remote = act.batch(inputs, executor=executor)
        figures.append((label, time.perf_counter() - started))
        assert [p.answer for p in remote] == [i + 1 for i in range(args.tasks)]
    ray.shutdown()

    print(f"{args.tasks} two-step tasks, {args.cpus} CPUs, {args.threads} threads per worker")
    print(f"{'threads in this process (baseline)':<44} {threads_s:7.2f} s  {args.tasks / threads_s:7.1f} tasks/s")
    print(f"{'ray.init of a local one-node cluster':<44} {init_s:7.2f} s")
    for label, seconds in figures:
        print(
            f"{'Ray: ' + label:<44} {seconds:7.2f} s  {args.tasks / seconds:7.1f} tasks/s  "
            f"({threads_s / seconds:.2f}x the baseline's rate)"
        )


if __name__ == "__main__":
    main()
