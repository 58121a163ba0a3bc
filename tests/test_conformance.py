"""The contract every sandbox backend meets; runs once per backend available on this machine."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import decimal
import functools
import os
import pathlib
import threading
import typing
import uuid
from typing import Any

import pytest

from codeact import Tool


def add(a: int, b: int = 2) -> int:
    """Add two integers."""
    return a + b


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def bump(self, by: int = 1) -> int:
        """Increase the counter and return it."""
        self.count += by
        return self.count


class Multiplier:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, x: float) -> float:
        """Multiply x by the configured factor."""
        return x * self.factor


def scale(x: int, factor: int) -> int:
    return x * factor


async def fetch(key: str) -> str:
    """Look a key up asynchronously."""
    await asyncio.sleep(0.01)
    return key.upper()


def explode(message: str) -> None:
    raise ValueError(f"exploded: {message}")


def echo(value: Any) -> Any:
    return value


# --- state and capture ------------------------------------------------------------------------


def test_variables_persist_across_executions(make_sandbox):
    sb = make_sandbox()
    assert sb.execute("x = 2\nprint(x * 21)").stdout == "42\n"
    result = sb.execute("x + 1")
    assert result.value == "3"
    assert result.error is None


def test_stdout_stderr_and_value_are_separate(make_sandbox):
    sb = make_sandbox()
    r = sb.execute("import sys\nprint('out')\nprint('err', file=sys.stderr)\n[1, 2]")
    assert (r.stdout, r.stderr, r.value) == ("out\n", "err\n", "[1, 2]")
    assert sb.execute("y = 1").value is None
    assert sb.execute("None").value is None


def test_a_log_handler_made_in_one_step_writes_into_later_steps(make_sandbox):
    sb = make_sandbox()
    first = sb.execute("import logging\nlogging.basicConfig(format='%(message)s')\nlogging.warning('one')")
    assert first.stderr == "one\n"
    assert sb.execute("logging.warning('two')").stderr == "two\n"


def test_output_written_to_the_interpreters_own_streams_is_kept(make_sandbox):
    r = make_sandbox().execute("import sys\nprint('out', file=sys.__stdout__)\nprint('err', file=sys.__stderr__)")
    assert (r.stdout, r.stderr) == ("out\n", "err\n")


def test_prints_before_an_error_are_kept(make_sandbox):
    r = make_sandbox().execute("print('before')\nraise KeyError('k')\nprint('after')")
    assert r.stdout == "before\n"
    assert r.error is not None and r.error.type == "KeyError"


def test_error_names_type_message_and_failing_line(make_sandbox):
    r = make_sandbox().execute("a = 1\nb = 0\nc = a / b\n")
    assert r.error is not None
    assert r.error.type == "ZeroDivisionError"
    assert "division by zero" in r.error.message
    assert r.error.lineno == 3
    assert r.error.line == "c = a / b"
    assert "line 3" in r.error.traceback


def test_syntax_error_points_at_the_line(make_sandbox):
    r = make_sandbox().execute("x = 1\nif x\n    pass")
    assert r.error is not None and r.error.type == "SyntaxError"
    assert r.error.lineno == 2


# the step's value is its last statement's when that is an expression, wherever strings, brackets,
# comments and blocks put the lines before it (the sandbox compiles such steps from the text alone)
LAST_EXPRESSIONS = [
    ("x = 2\nx", "2"),
    ("x = 2", None),
    ("x = 2\nx\n# done\n\n", "2"),
    ("x = 2; x", "2"),
    ("x = 2\nx;", "2"),
    ('s = """\nx\n"""\ns', "'\\nx\\n'"),
    ('len("""\nab\n""")', "4"),
    ("y = (1,\n2)\ny", "(1, 2)"),
    ("z = [\n1,\n]\nz", "[1]"),
    ("x = 1 + \\\n2\nx", "3"),
    ("x = 1\n-2", "-2"),
    ("if True:\n    q = 5\nelse:\n    q = 6\nq", "5"),
    ("def f():\n    return 3\nf()", "3"),
    ("@staticmethod\ndef g():\n    pass", None),
    ("(1 +\n  2)\n  # an indented comment\n", "3"),
    ("'a' 'b'", "'ab'"),
    ("async def f():\n    return 4\nawait f()", "4"),
    ("import asyncio\nawait asyncio.sleep(0)\n5", "5"),
]


@pytest.mark.parametrize(("code", "value"), LAST_EXPRESSIONS, ids=[c for c, _ in LAST_EXPRESSIONS])
def test_the_value_is_the_last_expression_wherever_the_lines_before_it_end(make_sandbox, code, value):
    r = make_sandbox().execute(code)
    assert r.error is None, r.error
    assert r.value == value


@pytest.mark.parametrize(
    ("code", "line"),
    [("a = 1\n\n(a +\n  1 / 0)\n# end\n", 4), ('s = """\n1\n"""\n1 / 0', 4), ("x = (\n1)\nx / 0", 3)],
)
def test_an_error_in_the_last_expression_names_its_own_line(make_sandbox, code, line):
    r = make_sandbox().execute(code)
    assert r.error is not None and r.error.type == "ZeroDivisionError"
    assert r.error.lineno == line
    assert r.error.line.strip() == code.splitlines()[line - 1].strip()


def test_a_provided_name_defined_across_a_line_break_is_still_skipped(make_sandbox):
    r = make_sandbox(tools=[add]).execute("def \\\nadd(a, b):\n    return 0\nadd(1, 2)")
    assert r.value == "3"
    assert "provides add" in r.stderr


def test_long_output_is_cut_with_a_marker(make_sandbox):
    r = make_sandbox(max_output=10_000).execute("for i in range(100_000): print(i)")
    assert r.error is None
    assert len(r.stdout) < 11_000
    assert "characters cut" in r.stdout
    assert r.stdout.startswith("0\n1\n2\n")
    assert r.stdout.rstrip().endswith("99999")
    assert r.stdout_truncated > 0


def test_exit_in_code_is_an_error_not_the_end(make_sandbox):
    sb = make_sandbox()
    r = sb.execute("import sys\nsys.exit(3)")
    assert r.error is not None and r.error.type == "SystemExit"
    assert sb.execute("1 + 1").value == "2"


# --- tools --------------------------------------------------------------------------------------


def test_all_kinds_of_callables_are_tools(make_sandbox):
    counter = Counter()
    factor = 3

    def closure(x: int) -> int:
        """Multiply by a captured factor."""
        return x * factor

    double = Tool(functools.partial(scale, factor=2), name="double")
    sb = make_sandbox(tools=[add, closure, counter.bump, Multiplier(10), double, fetch])
    r = sb.execute(
        "results = [add(1), add(1, b=5), closure(4), bump(), bump(by=2), multiplier(1.5), double(7), fetch('k')]\n"
        "results"
    )
    assert r.error is None, r.error
    assert r.value == "[3, 6, 12, 1, 3, 15.0, 14, 'K']"
    assert counter.count == 3  # the real object on the host changed
    assert len(r.tool_calls) == 8


def join(sep: str, *parts: str, upper: bool = False, **extra: int) -> str:
    """Join parts with a separator."""
    text = sep.join(parts) + "".join(f"{k}{v}" for k, v in extra.items())
    return text.upper() if upper else text


def test_tools_with_star_args_and_keywords(make_sandbox):
    sb = make_sandbox(tools=[join])
    r = sb.execute("(join('-', 'a', 'b'), join('+', 'x', upper=True), join(',', n=1))")
    assert r.value == "('a-b', 'X', 'n1')", r.error


def test_tools_keep_name_signature_and_docstring(make_sandbox):
    sb = make_sandbox(tools=[add])
    r = sb.execute("import inspect\n(add.__name__, str(inspect.signature(add)), add.__doc__)")
    assert r.value == "('add', '(a: int, b: int = 2) -> int', 'Add two integers.')"


def test_tool_errors_are_catchable_with_their_message(make_sandbox):
    sb = make_sandbox(tools=[explode])
    r = sb.execute("try:\n    explode('boom')\nexcept ValueError as e:\n    caught = str(e)\ncaught")
    assert r.value == "'exploded: boom'"
    r = sb.execute("explode('again')")
    assert r.error is not None and r.error.type == "ValueError"
    assert "exploded: again" in r.error.message


def test_tool_arguments_are_validated_and_named(make_sandbox):
    r = make_sandbox(tools=[add]).execute("add('not a number')")
    assert r.error is not None and r.error.type == "TypeError"
    assert "'a'" in r.error.message


def test_unknown_tool_name_is_refused(make_sandbox):
    r = make_sandbox(tools=[add]).execute("add.__globals__['__codeact_call__']('os_system', ['ls'], {})")
    assert r.error is not None and r.error.type == "NameError"


@pytest.mark.parametrize(
    "value",
    [
        "text",
        7,
        2.5,
        True,
        None,
        [1, [2, 3]],
        (1, "a"),
        {"k": [1]},
        {1: "int key", (2, 3): "tuple key"},
        {1, 2, 3},
        b"\x00\xffbytes",
        dt.datetime(2024, 5, 1, 12, 30),
        dt.date(2024, 5, 1),
        decimal.Decimal("1.10"),
        frozenset({"a"}),
        pathlib.Path("/data/in.csv"),
        uuid.UUID(int=5),
    ],
    ids=lambda v: type(v).__name__,
)
def test_values_round_trip_through_tools(make_sandbox, value):
    seen: list[Any] = []

    def keep(v: Any) -> Any:
        seen.append(v)
        return v

    sb = make_sandbox(tools=[keep, echo])
    imports = "import datetime\nfrom decimal import Decimal\nfrom pathlib import PosixPath\nfrom uuid import UUID\n"
    setup = sb.execute(f"{imports}v = echo({value!r})\nw = keep(v)")
    assert setup.error is None, setup.error
    r = sb.execute("(type(w).__name__, w == v)")
    assert r.error is None, r.error
    assert r.value == f"({type(value).__name__!r}, True)"
    assert seen == [value] and type(seen[0]) is type(value)


def test_numpy_and_pandas_round_trip(make_sandbox, backend):
    if backend == "pyodide":
        pytest.skip("pyodide: numpy and pandas cannot be loaded offline")
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    got: list[Any] = []

    def table() -> Any:
        return pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})

    def matrix(m: Any) -> Any:
        got.append(m)
        return m * 2

    sb = make_sandbox(tools=[table, matrix])
    r = sb.execute(
        "import numpy as np\nt = table()\nm = matrix(np.arange(6).reshape(2, 3))\n"
        "(int(t['a'].sum()), list(t['b']), m.tolist())"
    )
    assert r.error is None, r.error
    assert r.value == "(6, ['x', 'y', 'z'], [[0, 2, 4], [6, 8, 10]])"
    assert isinstance(got[0], np.ndarray) and got[0].shape == (2, 3)


def test_what_the_code_defines_is_found_in_main_as_in_a_script(make_sandbox):
    sb = make_sandbox()
    sb.execute("import dataclasses\n@dataclasses.dataclass\nclass Point:\n    x: int\n    nxt: 'Point | None' = None")
    r = sb.execute("import pickle, typing\npickle.loads(pickle.dumps(Point(1))), typing.get_type_hints(Point)['x']")
    assert r.error is None, r.error
    assert r.value == "(Point(x=1, nxt=None), <class 'int'>)"


# --- submit -------------------------------------------------------------------------------------


def test_submit_positional_and_keyword(make_sandbox):
    sb = make_sandbox()
    sb.set_submit(["answer", "note"])
    r = sb.execute("print('done')\nsubmit(42, note='n')\nprint('never')")
    assert r.submitted == {"answer": 42, "note": "n"}
    assert r.stdout == "done\n"
    assert r.error is None


def test_submit_cannot_be_swallowed_by_except_exception(make_sandbox):
    r = make_sandbox().execute("try:\n    submit([1, 2])\nexcept Exception:\n    pass\nprint('swallowed')")
    assert r.submitted == {"answer": [1, 2]}
    assert "swallowed" not in r.stdout


def test_submit_from_a_task_the_code_never_awaits_counts(make_sandbox):
    code = "import asyncio\nasync def finish():\n    submit(8)\nasyncio.ensure_future(finish())\nawait asyncio.sleep(0)"
    r = make_sandbox().execute(code)
    assert r.error is None and r.submitted == {"answer": 8}, r.error


def test_submit_from_a_thread_counts(make_sandbox, backend):
    if backend == "pyodide":
        pytest.skip("WebAssembly has no threads")
    sb = make_sandbox()
    r = sb.execute("import threading\nt = threading.Thread(target=submit, args=(5,))\nt.start()\nt.join()")
    assert r.error is None and r.submitted == {"answer": 5}, r.error
    assert sb.execute("x = 1").submitted is None  # the next step starts with nothing submitted


def test_submit_with_missing_argument_is_an_error(make_sandbox):
    sb = make_sandbox()
    sb.set_submit(["answer", "note"])
    r = sb.execute("submit(1)")
    assert r.submitted is None
    assert r.error is not None and r.error.type == "TypeError" and "note" in r.error.message


# --- limits -------------------------------------------------------------------------------------


def test_runaway_loop_times_out_and_session_lives_on(make_sandbox, backend):
    sb = make_sandbox(timeout=1)
    sb.execute("kept = 'yes'")
    r = sb.execute("while True:\n    pass")
    assert r.timed_out
    assert r.error is not None and r.error.type == "Timeout" and "1 s" in r.error.message
    after = sb.execute("kept")
    if backend == "pyodide":
        assert after.error is None  # the pyodide backend restarts the session and loses variables
    else:
        assert after.value == "'yes'"


def test_memory_bomb_is_stopped_naming_the_limit(make_sandbox, backend):
    sb = make_sandbox(memory_limit="256MB")
    sb.execute("kept = 1")
    r = sb.execute("blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))")
    assert r.error is not None
    assert r.error.type in ("MemoryError", "MemoryLimit")
    assert "256 MB" in r.error.message
    assert sb.execute("1 + 1").value == "2"
    if backend != "pyodide":
        assert sb.execute("kept").value == "1"


def test_per_call_timeout_overrides_default(make_sandbox):
    sb = make_sandbox(timeout=30)
    r = sb.execute("import time\ntime.sleep(5)", timeout=0.5)
    assert r.timed_out


# --- files and environment ----------------------------------------------------------------------


def test_read_and_write_paths(make_sandbox, tmp_path):
    inbox, outbox, hidden = tmp_path / "in", tmp_path / "out", tmp_path / "hidden"
    for d in (inbox, outbox, hidden):
        d.mkdir()
    (inbox / "data.csv").write_text("a,b\n1,2\n")
    (hidden / "secret.txt").write_text("secret")
    sb = make_sandbox(read_paths=[inbox], write_paths=[outbox])
    assert sb.execute(f"open({str(inbox / 'data.csv')!r}).read()").value == repr("a,b\n1,2\n")
    r = sb.execute(f"open({str(outbox / 'result.txt')!r}, 'w').write('written')")
    assert r.error is None, r.error
    assert (outbox / "result.txt").read_text() == "written"
    assert sb.execute(f"open({str(inbox / 'new.txt')!r}, 'w')").error is not None
    assert not (inbox / "new.txt").exists()
    assert sb.execute(f"open({str(hidden / 'secret.txt')!r}).read()").error is not None


def test_scratch_tmp_is_private_and_writable(make_sandbox):
    sb = make_sandbox()
    r = sb.execute("open('/tmp/scratch.txt', 'w').write('x')\nopen('/tmp/scratch.txt').read()")
    assert r.value == "'x'"
    if os.path.exists("/tmp/scratch.txt"):
        with open("/tmp/scratch.txt") as f:
            assert f.read() != "x"


def test_environment_is_only_what_was_passed(make_sandbox, monkeypatch):
    monkeypatch.setenv("CODEACT_TEST_SECRET", "hunter2")
    r = make_sandbox(env={"GREETING": "hi"}).execute("import os\ndict(os.environ)")
    assert r.value == "{'GREETING': 'hi'}"


# --- concurrency ----------------------------------------------------------------------------------


def test_a_tool_that_closes_its_sandbox_ends_the_step_with_a_clear_error(make_sandbox):
    box: dict[str, Any] = {}

    def close_sandbox() -> int:
        """Close the sandbox running this step."""
        box["sandbox"].close()
        return 1

    sb = box["sandbox"] = make_sandbox(tools=[close_sandbox])
    sb.execute("keep = 1")
    r = sb.execute("close_sandbox()\nkeep")
    assert r.error is not None and r.error.type == "SandboxCrashed"
    assert "closed while the step ran" in r.error.message
    after = sb.execute("keep")
    assert after.error is not None and after.error.type == "NameError"
    assert "restarted" in after.stderr


def test_closing_the_sandbox_from_another_thread_ends_the_running_step_with_a_clear_error(make_sandbox):
    running = threading.Event()

    def started() -> None:
        """Say that the step runs."""
        running.set()

    sb = make_sandbox(tools=[started], timeout=120)
    closer = threading.Thread(target=lambda: (running.wait(60), sb.close()))
    closer.start()
    r = sb.execute("import time\nstarted()\ntime.sleep(100)")
    closer.join()
    assert r.error is not None and r.error.type == "SandboxCrashed"
    assert "closed while the step ran" in r.error.message
    assert sb.execute("1 + 1").value == "2"


def test_concurrent_sessions_do_not_share_state(make_sandbox):
    sandboxes = [make_sandbox() for _ in range(4)]
    results: dict[int, str | None] = {}

    def run(i: int) -> None:
        sandboxes[i].execute(f"mine = {i}")
        results[i] = sandboxes[i].execute("mine").value

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: str(i) for i in range(4)}
    assert sandboxes[0].execute("'mine' in dir()").value == "True"


async def test_async_execution_does_not_block_the_event_loop(make_sandbox):
    sb = make_sandbox(tools=[fetch])
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    r = await sb.aexecute("import time\ntime.sleep(0.3)\nfetch('abc')")
    task.cancel()
    assert r.value == "'ABC'"
    assert ticks >= 10


def test_tools_and_submit_cannot_be_redefined_by_the_code(make_sandbox):
    # small models copy the stubs they were shown; the provided functions must stay in force
    sb = make_sandbox(tools=[add])
    r = sb.execute("def add(a, b):\n    return 0\ndef submit(answer):\n    pass\nsubmit(add(1, 2))")
    assert r.submitted == {"answer": 3}
    assert "provides add, submit" in r.stderr
    sb.execute("add = None")
    assert sb.execute("add(2, 2)").value == "4"


# --- record types in tool signatures ------------------------------------------------------------------
@dataclasses.dataclass
class Point:
    """A point on the map."""

    x: float
    y: float


class Pair(typing.NamedTuple):
    a: int
    b: int


def distance(p: Point, q: Point | None = None) -> float:
    """Distance from the origin, or between two points."""
    q = q or Point(0, 0)
    return ((p.x - q.x) ** 2 + (p.y - q.y) ** 2) ** 0.5


def swap(pair: Pair) -> Pair:
    """Swap a pair."""
    return Pair(pair.b, pair.a)


def test_record_types_a_tool_takes_exist_in_the_sandbox(make_sandbox):
    sb = make_sandbox(tools=[distance, swap])
    r = sb.execute(
        "print(distance(Point(3, 4)), distance(Point(1, 1), q=Point(1, 2)), swap(Pair(1, 2)).a)\nPoint.__doc__"
    )
    assert r.error is None, r.error
    assert r.stdout == "5.0 1.0 2\n"
    assert r.value == repr("A point on the map.")
