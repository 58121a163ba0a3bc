"""The run record's JSON form: what the CLI and the HTML report read back."""

from __future__ import annotations

import enum
import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from codeact.lm.base import Usage
from codeact.trajectory import RunRecord, Step, StepError


class Mood(enum.Enum):
    GOOD = "good"


class Point(BaseModel):
    x: int


def sample() -> RunRecord:
    return RunRecord(
        signature="q -> a: int",
        run_id="abc",
        inputs={"q": "what?", "mood": Mood.GOOD, "where": Point(x=1), "tags": {"t"}},
        steps=[
            Step(
                index=0,
                reply="```python\n1/0\n```",
                code="1/0",
                error=StepError("ZeroDivisionError", "division by zero", "tb", 1, "1/0"),
                observation="Error (line 1: 1/0): ZeroDivisionError: division by zero",
                exec_s=0.01,
                lm_s=0.5,
                prompt_tokens=100,
                completion_tokens=5,
                cost=0.001,
            ),
            Step(index=1, code="submit(1)", submitted={"a": (1, 2)}, exec_s=0.02, lm_s=0.25),
        ],
        outputs={"a": 1},
        end_reason="submitted",
        model="openai/gpt-4o-mini",
        usage=Usage(200, 10, 2, 0.002),
        started_at=1000.0,
    )


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    record = sample()
    record.finish_timings(1001.0)
    assert (record.duration_s, record.lm_s, record.exec_s) == (1.0, 0.75, pytest.approx(0.03))
    path = record.save(tmp_path / "deep" / "run.json")
    data = json.loads(path.read_text())
    assert data["version"] == 1
    assert data["inputs"] == {"q": "what?", "mood": "good", "where": {"x": 1}, "tags": ["t"]}
    assert data["steps"][1]["submitted"] == {"a": [1, 2]}
    loaded = RunRecord.load(path)
    assert loaded.to_dict() == data
    assert loaded.steps[0].error == StepError("ZeroDivisionError", "division by zero", "tb", 1, "1/0")
    assert loaded.usage == Usage(200, 10, 2, 0.002)


def test_records_from_older_writers_load_with_defaults() -> None:
    loaded = RunRecord.from_dict({"signature": "q -> a", "steps": [{"index": 0, "code": "x", "unknown_field": 1}]})
    assert loaded.end_reason == "submitted"
    assert loaded.steps[0].code == "x" and loaded.steps[0].stdout == ""


def test_bad_files_say_what_is_wrong(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        RunRecord.load(bad)
    with pytest.raises(ValueError, match="not a codeact run record"):
        RunRecord.from_dict({"hello": 1})
    with pytest.raises(ValueError, match="newer than this codeact reads"):
        RunRecord.from_dict({"signature": "a -> b", "version": 99})
    with pytest.raises(ValueError, match="unknown end_reason 'bored'"):
        RunRecord.from_dict({"signature": "a -> b", "end_reason": "bored"})
