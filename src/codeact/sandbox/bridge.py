"""What the step driver sends and checks: tool stubs and record types to define, checked results.

Everything here treats what the sandbox sends as untrusted: a message that breaks the protocol
raises `Malformed`, and text is cut to its limit and made printable.
"""

from __future__ import annotations

import time
from typing import Any

from codeact.sandbox import wire
from codeact.sandbox.interpreter import ExecutionError, ExecutionResult, Failure, ToolCall
from codeact.tools import Tool, record_source, record_types


class Malformed(Exception):
    """A message from the sandbox that breaks the protocol."""


def call_body(tool: Tool) -> str:
    """The stub body that forwards a call's arguments, as passed, to the host."""
    params = list(tool.signature.parameters.values())
    has_star = any(p.kind is p.VAR_POSITIONAL for p in params)
    positional: list[str] = []
    keywords: list[str] = []
    star = double = None
    for param in params:
        if param.kind is param.VAR_POSITIONAL:
            star = param.name
        elif param.kind is param.VAR_KEYWORD:
            double = param.name
        elif param.kind is param.POSITIONAL_ONLY or (param.kind is param.POSITIONAL_OR_KEYWORD and has_star):
            positional.append(param.name)  # before *args they can only be passed by position
        else:
            keywords.append(param.name)
    elided = [
        p.name
        for p in params
        if p.default is not p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and "= ..." in tool.signature_text()
    ]
    args = "[" + ", ".join(positional) + "]" + (f" + list({star})" if star else "")
    kwargs = "{" + ", ".join(f"{k!r}: {k}" for k in keywords) + "}"
    lines = [f"__args = {args}", f"__kwargs = {kwargs}"]
    if double:
        lines.append(f"__kwargs.update({double})")
    # a default the stub could not spell is shown as `...`: leave it to the host's own default
    lines += [f"if __kwargs.get({name!r}, None) is ...: del __kwargs[{name!r}]" for name in elided if name in keywords]
    lines.append(f"return __codeact_call__({tool.name!r}, __args, __kwargs)")
    return "\n".join(lines)


def definitions(tools: dict[str, Tool]) -> list[dict[str, str]]:
    """What a session defines, as sent with a step: stand-ins for the record types the tools take
    (dataclasses, models, named tuples), then the tool stubs."""
    types = record_types(a for t in tools.values() for a in [*t.annotations.values(), t.return_annotation])
    classes = [{"name": cls.__name__, "source": record_source(cls)} for cls in types if cls.__name__ not in tools]
    return classes + [{"name": t.name, "source": t.stub(call_body(t))} for t in tools.values()]


def parse_result(
    message: dict[str, Any], started: float, calls: list[ToolCall], output_limit: int, value_limit: int
) -> ExecutionResult:
    """The sandbox's report of a completed step, checked and cut to the limits."""
    truncated = message.get("stdout_truncated") or 0
    if not isinstance(truncated, int) or isinstance(truncated, bool):
        raise Malformed("stdout_truncated must be an integer")
    error = message.get("error")
    submitted = None
    if message.get("submitted") is not None:
        submitted = wire.decode(message["submitted"])
        if not isinstance(submitted, dict):
            raise Malformed("submitted values must be a dict")
    return ExecutionResult(
        stdout=text(message.get("stdout", ""), output_limit),
        stderr=text(message.get("stderr", ""), output_limit),
        value=None if message.get("value") is None else text(message["value"], value_limit),
        error=None if error is None else parse_error(error),
        duration_s=time.perf_counter() - started,
        timed_out=message.get("timed_out") is True,
        submitted=submitted,
        tool_calls=calls,
        stdout_truncated=max(0, truncated),
    )


def text(value: Any, limit: int) -> str:
    """Text from the sandbox: a str, printable on the host, at most about `limit` characters."""
    if not isinstance(value, str):
        raise Malformed(f"expected text, got {type(value).__name__}")
    if len(value) > limit:
        half = limit // 2
        value = f"{value[:half]}\n... [{len(value) - 2 * half} characters cut] ...\n{value[-half:]}"
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def parse_error(raw: Any) -> ExecutionError:
    if not isinstance(raw, dict):
        raise Malformed("an error must be an object")
    lineno, line = raw.get("lineno"), raw.get("line")
    if lineno is not None and (not isinstance(lineno, int) or isinstance(lineno, bool)):
        raise Malformed("an error's lineno must be an integer")
    return ExecutionError(
        type=text(raw.get("type", "Error"), 200),
        message=text(raw.get("message", ""), 20_000),
        traceback=text(raw.get("traceback") or "", 20_000),
        lineno=lineno,
        line=None if line is None else text(line, 2_000),
    )


def failure(kind: Failure, message: str, started: float, *, timed_out: bool = False) -> ExecutionResult:
    """A step that ended without a result of its own: a limit, a crash, a broken protocol."""
    return ExecutionResult(
        error=ExecutionError(Failure(kind).value, message),
        duration_s=time.perf_counter() - started,
        timed_out=timed_out,
    )
