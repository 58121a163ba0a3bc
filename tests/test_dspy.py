"""`codeact.dspy.Interpreter` against the installed `dspy`: DSPy's interpreter scenarios, re-expressed,
and `dspy.RLM` and `dspy.CodeAct` end to end with DSPy's DummyLM."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import warnings
from collections import namedtuple

import pytest

dspy = pytest.importorskip("dspy")

from dspy.primitives.code_interpreter import (  # noqa: E402
    CodeExecutionError,
    CodeInterpreter,
    CodeInterpreterError,
    FinalOutput,
)
from dspy.utils.dummies import DummyLM  # noqa: E402

from codeact.dspy import Interpreter  # noqa: E402

pytestmark = pytest.mark.skipif(
    not __import__("codeact.sandbox", fromlist=["available_backends"]).available_backends(),
    reason="no sandbox backend on this machine",
)


@pytest.fixture
def interp():
    with Interpreter() as interpreter:
        yield interpreter


def test_it_is_a_dspy_code_interpreter(interp):
    assert isinstance(interp, CodeInterpreter)


# --- running code -----------------------------------------------------------------------------------
def test_prints_come_back_as_text(interp):
    assert interp.execute("print('Hello, World!')") == "Hello, World!\n"


def test_the_value_of_the_last_expression_comes_back_as_a_value(interp):
    assert interp.execute("import math\nresult = math.sqrt(4)\nresult") == 2
    assert interp.execute("x = 1") is None


def test_variables_are_injected_and_state_persists(interp):
    assert interp.execute("result = number + 1\nresult", variables={"number": 4}) == 5
    assert interp.execute("result * 10") == 50


def test_non_finite_floats_cross(interp):
    assert interp.execute("1 if x == float('inf') else 0", variables={"x": float("inf")}) == 1
    assert interp.execute("import math\n1 if math.isnan(x) else 0", variables={"x": float("nan")}) == 1


def test_keywords_are_refused_as_variable_names(interp):
    for name in ("for", "class", "import"):
        with pytest.raises(CodeInterpreterError, match="Invalid variable name"):
            interp.execute("print(1)", variables={name: 42})


def test_syntax_errors_raise_syntax_error(interp):
    with pytest.raises(SyntaxError, match="Invalid Python syntax"):
        interp.execute("+++")


def test_runtime_errors_are_recoverable(interp):
    with pytest.raises(CodeExecutionError, match="ZeroDivisionError"):
        interp.execute("1+0/0")
    with pytest.raises(CodeExecutionError, match=r"ValueError: 1234"):
        interp.execute("raise ValueError(1234)")
    assert interp.execute("2 + 2") == 4


def test_an_exception_named_like_the_interpreters_is_still_the_codes(interp):
    with pytest.raises(CodeExecutionError, match="CodeInterpreterError"):
        interp.execute("class CodeInterpreterError(Exception):\n    pass\nraise CodeInterpreterError('x')")
    assert interp.execute("2 + 2") == 4


@pytest.mark.parametrize("exc", ["SystemExit(3)", "KeyboardInterrupt()", "GeneratorExit()"])
def test_base_exceptions_are_recoverable_and_the_session_stays_in_step(interp, exc):
    with pytest.raises(CodeExecutionError):
        interp.execute(f"raise {exc}")
    assert interp.execute("40 + 2") == 42


# --- SUBMIT ------------------------------------------------------------------------------------------
def test_submit_without_output_fields_wraps_the_output(interp):
    result = interp.execute("SUBMIT(['The result is', 42])")
    assert result == FinalOutput({"output": ["The result is", 42]})


def test_submit_by_name_and_by_position():
    fields = [{"name": "answer", "type": "str"}, {"name": "confidence", "type": "float"}]
    with Interpreter(output_fields=fields) as interp:
        assert interp.execute('SUBMIT(answer="yes", confidence=0.9)').output == {"answer": "yes", "confidence": 0.9}
        assert interp.execute('a = "no"\nSUBMIT(a, 0.1)').output == {"answer": "no", "confidence": 0.1}
        with pytest.raises(CodeInterpreterError, match="missing 1 required positional argument"):
            interp.execute("SUBMIT('only one')")


def test_submit_of_none_and_of_a_field_named_final_output():
    with Interpreter(output_fields=[{"name": "nothing"}]) as interp:
        assert interp.execute("SUBMIT(nothing=None)") == FinalOutput({"nothing": None})
    with Interpreter(output_fields=[{"name": "FinalOutput"}]) as interp:
        assert interp.execute("SUBMIT(FinalOutput='ok')") == FinalOutput({"FinalOutput": "ok"})


# --- tools -----------------------------------------------------------------------------------------
def test_tools_by_keyword_position_and_default():
    def search(query: str, limit: int = 10) -> str:
        return f"query={query}, limit={limit}"

    with Interpreter(tools={"search": search}) as interp:
        assert interp.execute('search(query="hello", limit=5)') == "query=hello, limit=5"
        assert interp.execute('search("hello")') == "query=hello, limit=10"


def test_tools_added_after_construction_are_callable(interp):
    interp.tools["shout"] = lambda text: text.upper()
    assert interp.execute("shout('hi')") == "HI"


def test_a_failing_tool_is_a_runtime_error_in_the_code():
    def failing(x: int) -> str:
        raise ValueError(f"bad value: {x}")

    async def failing_async(x: int) -> str:
        await asyncio.sleep(0)
        raise ValueError(f"boom:{x}")

    with Interpreter(tools={"failing": failing, "failing_async": failing_async}) as interp:
        out = interp.execute(
            "try:\n    failing(42)\nexcept RuntimeError as e:\n    print(e)\n"
            "try:\n    failing_async(7)\nexcept RuntimeError as e:\n    print(e)"
        )
    assert out == "ValueError: bad value: 42\nValueError: boom:7\n"


def test_tool_results_keep_their_types():
    Pair = namedtuple("Pair", "a b")

    @dataclasses.dataclass
    class Hit:
        document_id: int
        title: str

    tools = {
        "count": lambda: 4,
        "score": lambda: 0.95,
        "flag": lambda: True,
        "nothing": lambda: None,
        "items": lambda: [1, "a"],
        "mapping": lambda: {"k": [1]},
        "hit": lambda: Hit(3, "doc"),
        "pair": lambda: Pair(1, 2),
    }
    with Interpreter(tools=tools) as interp:
        out = interp.execute(
            "print(type(count()).__name__, count() + 1, score() * 2, flag(), nothing(), items(), mapping()['k'])\n"
            "h = hit()\nprint(h.document_id, h.title, pair().b)"
        )
    assert out == "int 5 1.9 True None [1, 'a'] [1]\n3 doc 2\n"


def test_a_tool_cannot_reenter_its_interpreter():
    holder: dict[str, Interpreter] = {}

    def nested() -> object:
        return holder["interp"].execute("'nested'")

    with Interpreter(tools={"nested": nested}) as interp:
        holder["interp"] = interp
        with pytest.raises(CodeExecutionError, match="cannot execute recursively"):
            interp.execute("nested()")
        assert interp.execute("40 + 2") == 42


# --- large variables --------------------------------------------------------------------------------
def test_large_variables_arrive_whole(interp):
    data = "ABCDEFGHIJ" * 2_000_000  # 20 MB, over one frame
    assert interp.execute("len(data), data[:3], data[-3:]", variables={"data": data}) == (len(data), "ABC", "HIJ")
    assert interp.execute("len(items), type(items).__name__", variables={"items": ["x"] * 1_000_000}) == (
        1_000_000,
        "list",
    )


def test_nested_sets_and_tuples_cross_as_themselves(interp):
    value = interp.execute("data", variables={"data": {"tags": {1, 2}, "coords": (10, 20)}})
    assert value == {"tags": {1, 2}, "coords": (10, 20)}


# --- session lifecycle ----------------------------------------------------------------------------------
def _kill_session(sandbox) -> None:
    """Kill a native session from outside (its keeper ends its pid namespace) and wait until it is gone."""
    import signal
    import time

    with open(f"/proc/self/fdinfo/{sandbox.backend._pidfds[0]}") as f:
        keeper = int(f.read().split("Pid:")[1].split()[0])
    for fd in sandbox.backend._pidfds:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    for _ in range(500):  # bounded by count: the kernel ends the namespace promptly
        try:
            with open(f"/proc/{keeper}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.01)
    raise AssertionError("the session did not die")


def test_a_dead_session_raises_and_stays_ended():
    interp = Interpreter()
    try:
        assert interp.execute("kept = 41\nkept") == 41
        _kill_session(interp._sandbox)  # the session's processes die under it
        with pytest.raises(CodeInterpreterError, match="interpreter state was lost") as info:
            interp.execute("kept + 1")
        assert type(info.value) is CodeInterpreterError
        with pytest.raises(CodeInterpreterError, match="session has ended"):
            interp.execute("1 + 1")
        with pytest.raises(CodeInterpreterError, match="session has ended"):
            interp.start()
    finally:
        interp.shutdown()


def test_shutdown_ends_the_session():
    interp = Interpreter()
    interp.start()
    interp.shutdown()
    with pytest.raises(CodeInterpreterError, match="session has ended"):
        interp.execute("1 + 1")


def test_the_sandbox_limits_apply():
    with Interpreter(timeout=1) as interp:
        interp.execute("kept = 1")
        with pytest.raises(CodeExecutionError, match="Timeout"):
            interp.execute("while True:\n    pass")
        assert interp.execute("kept") == 1


def test_dspys_enable_network_access_allows_only_those_hosts():
    with Interpreter(enable_network_access=["api.example.com"]) as interp:
        assert interp.options.network == ("api.example.com",)
        refused = interp.execute(
            "import urllib.request\ntry:\n    urllib.request.urlopen('http://other.example.com/')\n"
            "except Exception as exc:\n    print(exc)"
        )
        assert "other.example.com:80 is not in the sandbox's network allow-list" in refused


# --- DSPy modules on codeact -------------------------------------------------------------------------
def test_dspy_rlm_runs_on_codeact():
    lm = DummyLM(
        [
            {"reasoning": "Look at the context first.", "code": "print(len(context))"},
            {"reasoning": "Now submit.", "code": "SUBMIT(answer=str(len(context.split())))"},
        ]
    )
    with dspy.context(lm=lm):
        rlm = dspy.RLM("context -> answer", max_iters=4, interpreter_factory=Interpreter)
        prediction = rlm(context="the quick brown fox")
    assert prediction.answer == "4"


def test_dspy_rlm_llm_query_reaches_the_sub_lm():
    sub = DummyLM([{"answer": "sunny"}])
    lm = DummyLM(
        [
            {"reasoning": "Ask.", "code": "reply = llm_query('What is the weather?')\nprint(reply)"},
            {"reasoning": "Done.", "code": "SUBMIT(answer='sunny' if 'sunny' in reply else 'unknown')"},
        ]
    )
    with dspy.context(lm=lm):
        rlm = dspy.RLM("question -> answer", max_iters=4, sub_lm=sub, interpreter_factory=Interpreter)
        prediction = rlm(question="weather?")
    assert prediction.answer == "sunny"


def factorial(n: int) -> int:
    """Factorial of n."""
    return 1 if n <= 1 else n * factorial(n - 1)


def test_dspy_codeact_runs_on_codeact():
    lm = DummyLM(
        [
            {"generated_code": "```python\nprint(factorial(5))\n```", "finished": True},
            {"reasoning": "The output was 120.", "factorial": "120"},
        ]
    )
    with warnings.catch_warnings(), dspy.context(lm=lm):
        warnings.simplefilter("ignore", DeprecationWarning)
        act = dspy.CodeAct("n -> factorial", tools=[factorial], interpreter_factory=Interpreter)
        prediction = act(n=5)
    assert prediction.factorial == "120"
    assert any("120" in str(v) for v in prediction.trajectory.values())


# --- a CodeAct run tuned by a DSPy optimiser --------------------------------------------------------
def test_bootstrap_few_shot_keeps_successful_runs_as_demonstrations(tmp_path):
    import codeact
    from codeact.dspy import Module

    def solver(messages):  # a scripted model that doubles the number it is given
        task = messages[1]["content"]
        number = int(task.split("n = ")[1].split()[0])
        return f"Double it.\n```python\nsubmit(answer={number} * 2)\n```"

    act = codeact.CodeAct("n: int -> answer: int", lm=codeact.ScriptedLM([solver] * 50))
    program = Module(act)
    trainset = [dspy.Example(n=i, answer=2 * i).with_inputs("n") for i in (1, 2, 3)]
    with dspy.context(lm=DummyLM([{"answer": "0", "code": ""}] * 10)):
        optimizer = dspy.BootstrapFewShot(
            metric=lambda example, pred, trace=None: pred.answer == example.answer,
            max_bootstrapped_demos=2,
            max_labeled_demos=0,
        )
        compiled = optimizer.compile(program, trainset=trainset)
    learned = compiled.predict.demos
    assert len(learned) == 2 and all("submit(answer=" in demo["code"] for demo in learned)
    assert compiled(n=21).answer == 42
    tuned = compiled.to_codeact()
    assert "Solved examples of this task:" in tuned.prompt.system
    assert "submit(answer=1 * 2)" in tuned.prompt.system

    compiled.save(tmp_path / "program.json")  # DSPy's own save and load
    fresh = Module(codeact.CodeAct("n: int -> answer: int", lm=codeact.ScriptedLM([solver] * 5)))
    fresh.load(tmp_path / "program.json")
    assert len(fresh.predict.demos) == 2

    saved = tuned.save(tmp_path / "codeact.json")  # and codeact's: instructions and demonstrations
    loaded = codeact.CodeAct.load(saved, lm=codeact.ScriptedLM([solver]))
    assert loaded.demos == tuned.demos and loaded.instructions == tuned.instructions
    assert loaded(n=4).answer == 8
