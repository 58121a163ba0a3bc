"""CodeAct end to end: scripted model replies, code run in the real sandbox, tools on the host."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import codeact
from codeact.lm.base import Message

pytestmark = pytest.mark.skipif(
    not __import__("codeact.sandbox", fromlist=["available_backends"]).available_backends(),
    reason="no sandbox backend on this machine",
)


def py(code: str, prose: str = "") -> str:
    """A model reply: some reasoning, then one python block."""
    return f"{prose}\n```python\n{code}\n```"


def observations(lm: codeact.ScriptedLM) -> list[str]:
    """What the model was shown after each of its steps (the last user message of each call)."""
    return [call["messages"][-1]["content"] for call in lm.history[1:]]


def test_primes_below_10000_summed_and_printed_as_hex() -> None:
    lm = codeact.ScriptedLM(
        [
            py(
                "sieve = [True] * 10000\nsieve[0] = sieve[1] = False\n"
                "for i in range(2, 100):\n"
                "    if sieve[i]:\n"
                "        sieve[i*i::i] = [False] * len(sieve[i*i::i])\n"
                "total = sum(i for i, p in enumerate(sieve) if p)\nprint(hex(total))",
                "I'll use a sieve.",
            ),
            py("submit(hex(total))"),
        ]
    )
    act = codeact.CodeAct("limit: int -> answer: str", lm=lm)
    prediction = act(limit=10_000)
    assert prediction.answer == hex(5736396) == "0x5787cc"
    assert prediction.end_reason == "submitted"
    assert prediction.trajectory[0].stdout == "0x5787cc\n"
    assert prediction.trajectory[0].reasoning == "I'll use a sieve."
    assert observations(lm) == ["Observation:\nOutput:\n0x5787cc"]
    assert prediction.usage.calls == 2  # no extra call to extract the answer
    assert prediction.error is None and prediction.fallback is None


def test_one_step_loops_over_100_items_calling_a_tool() -> None:
    seen: list[int] = []

    def score(item: int) -> int:
        """Score one item."""
        seen.append(item)
        return item * 2

    lm = codeact.ScriptedLM([py("total = sum(score(i) for i in items)\nsubmit(total)")])
    act = codeact.CodeAct("items: list[int] -> total: int", tools=[score], lm=lm)
    prediction = act(items=list(range(100)))
    assert prediction.total == 9900
    assert len(prediction.trajectory) == 1
    assert len(prediction.trajectory[0].tool_calls) == 100
    assert seen == list(range(100))


def test_database_query_calculation_and_formatting(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "shop.db", check_same_thread=False)
    db.executescript(
        "create table orders (customer text, amount real);"
        "insert into orders values ('ann', 10.5), ('bob', 20), ('ann', 4.5), ('cy', 7);"
    )

    def query(sql: str) -> list[tuple[Any, ...]]:
        """Run a read-only SQL query on the shop database and return the rows."""
        return db.execute(sql).fetchall()

    def percent(part: float, whole: float) -> float:
        """part as a percentage of whole, rounded to 1 decimal."""
        return round(100 * part / whole, 1)

    lm = codeact.ScriptedLM(
        [
            py("rows = query('select customer, sum(amount) from orders group by customer')\nrows"),
            py(
                "whole = sum(amount for _, amount in rows)\n"
                "lines = [f'{c}: {percent(a, whole)}%' for c, a in sorted(rows, key=lambda r: -r[1])]\n"
                "submit(report='\\n'.join(lines), top=lines[0].split(':')[0])"
            ),
        ]
    )
    act = codeact.CodeAct("question -> report: str, top: str", tools=[query, percent], lm=lm)
    prediction = act(question="Share of revenue per customer?")
    assert prediction.report == "bob: 47.6%\nann: 35.7%\ncy: 16.7%"
    assert prediction.top == "bob"
    assert "('ann', 15.0)" in observations(lm)[0]  # the model saw the rows as the value
    db.close()


def test_csv_from_a_read_path_with_pandas(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "temps.csv").write_text("city,temp\noslo,3\nrome,18\nlima,19\noslo,5\n")
    lm = codeact.ScriptedLM(
        [
            py(
                "import pandas as pd\n"
                f"df = pd.read_csv({str(data / 'temps.csv')!r})\n"
                "print(df.describe())\n"
                "means = df.groupby('city')['temp'].mean()\n"
                "submit(mean=float(df['temp'].mean()), warmest=means.idxmax(), count=len(df))"
            )
        ]
    )
    act = codeact.CodeAct(
        "path -> mean: float, warmest: str, count: int",
        lm=lm,
        sandbox={"read_paths": [data]},
    )
    prediction = act(path=str(data / "temps.csv"))
    assert prediction.end_reason == "submitted", prediction.trajectory[-1].observation
    assert (prediction.mean, prediction.warmest, prediction.count) == (11.25, "lima", 4)


def test_csv_outside_the_read_paths_is_not_readable(tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    lm = codeact.ScriptedLM([py(f"open({str(secret)!r}).read()"), py("submit('blocked')")])
    prediction = codeact.CodeAct("q -> a", lm=lm)(q="read it")
    error = prediction.trajectory[0].error
    assert error is not None and error.type in ("FileNotFoundError", "PermissionError")
    assert prediction.a == "blocked"


class Cart:
    """A shopping cart whose state lives on the host."""

    def __init__(self) -> None:
        self.items: dict[str, int] = {}

    def add(self, name: str, quantity: int = 1) -> int:
        """Put `quantity` of `name` in the cart; returns how many are in it now."""
        self.items[name] = self.items.get(name, 0) + quantity
        return self.items[name]

    def count(self) -> int:
        """How many things are in the cart."""
        return sum(self.items.values())


def test_stateful_tool_object_bound_methods() -> None:
    cart = Cart()
    lm = codeact.ScriptedLM(
        [
            py("add('apple', 2)\nadd('pear')\nprint(add('apple'))"),
            py("submit(count())"),
        ]
    )
    act = codeact.CodeAct("order -> items: int", tools=[cart.add, cart.count], lm=lm)
    prediction = act(order="2 apples, a pear, one more apple")
    assert prediction.items == 4
    assert cart.items == {"apple": 3, "pear": 1}
    stubs = lm.history[0]["messages"][0]["content"]
    assert "def add(name: str, quantity: int = 1) -> int:" in stubs
    assert "def count() -> int:" in stubs


def test_tool_that_raises_and_the_model_recovers() -> None:
    def fetch(city: str) -> float:
        """The temperature in a city."""
        if city != "Oslo":
            raise LookupError(f"unknown city {city!r}; try 'Oslo'")
        return 3.5

    lm = codeact.ScriptedLM([py("t = fetch('oslo')"), py("t = fetch('Oslo')\nsubmit(t)")])
    prediction = codeact.CodeAct("city -> temp: float", tools=[fetch], lm=lm)(city="oslo")
    assert prediction.temp == 3.5
    first = observations(lm)[0]
    assert "LookupError: unknown city 'oslo'; try 'Oslo'" in first
    assert "line 1: t = fetch('oslo')" in first
    assert prediction.trajectory[0].error is not None


def test_tool_argument_validation_names_the_argument() -> None:
    def square(n: int) -> int:
        """n squared."""
        return n * n

    lm = codeact.ScriptedLM([py("square('three')"), py("submit(square(3))")])
    prediction = codeact.CodeAct("q -> a: int", tools=[square], lm=lm)(q="3 squared")
    assert "argument 'n' of tool 'square' should be int" in observations(lm)[0]
    assert prediction.a == 9


def test_wrong_typed_submit_then_a_correct_one() -> None:
    lm = codeact.ScriptedLM([py("submit(answer='forty-two', tags='x')"), py("submit(answer=42, tags=['x'])")])
    act = codeact.CodeAct("question -> answer: int, tags: list[str]", lm=lm)
    prediction = act(question="?")
    assert (prediction.answer, prediction.tags) == (42, ["x"])
    shown = observations(lm)[0]
    assert "submit() was not accepted" in shown
    assert "'answer' should be int, got 'forty-two'" in shown
    assert "'tags' should be list[str]" in shown
    first = prediction.trajectory[0]
    assert first.submitted == {"answer": "forty-two", "tags": "x"}
    assert first.error is not None and first.error.type == "SubmitValidationError"
    assert prediction.usage.calls == 2


def test_positional_submit_with_one_output_and_rich_types() -> None:
    lm = codeact.ScriptedLM([py("import numpy as np\nsubmit(np.arange(4) * 2)")])
    prediction = codeact.CodeAct("n: int -> evens: list[int]", lm=lm)(n=4)
    assert prediction.evens == [0, 2, 4, 6]


def test_extract_fallback_when_steps_run_out() -> None:
    lm = codeact.ScriptedLM(
        [
            py("x = 6 * 7\nprint(x)"),
            "I am thinking about it.",
            'From the log the answer is:\n```json\n{"answer": 42}\n```',
        ]
    )
    prediction = codeact.CodeAct("q -> answer: int", lm=lm, max_iters=2)(q="6*7")
    assert prediction.answer == 42
    assert prediction.end_reason == "max_iters"
    assert prediction.fallback == "extract"
    assert prediction.usage.calls == 3
    extract_prompt = lm.history[2]["messages"][-1]["content"]
    assert "x = 6 * 7" in extract_prompt and "42" in extract_prompt
    assert "Your reply had no code" in observations(lm)[1]
    assert "last step" in observations(lm)[0]


def test_outputs_computed_but_never_submitted_are_read_without_a_model_call() -> None:
    lm = codeact.ScriptedLM([py("answer = 6 * 7\nprint(answer)")])
    prediction = codeact.CodeAct("q -> answer: int", lm=lm, max_iters=1)(q="6*7")
    assert prediction.answer == 42
    assert (prediction.end_reason, prediction.fallback) == ("max_iters", "extract")
    assert len(lm.history) == 1  # the variable was read; no extraction call
    assert len(prediction.trajectory) == 1

    lm = codeact.ScriptedLM([py("answer = 'not a number'"), '{"answer": 7}'])
    prediction = codeact.CodeAct("q -> answer: int", lm=lm, max_iters=1)(q="?")
    assert prediction.answer == 7 and len(lm.history) == 2  # a wrong-typed variable is not taken


def test_extract_fallback_with_an_invalid_reply_leaves_outputs_empty() -> None:
    lm = codeact.ScriptedLM([py("print(1)"), '{"answer": "many"}'])
    prediction = codeact.CodeAct("q -> answer: int", lm=lm, max_iters=1)(q="?")
    assert prediction.answer is None
    assert prediction.end_reason == "max_iters"
    assert "did not validate" in (prediction.error or "")


def test_raise_and_partial_fallbacks() -> None:
    lm = codeact.ScriptedLM([py("print(1)")])
    act = codeact.CodeAct("q -> answer: int", lm=lm, max_iters=1, fallback="raise")
    with pytest.raises(codeact.agent.MaxItersError) as info:
        act(q="?")
    assert info.value.prediction.fallback == "raise"
    assert len(info.value.prediction.trajectory) == 1

    lm = codeact.ScriptedLM([py("submit(a=1, b='x')")])
    act = codeact.CodeAct("q -> a: int, b: int", lm=lm, max_iters=1, fallback="partial")
    prediction = act(q="?")
    assert (prediction.a, prediction.b, prediction.fallback) == (1, None, "partial")
    assert lm.history and len(lm.history) == 1  # no extraction call


def test_lm_error_mid_run_keeps_the_trajectory() -> None:
    def fail(messages: list[Message]) -> str:
        raise codeact.lm.LMError("the server is down")

    lm = codeact.ScriptedLM([py("x = 1\nprint('step one')"), fail])
    prediction = codeact.CodeAct("q -> a: int", lm=lm)(q="?")
    assert prediction.end_reason == "lm_error"
    assert "the server is down" in (prediction.error or "")
    assert prediction.a is None
    assert prediction.trajectory[0].stdout == "step one\n"
    assert len(prediction.trajectory) == 2  # the failed step is kept, with its LM time


def test_any_exception_from_the_lm_is_an_lm_error() -> None:
    lm = codeact.ScriptedLM([lambda messages: 1 / 0])  # type: ignore[list-item, return-value]
    prediction = codeact.CodeAct("q -> a", lm=lm)(q="?")
    assert prediction.end_reason == "lm_error"
    assert "ZeroDivisionError" in (prediction.error or "")


def test_reply_without_code_is_an_observation() -> None:
    lm = codeact.ScriptedLM(["The answer is 4.", py("submit(4)")])
    prediction = codeact.CodeAct("q -> a: int", lm=lm)(q="2+2")
    assert prediction.a == 4
    assert prediction.trajectory[0].code is None
    assert "```python" in observations(lm)[0]


def test_model_written_fake_observation_is_cut_off() -> None:
    reply = py("print(6 * 7)") + "\nObservation:\nOutput:\n41\n\n```python\nsubmit(41)\n```"
    lm = codeact.ScriptedLM([reply, py("submit(42)")])
    prediction = codeact.CodeAct("q -> a: int", lm=lm)(q="6*7")
    assert prediction.a == 42
    assert prediction.trajectory[0].code == "print(6 * 7)"
    assert "\nObservation:" in lm.history[0]["stop"]


def test_long_output_is_cut_for_the_model_but_kept_in_the_record() -> None:
    lm = codeact.ScriptedLM([py("for i in range(5000):\n    print('row', i)"), py("submit('ok')")])
    act = codeact.CodeAct("q -> a", lm=lm, max_observation_chars=1000)
    prediction = act(q="?")
    shown = observations(lm)[0]
    assert "characters cut" in shown and "row 0" in shown and "row 4999" in shown
    assert len(shown) < 1200
    assert prediction.trajectory[0].stdout.count("\n") == 5000


def test_step_timeout_is_an_observation_and_variables_survive() -> None:
    lm = codeact.ScriptedLM([py("x = 5"), py("while True:\n    pass"), py("submit(x)")])
    act = codeact.CodeAct("q -> a: int", lm=lm, step_timeout=1.0)
    prediction = act(q="?")
    step = prediction.trajectory[1]
    assert step.timed_out and step.error is not None and step.error.type == "Timeout"
    assert "time limit" in observations(lm)[1]
    assert prediction.a == 5


def test_sandbox_dying_is_an_observation_and_the_run_goes_on() -> None:
    lm = codeact.ScriptedLM([py("import os\nos.kill(os.getpid(), 9)"), py("print(q)\nsubmit(len(q))")])
    prediction = codeact.CodeAct("q -> a: int", lm=lm)(q="hello")
    assert prediction.trajectory[0].error is not None
    assert prediction.trajectory[0].error.type == "SandboxCrashed"
    assert prediction.a == 5  # the inputs are defined again in the new session
    assert prediction.end_reason == "submitted"


def test_inputs_are_variables_in_the_session() -> None:
    lm = codeact.ScriptedLM([py("submit(total=sum(numbers) * k, first=names[0])")])
    act = codeact.CodeAct("numbers: list[int], k: int, names: list[str] -> total: int, first", lm=lm)
    prediction = act(numbers=list(range(1000)), k=2, names=["ann", "bob"])
    assert (prediction.total, prediction.first) == (999_000, "ann")
    task = lm.history[0]["messages"][1]["content"]
    assert "characters cut; the variable holds all" in task  # the long input is shortened


def test_class_signature_with_enum_and_pydantic_outputs() -> None:
    import enum

    from pydantic import BaseModel

    class Priority(enum.Enum):
        LOW = "low"
        HIGH = "high"

    class Summary(BaseModel):
        title: str
        words: int

    class Triage(codeact.Signature):
        """Triage a support ticket."""

        ticket: str = codeact.InputField(desc="the ticket text")
        priority: Priority = codeact.OutputField(desc="how urgent")
        summary: Summary = codeact.OutputField()

    lm = codeact.ScriptedLM(
        [
            py(
                "p = 'high' if 'down' in ticket else 'low'\n"
                "submit(priority=p, summary={'title': ticket[:10], 'words': len(ticket.split())})"
            )
        ]
    )
    prediction = codeact.CodeAct(Triage, lm=lm)(ticket="The site is down since noon")
    assert prediction.priority is Priority.HIGH
    assert prediction.summary == Summary(title="The site i", words=6)
    prompt = lm.history[0]["messages"]
    assert "Task: Triage a support ticket." in prompt[1]["content"]
    assert "# the ticket text" in prompt[1]["content"]
    assert "Priority is one of 'low', 'high'" in prompt[0]["content"]


def test_budget_ends_the_run() -> None:
    lm = codeact.ScriptedLM([py("x = 1")] * 10)
    prediction = codeact.CodeAct("q -> a", lm=lm, max_run_tokens=300)(q="?")
    assert prediction.end_reason == "budget"
    assert prediction.usage.total_tokens >= 300
    assert len(lm.history) < 10


def test_events_follow_the_run() -> None:
    events: list[Any] = []
    lm = codeact.ScriptedLM([py("print(1)"), py("submit(2)")])
    act = codeact.CodeAct("q -> a: int", lm=lm, on_event=events.append)
    prediction = act(q="?")
    kinds = [type(e).__name__ for e in events if type(e).__name__ != "TokenReceived"]
    assert kinds == [
        "RunStarted",
        "StepStarted",
        "CodeParsed",
        "Observed",
        "StepEnded",
        "StepStarted",
        "CodeParsed",
        "StepEnded",
        "RunEnded",
    ]
    tokens = "".join(e.text for e in events if type(e).__name__ == "TokenReceived")
    assert tokens == lm.history[0]["reply"] + lm.history[1]["reply"]
    assert events[-1].record is prediction.record
    assert len({e.run_id for e in events}) == 1


def test_a_failing_event_handler_does_not_stop_the_run() -> None:
    def handler(event: Any) -> None:
        raise RuntimeError("ui broke")

    lm = codeact.ScriptedLM([py("submit(1)")])
    with pytest.warns(UserWarning, match="ui broke"):
        prediction = codeact.CodeAct("q -> a: int", lm=lm, on_event=handler)(q="?")
    assert prediction.a == 1


def test_record_saves_and_loads(tmp_path: Path) -> None:
    lm = codeact.ScriptedLM([py("print(1/0)"), py("submit({'a', 'b'})")])
    prediction = codeact.CodeAct("q -> letters: set[str]", lm=lm)(q="?")
    path = prediction.save(tmp_path / "runs" / "run.json")
    loaded = codeact.trajectory.RunRecord.load(path)
    assert loaded.to_dict() == prediction.record.to_dict()
    assert loaded.end_reason == "submitted"
    assert sorted(loaded.outputs["letters"]) == ["a", "b"]
    assert loaded.steps[0].error is not None and loaded.steps[0].error.type == "ZeroDivisionError"
    assert loaded.steps[0].error.line == "print(1/0)"
    assert loaded.usage.calls == 2 and loaded.model == "scripted"
    assert loaded.steps[0].exec_s > 0 and loaded.duration_s >= loaded.exec_s


def test_configure_sets_the_default_lm() -> None:
    act = codeact.CodeAct("q -> a")
    try:
        codeact.configure(lm=None)
        with pytest.raises(RuntimeError, match="no language model configured"):
            act(q="?")
        codeact.configure(lm=codeact.ScriptedLM([py("submit('default')")]))
        assert act(q="?").a == "default"
        override = codeact.ScriptedLM([py("submit('override')")])
        assert codeact.CodeAct("q -> a", lm=override)(q="?").a == "override"
    finally:
        codeact.configure(lm=None)


def test_bad_arguments_fail_clearly() -> None:
    lm = codeact.ScriptedLM([])
    act = codeact.CodeAct("q -> a", lm=lm)
    with pytest.raises(TypeError, match="missing input 'q'"):
        act()
    with pytest.raises(ValueError, match="no_such_option"):
        codeact.CodeAct("q -> a", lm=lm, sandbox={"no_such_option": 1})
    with pytest.raises(ValueError, match="read"):
        codeact.CodeAct("q -> a", lm=lm, sandbox={"read_paths": ["/no/such/dir"]})
    with pytest.raises(ValueError, match="fallback"):
        codeact.CodeAct("q -> a", lm=lm, fallback="guess")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name of an input"):
        codeact.CodeAct("q -> a", tools=[codeact.Tool(len, name="q")], lm=lm)


def test_interpreter_factory_is_used_per_run() -> None:
    made: list[Any] = []

    def factory() -> Any:
        sandbox = codeact.Sandbox(timeout=5)
        made.append(sandbox)
        return sandbox

    lm = codeact.ScriptedLM([py("submit(1)"), py("submit(2)")])
    act = codeact.CodeAct("q -> a: int", lm=lm, interpreter=factory)
    assert [act(q="?").a, act(q="?").a] == [1, 2]
    assert len(made) == 2 and not any(s.alive for s in made)


def test_scripted_lm_running_out_ends_the_run_clearly() -> None:
    lm = codeact.ScriptedLM([py("x = 1")])
    prediction = codeact.CodeAct("q -> a", lm=lm)(q="?")
    assert prediction.end_reason == "lm_error"
    assert "ScriptedLM ran out of replies: call 2 but only 1 replies were given" in (prediction.error or "")


def test_ctrl_c_ends_the_run_with_its_record() -> None:
    def interrupt(messages: list[Message]) -> str:
        raise KeyboardInterrupt

    lm = codeact.ScriptedLM([py("print('working')"), interrupt])
    act = codeact.CodeAct("q -> a", lm=lm)
    with pytest.raises(KeyboardInterrupt) as info:
        act(q="?")
    assert isinstance(info.value, codeact.agent.RunInterrupted)
    record = info.value.prediction.record
    assert record.end_reason == "interrupted"
    assert record.steps[0].stdout == "working\n"


class PricedLM(codeact.ScriptedLM):
    """Scripted replies that each cost one cent."""

    def complete(self, messages: Any, **options: Any) -> Any:
        completion = super().complete(messages, **options)
        completion.usage.cost = 0.01
        return completion


def test_max_cost_ends_the_run() -> None:
    lm = PricedLM([py("x = 1")] * 10)
    prediction = codeact.CodeAct("q -> a", lm=lm, max_cost=0.025)(q="?")
    assert prediction.end_reason == "budget"
    assert len(lm.history) == 3
    assert prediction.usage.cost == pytest.approx(0.03)
    assert "max_cost=0.025" in (prediction.error or "")


def test_without_rollback_a_step_that_ends_the_interpreter_leaves_the_inputs_and_tools() -> None:
    def double(x: int) -> int:
        """Twice x."""
        return 2 * x

    lm = codeact.ScriptedLM([py("import os\nos._exit(1)"), py("submit(double(len(q)))")])
    prediction = codeact.CodeAct("q -> a: int", tools=[double], lm=lm, sandbox={"rollback": False})(q="abc")
    assert prediction.trajectory[0].error is not None
    assert prediction.end_reason == "submitted" and prediction.a == 6


def test_output_past_the_sandbox_limit_is_reported() -> None:
    lm = codeact.ScriptedLM([py("print('x' * 3_000_000)"), py("submit(1)")])
    prediction = codeact.CodeAct("q -> a: int", lm=lm, sandbox={"max_output": 100_000})(q="?")
    step = prediction.trajectory[0]
    assert step.stdout_truncated > 2_800_000
    assert len(step.stdout) < 200_000
    assert "more characters of output were not kept" in observations(lm)[0]


def test_a_dataframe_input_arrives_as_a_dataframe() -> None:
    pd = pytest.importorskip("pandas")

    class Sales(codeact.Signature):
        """Total the units."""

        sales: Any = codeact.InputField(desc="a pandas DataFrame")
        total: int = codeact.OutputField()

    lm = codeact.ScriptedLM([py("submit(int(sales['units'].sum()))")])
    act = codeact.CodeAct(Sales, lm=lm)
    prediction = act(sales=pd.DataFrame({"region": ["n", "s"], "units": [3, 5]}))
    assert prediction.end_reason == "submitted", prediction.error
    assert prediction.total == 8


def test_an_input_that_cannot_reach_the_sandbox_is_refused_before_the_run() -> None:
    import threading

    class Guarded(codeact.Signature):
        handle: Any = codeact.InputField()
        answer: str = codeact.OutputField()

    lm = codeact.ScriptedLM([py("submit('never')")])
    act = codeact.CodeAct(Guarded, lm=lm)
    with pytest.raises(TypeError, match="input 'handle' of type lock cannot be sent into the sandbox"):
        act(handle=threading.Lock())
    assert lm.history == []  # no model call was made


def test_the_prompt_says_where_granted_files_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    act = codeact.CodeAct("q -> a", lm=codeact.ScriptedLM([]), sandbox={"read_paths": ["data"], "timeout": 9})
    assert f"Readable paths: data ({tmp_path / 'data'})" in act.prompt.system
    assert "may run for 9 s, tool calls included" in act.prompt.system


def test_the_prompt_describes_the_environment_to_models_that_can_use_it() -> None:
    act = codeact.CodeAct("q -> a", lm=codeact.ScriptedLM([]), sandbox={"timeout": 7, "packages": ["tabulate"]})
    system = act.prompt.system
    assert "each code block may run for 7 s" in system
    assert "threads and processes a block starts do not outlive it" in system
    assert "You can import the standard library and the packages installed with this Python, and tabulate" in system
    assert "The network is not reachable." in system
    assert "Environment:" not in act.prompt.brief_system  # what a grammar-held small model reads
    pyodide = codeact.CodeAct("q -> a", lm=codeact.ScriptedLM([]), sandbox={"backend": "pyodide"})
    assert "You can import the standard library only (Pyodide)." in pyodide.prompt.system


@pytest.mark.parametrize(
    ("signature", "fragment"),
    [
        ("q -> error", "output 'error' would be hidden by Prediction.error"),
        ("q -> save", "output 'save' would be hidden"),
        ("submit -> a", "input 'submit' would hide the sandbox's own submit()"),
        ("print -> a", "input 'print'"),
    ],
)
def test_names_that_would_break_the_run_are_refused(signature: str, fragment: str) -> None:
    with pytest.raises(codeact.ConfigurationError, match=fragment):
        codeact.CodeAct(signature, lm=codeact.ScriptedLM([]))


def test_a_validator_rejects_a_submit_and_the_model_hears_why() -> None:
    def positive(outputs: dict[str, Any]) -> str | None:
        return None if outputs["answer"] > 0 else "the answer must be positive"

    def not_thirteen(outputs: dict[str, Any]) -> None:
        if outputs["answer"] == 13:
            raise ValueError("13 is unlucky")

    lm = codeact.ScriptedLM([py("submit(-1)"), py("submit(13)"), py("submit(7)")])
    act = codeact.CodeAct("q -> answer: int", lm=lm, validators=[positive, not_thirteen])
    prediction = act(q="go")
    assert prediction.answer == 7 and prediction.end_reason == "submitted"
    assert [s.error.message for s in prediction.trajectory[:2]] == ["the answer must be positive", "13 is unlucky"]
    assert "rejected by a check: the answer must be positive" in observations(lm)[0]


def test_bad_budgets_and_calls_name_the_parameter() -> None:
    lm = codeact.ScriptedLM([])
    with pytest.raises(codeact.ConfigurationError, match="max_run_tokens must be a positive integer"):
        codeact.CodeAct("q -> a", lm=lm, max_run_tokens="100")
    with pytest.raises(codeact.ConfigurationError, match="max_reply_tokens must be positive"):
        codeact.CodeAct("q -> a", lm=lm, max_reply_tokens=0)
    with pytest.raises(TypeError, match=r"tools must be a list of callables, e.g. tools=\[add\]"):
        codeact.CodeAct("q -> a", tools=print, lm=lm)
    with pytest.raises(TypeError, match=r"pass the inputs by name: act\(question=...\)"):
        codeact.CodeAct("question -> a", lm=lm)("What is 2+2?")


def test_max_cost_warns_when_the_price_is_unknown() -> None:
    with pytest.warns(UserWarning, match="max_cost=1.0 cannot be enforced"):
        codeact.CodeAct("q -> a", lm=codeact.LM("openai/a-model-without-a-price", api_key="sk-test"), max_cost=1.0)


def test_max_tokens_is_the_old_name_of_the_run_budget_and_replies_can_be_capped() -> None:
    lm = codeact.ScriptedLM([py("x = 1")] * 10)
    with pytest.warns(DeprecationWarning, match="now called max_run_tokens"):
        act = codeact.CodeAct("q -> a", lm=lm, max_tokens=300)
    assert act.max_run_tokens == 300 and act(q="?").end_reason == "budget"
    capped = codeact.ScriptedLM([py("submit('ok')")])
    codeact.CodeAct("q -> a", lm=capped, max_reply_tokens=64)(q="?")
    assert capped.history[0]["max_tokens"] == 64


def test_a_series_submitted_for_a_dict_keeps_its_index() -> None:
    pytest.importorskip("pandas")
    lm = codeact.ScriptedLM([py("import pandas as pd\nsubmit(pd.Series({'north': 3, 'south': 5}))")])
    prediction = codeact.CodeAct("q -> totals: dict[str, int]", lm=lm)(q="?")
    assert prediction.totals == {"north": 3, "south": 5}, prediction.error


def test_a_tool_that_returns_an_enum_member() -> None:
    import enum

    class Level(enum.Enum):
        LOW = "low"

    def level() -> Level:
        """The level."""
        return Level.LOW

    lm = codeact.ScriptedLM([py("submit(level().value)")])
    assert codeact.CodeAct("q -> a", tools=[level], lm=lm)(q="?").a == "low"


@dataclasses.dataclass
class Point:
    x: float
    y: float


def distance(p: Point) -> float:
    """Distance from the origin."""
    return (p.x**2 + p.y**2) ** 0.5


def test_the_prompt_describes_the_record_types_tools_take() -> None:
    act = codeact.CodeAct("q -> a: float", tools=[distance], lm=codeact.ScriptedLM([]))
    assert "@dataclass\nclass Point:\n    x: float\n    y: float" in act.prompt.system
