"""One run's settings (`RunSettings`, frozen when the run starts) and its state (`RunState`)."""

from __future__ import annotations

import functools
import inspect
import time
import traceback
import typing
import uuid
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from codeact import events
from codeact.events import EventHandler
from codeact.lm.base import LM, Completion, Message, Usage
from codeact.prediction import MaxItersError, Prediction
from codeact.prompt import (
    NO_CODE_OBSERVATION,
    REPLY_GRAMMAR,
    RUN_PYTHON_CHOICE,
    RUN_PYTHON_TOOL,
    STOP_SEQUENCES,
    ActionFormat,
    Prompt,
    observation,
    parse_action,
    parse_json_object,
)
from codeact.sandbox import wire
from codeact.sandbox.driver import Approver
from codeact.sandbox.interpreter import ExecutionResult, Interpreter
from codeact.sandbox.options import SandboxOptions
from codeact.settings import default_lm
from codeact.signature import OutputValidationError, Signature
from codeact.subcalls import SubCalls
from codeact.telemetry import RunTelemetry
from codeact.tools import Tool
from codeact.trajectory import EndReason, Fallback, RejectedSample, RunRecord, Step, StepError

NestedRun = Callable[[LM, str, Any, int], tuple[str, RunRecord]]


@dataclass(frozen=True)
class RunSettings:
    """What a `CodeAct` asks of one run, taken when the run starts (see `CodeAct` for each)."""

    signature: Signature
    prompt: Prompt
    tools: tuple[Tool, ...]
    lm: LM | None
    sub_lm: LM | None
    max_iters: int
    fallback: Fallback
    max_run_tokens: int | None
    max_cost: float | None
    max_reply_tokens: int | None
    temperature: float | None
    on_event: EventHandler | None
    validators: tuple[Callable[[dict[str, Any]], str | None], ...]
    step_samples: int
    step_timeout: float | None
    max_observation_chars: int
    approve: Approver | None
    max_tool_calls: int | None
    sandbox_options: SandboxOptions
    interpreter: Interpreter | Callable[[], Interpreter] | None
    max_llm_calls: int
    nested_run: NestedRun | None  # rlm_query: a nested run one level shallower
    action_format: ActionFormat = "fenced"


class RunState:
    """The state of one run: the loop (`codeact.loop`) feeds it replies and results, and it decides
    what comes next, keeps the record and reports events."""

    def __init__(self, settings: RunSettings, inputs: dict[str, Any]) -> None:
        self.settings = settings
        self.signature = settings.signature
        self.inputs = self.signature.validate_inputs(inputs)
        if settings.interpreter is None:
            _check_transportable(self.inputs)
        self.lm: LM = settings.lm if settings.lm is not None else default_lm()
        self.subcalls = (
            SubCalls(
                settings.sub_lm or self.lm,
                settings.max_llm_calls,
                lambda: self.budget_text() if self.over_budget() else None,
                on_usage=self._count_sub_usage,
                recurse=functools.partial(settings.nested_run, self.lm) if settings.nested_run else None,
            )
            if settings.max_llm_calls
            else None
        )
        self.tools = list(settings.tools) + (self.subcalls.tools() if self.subcalls else [])
        self.record = RunRecord(
            signature=self.signature.text(),
            run_id=uuid.uuid4().hex[:12],
            instructions=self.signature.instructions,
            inputs=dict(self.inputs),
            model=getattr(self.lm, "model", "") or type(self.lm).__name__,
            max_iters=settings.max_iters,
            started_at=time.time(),
        )
        self.outputs: dict[str, Any] | None = None
        self.ended = False
        self.finished = False
        self.step: Step | None = None
        self._current_since = 0  # see take_sample
        self.last_submitted: dict[str, Any] | None = None
        self._pending: list[Awaitable[Any]] = []
        self._handler_failed = False
        self.is_async = False
        self.telemetry = RunTelemetry(self.record.run_id, self.record.model, self.record.signature)

    # --- events ---
    def emit(self, event: events.Event) -> None:
        try:
            self.telemetry.observe(event)
        except Exception as exc:  # tracing must never end a run
            warnings.warn(f"OpenTelemetry spans failed: {exc!r}", stacklevel=2)
        handler = self.settings.on_event
        if handler is None:
            return
        try:
            outcome = handler(event)
            if inspect.isawaitable(outcome):
                if self.is_async:
                    self._pending.append(outcome)
                else:
                    _discard(outcome)
                    raise TypeError("an async on_event handler is only awaited by acall()")
        except Exception as exc:
            if not self._handler_failed:
                self._handler_failed = True
                warnings.warn(f"on_event handler raised {exc!r}; the run goes on", stacklevel=2)

    async def flush_async_events(self) -> None:
        while self._pending:
            try:
                await self._pending.pop(0)
            except Exception as exc:
                warnings.warn(f"on_event handler raised {exc!r}; the run goes on", stacklevel=2)

    def _count_sub_usage(self, usage: Usage) -> None:
        self.record.add_usage(usage)
        self.record.sub_usage = self.record.sub_usage + usage

    def begin(self) -> None:
        self.emit(
            events.RunStarted(
                self.record.run_id,
                self.record.signature,
                dict(self.inputs),
                self.record.model,
                self.settings.max_iters,
            )
        )

    # --- the loop ---
    def next_messages(self) -> list[Message] | None:
        """The messages for the next step, or None when the run is over."""
        if self.ended:
            return None
        if len(self.record.steps) >= self.settings.max_iters:
            self.end("max_iters")
            return None
        if self.over_budget():
            self.end("budget", self.budget_text())
            return None
        self.step = Step(index=len(self.record.steps))
        self.emit(events.StepStarted(self.record.run_id, self.step.index))
        self._lm_started = time.perf_counter()
        brief = bool(getattr(self.lm, "constrains_grammar", False))  # a small local model: the short prompt
        return self.settings.prompt.messages(self.inputs, self.record.steps, brief=brief)

    def lm_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"stop": list(STOP_SEQUENCES)}
        if self.settings.max_reply_tokens is not None:
            options["max_tokens"] = self.settings.max_reply_tokens
        if self.settings.action_format == "tool_call":  # the code comes as run_python's argument
            options["tools"], options["tool_choice"] = [RUN_PYTHON_TOOL], RUN_PYTHON_CHOICE
        elif getattr(self.lm, "constrains_grammar", False):  # a small local model: hold it to the format
            options["grammar"] = REPLY_GRAMMAR
        if self.settings.temperature is not None:
            options["temperature"] = self.settings.temperature
        if self.settings.on_event is not None and self.step is not None:
            index, run_id = self.step.index, self.record.run_id
            options["on_token"] = lambda text: self.emit(events.TokenReceived(run_id, index, text))
        return options

    def lm_failed(self, exc: BaseException) -> None:
        assert self.step is not None
        self.step.lm_s = time.perf_counter() - self._lm_started
        self.end("lm_error", f"the language model failed: {describe_exception(exc)}")

    def take_reply(self, completion: Completion) -> str | None:
        """Record the reply; return its code, or None (the step then ends with a hint)."""
        step = self.step
        assert step is not None
        step.lm_s = time.perf_counter() - self._lm_started
        step.reply = _strip_stop(completion.text)
        step.prompt_tokens = completion.usage.prompt_tokens
        step.completion_tokens = completion.usage.completion_tokens
        step.cost = completion.usage.cost
        step.lm_attempts = getattr(completion, "attempts", 1)
        self.record.add_usage(_as_call(completion.usage))
        step.reasoning, step.code, problem = parse_action(completion, step.reply)
        self._current_since = 0  # where the step's current reply goes in rejected_samples if set aside
        if step.code is None:
            step.observation = problem or NO_CODE_OBSERVATION
            self._end_step()
            return None
        self.emit(events.CodeParsed(self.record.run_id, step.index, step.code, step.reasoning))
        return step.code

    def wants_sample(self, result: ExecutionResult) -> bool:
        """Whether to sample another reply for the step whose code gave `result`."""
        step = self.step
        assert step is not None
        return (
            result.error is not None
            and result.submitted is None
            and not self.over_budget()
            and len(step.rejected_samples) + 1 < self.settings.step_samples
        )

    def sample_options(self) -> dict[str, Any]:
        options = self.lm_options()
        options.pop("on_token", None)
        options.setdefault("temperature", 1.0)  # a further sample should be able to differ
        return options

    def take_sample(self, completion: Completion, failed: ExecutionResult) -> str | None:
        """A further sample for the step whose code failed: when it has code, the failed reply is set
        aside and the sample takes its place (its code is returned); a sample without code is set
        aside itself and the step keeps its reply (None is returned)."""
        step = self.step
        assert step is not None
        reply = _strip_stop(completion.text)
        step.prompt_tokens += completion.usage.prompt_tokens
        step.completion_tokens += completion.usage.completion_tokens
        if completion.usage.cost is not None:
            step.cost = (step.cost or 0.0) + completion.usage.cost
        self.record.add_usage(_as_call(completion.usage))
        reasoning, code, problem = parse_action(completion, reply)
        if code is None:
            step.rejected_samples.append(RejectedSample(reply, None, problem or "the reply had no code"))
            return None
        # the displaced reply came before the code-less samples that followed it: keep the order
        step.rejected_samples.insert(self._current_since, RejectedSample(step.reply, step.code, str(failed.error)))
        self._current_since = len(step.rejected_samples)
        step.reply, step.reasoning, step.code = reply, reasoning, code
        self.emit(events.CodeParsed(self.record.run_id, step.index, code, reasoning))
        return code

    def take_result(self, result: ExecutionResult) -> None:
        step = self.step
        assert step is not None
        step.stdout = result.stdout
        step.stderr = result.stderr
        step.stdout_truncated = result.stdout_truncated
        step.value = result.value
        step.timed_out = result.timed_out
        step.exec_s = result.duration_s
        step.tool_s = result.tool_time_s
        step.tool_calls = result.tool_calls
        step.connections = result.connections
        if self.subcalls is not None:
            step.llm_calls = self.subcalls.take()
        step.error = result.error
        if result.submitted is not None:
            step.submitted = dict(result.submitted)
            self.last_submitted = step.submitted
            try:
                self.outputs = self.signature.validate_outputs(
                    {k: _plain(v, self._wants_mapping(k)) for k, v in result.submitted.items()}
                )
            except OutputValidationError as exc:
                step.error = StepError(
                    "SubmitValidationError",
                    "; ".join(f"{name!r} {msg}" for name, msg in exc.problems.items()),
                )
            else:
                rejection = self._validate(self.outputs)
                if rejection is not None:
                    self.outputs = None
                    step.error = StepError("SubmitRejected", rejection)
                else:
                    step.observation = "submit() accepted; the task is done."
        self._end_step()
        if self.outputs is not None:
            self.end("submitted")

    def _wants_mapping(self, name: str) -> bool:
        spec = self.signature.outputs.get(name)
        annotation = typing.get_origin(spec.annotation) or spec.annotation if spec else None
        return isinstance(annotation, type) and issubclass(annotation, Mapping)

    def _validate(self, outputs: dict[str, Any]) -> str | None:
        """The first user validator's objection to `outputs` (a returned message or a raised error)."""
        for validator in self.settings.validators:
            try:
                verdict = validator(dict(outputs))
            except Exception as exc:
                return str(exc) or type(exc).__name__
            if isinstance(verdict, str) and verdict:
                return verdict
        return None

    def _end_step(self) -> None:
        step = self.step
        assert step is not None
        if self.outputs is None:
            steps_left = self.settings.max_iters - step.index - 1
            step.observation = step.observation or observation(
                step, limit=self.settings.max_observation_chars, steps_left=steps_left
            )
            self.emit(events.Observed(self.record.run_id, step.index, step.observation))
        self.record.steps.append(step)
        self.emit(events.StepEnded(self.record.run_id, step))
        self.step = None
        if self.outputs is None and not self.ended and self.over_budget():
            self.end("budget", self.budget_text())

    # --- budget ---
    def over_budget(self) -> bool:
        usage = self.record.usage
        if self.settings.max_run_tokens is not None and usage.total_tokens >= self.settings.max_run_tokens:
            return True
        return self.settings.max_cost is not None and usage.cost is not None and usage.cost >= self.settings.max_cost

    def budget_text(self) -> str:
        usage = self.record.usage
        return (
            f"budget spent: {usage.total_tokens} tokens (max_run_tokens={self.settings.max_run_tokens}), "
            f"cost {usage.cost} (max_cost={self.settings.max_cost})"
        )

    # --- fallback ---
    def wants_extraction(self) -> bool:
        if self.record.end_reason != "max_iters" or self.outputs is not None:
            return False
        self.record.fallback = self.settings.fallback
        return self.settings.fallback == "extract" and bool(self.record.steps)

    def variables_code(self) -> str:
        """Code that submits the session's variables named like the outputs, if they all exist."""
        names = list(self.signature.outputs)
        return f"submit(**{{name: globals()[name] for name in {names!r}}})"

    def take_variables(self, result: ExecutionResult) -> bool:
        """Use the outputs the code computed but never submitted; no model call is needed then."""
        if result.submitted is None:
            return False
        try:
            self.outputs = self.signature.validate_outputs(result.submitted)
        except OutputValidationError:
            return False
        self.record.fallback_reply = (
            f"(no model call: the outputs were read from the session's variables {', '.join(self.signature.outputs)})"
        )
        return True

    def extraction_messages(self) -> list[Message]:
        self._lm_started = time.perf_counter()
        return self.settings.prompt.extraction_messages(self.inputs, self.record.steps)

    def extract_options(self) -> dict[str, Any]:
        options: dict[str, Any] = (
            {"temperature": self.settings.temperature} if self.settings.temperature is not None else {}
        )
        if getattr(self.lm, "constrains_json", False):  # decoding can be held to the outputs' schema
            options["json_schema"] = self.signature.output_json_schema()
        return options

    def take_extraction(self, completion: Completion) -> None:
        self.record.fallback_lm_s = time.perf_counter() - self._lm_started
        self.record.fallback_reply = completion.text
        self.record.add_usage(_as_call(completion.usage))
        values = parse_json_object(completion.text)
        if values is None:
            self.record.error = "the extraction reply held no JSON object"
            return
        try:
            self.outputs = self.signature.validate_outputs(
                {k: v for k, v in values.items() if k in self.signature.outputs}
            )
        except OutputValidationError as exc:
            self.record.error = f"the extracted outputs did not validate: {exc}"

    def extraction_failed(self, exc: BaseException) -> None:
        self.record.fallback_lm_s = time.perf_counter() - self._lm_started
        self.record.end_reason = "lm_error"
        self.record.error = f"the extraction call failed: {describe_exception(exc)}"

    # --- ending ---
    def failed(self, exc: Exception) -> None:
        """Something outside the model's code went wrong; the run ends with `error`."""
        if self.ended:
            warnings.warn(f"codeact failed after the run ended: {exc!r}", stacklevel=3)
        else:
            self.end("error", describe_exception(exc))

    def end(self, reason: EndReason, error: str | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        self.record.end_reason = reason
        if error is not None:
            self.record.error = error
        if self.step is not None:
            # The step in flight (LM failed, or interrupted) is kept in the record.
            step, self.step = self.step, None
            self.record.steps.append(step)
            self.emit(events.StepEnded(self.record.run_id, step))

    def finish(self) -> Prediction:
        if not self.finished:
            self.finished = True
            if self.outputs is None and self.record.fallback == "partial" and self.last_submitted:
                partial = self.signature.validate_partial({k: _plain(v) for k, v in self.last_submitted.items()})
                self.outputs = {name: partial.get(name) for name in self.signature.outputs}
            self.record.outputs = self.outputs
            self.record.finish_timings(time.time())
            self.emit(events.RunEnded(self.record.run_id, self.record))
        outputs = self.outputs or dict.fromkeys(self.signature.outputs)
        return Prediction(dict(outputs), self.record)

    def result(self) -> Prediction:
        prediction = self.finish()
        if self.record.fallback == "raise" and self.outputs is None:
            raise MaxItersError(prediction)
        return prediction


def _discard(awaitable: Awaitable[Any]) -> None:
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()


def _check_transportable(inputs: dict[str, Any]) -> None:
    """Refuse, before the run, an input that cannot be sent into the sandbox."""
    for name, value in inputs.items():
        try:
            wire.encode(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"input {name!r} of type {type(value).__name__} cannot be sent into the sandbox: {exc}"
            ) from None


def _strip_stop(text: str) -> str:
    """The reply up to any stop sequence the LM did not cut itself."""
    cut_at = min((i for s in STOP_SEQUENCES if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut_at].rstrip()


def _as_call(usage: Usage) -> Usage:
    return Usage(usage.prompt_tokens, usage.completion_tokens, max(usage.calls, 1), usage.cost)


def _plain(value: Any, mapping: bool = False) -> Any:
    """numpy and pandas values as plain Python, so they validate like the lists and numbers they hold;
    a Series submitted where a mapping is expected keeps its index as the keys."""
    module = type(value).__module__.split(".")[0]
    if module == "numpy":
        return value.tolist() if hasattr(value, "tolist") else value
    if module == "pandas":
        if hasattr(value, "to_dict") and hasattr(value, "columns"):
            return value.to_dict(orient="records")
        if mapping and hasattr(value, "to_dict"):
            return {k: _plain(v) for k, v in value.to_dict().items()}
        if hasattr(value, "tolist"):
            return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_plain(v) for v in value)
    return value


def describe_exception(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, (TypeError, ValueError, RuntimeError)):
        tb = traceback.extract_tb(exc.__traceback__)
        if tb:
            frame = tb[-1]
            text += f" (at {frame.filename}:{frame.lineno})"
    return text
