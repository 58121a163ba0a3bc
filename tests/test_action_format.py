"""`CodeAct(action_format="tool_call")`: the code arrives as the argument of a `run_python` call."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import codeact
from codeact.lm.base import Completion, FunctionCall
from llama_server import MODEL_ALIAS, LlamaServer
from lm_fixtures import SERVER_KEY, bundled_model

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the native sandbox needs Linux")


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def call(code: str, text: str = "I use the tool.", arguments: str | None = None) -> Completion:
    return Completion(text, tool_calls=[FunctionCall("c1", "run_python", arguments or json.dumps({"code": code}))])


def test_code_from_run_python_calls_runs_and_the_history_is_tool_messages() -> None:
    lm = codeact.ScriptedLM([call("x = add(2, 3)\nprint(x)"), call("submit(answer=x)")])
    prediction = codeact.CodeAct("q -> answer: int", tools=[add], lm=lm, action_format="tool_call")(q="2+3?")
    assert (prediction.answer, prediction.end_reason) == (5, "submitted")
    assert [s.code for s in prediction.trajectory] == ["x = add(2, 3)\nprint(x)", "submit(answer=x)"]
    assert prediction.trajectory[0].reasoning == "I use the tool."
    offered = lm.history[0]["tools"]
    assert [t["function"]["name"] for t in offered] == ["run_python"]
    assistant, answer = lm.history[1]["messages"][2:4]
    assert assistant["role"] == "assistant" and assistant["tool_calls"][0]["function"]["name"] == "run_python"
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"code": "x = add(2, 3)\nprint(x)"}
    assert answer == {
        "role": "tool",
        "tool_call_id": assistant["tool_calls"][0]["id"],
        "content": "Observation:\nOutput:\n5",
    }
    assert "call the run_python function" in lm.history[0]["messages"][0]["content"]


def test_the_async_run_takes_tool_calls_too() -> None:
    lm = codeact.ScriptedLM([call("submit(answer=add(1, 1))")])
    prediction = asyncio.run(
        codeact.CodeAct("q -> answer: int", tools=[add], lm=lm, action_format="tool_call").acall(q="?")
    )
    assert prediction.answer == 2


def test_a_fenced_block_still_runs_when_the_model_makes_no_call() -> None:
    lm = codeact.ScriptedLM(["Plain text instead.\n```python\nsubmit(answer=add(4, 4))\n```"])
    prediction = codeact.CodeAct("q -> answer: int", tools=[add], lm=lm, action_format="tool_call")(q="?")
    assert prediction.answer == 8


def test_a_call_without_code_runs_nothing_and_says_what_to_send() -> None:
    lm = codeact.ScriptedLM([call("", arguments="{not json"), call("submit(answer=1)")])
    prediction = codeact.CodeAct("q -> answer: int", lm=lm, action_format="tool_call")(q="?")
    first = prediction.trajectory[0]
    assert first.code is None and "run_python call had no code" in first.observation
    assert prediction.answer == 1


def test_extraction_reads_the_code_of_tool_calls() -> None:
    lm = codeact.ScriptedLM([call("value = 41 + 1"), '{"answer": 42}'])
    act = codeact.CodeAct("q -> answer: int", lm=lm, action_format="tool_call", max_iters=1)
    prediction = act(q="?")
    assert prediction.answer == 42 and prediction.fallback == "extract"
    assert "value = 41 + 1" in lm.history[1]["messages"][1]["content"]


class PlainLM(codeact.LM):
    def complete(self, messages: Any, **options: Any) -> Completion:
        return Completion("```python\nsubmit(answer=1)\n```")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"action_format": "json"}, "action_format must be 'fenced' or 'tool_call'"),
        ({"action_format": "tool_call", "lm": PlainLM()}, "needs a model that takes tools"),
    ],
)
def test_bad_action_formats_are_refused(options: dict[str, Any], match: str) -> None:
    options.setdefault("lm", codeact.ScriptedLM([]))
    with pytest.raises(codeact.ConfigurationError, match=match):
        codeact.CodeAct("q -> answer: int", **options)


@pytest.fixture(scope="module")
def tool_server() -> Iterator[LlamaServer]:
    """llama.cpp's server with tool calling: a named tool's arguments follow its JSON grammar."""
    with LlamaServer(bundled_model(), api_key=SERVER_KEY, chat_format="chatml-function-calling") as server:
        yield server


@pytest.mark.parametrize("streamed", [False, True])
def test_a_real_server_sends_the_code_as_a_tool_call(tool_server: LlamaServer, streamed: bool) -> None:
    lm = codeact.LM(f"openai/{MODEL_ALIAS}", api_base=tool_server.base_url, api_key=SERVER_KEY, max_tokens=60)
    events: list[Any] = []
    act = codeact.CodeAct(
        "question -> answer: int",
        lm=lm,
        action_format="tool_call",
        max_iters=1,
        fallback="partial",
        on_event=events.append if streamed else None,
    )
    step = act(question="What is 2 + 3?").trajectory[0]
    assert step.reply == ""  # no text: what the model wrote came as a run_python call
    # The tiny model, sampling, may leave its arguments' string open until max_tokens: then they are no
    # JSON and the model is told how to send code. Either way the call was read, streamed or not.
    assert (step.code and step.observation) or "run_python call had no code" in step.observation
