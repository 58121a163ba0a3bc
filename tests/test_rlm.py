"""Recursive language models: inputs that stay in the sandbox, and language-model calls from code."""

from __future__ import annotations

from typing import Any

import pytest

import codeact
from codeact.lm.tokens import count_message_tokens

pytestmark = pytest.mark.skipif(
    not __import__("codeact.sandbox", fromlist=["available_backends"]).available_backends(),
    reason="no sandbox backend on this machine",
)


def py(code: str) -> str:
    return f"Next.\n```python\n{code}\n```"


class Echo(codeact.ScriptedLM):
    """A sub-model that answers each prompt by a rule, so batched calls may come in any order."""

    def __init__(self, answer: Any, calls: int = 200) -> None:
        super().__init__([lambda messages: answer(messages[-1]["content"])] * calls)

    @property
    def prompts(self) -> list[str]:
        return [entry["messages"][-1]["content"] for entry in self.history]


def test_big_inputs_stay_in_the_sandbox_and_the_prompt_stays_small() -> None:
    pd = pytest.importorskip("pandas")
    np = pytest.importorskip("numpy")
    document = "filler line\n" * 4_000_000 + "the code is 7341\n" + "filler line\n" * 400_000  # 53 MB
    records = [{"id": i, "city": "Paris" if i % 7 == 0 else "Oslo"} for i in range(100_000)]
    sales = pd.DataFrame({"units": np.arange(1_000_000) % 10, "price": np.full(1_000_000, 2.5)})
    lm = codeact.ScriptedLM(
        [
            py(
                "import re\ncode = re.search(r'the code is (\\d+)', document).group(1)\n"
                "paris = sum(r['city'] == 'Paris' for r in records)\n"
                "submit(answer=f\"{code}-{paris}-{int(sales['units'].sum())}\")"
            )
        ]
    )
    act = codeact.CodeAct(
        "document: str, records: list, sales: Any -> answer: str",
        lm=lm,
        inputs_in_prompt="preview",
        sandbox={"timeout": 120},
    )
    first_prompt = act.prompt.messages({"document": document, "records": records, "sales": sales}, [])
    assert count_message_tokens(first_prompt) < 3000
    assert "str of 52,800,017 characters" in first_prompt[1]["content"]
    assert "DataFrame of 1,000,000 rows × 2 columns" in first_prompt[1]["content"]
    prediction = act(document=document, records=records, sales=sales)
    assert prediction.end_reason == "submitted", prediction.error
    assert prediction.answer == f"7341-{len(range(0, 100_000, 7))}-4500000"


def test_llm_query_runs_on_the_sub_lm_and_counts_apart() -> None:
    sub = Echo(lambda prompt: "positive" if "love" in prompt else "negative")
    lm = codeact.ScriptedLM(
        [
            py(
                "first = llm_query('Sentiment of: I love it')\n"
                "rest = llm_query_batched([f'Sentiment of: {r}' for r in reviews[1:]])\nprint(first, rest)"
            ),
            py("submit(answer=[first, *rest].count('positive'))"),
        ]
    )
    act = codeact.CodeAct("reviews: list[str] -> answer: int", lm=lm, sub_lm=sub, max_llm_calls=10)
    prediction = act(reviews=["I love it", "I hate it", "love love", "meh"])
    assert prediction.end_reason == "submitted", prediction.error
    assert prediction.answer == 2
    step = prediction.trajectory[0]
    assert step.llm_calls[0].prompt == "Sentiment of: I love it"
    assert sorted(c.reply for c in step.llm_calls) == ["negative", "negative", "positive", "positive"]
    record = prediction.record
    assert record.sub_usage.calls == 4
    assert record.usage.calls == 2 + 4  # two main steps, four sub-calls
    assert sorted(sub.prompts) == sorted(f"Sentiment of: {r}" for r in ["I love it", "I hate it", "love love", "meh"])
    loaded = codeact.RunRecord.from_dict(record.to_dict())
    assert loaded.sub_usage.calls == 4 and len(loaded.steps[0].llm_calls) == 4


def test_calls_past_max_llm_calls_raise_in_the_code() -> None:
    sub = Echo(lambda prompt: "ok")
    lm = codeact.ScriptedLM(
        [
            py(
                "answers = []\ntry:\n    for i in range(5):\n        answers.append(llm_query(f'q{i}'))\n"
                "except RuntimeError as exc:\n    print(exc)\nsubmit(answer=len(answers))"
            )
        ]
    )
    act = codeact.CodeAct("q -> answer: int", lm=lm, sub_lm=sub, max_llm_calls=3)
    prediction = act(q="go")
    assert prediction.answer == 3
    assert "may make 3 language-model calls from code" in prediction.trajectory[0].stdout
    assert len(sub.prompts) == 3


def test_a_batch_keeps_the_answers_of_the_prompts_that_did_not_fail() -> None:
    """One prompt too long for the model, one answer that does not fit the schema: their places say
    why, and the answers already paid for are kept."""
    from codeact.lm.errors import LMContextLengthError

    def answer(prompt: str) -> str:
        if "huge" in prompt:
            raise LMContextLengthError("the prompt does not fit the model's context window")
        return "not a number" if "seven" in prompt else "7"

    sub = Echo(answer)
    lm = codeact.ScriptedLM(
        [
            py(
                "answers = llm_query_batched(['a', 'huge', 'seven', 'b'], schema='int')\nprint(answers)\n"
                "submit(answer=sum(a for a in answers if isinstance(a, int)))"
            )
        ]
    )
    prediction = codeact.CodeAct("q -> answer: int", lm=lm, sub_lm=sub)(q="go")
    assert prediction.answer == 14, prediction.error
    printed = prediction.trajectory[0].stdout
    assert "[ERROR] LMContextLengthError: the prompt does not fit" in printed
    assert "[ERROR] AnswerMismatch: the model's answer 'not a number' does not fit the schema" in printed
    assert len(prediction.trajectory[0].llm_calls) == 4


def test_a_typed_llm_query_returns_a_checked_value() -> None:
    sub = Echo(lambda prompt: "```json\n[3, 4]\n```" if "numbers" in prompt else "not json")
    lm = codeact.ScriptedLM(
        [
            py(
                "pair = llm_query('Give two numbers', schema='list[int]')\n"
                "try:\n    llm_query('words', schema='list[int]')\nexcept ValueError as exc:\n    print('bad:', exc)\n"
                "submit(answer=sum(pair))"
            )
        ]
    )
    act = codeact.CodeAct("q -> answer: int", lm=lm, sub_lm=sub)
    prediction = act(q="go")
    assert prediction.answer == 7, prediction.error
    assert "bad: the model's answer 'not json' does not fit the schema" in prediction.trajectory[0].stdout


def test_sub_calls_can_be_awaited_and_gathered() -> None:
    import threading

    all_in = threading.Barrier(3, timeout=30)  # each call waits until the three are in flight together

    def answer(prompt: str) -> str:
        all_in.wait()
        return prompt.upper()

    sub = Echo(answer)
    lm = codeact.ScriptedLM(
        [
            py(
                "import asyncio\nparts = await asyncio.gather(*[llm_query(w) for w in words])\nsubmit(answer=' '.join(parts))"
            )
        ]
    )
    act = codeact.CodeAct("words: list[str] -> answer: str", lm=lm, sub_lm=sub)
    prediction = act(words=["a", "b", "c"])
    assert prediction.answer == "A B C", prediction.error
    assert all(call.concurrent for call in prediction.trajectory[0].tool_calls)


def test_sub_calls_count_toward_the_run_budget() -> None:
    sub = Echo(lambda prompt: "x" * 10)
    lm = codeact.ScriptedLM(
        [
            py(
                "n = 0\ntry:\n    while True:\n        llm_query('again')\n        n += 1\n"
                "except RuntimeError as exc:\n    print(exc)\nsubmit(answer=n)"
            )
        ]
    )
    act = codeact.CodeAct("q -> answer: int", lm=lm, sub_lm=sub, max_llm_calls=1000, max_run_tokens=60)
    prediction = act(q="go")
    assert "the run's budget is spent" in prediction.trajectory[0].stdout
    assert prediction.record.sub_usage.calls < 1000


def test_llm_query_is_off_unless_asked_for() -> None:
    act = codeact.CodeAct("q -> a", lm=codeact.ScriptedLM([]))
    assert "llm_query" not in act.prompt.system
    with pytest.raises(ValueError, match="inputs_in_prompt names 'x'"):
        codeact.CodeAct("q -> a", lm=codeact.ScriptedLM([]), inputs_in_prompt={"x": "preview"})


def test_rlm_query_hands_a_sub_task_to_a_nested_codeact_run() -> None:
    child = codeact.ScriptedLM([py("import re\nsubmit(answer=re.search(r'code (\\d+)', context).group(1))")])
    lm = codeact.ScriptedLM(
        [py("found = rlm_query('Find the code in the context.', context=document[1000:])\nsubmit(answer=int(found))")]
    )
    act = codeact.CodeAct(
        "document: str -> answer: int", lm=lm, sub_lm=child, depth=2, max_llm_calls=5, inputs_in_prompt="preview"
    )
    assert "def rlm_query(task: str, context: Any = None) -> str" in act.prompt.system
    prediction = act(document="x" * 5000 + " code 314 " + "y" * 5000)
    assert prediction.answer == 314, prediction.error
    call = prediction.trajectory[0].llm_calls[0]
    assert call.model == "rlm_query" and call.reply == "314"
    assert call.run is not None and call.run.end_reason == "submitted" and len(call.run.steps) == 1
    assert prediction.record.sub_usage.calls == call.run.usage.calls == 1
    loaded = codeact.RunRecord.from_dict(prediction.record.to_dict())
    assert loaded.steps[0].llm_calls[0].run.outputs == {"answer": "314"}
