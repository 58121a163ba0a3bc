"""Signatures: the typed inputs and outputs of a task, from a string or a class.

    Signature("numbers: list[int], k: int -> top: list[int], note: str")

    class Triage(Signature):
        \"\"\"Classify a support ticket.\"\"\"
        ticket: str = InputField(desc="the ticket text")
        priority: Literal["low", "high"] = OutputField(desc="how urgent it is")

Types in the string form are read without evaluating code: names resolve against builtins and typing
names (`list`, `Optional`, `Literal`, ...) and against `types={"Name": cls}` for enums and pydantic
models. A field without a type is `str`.
"""

from __future__ import annotations

import ast
import datetime
import decimal
import enum
import inspect
import keyword
import sys
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, TypeAdapter

from codeact.errors import CodeActError, ConfigurationError
from codeact.tools import type_text


class SignatureError(ConfigurationError):
    """A signature could not be built; the message says which part is wrong."""


class OutputValidationError(CodeActError, ValueError):
    """Submitted outputs do not fit the signature; `problems` maps each field to what is wrong."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{name}: {msg}" for name, msg in problems.items()))


_SAFE_NAMES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "bytes": bytes,
    "list": list,
    "dict": dict,
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
    "None": None,
    "Any": Any,
    "Optional": typing.Optional,
    "Union": typing.Union,
    "Literal": typing.Literal,
    "List": list,
    "Dict": dict,
    "Tuple": tuple,
    "Set": set,
    "FrozenSet": frozenset,
    "datetime": datetime.datetime,
    "date": datetime.date,
    "time": datetime.time,
    "timedelta": datetime.timedelta,
    "Decimal": decimal.Decimal,
}

# Prediction attributes and sandbox names a field must not shadow.
_RESERVED = frozenset({"trajectory", "end_reason", "usage", "record", "outputs", "fallback", "submit", "print"})


@dataclass
class FieldSpec:
    """One input or output field: name, type and description."""

    name: str
    annotation: Any = str
    desc: str = ""
    kind: Literal["input", "output"] = "input"

    @property
    def type_text(self) -> str:
        return type_text(self.annotation)


@dataclass
class _FieldMarker:
    kind: Literal["input", "output"]
    desc: str


def InputField(*, desc: str = "") -> Any:
    """Marks a class attribute of a `Signature` subclass as an input: `x: int = InputField(desc=...)`."""
    return _FieldMarker("input", desc)


def OutputField(*, desc: str = "") -> Any:
    """Marks a class attribute of a `Signature` subclass as an output."""
    return _FieldMarker("output", desc)


class Signature:
    """The typed inputs and outputs of a task, and its instructions.

    `Signature("question -> answer: int", instructions="...", types={...})`, or subclass it with
    `InputField`/`OutputField` attributes and a docstring as the instructions.
    """

    _class_fields: ClassVar[tuple[dict[str, FieldSpec], dict[str, FieldSpec]] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        try:
            definer = sys._getframe(1).f_locals  # resolves annotations naming local classes
        except ValueError:
            definer = {}
        try:
            hints = typing.get_type_hints(cls, localns=dict(definer), include_extras=True)
        except Exception as exc:
            raise SignatureError(
                f"signature class {cls.__name__}: cannot resolve its type annotations: {exc}"
            ) from None
        inputs: dict[str, FieldSpec] = {}
        outputs: dict[str, FieldSpec] = {}
        for name in inspect.get_annotations(cls):
            if name.startswith("_") or typing.get_origin(hints.get(name)) is ClassVar:
                continue
            marker = cls.__dict__.get(name)
            if not isinstance(marker, _FieldMarker):
                raise SignatureError(
                    f"signature class {cls.__name__}: field {name!r} needs a value "
                    f"InputField(desc=...) or OutputField(desc=...)"
                )
            spec = FieldSpec(name, hints.get(name, str), marker.desc, marker.kind)
            (inputs if marker.kind == "input" else outputs)[name] = spec
        for name, value in cls.__dict__.items():
            if isinstance(value, _FieldMarker) and name not in inputs and name not in outputs:
                raise SignatureError(
                    f"signature class {cls.__name__}: field {name!r} has no type annotation; "
                    f"write `{name}: str = {type(value).__name__}(...)`"
                )
        # Inherit fields from Signature subclasses further up.
        for base in reversed(cls.__mro__[1:]):
            fields = base.__dict__.get("_class_fields")
            if fields:
                inputs = {**fields[0], **inputs}
                outputs = {**fields[1], **outputs}
        cls._class_fields = (inputs, outputs)

    def __init__(
        self,
        spec: str | None = None,
        instructions: str | None = None,
        *,
        types: dict[str, Any] | None = None,
    ) -> None:
        cls = type(self)
        if spec is not None:
            if not isinstance(spec, str):
                raise SignatureError(
                    f"a signature is a string like 'question -> answer' or a Signature "
                    f"subclass, got {type(spec).__name__}"
                )
            inputs, outputs = _parse(spec, {**_SAFE_NAMES, **(types or {})})
            default_doc = ""
        elif cls._class_fields is not None:
            inputs = dict(cls._class_fields[0])
            outputs = dict(cls._class_fields[1])
            default_doc = _own_doc(cls)
        else:
            raise SignatureError("Signature() needs a string like 'question -> answer'")
        self.inputs: dict[str, FieldSpec] = inputs
        self.outputs: dict[str, FieldSpec] = outputs
        self.instructions: str = (instructions if instructions is not None else default_doc).strip()
        self._check()
        self._output_model = _output_model(self.outputs)
        self._input_adapters = {n: TypeAdapter(f.annotation) for n, f in self.inputs.items()}

    # --- construction checks ------------------------------------------------------------------
    def _check(self) -> None:
        where = f"signature {self.text()!r}"
        if not self.outputs:
            raise SignatureError(f"{where} has no output fields; add one after '->'")
        for name in self.inputs.keys() & self.outputs.keys():
            raise SignatureError(f"{where}: {name!r} is both an input and an output")
        for spec in [*self.inputs.values(), *self.outputs.values()]:
            if spec.name.startswith("_"):
                raise SignatureError(f"{where}: field {spec.name!r} must not start with '_'")
            if spec.kind == "output" and spec.name in _RESERVED:
                raise SignatureError(
                    f"{where}: output name {spec.name!r} is reserved (it is an attribute of the "
                    "prediction or a sandbox function); choose another name"
                )
            try:
                TypeAdapter(spec.annotation)
            except (pydantic.PydanticSchemaGenerationError, TypeError) as exc:
                raise SignatureError(
                    f"{where}: field {spec.name!r} has a type codeact cannot validate "
                    f"({type_text(spec.annotation)}): {str(exc).splitlines()[0]}"
                ) from None

    # --- descriptions -------------------------------------------------------------------------
    def text(self) -> str:
        """The string form: `a: list[int], b -> c: int`."""

        def side(fields: dict[str, FieldSpec]) -> str:
            return ", ".join(f.name if f.annotation is str else f"{f.name}: {f.type_text}" for f in fields.values())

        return f"{side(self.inputs)} -> {side(self.outputs)}"

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:
        return f"Signature({self.text()!r})"

    def submit_stub(self) -> str:
        """`def submit(...)` as Python source, with the output types and descriptions."""
        params = ", ".join(f"{f.name}: {f.type_text}" for f in self.outputs.values())
        lines = [f"def submit({params}) -> None:", '    """Finish the task with these outputs.']
        notes = [(f.name, _describe(f)) for f in self.outputs.values()]
        notes = [(n, d) for n, d in notes if d]
        if not notes:
            return f'{lines[0]}\n{lines[1]}"""'
        lines.append("")
        lines.append("    Args:")
        lines.extend(f"        {n}: {d}" for n, d in notes)
        lines.append('    """')
        return "\n".join(lines)

    def output_json_schema(self) -> dict[str, Any]:
        return self._output_model.model_json_schema()

    # --- validation -----------------------------------------------------------------------------
    def validate_inputs(self, values: dict[str, Any]) -> dict[str, Any]:
        """Check that all inputs are given with the right types; raise `TypeError` naming them."""
        unknown = [k for k in values if k not in self.inputs]
        missing = [k for k in self.inputs if k not in values]
        if unknown or missing:
            problems = []
            if missing:
                problems.append(f"missing input {', '.join(map(repr, missing))}")
            if unknown:
                problems.append(f"unexpected input {', '.join(map(repr, unknown))}")
            takes = ", ".join(map(repr, self.inputs)) or "no inputs"
            raise TypeError(f"{' and '.join(problems)}; the signature {self.text()!r} takes {takes}")
        checked: dict[str, Any] = {}
        for name, value in values.items():
            try:
                checked[name] = self._input_adapters[name].validate_python(value)
            except pydantic.ValidationError as exc:
                raise TypeError(
                    f"input {name!r} should be {self.inputs[name].type_text}: {_first_error(exc)}"
                ) from None
        return checked

    def validate_outputs(self, values: dict[str, Any]) -> dict[str, Any]:
        """Typed outputs from submitted values; raise `OutputValidationError` naming each bad field."""
        problems: dict[str, str] = {}
        for name in values:
            if name not in self.outputs:
                problems[name] = f"not an output; the outputs are {', '.join(self.outputs)}"
        for name in self.outputs:
            if name not in values:
                problems[name] = "missing"
        try:
            model = self._output_model.model_validate(values)
        except pydantic.ValidationError as exc:
            for err in exc.errors():
                name = str(err["loc"][0]) if err["loc"] else "?"
                detail = ".".join(str(p) for p in err["loc"][1:])
                msg = err["msg"] + (f" (at {detail})" if detail else "")
                problems.setdefault(
                    name,
                    f"should be {self.outputs[name].type_text if name in self.outputs else '?'}, "
                    f"got {_short(values.get(name))}: {msg}",
                )
            raise OutputValidationError(problems) from None
        if problems:
            raise OutputValidationError(problems)
        return {name: getattr(model, name) for name in self.outputs}

    def validate_partial(self, values: dict[str, Any]) -> dict[str, Any]:
        """The outputs among `values` that validate on their own; the others are left out."""
        good: dict[str, Any] = {}
        for name, value in values.items():
            if name in self.outputs:
                try:
                    good[name] = TypeAdapter(self.outputs[name].annotation).validate_python(value)
                except pydantic.ValidationError:
                    continue
        return good


def ensure_signature(obj: str | Signature | type[Signature]) -> Signature:
    """A `Signature` from a string, a `Signature` subclass or an instance."""
    if isinstance(obj, Signature):
        return obj
    if isinstance(obj, type) and issubclass(obj, Signature):
        return obj()
    if isinstance(obj, str):
        return Signature(obj)
    raise SignatureError(
        f"a signature is a string like 'question -> answer: int' or a codeact.Signature subclass, "
        f"got {type(obj).__name__}"
    )


# --- parsing the string form ------------------------------------------------------------------
def _parse(spec: str, names: dict[str, Any]) -> tuple[dict[str, FieldSpec], dict[str, FieldSpec]]:
    where = f"signature {spec!r}"
    arrows = spec.count("->")
    if arrows != 1:
        raise SignatureError(
            f"{where} needs exactly one '->' between inputs and outputs (like 'question -> answer'), found {arrows}"
        )
    left, right = spec.split("->")
    inputs = _parse_side(left, "input", names, where)
    outputs = _parse_side(right, "output", names, where)
    return inputs, outputs


def _split_top_level(text: str, where: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    quote: str | None = None
    for ch in text:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
            if depth < 0:
                raise SignatureError(f"{where}: unbalanced {ch!r} in {text.strip()!r}")
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if depth != 0 or quote:
        raise SignatureError(f"{where}: unclosed bracket or quote in {text.strip()!r}")
    parts.append("".join(current))
    return parts


def _parse_side(text: str, kind: Literal["input", "output"], names: dict[str, Any], where: str) -> dict[str, FieldSpec]:
    fields: dict[str, FieldSpec] = {}
    if not text.strip():
        return fields
    for position, part in enumerate(_split_top_level(text, where), start=1):
        name, sep, type_src = part.partition(":")
        name = name.strip()
        if not name:
            raise SignatureError(f"{where}: {kind} {position} has no name (stray ',' or ':'?)")
        if not name.isidentifier() or keyword.iskeyword(name):
            raise SignatureError(
                f"{where}: {kind} name {name!r} is not a Python identifier (use letters, digits and '_')"
            )
        if name in fields:
            raise SignatureError(f"{where}: {kind} {name!r} appears twice")
        if sep and not type_src.strip():
            raise SignatureError(f"{where}: {kind} {name!r} has ':' but no type after it")
        annotation = _parse_type(type_src.strip(), names, f"{where}: type of {name!r}") if sep else str
        fields[name] = FieldSpec(name, annotation, "", kind)
    return fields


def parse_type(src: str, where: str = "type") -> Any:
    """A type spelt as in signatures (`int`, `list[str]`, `dict[str, float] | None`), without eval."""
    return _parse_type(src, dict(_SAFE_NAMES), where)


def _parse_type(src: str, names: dict[str, Any], where: str) -> Any:
    try:
        tree = ast.parse(src, mode="eval")
    except SyntaxError:
        raise SignatureError(f"{where}: {src!r} is not a type expression") from None
    return _eval_type(tree.body, names, where, src)


def _eval_type(node: ast.expr, names: dict[str, Any], where: str, src: str) -> Any:
    if isinstance(node, ast.Name):
        if node.id not in names:
            known = ", ".join(
                k for k in _SAFE_NAMES if k[0].islower() or k in ("Any", "Optional", "Literal", "Decimal")
            )
            raise SignatureError(
                f"{where}: unknown type {node.id!r}. Known: {known}; pass your own classes "
                f"with Signature(..., types={{{node.id!r}: {node.id}}})"
            )
        return names[node.id]
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        if node.value.id == "typing" and node.attr in _SAFE_NAMES:
            return _SAFE_NAMES[node.attr]
        raise SignatureError(f"{where}: cannot resolve {ast.unparse(node)!r}")
    if isinstance(node, ast.Constant):
        if node.value is None or node.value is Ellipsis:
            return node.value
        raise SignatureError(f"{where}: constant {node.value!r} is only allowed inside Literal[...]")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left = _eval_type(node.left, names, where, src)
        right = _eval_type(node.right, names, where, src)
        return typing.Union[left, right]  # noqa: UP007 - built at runtime from parsed parts
    if isinstance(node, ast.Subscript):
        base = _eval_type(node.value, names, where, src)
        elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base is typing.Literal:
            values = []
            for elt in elts:
                try:
                    values.append(ast.literal_eval(elt))
                except ValueError:
                    raise SignatureError(f"{where}: Literal[...] takes constants, got {ast.unparse(elt)!r}") from None
            return typing.Literal[tuple(values)]
        args = tuple(_eval_type(e, names, where, src) for e in elts)
        try:
            return base[args if len(args) > 1 else args[0]]
        except TypeError as exc:
            raise SignatureError(f"{where}: {src!r} is not a valid type: {exc}") from None
    raise SignatureError(f"{where}: {ast.unparse(node)!r} is not a type expression")


# --- helpers ----------------------------------------------------------------------------------
def _own_doc(cls: type) -> str:
    doc = cls.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if doc else ""


def _output_model(outputs: dict[str, FieldSpec]) -> type[BaseModel]:
    fields: dict[str, Any] = {name: (f.annotation, ...) for name, f in outputs.items()}
    return pydantic.create_model(  # type: ignore[call-overload, no-any-return]
        "Outputs",
        __config__=ConfigDict(coerce_numbers_to_str=True),
        **fields,
    )


def _describe(field: FieldSpec) -> str:
    """The field's description plus what its type allows when the type name alone does not say."""
    notes = [field.desc] if field.desc else []
    for t in _named_types(field.annotation):
        if isinstance(t, type) and issubclass(t, enum.Enum):
            notes.append(f"{t.__name__} is one of {', '.join(repr(m.value) for m in t)}")
        elif isinstance(t, type) and issubclass(t, BaseModel):
            keys = ", ".join(f"{n}: {type_text(f.annotation)}" for n, f in t.model_fields.items())
            notes.append(f"{t.__name__} is a dict {{{keys}}}")
    return "; ".join(notes)


def _named_types(annotation: Any) -> list[Any]:
    found: list[Any] = []
    if isinstance(annotation, type) and issubclass(annotation, (enum.Enum, BaseModel)):
        found.append(annotation)
    for arg in typing.get_args(annotation):
        for t in _named_types(arg):
            if t not in found:
                found.append(t)
    return found


def _first_error(exc: pydantic.ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return err["msg"] + (f" (at {loc})" if loc else "")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
