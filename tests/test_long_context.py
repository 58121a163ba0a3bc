"""The long-context benchmark and the worked example run end to end; sub-calls reach a real local model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import codeact

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import long_context  # noqa: E402


def test_reference_solutions_solve_every_family_in_both_modes(capsys: pytest.CaptureFixture[str]) -> None:
    assert long_context.main(["--size", "30000", "--tasks", "1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (mode, family, "1/1") for mode in ("plain", "rlm") for family in long_context.FAMILIES
    ]
    sentiment_rlm = next(r for r in rows if r[:2] == ["rlm", "sentiment"])
    assert float(sentiment_rlm[5]) > 0  # RLM mode read the reviews with sub-calls


def test_grading_is_exact() -> None:
    task = long_context.make_task("count", 20_000, 3)
    expected = sum(1 for line in task.document.splitlines() if line.startswith("ERROR billing:"))
    assert task.answer == expected
    assert long_context.make_task("count", 20_000, 3).document == task.document  # seeded


def test_the_example_runs_with_a_scripted_model() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "long_context.py"), "--model", "reference"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "answer: 482913 (right)" in proc.stdout


@pytest.mark.slow
def test_llm_query_reaches_the_local_model() -> None:
    from lm_fixtures import bundled_model

    bundled_model()
    lm = codeact.ScriptedLM(["```python\nreply = llm_query('Say hello.', max_tokens=8)\nsubmit(answer=reply)\n```"])
    act = codeact.CodeAct("q -> answer: str", lm=lm, sub_lm=codeact.LM("local"), max_llm_calls=2)
    prediction = act(q="go")
    assert prediction.end_reason == "submitted", prediction.error
    call = prediction.trajectory[0].llm_calls[0]
    assert call.reply == prediction.answer and call.completion_tokens > 0
    assert prediction.record.sub_usage.calls == 1
