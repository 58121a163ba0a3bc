"""The events a run reports as it goes (`CodeAct(on_event=...)`): one dataclass each."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from codeact.trajectory import RunRecord, Step


@dataclass
class RunStarted:
    run_id: str
    signature: str
    inputs: dict[str, Any]
    model: str
    max_iters: int


@dataclass
class StepStarted:
    run_id: str
    index: int


@dataclass
class TokenReceived:
    """A piece of the model's reply as it streams in (when the LM streams)."""

    run_id: str
    index: int
    text: str


@dataclass
class CodeParsed:
    """The code about to run, and the reasoning around it."""

    run_id: str
    index: int
    code: str
    reasoning: str


@dataclass
class Observed:
    """The observation the model will see for step `index`."""

    run_id: str
    index: int
    text: str


@dataclass
class StepEnded:
    run_id: str
    step: Step


@dataclass
class RunEnded:
    run_id: str
    record: RunRecord


Event = RunStarted | StepStarted | TokenReceived | CodeParsed | Observed | StepEnded | RunEnded
EventHandler = Callable[[Event], Awaitable[None] | None]
