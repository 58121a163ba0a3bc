"""End to end: a CodeAct run driven by the offline model, `LM("local")`, through the real sandbox."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from codeact import LM, CodeAct
from lm_fixtures import bundled_model

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import math_tools  # noqa: E402


def test_local_model_solves_the_demo_task_through_the_sandbox() -> None:
    """The README's demo: SmolLM2-135M's code runs in the sandbox and submits 42."""
    bundled_model()
    tools = [math_tools.add, math_tools.subtract, math_tools.multiply, math_tools.divide, math_tools.sqrt]
    act = CodeAct("task -> answer: float", tools=tools, lm=LM("local"), max_iters=3)
    prediction = act(task="What is 17 plus 25? Use the add tool.")

    # held to the reply format by a grammar, the model ends its code with submit(...) itself
    assert prediction.end_reason == "submitted", prediction.error
    assert prediction.answer == 42.0
    steps = prediction.trajectory
    assert steps[-1].code and "submit(" in steps[-1].code and steps[-1].error is None
    assert all(step.prompt_tokens > 0 and step.completion_tokens > 0 for step in steps)
    usage = prediction.usage
    assert usage.cost == 0.0
    assert prediction.fallback is None and usage.calls == len(steps)  # no extra call to extract it
