"""The results table in the paper's form, and the published rows for comparison."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from codeact.m3tooleval.harness import Episode
from codeact.m3tooleval.tools import CATEGORIES

PAPER_MODE = {"code": "code_as_action", "json": "json_as_action", "text": "text_as_action"}


@dataclass(frozen=True)
class Row:
    """Success rate (%) and average turns of a group of episodes."""

    mode: str
    category: str
    n: int
    solved: int
    avg_turns: float

    @property
    def success_pct(self) -> float:
        return 100.0 * self.solved / self.n if self.n else 0.0


def summarize(episodes: Sequence[Episode]) -> list[Row]:
    """One row per mode for all tasks ("all"), then one per mode and category."""
    rows: list[Row] = []
    modes = list(dict.fromkeys(e.mode for e in episodes))
    for mode in modes:
        of_mode = [e for e in episodes if e.mode == mode]
        groups = [("all", of_mode)] + [(c, [e for e in of_mode if e.category == c]) for c in CATEGORIES]
        for category, group in groups:
            if group:
                rows.append(
                    Row(
                        mode=mode,
                        category=category,
                        n=len(group),
                        solved=sum(e.correct for e in group),
                        avg_turns=sum(e.turns for e in group) / len(group),
                    )
                )
    return rows


@dataclass(frozen=True)
class PublishedRow:
    model: str
    mode: str
    avg_turns: float
    success_pct: float


def published_rows(models: Sequence[str] | None = None) -> list[PublishedRow]:
    """The paper's rows (per model and action mode, over all 82 tasks) from the shipped CSV."""
    text = resources.files("codeact.m3tooleval").joinpath("data/published_m3tooleval_results.csv").read_text()
    mode_of = {v: k for k, v in PAPER_MODE.items()}
    rows = [
        PublishedRow(
            r["model"],
            mode_of.get(r["action_mode"], r["action_mode"]),
            float(r["avg_turns"]),
            float(r["success_rate_pct"]),
        )
        for r in csv.DictReader(io.StringIO(text))
    ]
    if models is not None:
        rows = [r for r in rows if r.model in models]
    return rows


HEADLINE_MODELS = ("gpt-4-1106-preview", "gpt-3.5-turbo-0613", "claude-2")


def format_table(episodes: Sequence[Episode], model: str, published: Sequence[str] = HEADLINE_MODELS) -> str:
    """A plain-text table: our rows (per mode, per category) and the published headline rows."""
    lines = [f"M3ToolEval results for {model}", ""]
    lines.append(f"{'mode':<8} {'category':<38} {'tasks':>5} {'solved':>6} {'success %':>9} {'avg turns':>9}")
    lines.append("-" * 80)
    for row in summarize(episodes):
        label = "ALL TASKS" if row.category == "all" else row.category
        lines.append(
            f"{row.mode:<8} {label:<38} {row.n:>5} {row.solved:>6} {row.success_pct:>9.1f} {row.avg_turns:>9.1f}"
        )
    paper = published_rows(published)
    if paper:
        lines += ["", "Published (Wang et al. 2024, all 82 tasks)", ""]
        lines.append(f"{'model':<28} {'mode':<8} {'success %':>9} {'avg turns':>9}")
        lines.append("-" * 58)
        for prow in paper:
            lines.append(f"{prow.model:<28} {prow.mode:<8} {prow.success_pct:>9.1f} {prow.avg_turns:>9.1f}")
    return "\n".join(lines)
