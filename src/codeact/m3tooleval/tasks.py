"""The 82 M3ToolEval tasks, loaded from the shipped data."""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from codeact.m3tooleval.tools import ToolSet, toolset

PROMPT_KEYS = {"code": "code_as_action", "json": "json_as_action", "text": "text_as_action"}


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the paper's prompt describes it."""

    name: str
    description: str
    signature: str


@dataclass(frozen=True)
class Task:
    """One task: its instruction, expected output, tool descriptions and rendered prompts."""

    name: str
    category: str
    instruction: str
    expected_output: Any
    expected_output_repr: str
    is_single_tool_task: bool
    tools: tuple[ToolSpec, ...]
    prompts: dict[str, str] = field(hash=False, compare=False)

    @property
    def short_name(self) -> str:
        return self.name.split("/", 1)[1]

    def prompt(self, mode: str) -> str:
        """The paper's first user message for action mode `code`, `json` or `text`."""
        if mode not in PROMPT_KEYS:
            raise ValueError(f"unknown action mode {mode!r}; use one of {', '.join(PROMPT_KEYS)}")
        return self.prompts[PROMPT_KEYS[mode]]

    def make_tools(self) -> ToolSet:
        """Fresh tools (and a fresh browser) for one episode of this task."""
        return toolset(self.category, {t.name: t.description for t in self.tools})


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v) for v in value["__tuple__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


@cache
def _all_tasks() -> tuple[Task, ...]:
    packed = resources.files("codeact.m3tooleval").joinpath("data/m3tooleval_tasks.json.gz").read_bytes()
    text = gzip.decompress(packed).decode()
    tasks = []
    for raw in json.loads(text):
        expected = _decode(raw["expected_output"])
        if repr(expected) != raw["expected_output_python_repr"]:
            raise ValueError(f"task {raw['name']}: decoded expected output does not match its repr")
        tasks.append(
            Task(
                name=raw["name"],
                category=raw["category"],
                instruction=raw["instruction"],
                expected_output=expected,
                expected_output_repr=raw["expected_output_python_repr"],
                is_single_tool_task=raw["is_single_tool_task"],
                tools=tuple(ToolSpec(t["name"], t["description"], t["signature"]) for t in raw["tools"]),
                prompts=dict(raw["prompts"]),
            )
        )
    return tuple(tasks)


def load_tasks(pattern: str | None = None) -> list[Task]:
    """All 82 tasks in the paper's order, or those whose name matches the regex `pattern`."""
    tasks = list(_all_tasks())
    if pattern is None:
        return tasks
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"--tasks pattern {pattern!r} is not a valid regular expression: {exc}") from None
    return [t for t in tasks if regex.search(t.name)]
