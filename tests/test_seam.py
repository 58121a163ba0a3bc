"""The seam between generated code and the host, on every backend: inputs, deadlines, paths, options."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import hashlib
import os
import subprocess
import sys
import threading

import pydantic
import pytest

from codeact import Sandbox, SandboxOptions
from codeact.sandbox.options import parse_size

Point = collections.namedtuple("Point", ["x", "y"])


@dataclasses.dataclass
class Box:
    width: int
    label: str


class Order(pydantic.BaseModel):
    sku: str
    units: int


def echo(value: object) -> object:
    return value


# --- inputs cross the wire --------------------------------------------------------------------------
def test_inputs_arrive_as_their_own_types(make_sandbox):
    sb = make_sandbox()
    sb.set_variables(
        {
            "when": dt.datetime(2024, 5, 17, 9, 30),
            "day": dt.date(2024, 1, 2),
            "price": decimal.Decimal("1.10"),
            "raw": b"\x00\xff",
            "tags": {"a", "b"},
            "pair": (1, "x"),
            "point": Point(3, 4),
            "box": Box(2, "crate"),
            "order": Order(sku="A-1", units=7),
            "keys": {"k": 1}.keys(),
        }
    )
    r = sb.execute(
        "print(type(when).__name__, type(day).__name__, price + 1, raw[1], sorted(tags), pair[1])\n"
        "print(point.x + point.y, type(point).__name__, box.width, box.label, order.units, order.sku, keys)"
    )
    assert r.error is None, r.error
    assert r.stdout.splitlines() == ["datetime date 2.10 255 ['a', 'b'] x", "7 Point 2 crate 7 A-1 ['k']"]


LEDGER = """
import dataclasses, os

@dataclasses.dataclass
class Tally:
    items: list
    count: int = dataclasses.field(init=False)

    def __post_init__(self):
        self.count = len(self.items)

@dataclasses.dataclass
class Report:
    path: str

    def __post_init__(self):
        if not os.path.exists(self.path):
            raise ValueError(f"no report at {self.path}")
"""


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    """A module of the user's, importable on the host and (read-only) in a sandbox made after it."""
    (tmp_path / "ledger.py").write_text(LEDGER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ledger", raising=False)
    import ledger

    return ledger


def test_a_directory_put_on_the_import_path_after_a_sandbox_started_is_importable_when_granted(
    make_sandbox, backend, tmp_path, monkeypatch
):
    if backend == "pyodide":
        pytest.skip("Pyodide imports from its own file system, not the host's import path")
    make_sandbox().execute("1")  # the backend is up, with the import path of then
    (tmp_path / "late_module.py").write_text("ANSWER = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = make_sandbox(read_paths=[str(tmp_path)]).execute("import late_module\nlate_module.ANSWER")
    assert r.error is None and r.value == "42", r.error


def test_a_dataclass_with_fields_its_constructor_does_not_take_arrives(make_sandbox, backend, ledger, tmp_path):
    if backend == "pyodide":
        pytest.skip("Pyodide cannot import the host's modules: it builds a stand-in")
    sb = make_sandbox(read_paths=[str(tmp_path)])
    tally = ledger.Tally([4, 5])
    tally.count = 7  # changed after construction: the value arrives as it is, not as rebuilt
    sb.set_variables({"tally": tally})
    r = sb.execute("import ledger\ntype(tally) is ledger.Tally, tally.items, tally.count")
    assert r.error is None, r.error
    assert r.value == "(True, [4, 5], 7)"


def test_an_input_the_sandbox_cannot_rebuild_fails_the_step_naming_it_and_the_session_goes_on(
    make_sandbox, backend, ledger, tmp_path, tmp_path_factory
):
    if backend == "pyodide":
        pytest.skip("Pyodide cannot import the host's modules: it builds a stand-in, which has no checks")
    sb = make_sandbox(read_paths=[str(tmp_path)])
    sb.execute("kept = 1")
    report = tmp_path_factory.mktemp("reports") / "report.txt"  # on the host, not granted to the sandbox
    report.write_text("done")
    sb.set_variables({"report": ledger.Report(str(report)), "fine": 2})
    r = sb.execute("ran = True")
    assert r.error is not None and r.error.type == "ValueError"
    assert (
        f"input 'report' could not be rebuilt in the sandbox (ledger.Report refused the value: ValueError: no report at {report})"
        in r.error.message
    )
    r = sb.execute("kept, fine, 'ran' in dir()")  # the session, its variables and the other input are there
    assert r.error is None and r.value == "(1, 2, False)", r.error


def test_a_path_passed_to_a_tool_typed_str_arrives_as_its_text(make_sandbox, tmp_path):
    """Code builds paths with pathlib; a tool that takes `path: str` gets the path's text."""

    def size(path: str) -> int:
        assert isinstance(path, str)
        return os.path.getsize(path)

    (tmp_path / "data.txt").write_text("12345")
    sb = make_sandbox(tools=[size])
    result = sb.execute(f"import pathlib\nsize(pathlib.Path({str(tmp_path)!r}) / 'data.txt')")
    assert result.error is None, result.error
    assert result.value == "5"
    assert result.tool_calls[0].error is None


def test_a_tool_result_the_sandbox_cannot_rebuild_is_an_error_the_code_can_catch(
    make_sandbox, backend, ledger, tmp_path, tmp_path_factory
):
    if backend == "pyodide":
        pytest.skip("Pyodide cannot import the host's modules: it builds a stand-in, which has no checks")
    report = tmp_path_factory.mktemp("reports") / "report.txt"  # on the host, not granted to the sandbox
    report.write_text("done")

    def latest_report() -> object:
        return ledger.Report(str(report))

    sb = make_sandbox([latest_report], read_paths=[str(tmp_path)])
    r = sb.execute("try:\n    latest_report()\nexcept ValueError as exc:\n    print(exc)")
    assert r.error is None, r.error
    assert r.stdout.startswith("tool 'latest_report' returned a value that could not be rebuilt in the sandbox")
    assert f"ledger.Report refused the value: ValueError: no report at {report}" in r.stdout


def test_dataframes_and_arrays_arrive_as_themselves(make_sandbox, backend):
    import numpy as np
    import pandas as pd

    sb = make_sandbox()
    frame = pd.DataFrame({"region": ["north", "south"], "units": [3, 5], "shipped": [pd.Timestamp(0), pd.NaT]})
    sb.set_variables({"df": frame, "series": frame["units"], "matrix": np.arange(6).reshape(2, 3), "never": pd.NaT})
    r = sb.execute("print(type(df).__name__, df['units'].sum(), series.name, matrix.shape, matrix.dtype, never)")
    if backend == "pyodide":  # no pandas there offline: the step says so, and the session goes on
        assert r.error is not None and "input 'df' could not be rebuilt in the sandbox" in r.error.message
        assert "pandas is not installed" in r.error.message
        assert sb.execute("1 + 1").value == "2"
        return
    assert r.error is None, r.error
    assert r.stdout == "DataFrame 8 units (2, 3) int64 NaT\n"


def test_a_grouped_frame_crosses_both_ways_with_its_index_and_dtypes(make_sandbox, backend):
    if backend == "pyodide":
        pytest.skip("pandas cannot be loaded in Pyodide offline")
    import pandas as pd

    def index_of(frame: pd.DataFrame) -> str:
        """The name of the frame's index and the dtype of its returns."""
        return f"{frame.index.name} {frame['returns'].dtype}"

    sales = pd.DataFrame(
        {"region": ["n", "s", "n"], "units": [3, 5, 7], "returns": pd.array([1, None, None], dtype="Int64")}
    )
    sb = make_sandbox(tools=[index_of])
    sb.set_variables({"by_region": sales.groupby("region").agg(units=("units", "sum"), returns=("returns", "max"))})
    r = sb.execute(
        "table = by_region.reset_index()\n"
        "list(table.columns), str(table['returns'].dtype), int(table['returns'].isna().sum()), index_of(by_region)"
    )
    assert r.error is None, r.error
    assert r.value == "(['region', 'units', 'returns'], 'Int64', 1, 'region Int64')"


def test_an_input_larger_than_a_frame_arrives_whole(make_sandbox):
    text = "".join(f"line {i:09d}\n" for i in range(1_500_000))  # 22.5 MB, over the 16 MiB frame limit
    sb = make_sandbox(timeout=120)
    sb.set_variables({"document": text})
    r = sb.execute("import hashlib\nlen(document), hashlib.sha256(document.encode()).hexdigest()")
    assert r.error is None, r.error
    assert r.value == repr((len(text), hashlib.sha256(text.encode()).hexdigest()))


def test_a_million_row_dataframe_arrives_whole(make_sandbox, backend):
    if backend == "pyodide":
        pytest.skip("pandas cannot be loaded in Pyodide offline")
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"units": np.arange(1_000_000), "price": np.linspace(0, 1, 1_000_000)})
    sb = make_sandbox(timeout=120)
    sb.set_variables({"sales": frame})
    r = sb.execute("len(sales), int(sales['units'].sum()), list(sales.columns)")
    assert r.error is None, r.error
    assert r.value == repr((1_000_000, int(frame["units"].sum()), ["units", "price"]))


def test_an_input_that_cannot_cross_is_refused_naming_it(make_sandbox):
    sb = make_sandbox()
    with pytest.raises(TypeError, match=r"input 'handle' of type lock cannot be sent into the sandbox"):
        sb.set_variables({"handle": threading.Lock()})


def test_host_decodes_classes_the_sandbox_names_as_plain_data(make_sandbox):
    sb = make_sandbox(tools=[echo])
    r = sb.execute("import collections\nP = collections.namedtuple('P', 'a b')\nsubmit(answer=P(1, 2))")
    assert r.error is None, r.error
    assert r.submitted == {"answer": (1, 2)} and type(r.submitted["answer"]) is tuple


# --- deadlines include tool time ----------------------------------------------------------------------
def test_a_tool_that_never_returns_ends_the_step_and_keeps_the_variables(make_sandbox):
    release = threading.Event()

    def wait_forever() -> str:
        """Block until released."""
        release.wait()
        return "late"

    sb = make_sandbox(tools=[wait_forever], timeout=1)
    try:
        assert sb.execute("kept = 41").error is None
        r = sb.execute("kept = 0\nwait_forever()")
        assert r.error is not None and r.error.type == "Timeout"
        assert "wait_forever" in r.error.message and "variables from before this step are kept" in r.error.message
        assert [c.name for c in r.tool_calls] == ["wait_forever"] and r.tool_calls[0].abandoned
        r = sb.execute("kept + 1")
        assert r.error is None and r.value == "42"
    finally:
        release.set()


def test_a_program_whose_tool_never_returned_still_exits(tmp_path):
    script = tmp_path / "hung_tool.py"
    script.write_text(
        "import threading\n"
        "from codeact import Sandbox\n"
        "def wait_forever() -> str:\n"
        "    threading.Event().wait()\n"
        "    return 'never'\n"
        "with Sandbox([wait_forever], timeout=1) as sb:\n"
        "    print(sb.execute('wait_forever()').error.type)\n"
        "print('done')\n"
    )
    # the abandoned tool's thread still waits: the interpreter must not wait for it at exit
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["Timeout", "done"]


def test_a_tool_that_exits_raises_in_the_code_and_the_host_lives_on(make_sandbox):
    def leave() -> int:
        """Exit the program."""
        sys.exit(3)

    sb = make_sandbox(tools=[leave])
    r = sb.execute("try:\n    leave()\nexcept BaseException as exc:\n    caught = str(exc)\ncaught")
    assert r.error is None, r.error
    assert "SystemExit" in (r.value or "") and r.tool_calls[0].error == "SystemExit: 3"
    assert sb.execute("1 + 1").value == "2"


class NotFound(KeyError):
    """A tool's own exception, derived from a builtin one."""


class Unavailable(Exception):
    """A tool's own exception, derived from Exception alone."""


def test_a_tools_own_exception_is_caught_by_its_builtin_base_and_keeps_its_name(make_sandbox):
    def find(key: str) -> str:
        if key == "gone":
            raise Unavailable("the index is rebuilding")
        raise NotFound(key)

    sb = make_sandbox(tools=[find])
    r = sb.execute(
        "try:\n    find('x')\nexcept KeyError as exc:\n    caught = (type(exc).__name__, exc.args[0])\n"
        "try:\n    find('gone')\nexcept Exception as exc:\n    caught += (type(exc).__name__, str(exc))\ncaught"
    )
    assert r.error is None, r.error
    assert r.value == "('NotFound', \"'x'\", 'Unavailable', 'the index is rebuilding')"
    r = sb.execute("find('y')")
    assert r.error is not None and r.error.type == "NotFound"


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


def test_a_tool_error_without_a_printable_message_is_still_answered(make_sandbox):
    def fail() -> int:
        """Fail with an exception whose message cannot be shown."""
        raise Unprintable()

    sb = make_sandbox(tools=[fail], timeout=60)
    r = sb.execute("try:\n    fail()\nexcept Exception as exc:\n    caught = str(exc)\ncaught")
    assert r.error is None, r.error  # answered at once, where the step used to wait out its time limit
    assert "Unprintable whose message cannot be shown" in (r.value or "")


def test_a_tool_value_that_fails_to_read_is_refused_naming_why(make_sandbox):
    def broken() -> Box:
        """A record missing a field."""
        box = Box(2, "b")
        del box.label
        return box

    sb = make_sandbox(tools=[broken], timeout=60)
    r = sb.execute("try:\n    broken()\nexcept TypeError as exc:\n    caught = str(exc)\ncaught")
    assert r.error is None, r.error
    assert "cannot receive: AttributeError" in (r.value or "") and "label" in (r.value or "")


def test_a_tool_value_over_the_frame_limit_is_refused_and_the_next_call_works(make_sandbox):
    def dump() -> str:
        """More text than one reply can carry."""
        return "x" * (17 << 20)

    sb = make_sandbox(tools=[dump, echo], timeout=60)
    code = "try:\n    dump()\nexcept ValueError as exc:\n    caught = str(exc)\n(caught, echo(7))"
    r = sb.execute(code)
    assert r.error is None, r.error  # the oversized reply was never sent: the second call reads its own reply
    caught, seven = eval(r.value or "")
    assert "tool 'dump' returned" in caught and "over the limit" in caught and "file path" in caught
    assert seven == 7 and r.tool_calls[0].error is not None and r.tool_calls[0].result is None


def test_a_tool_error_with_a_huge_message_keeps_its_type_and_arrives_cut(make_sandbox):
    def fail() -> int:
        """Fail with more text than one reply can carry."""
        raise ValueError("start " + "y" * (17 << 20) + " end")

    sb = make_sandbox(tools=[fail], timeout=60)
    r = sb.execute(
        "try:\n    fail()\nexcept ValueError as exc:\n    caught = str(exc)\n(len(caught), caught[:6], caught[-4:])"
    )
    assert r.error is None, r.error
    size, head, tail = eval(r.value or "")
    assert head == "start " and tail == " end" and size < 200_000
    assert "characters cut" in (r.tool_calls[0].error or "")


def test_a_tool_calling_execute_on_its_own_sandbox_is_refused_at_once(make_sandbox):
    holder: dict[str, Sandbox] = {}

    def nested() -> str:
        """Run code in the same sandbox."""
        return holder["sb"].execute("1 + 1").value or ""

    sb = holder["sb"] = make_sandbox(tools=[nested], timeout=60)
    assert sb.execute("x = 5").error is None
    r = sb.execute("try:\n    nested()\nexcept Exception as exc:\n    print(exc)\nx")
    assert r.error is None, r.error
    assert "cannot run code in its own sandbox" in r.stdout
    assert r.value == "5"


# --- values --------------------------------------------------------------------------------------------
def test_value_limit_is_one_option(make_sandbox):
    sb = make_sandbox(max_value_chars=40_000)
    r = sb.execute("'x' * 30_000")
    assert r.value == repr("x" * 30_000)
    sb = make_sandbox()
    r = sb.execute("'y' * 30_000")
    assert r.value is not None and "characters cut" in r.value and "print slices" in r.value
    assert len(r.value) < 21_000


def test_dict_views_and_ranges_cross_as_lists(make_sandbox):
    def keys() -> object:
        """Some keys."""
        return {"a": 1, "b": 2}.keys()

    sb = make_sandbox(tools=[keys, echo])
    r = sb.execute("keys(), echo({'x': 1}.items()), echo(range(3))")
    assert r.error is None, r.error
    assert r.value == "(['a', 'b'], [('x', 1)], [0, 1, 2])"


def test_too_many_values_in_tool_arguments_are_refused_in_the_sandbox(make_sandbox):
    sb = make_sandbox(tools=[echo])
    r = sb.execute("try:\n    echo([0] * 1_000_001)\nexcept ValueError as exc:\n    print(exc)")
    assert r.error is None, r.error
    assert "more than 1,000,000 values" in r.stdout


def test_code_compiles_as_plain_python_without_inherited_future_flags(make_sandbox):
    sb = make_sandbox()
    r = sb.execute("def g(x: int) -> int:\n    return x\ng.__annotations__['x'] is int")
    assert r.value == "True"  # an inherited `from __future__ import annotations` would make it 'int'
    r = sb.execute("def f(x: no_such_type) -> None:\n    pass\nf.__annotations__")
    assert r.error is not None and r.error.type == "NameError"  # eager before 3.14, lazy after


def test_top_level_await_runs_and_keeps_variables(make_sandbox):
    sb = make_sandbox(tools=[echo])
    r = sb.execute(
        "import asyncio\nbefore = 1\nawait asyncio.sleep(0)\nafter = before + 1\nawait asyncio.sleep(0, 'v')"
    )
    assert r.error is None, r.error
    assert r.value == "'v'"
    assert sb.execute("before + after").value == "3"


# --- options ---------------------------------------------------------------------------------------------
def test_sizes_are_read_with_units():
    assert parse_size("512MB") == 512 << 20
    assert parse_size("2GiB") == 2 << 30
    assert parse_size("1.5G") == int(1.5 * (1 << 30))
    assert SandboxOptions(memory_limit="2GiB").memory_limit == 2 << 30
    with pytest.raises(ValueError, match="memory_limit=512 is 512 bytes"):
        SandboxOptions(memory_limit=512)
    with pytest.raises(ValueError, match="cannot read memory_limit='lots'"):
        SandboxOptions(memory_limit="lots")


def test_a_str_is_one_path_and_relative_paths_resolve(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    options = SandboxOptions(read_paths="data/")
    assert options.read_paths == (str(tmp_path / "data"),)


def test_wrong_types_name_the_option():
    with pytest.raises(TypeError, match="timeout must be a positive number"):
        SandboxOptions(timeout="30")
    with pytest.raises(TypeError, match="network must be True, False or a list of hosts"):
        SandboxOptions(network="yes")


def test_unknown_options_raise_on_every_backend(backend):
    with pytest.raises(ValueError, match=r"unknown sandbox option 'memroy_limit'; the options are: .*memory_limit"):
        Sandbox(backend=backend, memroy_limit="1GB")


def test_write_grants_over_the_installation_or_codeact_are_refused():
    import codeact

    for path in (sys.prefix, os.path.dirname(codeact.__file__)):
        with pytest.raises(ValueError, match="overlaps"):
            SandboxOptions(write_paths=[path])


# --- paths as the user wrote them ----------------------------------------------------------------------
def test_relative_grants_resolve_inside_as_on_the_host(make_sandbox, tmp_path, monkeypatch):
    (tmp_path / "data" / "in").mkdir(parents=True)
    (tmp_path / "data" / "in" / "sales.csv").write_text("region,units\nnorth,3\n")
    monkeypatch.chdir(tmp_path)
    sb = make_sandbox(read_paths=["data/"])
    r = sb.execute("import os\nprint(os.getcwd())\nprint(open('data/in/sales.csv').read().splitlines()[1])")
    assert r.error is None, r.error
    assert r.stdout.splitlines() == [str(tmp_path), "north,3"]
