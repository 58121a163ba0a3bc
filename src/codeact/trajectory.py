"""The record of a run: each step (reply, code, output, error, timings, tokens) and how the run ended.

`RunRecord.to_dict()` is the stable JSON shape that the CLI and the HTML report read; values that are
not JSON (pydantic models, enums, sets, tuples) are stored in their JSON form, so a loaded record holds
plain data.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from pydantic_core import to_jsonable_python

from codeact.lm.base import Usage
from codeact.sandbox.interpreter import Connection, ExecutionError, ToolCall

SCHEMA_VERSION = 1

EndReason = Literal["submitted", "max_iters", "error", "lm_error", "budget", "interrupted"]
Fallback = Literal["extract", "raise", "partial"]
END_REASONS: tuple[str, ...] = (
    "submitted",
    "max_iters",
    "error",
    "lm_error",
    "budget",
    "interrupted",
)


def jsonable(value: Any) -> Any:
    """`value` as JSON data; anything JSON cannot hold becomes its repr (NaN and infinities their
    names as strings, so the text is JSON any parser reads)."""
    return _finite(to_jsonable_python(value, fallback=repr, serialize_unknown=True))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # 'nan', 'inf', '-inf'
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


StepError = ExecutionError  # why a step failed; the record keeps the sandbox's own error value


@dataclass
class LLMCall:
    """One language-model call the code made (`llm_query`): the question, the answer, what it cost."""

    prompt: str
    reply: str | None = None
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = 0.0
    duration_s: float = 0.0
    error: str | None = None
    run: RunRecord | None = None  # an rlm_query: the nested run's own record


@dataclass
class RejectedSample:
    """A reply whose code failed and was set aside for another sample (`CodeAct(step_samples=N)`)."""

    reply: str
    code: str | None
    error: str


@dataclass
class Step:
    """One think-code-observe turn. `stdout`/`stderr` are as the sandbox captured them (it drops
    `stdout_truncated` characters past its output limit); `observation` is what the model saw."""

    index: int
    reply: str = ""
    reasoning: str = ""
    code: str | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: int = 0
    value: str | None = None
    error: StepError | None = None
    submitted: dict[str, Any] | None = None
    observation: str = ""
    timed_out: bool = False
    exec_s: float = 0.0
    lm_s: float = 0.0
    lm_attempts: int = 1
    tool_s: float = 0.0
    tool_calls: list[ToolCall] = field(default_factory=list)
    llm_calls: list[LLMCall] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    rejected_samples: list[RejectedSample] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None

    @property
    def tool_call_count(self) -> int:
        return len(self.tool_calls)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["submitted"] = jsonable(self.submitted) if self.submitted is not None else None
        data["tool_calls"] = [jsonable(asdict(call)) for call in self.tool_calls]
        data["llm_calls"] = [
            {**{k: v for k, v in asdict(call).items() if k != "run"}, "run": call.run.to_dict() if call.run else None}
            for call in self.llm_calls
        ]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        data = dict(data)
        error = data.pop("error", None)
        calls = data.pop("tool_calls", None)
        llm_calls = data.pop("llm_calls", None)
        connections = data.pop("connections", None)
        rejected = data.pop("rejected_samples", None)
        step = cls(**{k: v for k, v in data.items() if k in _STEP_FIELDS})
        if isinstance(llm_calls, list):
            step.llm_calls = [
                _llm_call(c) for c in llm_calls if isinstance(c, dict) and isinstance(c.get("prompt"), str)
            ]
        step.error = StepError(**error) if error else None
        if isinstance(calls, list):
            step.tool_calls = [
                ToolCall(**{k: v for k, v in c.items() if k in _CALL_FIELDS}) for c in calls if isinstance(c, dict)
            ]
        if isinstance(connections, list):
            step.connections = [
                Connection(**{k: v for k, v in c.items() if k in _CONNECTION_FIELDS})
                for c in connections
                if isinstance(c, dict)
            ]
        if isinstance(rejected, list):
            step.rejected_samples = [
                RejectedSample(**{k: r.get(k) for k in ("reply", "code", "error")})
                for r in rejected
                if isinstance(r, dict)
            ]
        return step


def _llm_call(data: dict[str, Any]) -> LLMCall:
    call = LLMCall(**{k: v for k, v in data.items() if k in _LLM_FIELDS and k != "run"})
    if isinstance(data.get("run"), dict):
        call.run = RunRecord.from_dict(data["run"])
    return call


_STEP_FIELDS = frozenset(Step.__dataclass_fields__)
_CALL_FIELDS = frozenset(ToolCall.__dataclass_fields__)
_LLM_FIELDS = frozenset(LLMCall.__dataclass_fields__)
_CONNECTION_FIELDS = frozenset(Connection.__dataclass_fields__)


@dataclass
class RunRecord:
    """Everything about one run. `signature` is the text form, `instructions` the task description;
    `fallback` says what happened when no step submitted (`fallback_reply` is the extraction reply);
    `error` explains `end_reason` values `error`, `lm_error`, `budget` and `interrupted`.
    Times are seconds: `duration_s` the whole run, `lm_s`/`exec_s`/`tool_s` summed over steps
    (`exec_s` includes `tool_s`), `session_s` starting (and restarting) the sandbox session.
    `usage` counts every model call of the run; `sub_usage` the part made from code (`llm_query`)."""

    signature: str
    run_id: str = ""
    instructions: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    outputs: dict[str, Any] | None = None
    end_reason: EndReason = "submitted"
    fallback: Fallback | None = None
    error: str | None = None
    fallback_reply: str | None = None
    fallback_lm_s: float = 0.0
    model: str = ""
    max_iters: int = 0
    usage: Usage = field(default_factory=Usage)
    sub_usage: Usage = field(default_factory=Usage)
    started_at: float = 0.0
    duration_s: float = 0.0
    lm_s: float = 0.0
    exec_s: float = 0.0
    tool_s: float = 0.0
    session_s: float = 0.0

    def add_usage(self, usage: Usage) -> None:
        self.usage = self.usage + usage

    def finish_timings(self, ended_at: float) -> None:
        """Set the run's totals from its steps; `ended_at` is a `time.time()` value."""
        self.duration_s = max(0.0, ended_at - self.started_at)
        self.lm_s = sum(s.lm_s for s in self.steps) + self.fallback_lm_s
        self.exec_s = sum(s.exec_s for s in self.steps)
        self.tool_s = sum(s.tool_s for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"version": SCHEMA_VERSION}
        for name in _RECORD_FIELDS:
            value = getattr(self, name)
            if name == "steps":
                value = [s.to_dict() for s in value]
            elif isinstance(value, Usage):
                value = asdict(value)
            elif name in ("inputs", "outputs") and value is not None:
                value = jsonable(value)
            data[name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        if not isinstance(data, dict) or "signature" not in data:
            raise ValueError("not a codeact run record: expected a JSON object with a 'signature'")
        version = data.get("version", SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"run record version {version} is newer than this codeact reads ({SCHEMA_VERSION}); upgrade codeact"
            )
        if data.get("end_reason", "submitted") not in END_REASONS:
            raise ValueError(f"unknown end_reason {data.get('end_reason')!r} in run record")
        values: dict[str, Any] = {name: data[name] for name in _RECORD_FIELDS if name in data}
        values["inputs"] = dict(data.get("inputs") or {})
        values["steps"] = [Step.from_dict(s) for s in data.get("steps", [])]
        for name in ("usage", "sub_usage"):
            given = data.get(name) or {}
            values[name] = Usage(**{k: v for k, v in given.items() if k in Usage.__dataclass_fields__})
        return cls(**values)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(_finite(self.to_dict()), indent=indent, ensure_ascii=False, allow_nan=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the record as JSON to `path` (parent folders are created) and return the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.to_json(), encoding="utf-8")
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RunRecord:
        """Read a record written by `save`; a file that is not one raises `ValueError`."""
        target = Path(path)
        try:
            data = json.loads(target.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{target} is not valid JSON: {exc}") from None
        return cls.from_dict(data)


_RECORD_FIELDS = tuple(f.name for f in fields(RunRecord))
