"""Signatures: string and class forms, the supported types, and errors that point at the problem."""

from __future__ import annotations

import datetime
import decimal
import enum
from typing import Optional

import pytest
from pydantic import BaseModel

import codeact
from codeact.signature import OutputValidationError, Signature, SignatureError, ensure_signature


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Ticket(BaseModel):
    title: str
    tags: list[str]


def test_untyped_fields_are_str() -> None:
    sig = Signature("question -> answer")
    assert list(sig.inputs) == ["question"]
    assert sig.outputs["answer"].annotation is str
    assert sig.text() == "question -> answer"


def test_typed_string_form() -> None:
    sig = Signature("numbers: list[int], k: int -> top: list[int], note: str")
    assert sig.inputs["numbers"].annotation == list[int]
    assert sig.inputs["k"].annotation is int
    assert sig.outputs["top"].annotation == list[int]
    assert sig.text() == "numbers: list[int], k: int -> top: list[int], note"


@pytest.mark.parametrize(
    ("type_src", "good", "bad"),
    [
        ("float", 1.5, "x"),
        ("bool", True, "maybe"),
        ("dict[str, int]", {"a": 1}, {"a": "x"}),
        ("tuple[int, str]", (1, "a"), (1, 2, 3)),
        ("set[int]", {1, 2}, {"a"}),
        ("Optional[int]", None, "x"),
        ("int | None", None, "x"),
        ("Literal['a,b', 'c']", "a,b", "d"),
        ("list[dict[str, list[float]]]", [{"a": [1.0]}], [{"a": ["x"]}]),
        ("tuple[int, ...]", (1, 2, 3), ("x",)),
        ("datetime", datetime.datetime(2024, 1, 1, 12), "noon"),
        ("date", datetime.date(2024, 2, 29), "2024-02-30"),
        ("timedelta", datetime.timedelta(hours=1), "an hour"),
        ("Decimal", decimal.Decimal("1.10"), "one"),
        ("list[date]", [datetime.date(2024, 1, 1)], ["x"]),
    ],
)
def test_string_form_types_validate(type_src: str, good: object, bad: object) -> None:
    sig = Signature(f"q -> out: {type_src}")
    assert sig.validate_outputs({"out": good})["out"] == good
    with pytest.raises(OutputValidationError) as info:
        sig.validate_outputs({"out": bad})
    assert "out" in info.value.problems


def test_custom_types_in_string_form_come_from_types_argument() -> None:
    sig = Signature("text -> priority: Priority, ticket: Ticket", types={"Priority": Priority, "Ticket": Ticket})
    out = sig.validate_outputs({"priority": "high", "ticket": {"title": "t", "tags": ["a"]}})
    assert out["priority"] is Priority.HIGH
    assert out["ticket"] == Ticket(title="t", tags=["a"])


def test_class_form_with_docstring_descriptions_and_rich_types() -> None:
    class Triage(codeact.Signature):
        """Classify a support ticket."""

        ticket: str = codeact.InputField(desc="the ticket text")
        priority: Priority = codeact.OutputField(desc="how urgent it is")
        details: Optional[Ticket] = codeact.OutputField()  # noqa: UP045 - the form users write

    sig = ensure_signature(Triage)
    assert sig.instructions == "Classify a support ticket."
    assert sig.inputs["ticket"].desc == "the ticket text"
    assert list(sig.outputs) == ["priority", "details"]
    stub = sig.submit_stub()
    assert stub.startswith("def submit(priority: Priority, details: Ticket | None) -> None:")
    assert "how urgent it is" in stub
    assert "Priority is one of 'low', 'high'" in stub
    assert "Ticket is a dict {title: str, tags: list[str]}" in stub
    assert sig.validate_outputs({"priority": "low", "details": None})["priority"] is Priority.LOW


def test_class_form_resolves_types_defined_in_a_function() -> None:
    class Color(enum.Enum):
        RED = 1

    class Paint(codeact.Signature):
        wall: str = codeact.InputField()
        color: Color = codeact.OutputField()

    assert Paint().validate_outputs({"color": 1})["color"] is Color.RED


def test_class_form_inherits_fields() -> None:
    class Base(codeact.Signature):
        question: str = codeact.InputField()
        answer: int = codeact.OutputField()

    class WithNote(Base):
        """Answer and explain."""

        note: str = codeact.OutputField()

    sig = WithNote()
    assert list(sig.inputs) == ["question"]
    assert list(sig.outputs) == ["answer", "note"]


def test_class_field_without_marker_is_an_error() -> None:
    with pytest.raises(SignatureError, match="'answer' needs a value InputField"):

        class Bad(codeact.Signature):
            answer: int


def test_instructions_override() -> None:
    assert Signature("a -> b", instructions=" Do it. ").instructions == "Do it."


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("question answer", "exactly one '->'"),
        ("a -> b -> c", "exactly one '->'"),
        ("a -> ", "no output fields"),
        ("a,,b -> c", "input 2 has no name"),
        ("my question -> answer", "'my question' is not a Python identifier"),
        ("a -> class", "'class' is not a Python identifier"),
        ("a -> b: intt", "unknown type 'intt'"),
        ("a -> b: list[", "unclosed bracket"),
        ("a: -> b", "'a' has ':' but no type"),
        ("a -> a", "'a' is both an input and an output"),
        ("a, a -> b", "input 'a' appears twice"),
        ("a -> trajectory", "'trajectory' is reserved"),
        ("a -> b: Literal[x]", "Literal[...] takes constants"),
        ("a -> b: 3", "only allowed inside Literal"),
    ],
)
def test_malformed_signatures_fail_at_construction(spec: str, message: str) -> None:
    with pytest.raises(SignatureError, match=message.replace("[", r"\[").replace("(", r"\(")):
        Signature(spec)


def test_string_types_are_never_evaluated(tmp_path: object) -> None:
    with pytest.raises(SignatureError, match="is not a type expression"):
        Signature("a -> b: __import__('os').system('true')")
    with pytest.raises(SignatureError, match="cannot resolve"):
        Signature("a -> b: os.path")


def test_unvalidatable_type_is_refused() -> None:
    class Opaque:
        pass

    with pytest.raises(SignatureError, match="cannot validate"):
        Signature("a -> b: Opaque", types={"Opaque": Opaque})


def test_validate_inputs_names_missing_unknown_and_mistyped() -> None:
    sig = Signature("numbers: list[int], k: int -> top: list[int]")
    assert sig.validate_inputs({"numbers": [1], "k": "2"}) == {"numbers": [1], "k": 2}
    with pytest.raises(TypeError, match="missing input 'k'"):
        sig.validate_inputs({"numbers": [1]})
    with pytest.raises(TypeError, match="unexpected input 'n'"):
        sig.validate_inputs({"numbers": [1], "k": 1, "n": 2})
    with pytest.raises(TypeError, match="input 'numbers' should be list\\[int\\]"):
        sig.validate_inputs({"numbers": ["x"], "k": 1})


def test_validate_outputs_reports_each_field() -> None:
    sig = Signature("q -> a: int, b: list[int], c: str")
    with pytest.raises(OutputValidationError) as info:
        sig.validate_outputs({"a": "forty", "b": [1, "x"], "d": 1})
    problems = info.value.problems
    assert "should be int" in problems["a"] and "'forty'" in problems["a"]
    assert "should be list[int]" in problems["b"]
    assert problems["c"] == "missing"
    assert "not an output" in problems["d"]


def test_numbers_submitted_for_str_outputs_are_accepted() -> None:
    assert Signature("q -> a: str").validate_outputs({"a": 42}) == {"a": "42"}


def test_signature_rejects_non_string_spec() -> None:
    with pytest.raises(SignatureError, match="got int"):
        ensure_signature(42)  # type: ignore[arg-type]
