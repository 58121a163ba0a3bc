"""The loop of one run, written once: `steps` yields what to do (ask the model, run code, fork the
session) and takes back what came of it; `drive` does each thing synchronously, `adrive` awaits it.

    prompt -> model reply -> code -> sandbox -> observation -> ... -> submit (or a fallback)
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from codeact.lm.base import Message
from codeact.run import RunState
from codeact.sandbox.interpreter import ExecutionResult, Interpreter
from codeact.session import RunSession


@dataclass
class Ask:
    """Ask the model; the answer is a `Completion`, or the `Exception` it raised."""

    messages: list[Message]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Execute:
    """Run code in the session (`base`: in a new fork of that saved session instead)."""

    code: str
    base: Interpreter | None = None


@dataclass
class Fork:
    """Fork the session as it is (for `step_samples`); the answer is the fork, or None."""


@dataclass
class CloseFork:
    """Close a fork made by `Fork`."""

    saved: Interpreter | None


Effect = Ask | Execute | Fork | CloseFork
Steps = Generator[Effect, Any, None]


def steps(run: RunState) -> Steps:
    """What one run does, effect by effect, from the first prompt to the outputs."""
    while (messages := run.next_messages()) is not None:
        reply = yield Ask(messages, run.lm_options())
        if isinstance(reply, Exception):
            run.lm_failed(reply)
            break
        code = run.take_reply(reply)
        if code is None:
            continue
        saved = (yield Fork()) if run.settings.step_samples > 1 else None
        result: ExecutionResult = yield Execute(code)
        while saved is not None and run.wants_sample(result):
            sample = yield Ask(messages, run.sample_options())
            if isinstance(sample, Exception):
                break
            code = run.take_sample(sample, result)
            if code is not None:
                result = yield Execute(code, base=saved)
        if saved is not None:
            yield CloseFork(saved)
        run.take_result(result)
    if run.wants_extraction() and not run.take_variables((yield Execute(run.variables_code()))):
        extraction = yield Ask(run.extraction_messages(), run.extract_options())
        if isinstance(extraction, Exception):
            run.extraction_failed(extraction)
        else:
            run.take_extraction(extraction)


def drive(run: RunState, session: RunSession) -> None:
    """Do each effect of the run synchronously."""
    loop, answer = steps(run), None
    while True:
        try:
            effect = loop.send(answer)
        except StopIteration:
            return
        if isinstance(effect, Ask):
            try:
                answer = run.lm.complete(effect.messages, **effect.options)
            except Exception as exc:
                answer = exc
        elif isinstance(effect, Execute):
            answer = (
                session.execute(effect.code) if effect.base is None else session.execute_from(effect.base, effect.code)
            )
        elif isinstance(effect, Fork):
            answer = session.checkpoint()
        else:
            session.discard(effect.saved)
            answer = None


async def adrive(run: RunState, session: RunSession) -> None:
    """Do each effect of the run without blocking the event loop; async event handlers are awaited."""
    loop, answer = steps(run), None
    while True:
        try:
            effect = loop.send(answer)
        except StopIteration:
            return
        if isinstance(effect, Ask):
            try:
                answer = await run.lm.acomplete(effect.messages, **effect.options)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                answer = exc
        elif isinstance(effect, Execute):
            if effect.base is None:
                answer = await session.aexecute(effect.code)
            else:
                answer = await asyncio.to_thread(session.execute_from, effect.base, effect.code)
        elif isinstance(effect, Fork):
            answer = await asyncio.to_thread(session.checkpoint)
        else:
            await asyncio.to_thread(session.discard, effect.saved)
            answer = None
        await run.flush_async_events()
