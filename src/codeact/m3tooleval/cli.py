"""`codeact bench m3tooleval`: run M3ToolEval against a model and print the paper's table.

Also runs standalone: `python -m codeact.m3tooleval --model MODEL`. `--model reference` runs the
scripted reference solutions (code mode), a self-check that needs no model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from codeact.lm.base import LM
from codeact.m3tooleval.benchmark import is_fatal, run_benchmark
from codeact.m3tooleval.harness import MAX_NEW_TOKENS, MAX_TURNS, MODES, Episode
from codeact.m3tooleval.results import format_table
from codeact.m3tooleval.tasks import Task, load_tasks

ALL_MODES = ("code", "json", "text")
REFERENCE = "reference"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to `parser`."""
    parser.add_argument(
        "--model",
        required=True,
        help="model string for codeact.LM (e.g. 'local', 'openai/gpt-4o-mini'), "
        "or 'reference' for the scripted reference solutions",
    )
    parser.add_argument(
        "--mode",
        default="code",
        choices=[*MODES, "all", "codeact"],
        help="action mode: the paper's code/json/text, all three, or codeact (our own agent); default code",
    )
    parser.add_argument(
        "--tasks",
        metavar="PATTERN",
        default=None,
        help="only tasks whose name matches this regular expression",
    )
    parser.add_argument("--limit", type=int, default=None, help="run only the first N matching tasks")
    parser.add_argument(
        "--per-category",
        type=int,
        default=None,
        metavar="N",
        help="run only the first N matching tasks of each category (a quick, balanced subset)",
    )
    parser.add_argument("--workers", type=int, default=4, help="episodes run in parallel (default 4)")
    parser.add_argument("--max-turns", type=int, default=MAX_TURNS, help="turns per episode (default 10)")
    parser.add_argument("--max-tokens", type=int, default=MAX_NEW_TOKENS, help="new tokens per reply (default 512)")
    parser.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        default=None,
        help="write every episode (messages, turns, grading) to this JSON file",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-episode progress lines")
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run the episodes on a Ray cluster: ADDRESS (e.g. auto, ray://host:10001), or a local one "
        "when none is given (needs pip install 'codeact[ray]')",
    )


def _modes(mode: str) -> tuple[str, ...]:
    return ALL_MODES if mode == "all" else (mode,)


def _lm_factory(model: str) -> Callable[[Task, str], LM]:
    if model == REFERENCE:
        from codeact.lm.scripted import ScriptedLM
        from codeact.m3tooleval.solutions import reference_replies

        def scripted(task: Task, mode: str) -> LM:
            return ScriptedLM(reference_replies(task), model=REFERENCE)

        return scripted
    lm = LM(model)
    return lambda task, mode: lm


def _progress(episode: Episode, done: int, total: int) -> None:
    mark = "ok  " if episode.correct else "FAIL"
    extra = f" ({episode.end_reason}: {episode.error})" if episode.error else ""
    print(
        f"[{done:>3}/{total}] {mark} {episode.mode:<7} {episode.task:<70} "
        f"{episode.turns:>2} turns {episode.duration_s:6.1f}s{extra}",
        file=sys.stderr,
        flush=True,
    )


def main(args: argparse.Namespace) -> int:
    """Run the benchmark; 0 on completion, 2 on bad options."""
    modes = _modes(args.mode)
    if args.model == REFERENCE and modes != ("code",):
        print("error: --model reference has scripted solutions for --mode code only", file=sys.stderr)
        return 2
    if args.workers < 1 or args.max_turns < 1 or args.max_tokens < 1:
        print("error: --workers, --max-turns and --max-tokens must be positive", file=sys.stderr)
        return 2
    try:
        tasks = load_tasks(args.tasks)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.per_category is not None:
        taken: dict[str, int] = {}
        subset = []
        for task in tasks:
            if taken.get(task.category, 0) < args.per_category:
                taken[task.category] = taken.get(task.category, 0) + 1
                subset.append(task)
        tasks = subset
    if args.limit is not None:
        tasks = tasks[: max(args.limit, 0)]
    if not tasks:
        print(f"error: no task matches --tasks {args.tasks!r}", file=sys.stderr)
        return 2
    try:
        lm_for = _lm_factory(args.model)
        problem = lm_for(tasks[0], modes[0]).configuration_problem()
    except Exception as exc:
        print(f"error: cannot use model {args.model!r}: {exc}", file=sys.stderr)
        return 2
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    print(
        f"M3ToolEval: {len(tasks)} tasks x {len(modes)} mode(s) with {args.model}, {args.workers} workers"
        if args.ray is None
        else f"on Ray ({args.ray})",
        file=sys.stderr,
    )
    executor = None
    if args.ray is not None:
        try:
            from codeact.ray import RayExecutor
        except ImportError as exc:
            print(f"error: --ray: {exc}", file=sys.stderr)
            return 2
        executor = RayExecutor(None if args.ray == "local" else args.ray)
    started = time.perf_counter()
    try:
        episodes = run_benchmark(
            tasks,
            modes,
            lm_for,
            workers=args.workers,
            max_turns=args.max_turns,
            max_tokens=args.max_tokens,
            on_episode=None if args.quiet else _progress,
            executor=executor,
        )
    except TypeError as exc:  # the model or tools cannot travel to the Ray workers
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - started
    fatal = next((e for e in episodes if is_fatal(e)), None)
    if fatal is not None:
        print(f"error: the model {args.model!r} cannot be called: {fatal.error}", file=sys.stderr)
        return 3
    print(format_table(episodes, args.model))
    print(f"\nwall time {wall:.1f} s for {len(episodes)} episodes")
    if args.output:
        path = Path(args.output)
        payload = {
            "benchmark": "M3ToolEval",
            "model": args.model,
            "modes": list(modes),
            "tasks": [t.name for t in tasks],
            "wall_time_s": wall,
            "episodes": [e.to_dict() for e in episodes],
        }
        path.write_text(json.dumps(payload, indent=2, default=str))
        print(f"episodes written to {path}")
    return 0


def run(argv: list[str] | None = None) -> int:
    """Parse `argv` and run; what `python -m codeact.m3tooleval` calls."""
    parser = argparse.ArgumentParser(prog="python -m codeact.m3tooleval", description=__doc__)
    add_arguments(parser)
    return main(parser.parse_args(argv))
