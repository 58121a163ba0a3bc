"""Any Python callable as a tool: its name, typed parameters, JSON schema and a Python stub."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import dataclasses
import functools
import inspect
import keyword
import os
import re
import typing
from collections.abc import Callable
from typing import Any, overload

import docstring_parser
from pydantic import TypeAdapter, ValidationError

from codeact.errors import CodeActError

_EMPTY = inspect.Parameter.empty


class ToolArgumentError(CodeActError, TypeError):
    """The arguments given to a tool do not fit its parameters; the message names the argument."""


def _target(func: Callable[..., Any]) -> Callable[..., Any]:
    """The function whose docstring and annotations describe `func`."""
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.ismethod(func):
        return func.__func__
    if not (inspect.isfunction(func) or inspect.isbuiltin(func)) and hasattr(func, "__call__"):  # noqa: B004
        call = type(func).__call__
        return call
    return func


def _default_name(func: Callable[..., Any]) -> str:
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__name__", None)
    if name is None:
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(func).__name__).lower()
    return name


def _type_hints(target: Callable[..., Any]) -> dict[str, Any]:
    """Resolved annotations; one that cannot be resolved stays a string without losing the others."""
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:
        pass
    raw = getattr(target, "__annotations__", None) or {}
    namespace = dict(getattr(target, "__globals__", {}))
    closure = getattr(target, "__closure__", None) or ()
    code = getattr(target, "__code__", None)
    if code is not None:
        for var, cell in zip(code.co_freevars, closure, strict=False):
            with contextlib.suppress(ValueError):
                namespace[var] = cell.cell_contents
    hints: dict[str, Any] = {}
    for pname, annotation in raw.items():
        if isinstance(annotation, str):
            with contextlib.suppress(Exception):
                annotation = eval(annotation, namespace)  # the tool author's own annotation text
        hints[pname] = annotation
    return hints


def _is_async(func: Callable[..., Any]) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(type(func), "__call__", None)  # noqa: B004
    return not inspect.isfunction(func) and call is not None and inspect.iscoroutinefunction(call)


def type_text(annotation: Any) -> str:
    """A readable Python spelling of a type annotation (`list[int]`, `str | None`)."""
    if annotation is _EMPTY:
        return ""
    if isinstance(annotation, str):
        return annotation
    if annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    if origin is None:
        if isinstance(annotation, type):
            return annotation.__name__
        return str(annotation).replace("typing.", "")
    args = typing.get_args(annotation)
    if origin is typing.Union or (
        hasattr(__import__("types"), "UnionType") and origin is __import__("types").UnionType
    ):
        return " | ".join(type_text(a) for a in args)
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is typing.Annotated:
        return type_text(args[0])
    name = getattr(origin, "__name__", str(origin).replace("typing.", ""))
    if not args:
        return name
    return f"{name}[{', '.join('...' if a is Ellipsis else type_text(a) for a in args)}]"


def record_types(annotations: Any) -> list[type]:
    """The dataclasses, pydantic models and named tuples that `annotations` use, nested ones first."""
    found: list[type] = []

    def visit(annotation: Any) -> None:
        for arg in typing.get_args(annotation):
            visit(arg)
        if isinstance(annotation, type) and _is_record(annotation) and annotation not in found:
            for field_type in _record_fields(annotation).values():
                visit(field_type)
            found.append(annotation)

    for annotation in annotations:
        visit(annotation)
    return found


def _is_record(cls: type) -> bool:
    return (
        dataclasses.is_dataclass(cls)
        or hasattr(cls, "model_fields")
        or (issubclass(cls, tuple) and hasattr(cls, "_fields"))
    )


def _record_fields(cls: type) -> dict[str, Any]:
    if dataclasses.is_dataclass(cls):
        with contextlib.suppress(Exception):
            return typing.get_type_hints(cls)
        return {f.name: f.type for f in dataclasses.fields(cls)}
    if hasattr(cls, "model_fields"):
        return {name: info.annotation for name, info in cls.model_fields.items()}
    return dict(getattr(cls, "__annotations__", {}) or dict.fromkeys(cls._fields, Any))  # type: ignore[attr-defined]


def record_source(cls: type) -> str:
    """A dataclass of the same name and fields, as Python source: what the sandbox gets for a record
    type of the host (values built from it reach the host's tools as the real type)."""
    lines = ["import dataclasses as __dataclasses", "@__dataclasses.dataclass", f"class {cls.__name__}:"]
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")  # its own, not a base class's
    if doc and not doc.startswith(f"{cls.__name__}("):  # not the generated dataclass/namedtuple doc
        lines.append(f"    {doc.splitlines()[0]!r}")
    fields = _record_fields(cls)
    lines.extend(f"    {name}: {type_text(annotation) or 'object'}" for name, annotation in fields.items())
    if not fields:
        lines.append("    pass")
    return "\n".join(lines)


def _literal_repr(value: Any) -> str | None:
    text = repr(value)
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return text


class Tool:
    """A host callable exposed to generated code.

    Functions, closures, bound methods, callable objects, `functools.partial` and async functions all
    work. The name, parameter types and descriptions come from the callable's signature and docstring;
    `name` and `desc` override them. Calling a tool validates its arguments first.
    `requires_approval=True` sends each call from code to the run's approver first; `max_calls` caps
    how often the code may call it in one run.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        name: str | None = None,
        desc: str | None = None,
        arg_desc: dict[str, str] | None = None,
        *,
        requires_approval: bool | None = None,
        max_calls: int | None = None,
    ) -> None:
        if isinstance(func, Tool):
            requires_approval = func.requires_approval if requires_approval is None else requires_approval
            max_calls = func.max_calls if max_calls is None else max_calls
            func = func.func
        if max_calls is not None and (isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 0):
            raise ValueError(f"max_calls must be a non-negative integer, got {max_calls!r}")
        self.requires_approval = bool(requires_approval)
        self.max_calls = max_calls
        if not callable(func):
            raise TypeError(f"a tool must be callable, got {type(func).__name__}: {func!r}")
        self.func = func
        self.name = name or _default_name(func)
        if not self.name.isidentifier() or keyword.iskeyword(self.name):
            raise ValueError(f"tool name {self.name!r} is not a Python identifier; pass name='...' to Tool()")
        try:
            self.signature = inspect.signature(func)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"cannot read the signature of tool {self.name!r}: {exc}") from exc
        target = _target(func)
        hints = _type_hints(target)
        doc = docstring_parser.parse(inspect.getdoc(target) or "")
        summary = "\n\n".join(p for p in (doc.short_description, doc.long_description) if p)
        self.desc = desc if desc is not None else summary
        self.arg_desc = {p.arg_name: p.description or "" for p in doc.params}
        self.arg_desc.update(arg_desc or {})
        self.annotations: dict[str, Any] = {}
        for pname, param in self.signature.parameters.items():
            annotation = hints.get(pname, param.annotation)
            self.annotations[pname] = annotation
        self.return_annotation = hints.get("return", self.signature.return_annotation)
        self.is_async = _is_async(func)
        self._adapters: dict[str, TypeAdapter[Any]] = {}
        params = list(self.signature.parameters.values())
        #: without *args and **kwargs a call binds without `inspect` (the sandbox's stubs pass keywords)
        self._plain = all(p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)
        self._positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self._keywords = frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        self._required = frozenset(p.name for p in params if p.default is _EMPTY)

    def __repr__(self) -> str:
        return f"Tool({self.name}{self.signature_text()})"

    # --- description -------------------------------------------------------------------------
    def signature_text(self) -> str:
        """`(a: int, b: int = 2) -> int`, with defaults that are not literals shown as `...`."""
        parts: list[str] = []
        seen_kwonly = False
        params = list(self.signature.parameters.values())
        for i, param in enumerate(params):
            if param.kind is param.KEYWORD_ONLY and not seen_kwonly:
                parts.append("*")
                seen_kwonly = True
            if param.kind is param.VAR_POSITIONAL:
                seen_kwonly = True
            prefix = {param.VAR_POSITIONAL: "*", param.VAR_KEYWORD: "**"}.get(param.kind, "")
            text = prefix + param.name
            annotation = type_text(self.annotations.get(param.name, _EMPTY))
            if annotation:
                text += f": {annotation}"
            if param.default is not _EMPTY:
                default = _literal_repr(param.default)
                text += f" = {default if default is not None else '...'}"
            parts.append(text)
            is_last_posonly = param.kind is param.POSITIONAL_ONLY and (
                i + 1 == len(params) or params[i + 1].kind is not param.POSITIONAL_ONLY
            )
            if is_last_posonly:
                parts.append("/")
        result = f"({', '.join(parts)})"
        returns = type_text(self.return_annotation)
        return result + (f" -> {returns}" if returns else "")

    def docstring(self) -> str:
        lines = [self.desc.strip()] if self.desc.strip() else []
        described = {k: v for k, v in self.arg_desc.items() if v}
        if described:
            lines.append("")
            lines.append("Args:")
            lines.extend(f"    {k}: {v}" for k, v in described.items())
        return "\n".join(lines)

    def stub(self, body: str = "...") -> str:
        """The tool as Python source: `def name(...):` with its docstring and `body`."""
        doc = self.docstring().replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
        lines = [f"def {self.name}{self.signature_text()}:"]
        if doc:
            doc_lines = doc.splitlines()
            lines.append(f'    """{doc_lines[0]}')
            lines.extend(f"    {line}" if line else "" for line in doc_lines[1:])
            lines.append('    """' if len(doc_lines) > 1 else "")
            if len(doc_lines) == 1:
                lines[-2] += '"""'
                lines.pop()
        lines.extend(f"    {line}" for line in body.splitlines())
        return "\n".join(lines)

    def json_schema(self) -> dict[str, Any]:
        """An OpenAI-style function schema of the tool."""
        properties: dict[str, Any] = {}
        required: list[str] = []
        for pname, param in self.signature.parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            annotation = self.annotations.get(pname, _EMPTY)
            try:
                schema = self._adapter(pname).json_schema() if annotation is not _EMPTY else {}
            except Exception:
                schema = {}
            if self.arg_desc.get(pname):
                schema["description"] = self.arg_desc[pname]
            properties[pname] = schema
            if param.default is _EMPTY:
                required.append(pname)
        return {
            "name": self.name,
            "description": self.desc,
            "parameters": {"type": "object", "properties": properties, "required": required},
        }

    # --- calling ------------------------------------------------------------------------------
    def _adapter(self, pname: str) -> TypeAdapter[Any]:
        if pname not in self._adapters:
            self._adapters[pname] = TypeAdapter(self.annotations[pname])
        return self._adapters[pname]

    def validate(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Bind and type-check arguments (the positional and keyword arguments to call with); raise
        `ToolArgumentError` naming the bad argument."""
        if self._binds(args, kwargs):
            named = zip(self._positional, args, strict=False)
            return tuple(self._checked(p, v) for p, v in named), {p: self._checked(p, v) for p, v in kwargs.items()}
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ToolArgumentError(f"{self.name}{self.signature_text()}: {exc}") from None
        for pname, value in list(bound.arguments.items()):
            kind = self.signature.parameters[pname].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                bound.arguments[pname] = tuple(self._checked(pname, v) for v in value)
            elif kind is inspect.Parameter.VAR_KEYWORD:
                bound.arguments[pname] = {k: self._checked(pname, v) for k, v in value.items()}
            else:
                bound.arguments[pname] = self._checked(pname, value)
        return bound.args, bound.kwargs

    def _binds(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether a call binds to a signature without *args and **kwargs as it stands: every
        parameter given once, the required ones all. Otherwise `inspect` binds it (and says what is wrong)."""
        if not self._plain or len(args) > len(self._positional):
            return False
        by_position = self._positional[: len(args)]
        if kwargs and (not self._keywords.issuperset(kwargs) or not kwargs.keys().isdisjoint(by_position)):
            return False
        return self._required <= {*by_position, *kwargs}

    def _checked(self, pname: str, value: Any) -> Any:
        """`value` validated against the parameter's annotation; unchecked where pydantic cannot check it."""
        annotation = self.annotations.get(pname, _EMPTY)
        if annotation is _EMPTY or annotation is Any:
            return value
        try:
            return self._adapter(pname).validate_python(value)
        except ValidationError as exc:
            if isinstance(value, os.PathLike):  # a pathlib path where the tool takes the path's text
                with contextlib.suppress(ValidationError):
                    return self._adapter(pname).validate_python(os.fspath(value))
            problems = "; ".join(e["msg"] for e in exc.errors()[:3])
            raise ToolArgumentError(
                f"argument {pname!r} of tool {self.name!r} should be "
                f"{type_text(annotation)}, got {type(value).__name__} {_short_repr(value)}: "
                f"{problems}"
            ) from None
        except Exception:  # annotations pydantic cannot validate are passed through unchecked
            return value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = self.validate(args, kwargs)
        if self.is_async:
            return _run_coroutine_sync(self.func(*args, **kwargs))
        return self.func(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Call from async code: async tools are awaited, sync ones run in a worker thread."""
        args, kwargs = self.validate(args, kwargs)
        if self.is_async:
            return await self.func(*args, **kwargs)
        return await asyncio.to_thread(self.func, *args, **kwargs)


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _run_coroutine_sync(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, also when this thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def as_tool(obj: Callable[..., Any] | Tool) -> Tool:
    return obj if isinstance(obj, Tool) else Tool(obj)


@overload
def tool(func: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    desc: str | None = None,
    requires_approval: bool = False,
    max_calls: int | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    desc: str | None = None,
    requires_approval: bool = False,
    max_calls: int | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Decorator: `@tool` or `@tool(name=..., desc=..., requires_approval=True, max_calls=5)` turns a
    callable into a `Tool`."""
    if func is not None:
        return Tool(func, name=name, desc=desc, requires_approval=requires_approval, max_calls=max_calls)
    return lambda f: Tool(f, name=name, desc=desc, requires_approval=requires_approval, max_calls=max_calls)
