"""`CodeAct(step_samples=N)`: a failed step is sampled again and run from the state before it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from codeact import CodeAct, ConfigurationError, RunRecord, ScriptedLM
from codeact.report import render_html

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks need the native sandbox")
ROOT = Path(__file__).resolve().parent.parent


def block(code: str) -> str:
    return f"```python\n{code}\n```"


SETUP = block("rows = [1, 2, 3]")
CORRUPT_AND_FAIL = block("rows.clear()\nrows.append(1 / 0)")
SUBMIT = block("submit(answer=sum(rows))")


def test_a_failed_sample_leaves_no_trace_and_the_next_one_runs_from_before_it() -> None:
    lm = ScriptedLM([SETUP, CORRUPT_AND_FAIL, SUBMIT])
    prediction = CodeAct("question -> answer: int", lm=lm, step_samples=2)(question="q")
    assert prediction.answer == 6
    assert len(prediction.trajectory) == 2
    step = prediction.trajectory[1]
    assert step.code == "submit(answer=sum(rows))"
    [rejected] = step.rejected_samples
    assert rejected.code == "rows.clear()\nrows.append(1 / 0)" and "ZeroDivisionError" in rejected.error
    assert prediction.usage.calls == 3  # the extra sample is counted
    html = render_html(prediction.record)
    assert "Sample 1, set aside: ZeroDivisionError" in html and "rows.clear()" in html


def test_without_step_samples_a_failure_goes_back_to_the_model() -> None:
    lm = ScriptedLM([SETUP, CORRUPT_AND_FAIL, SUBMIT])
    prediction = CodeAct("question -> answer: int", lm=lm)(question="q")
    assert prediction.answer == 0  # the failed step's clear() stayed
    assert [s.rejected_samples for s in prediction.trajectory] == [[], [], []]


def test_at_most_n_samples_per_step_and_none_when_the_code_works() -> None:
    failing = [block(f"x = {i} / 0") for i in range(3)]
    lm = ScriptedLM([SETUP, *failing, SUBMIT])
    prediction = CodeAct("question -> answer: int", lm=lm, step_samples=3)(question="q")
    assert [len(s.rejected_samples) for s in prediction.trajectory] == [0, 2, 0]
    assert prediction.trajectory[1].error is not None  # the third sample failed too: the model sees it
    assert prediction.answer == 6
    assert prediction.usage.calls == 5


def test_a_sample_without_code_is_set_aside_and_the_step_keeps_its_code() -> None:
    lm = ScriptedLM([SETUP, CORRUPT_AND_FAIL, "I am not sure what to do.", SUBMIT])
    prediction = CodeAct("question -> answer: int", lm=lm, step_samples=3)(question="q")
    assert prediction.answer == 6
    step = prediction.trajectory[1]
    assert step.code == "submit(answer=sum(rows))"
    assert [(r.code is None, r.error) for r in step.rejected_samples] == [  # in the order they came
        (False, "ZeroDivisionError: division by zero"),
        (True, "the reply had no code"),
    ]


def test_rejected_samples_survive_the_record_round_trip(tmp_path: Path) -> None:
    lm = ScriptedLM([SETUP, CORRUPT_AND_FAIL, SUBMIT])
    prediction = CodeAct("question -> answer: int", lm=lm, step_samples=2)(question="q")
    path = tmp_path / "run.json"
    prediction.record.save(path)
    loaded = RunRecord.load(path).steps[1].rejected_samples
    assert loaded == prediction.trajectory[1].rejected_samples


def test_the_async_run_samples_too() -> None:
    lm = ScriptedLM([SETUP, CORRUPT_AND_FAIL, SUBMIT])
    prediction = asyncio.run(CodeAct("question -> answer: int", lm=lm, step_samples=2).acall(question="q"))
    assert prediction.answer == 6 and len(prediction.trajectory[1].rejected_samples) == 1


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"step_samples": 0}, "positive integer"),
        ({"step_samples": 2, "sandbox": {"backend": "pyodide"}}, "native sandbox"),
    ],
)
def test_bad_step_samples_settings_are_refused(options: dict, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        CodeAct("question -> answer", lm=ScriptedLM([]), **options)


def test_the_example_runs_offline() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "step_samples.py"), "--model", "reference"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "set aside a sample that failed with KeyError" in proc.stdout
    assert proc.stdout.strip().endswith("answer: 14")
