"""Any callable as a tool: names, stubs for the prompt, JSON schema, argument validation, calling."""

from __future__ import annotations

import asyncio
import functools
from typing import Literal, Optional

import pytest
from pydantic import BaseModel

import codeact
from codeact.tools import ToolArgumentError


def search(query: str, limit: int = 5, *, exact: bool = False) -> list[str]:
    """Search the catalogue.

    Args:
        query: words to look for
        limit: how many results at most
    """
    return [query] * limit


def test_function_tool_name_stub_and_docs() -> None:
    t = codeact.Tool(search)
    assert t.name == "search"
    assert t.desc == "Search the catalogue."
    assert t.arg_desc == {"query": "words to look for", "limit": "how many results at most"}
    assert t.stub() == (
        "def search(query: str, limit: int = 5, *, exact: bool = False) -> list[str]:\n"
        '    """Search the catalogue.\n'
        "\n"
        "    Args:\n"
        "        query: words to look for\n"
        "        limit: how many results at most\n"
        '    """\n'
        "    ..."
    )
    assert compile(t.stub(), "<stub>", "exec")


def test_name_and_desc_overrides() -> None:
    t = codeact.Tool(search, name="find", desc="Find things.")
    assert t.name == "find" and t.stub().startswith("def find(")
    assert '"""Find things.' in t.stub()


def test_decorator_forms() -> None:
    @codeact.tool
    def plain(x: int) -> int:
        """Double."""
        return 2 * x

    @codeact.tool(name="triple")
    def other(x: int) -> int:
        return 3 * x

    assert isinstance(plain, codeact.Tool) and plain(2) == 4
    assert other.name == "triple" and other(2) == 6


def test_closures_bound_methods_callable_objects_and_partials() -> None:
    rate = 1.1

    def convert(amount: float) -> float:
        """Convert with the current rate."""
        return amount * rate

    class Account:
        def __init__(self) -> None:
            self.balance = 0

        def deposit(self, amount: int) -> int:
            """Add money; returns the balance."""
            self.balance += amount
            return self.balance

    class Weather:
        def __call__(self, city: str) -> str:
            """Today's weather in a city."""
            return f"sunny in {city}"

    account = Account()
    assert codeact.Tool(convert)(10) == pytest.approx(11.0)
    deposit = codeact.Tool(account.deposit)
    assert deposit.stub().startswith("def deposit(amount: int) -> int:")
    deposit(5)
    assert deposit(amount=2) == 7 and account.balance == 7
    weather = codeact.Tool(Weather())
    assert weather.name == "weather"
    assert weather.desc == "Today's weather in a city."
    assert weather("Oslo") == "sunny in Oslo"
    top3 = codeact.Tool(functools.partial(search, limit=3), name="top3")
    assert top3("x") == ["x", "x", "x"]
    assert "query: str" in top3.stub()


def test_lambda_needs_a_name() -> None:
    with pytest.raises(ValueError, match="not a Python identifier"):
        codeact.Tool(lambda x: x)
    assert codeact.Tool(lambda x: x, name="ident")(1) == 1


def test_non_callable_is_refused() -> None:
    with pytest.raises(TypeError, match="must be callable"):
        codeact.Tool(42)  # type: ignore[arg-type]


def test_arguments_are_validated_and_converted() -> None:
    t = codeact.Tool(search)
    assert t("a", "2") == ["a", "a"]  # lax conversion of "2" to int
    with pytest.raises(ToolArgumentError, match="argument 'limit' of tool 'search' should be int"):
        t("a", limit="many")
    with pytest.raises(ToolArgumentError, match="missing a required argument: 'query'"):
        t()
    with pytest.raises(ToolArgumentError, match="unexpected keyword argument 'size'"):
        t("a", size=3)
    with pytest.raises(ToolArgumentError, match="too many positional arguments"):
        t("a", 2, 3)
    with pytest.raises(ToolArgumentError, match="argument 'limit' of tool 'search' should be int"):
        t("a", "many")  # by position too
    assert t(query="a", limit=1) == ["a"]


def test_calls_bind_as_python_binds_them() -> None:
    def f(a: int, /, b: int, c: int = 3, *, d: int, e: int = 5) -> tuple[int, ...]:
        """F."""
        return a, b, c, d, e

    t = codeact.Tool(f)
    assert t(1, 2, d=4) == (1, 2, 3, 4, 5)
    assert t(1, b="2", d=4, c=9) == (1, 2, 9, 4, 5)  # as the sandbox's stubs pass them: by keyword
    assert t(1, 2, 3, e=6, d=4) == (1, 2, 3, 4, 6)
    for args, kwargs, problem in [
        ((1,), {"b": 2}, "missing a required argument: 'd'"),
        ((1, 2), {"b": 2, "d": 4}, "multiple values for argument 'b'"),
        ((), {"a": 1, "b": 2, "d": 4}, "'a' parameter is positional only"),
        ((1, 2), {"d": 4, "z": 0}, "unexpected keyword argument 'z'"),
        ((1, 2, 3, 4), {"d": 4}, "too many positional arguments"),
    ]:
        with pytest.raises(ToolArgumentError, match=problem):
            t(*args, **kwargs)
    with pytest.raises(ToolArgumentError, match="argument 'd' of tool 'f' should be int"):
        t(1, 2, d="four")


class Point(BaseModel):
    x: int
    y: int


def test_rich_parameter_types() -> None:
    def place(
        where: Point,
        mode: Literal["fast", "safe"] = "safe",
        note: Optional[str] = None,  # noqa: UP045
    ) -> str:
        """Place something."""
        return f"{where.x},{where.y} {mode} {note}"

    t = codeact.Tool(place)
    assert t({"x": 1, "y": 2}, "fast") == "1,2 fast None"
    assert "mode: Literal['fast', 'safe'] = 'safe'" in t.stub()
    assert "note: str | None = None" in t.stub()
    with pytest.raises(ToolArgumentError, match="'mode'"):
        t({"x": 1, "y": 2}, "slow")
    schema = t.json_schema()
    assert schema["parameters"]["required"] == ["where"]
    assert schema["parameters"]["properties"]["mode"]["enum"] == ["fast", "safe"]


def test_one_unresolvable_annotation_keeps_the_others_checked() -> None:
    class Local:
        pass

    def f(a: int, b: Local) -> int:  # "Local" cannot be resolved from the module
        """F."""
        return a

    t = codeact.Tool(f)
    assert t.signature_text() == "(a: int, b: Local) -> int"
    with pytest.raises(ToolArgumentError, match="'a'"):
        t("x", Local())


def test_json_schema_has_descriptions() -> None:
    schema = codeact.Tool(search).json_schema()
    assert schema["name"] == "search"
    assert schema["parameters"]["properties"]["query"] == {
        "type": "string",
        "description": "words to look for",
    }
    assert schema["parameters"]["required"] == ["query"]


def test_async_tools() -> None:
    async def fetch(url: str) -> str:
        """Fetch a page."""
        await asyncio.sleep(0)
        return f"<{url}>"

    t = codeact.Tool(fetch)
    assert t.is_async
    assert t("a") == "<a>"  # called from sync code
    assert asyncio.run(t.acall("b")) == "<b>"


async def test_sync_tool_acall_runs_in_a_thread() -> None:
    assert await codeact.Tool(search).acall("q", 1) == ["q"]


def test_defaults_that_are_not_literals_are_shown_as_ellipsis() -> None:
    sentinel = object()

    def f(x: int, y: object = sentinel) -> None:
        """F."""

    assert "y: object = ..." in codeact.Tool(f).stub()


def test_star_args_and_positional_only() -> None:
    def f(a: int, /, *rest: int, **named: str) -> int:
        """Sum."""
        return a + sum(rest)

    t = codeact.Tool(f)
    assert t.signature_text() == "(a: int, /, *rest: int, **named: str) -> int"
    assert t(1, 2, "3") == 6
    with pytest.raises(ToolArgumentError, match="'rest'"):
        t(1, "x")
