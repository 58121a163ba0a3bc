"""`CodeAct`: the think-code-observe loop, its `Prediction`, and the events it reports as it runs.

    act = CodeAct("question -> answer: int", tools=[add], lm=lm)
    prediction = act(question="What is 17 + 25?")
    prediction.answer, prediction.end_reason, prediction.trajectory, prediction.usage

Each run gets a fresh sandbox session. The model replies with reasoning and code; the code runs;
the observation goes back; the run ends when the code calls `submit(...)` with values that validate
against the output types, or when `max_iters`, the budget, or the model gives out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import os
import threading
import time
import traceback
import typing
import uuid
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codeact.errors import CodeActError, ConfigurationError
from codeact.lm.base import LM, Completion, Message, Usage
from codeact.prompt import (
    NO_CODE_OBSERVATION,
    REPLY_GRAMMAR,
    STOP_SEQUENCES,
    Demo,
    InputsInPrompt,
    Prompt,
    input_assignments,
    observation,
    parse_json_object,
    parse_reply,
)
from codeact.sandbox import wire
from codeact.sandbox.base import SESSION_LOST_KINDS
from codeact.sandbox.driver import Approver, ToolPolicy
from codeact.sandbox.interpreter import ExecutionResult, Failure, Interpreter, InterpreterError
from codeact.sandbox.options import SandboxOptions
from codeact.settings import default_lm, resolve_lm
from codeact.signature import OutputValidationError, Signature, ensure_signature
from codeact.subcalls import SubCalls
from codeact.telemetry import RunTelemetry
from codeact.tools import Tool, as_tool
from codeact.trajectory import (
    EndReason,
    Fallback,
    RejectedSample,
    RunRecord,
    Step,
    StepError,
    jsonable,
)


# --- events -------------------------------------------------------------------------------------
@dataclass
class RunStarted:
    run_id: str
    signature: str
    inputs: dict[str, Any]
    model: str
    max_iters: int


@dataclass
class StepStarted:
    run_id: str
    index: int


@dataclass
class TokenReceived:
    """A piece of the model's reply as it streams in (when the LM streams)."""

    run_id: str
    index: int
    text: str


@dataclass
class CodeParsed:
    """The code about to run, and the reasoning around it."""

    run_id: str
    index: int
    code: str
    reasoning: str


@dataclass
class Observed:
    """The observation the model will see for step `index`."""

    run_id: str
    index: int
    text: str


@dataclass
class StepEnded:
    run_id: str
    step: Step


@dataclass
class RunEnded:
    run_id: str
    record: RunRecord


Event = RunStarted | StepStarted | TokenReceived | CodeParsed | Observed | StepEnded | RunEnded
EventHandler = Callable[[Event], Awaitable[None] | None]


# --- results ------------------------------------------------------------------------------------
class Prediction:
    """The outputs of a run as attributes (None when the run produced none), and its record."""

    def __init__(self, outputs: dict[str, Any], record: RunRecord) -> None:
        self._outputs = outputs
        self.record = record

    def __getattr__(self, name: str) -> Any:
        outputs = self.__dict__.get("_outputs", {})
        if name in outputs:
            return outputs[name]
        raise AttributeError(f"prediction has no field {name!r}; its outputs are {', '.join(outputs) or 'none'}")

    def __getitem__(self, name: str) -> Any:
        return self._outputs[name]

    @property
    def outputs(self) -> dict[str, Any]:
        return dict(self._outputs)

    @property
    def trajectory(self) -> list[Step]:
        return self.record.steps

    @property
    def end_reason(self) -> EndReason:
        return self.record.end_reason

    @property
    def fallback(self) -> Fallback | None:
        return self.record.fallback

    @property
    def usage(self) -> Usage:
        return self.record.usage

    @property
    def error(self) -> str | None:
        return self.record.error

    def save(self, path: str) -> Any:
        """Save the run record as JSON (see `RunRecord.save`)."""
        return self.record.save(path)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._outputs.items())
        return f"Prediction({fields}, end_reason={self.end_reason!r}, steps={len(self.record.steps)})"


# Names a signature may not use: the sandbox's own functions, and Prediction's attributes
_RESERVED_INPUTS = frozenset({"submit", "print", "SUBMIT"})
_PREDICTION_ATTRIBUTES = frozenset(name for name in vars(Prediction) if not name.startswith("_")) | {"record"}


class MaxItersError(CodeActError, RuntimeError):
    """Raised with `fallback="raise"` when no step submitted; `.prediction` holds the run."""

    def __init__(self, prediction: Prediction) -> None:
        self.prediction = prediction
        super().__init__(
            f"no valid submit(...) within {prediction.record.max_iters} steps "
            "(fallback='raise'); the run is in .prediction"
        )


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; `.prediction` holds the run up to that point."""

    def __init__(self, prediction: Prediction) -> None:
        self.prediction = prediction
        super().__init__("run interrupted")


class RunCancelled(asyncio.CancelledError):
    """An async run was cancelled (`task.cancel()`, a timeout, Ctrl-C under `asyncio.run`); it is a
    CancelledError, so asyncio's cancellation works as ever, and `.prediction` holds the run so far."""

    def __init__(self, prediction: Prediction) -> None:
        self.prediction = prediction
        super().__init__("run cancelled")


# --- the module ---------------------------------------------------------------------------------
InterpreterSpec = Interpreter | Callable[[], Interpreter]


class CodeAct:
    """Solves tasks of a signature by letting an LM write Python that runs in a sandbox.

    - `tools`: callables or `Tool`s; inside the sandbox they are functions of the same name that
      run on the host.
    - `lm`: an `LM` (or model name); defaults to the one set with `codeact.configure(lm=...)`.
    - `sandbox`: options for `codeact.Sandbox` (`read_paths`, `timeout`, `memory_limit`, ...), or
      `interpreter`: your own `Interpreter`, or a function returning a fresh one per run.
    - `fallback`: when `max_iters` steps did not submit: `"extract"` (one LM call that reads the
      outputs off the trajectory), `"raise"` (`MaxItersError`) or `"partial"` (what validated).
    - `max_run_tokens`/`max_cost`: the run's budget; the run ends with `end_reason="budget"`
      (`max_tokens`, the old name of `max_run_tokens`, still works with a warning).
    - `max_reply_tokens`: the most tokens one model reply may have (passed to the LM).
    - `on_event`: called with each event (`RunStarted`, `StepStarted`, `TokenReceived`,
      `CodeParsed`, `Observed`, `StepEnded`, `RunEnded`).
    - `approve`/`max_tool_calls`: approvals of, and a budget for, the tool calls the code makes.
    - `sub_lm`/`max_llm_calls`: `llm_query` and `llm_query_batched` in the code (RLM);
      `inputs_in_prompt="preview"` keeps large inputs out of the prompt (`preview_chars` each).
    - `validators`: functions of the submitted outputs (a dict); one that raises or returns a
      message rejects the submit, and the message goes back to the model.
    - `step_samples`: when a step's code fails, sample up to N-1 more replies for the same step and
      run each in a fork of the session as it was before the step (`Sandbox.fork()`, native
      backend); the first that does not fail is kept, the others are in `Step.rejected_samples`.
    """

    def __init__(
        self,
        signature: str | Signature | type[Signature],
        tools: Sequence[Callable[..., Any] | Tool] = (),
        *,
        lm: LM | str | None = None,
        max_iters: int = 10,
        fallback: Fallback = "extract",
        sandbox: dict[str, Any] | None = None,
        interpreter: InterpreterSpec | None = None,
        step_timeout: float | None = None,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        max_run_tokens: int | None = None,
        max_reply_tokens: int | None = None,
        max_observation_chars: int = 4000,
        temperature: float | None = None,
        on_event: EventHandler | None = None,
        approve: Approver | None = None,
        max_tool_calls: int | None = None,
        sub_lm: LM | str | None = None,
        max_llm_calls: int | None = None,
        inputs_in_prompt: InputsInPrompt = "full",
        preview_chars: int = 500,
        validators: Sequence[Callable[[dict[str, Any]], str | None]] = (),
        depth: int = 1,
        demos: Sequence[Demo] = (),
        step_samples: int = 1,
    ) -> None:
        self.signature = ensure_signature(signature)
        if callable(tools) or isinstance(tools, (Tool, str)):
            raise TypeError("tools must be a list of callables, e.g. tools=[add]")
        self.tools = [as_tool(t) for t in tools]
        self.lm = resolve_lm(lm) if lm is not None else None
        self.sub_lm = resolve_lm(sub_lm) if sub_lm is not None else None
        if max_llm_calls is not None and (
            isinstance(max_llm_calls, bool) or not isinstance(max_llm_calls, int) or max_llm_calls < 0
        ):
            raise ValueError(f"max_llm_calls must be a non-negative integer, got {max_llm_calls!r}")
        # language-model calls from code are on when asked for: a sub_lm, or a number of calls
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ConfigurationError(f"depth must be a positive integer, got {depth!r}")
        self.depth = depth
        self.max_llm_calls = (
            max_llm_calls if max_llm_calls is not None else (50 if sub_lm is not None or depth > 1 else 0)
        )
        self._check_tools()
        if not isinstance(max_iters, int) or max_iters < 1:
            raise ValueError(f"max_iters must be a positive integer, got {max_iters!r}")
        if fallback not in ("extract", "raise", "partial"):
            raise ValueError(f"fallback must be 'extract', 'raise' or 'partial', got {fallback!r}")
        if sandbox is not None and interpreter is not None:
            raise ValueError("pass sandbox options or an interpreter, not both")
        if interpreter is not None and not (isinstance(interpreter, Interpreter) or callable(interpreter)):
            raise TypeError(
                "interpreter must implement codeact's Interpreter protocol (start, set_tools, "
                "set_submit, execute, aexecute, close) or be a function returning one"
            )
        self.max_iters = max_iters
        self.fallback: Fallback = fallback
        if isinstance(sandbox, Mapping) and {"tools", "submit_params"} & sandbox.keys():
            raise ValueError(
                "sandbox options 'tools' and 'submit_params' are set by CodeAct itself; pass tools= to "
                "CodeAct and declare the outputs in the signature"
            )
        self.sandbox_options = SandboxOptions.of(sandbox)
        ToolPolicy.check(approve, max_tool_calls, self.tools)
        self.approve = approve
        self.max_tool_calls = max_tool_calls
        if callable(validators) or not all(callable(v) for v in validators):
            raise TypeError("validators must be a list of functions of the outputs dict, e.g. validators=[check]")
        self.validators = list(validators)
        self.interpreter = interpreter
        if isinstance(step_samples, bool) or not isinstance(step_samples, int) or step_samples < 1:
            raise ConfigurationError(f"step_samples must be a positive integer, got {step_samples!r}")
        if step_samples > 1 and (interpreter is not None or self.sandbox_options.backend == "pyodide"):
            raise ConfigurationError(
                "step_samples needs codeact's native sandbox (Sandbox.fork()); drop interpreter= or backend='pyodide'"
            )
        self.step_samples = step_samples
        self.step_timeout = step_timeout
        if max_tokens is not None:
            if max_run_tokens is not None:
                raise ConfigurationError("pass max_run_tokens only (max_tokens is its old name)")
            warnings.warn(
                "CodeAct(max_tokens=...) is the run's token budget and is now called max_run_tokens; "
                "max_reply_tokens caps one reply",
                DeprecationWarning,
                stacklevel=2,
            )
            max_run_tokens = max_tokens
        self.max_run_tokens = _positive("max_run_tokens", max_run_tokens, int)
        self.max_reply_tokens = _positive("max_reply_tokens", max_reply_tokens, int)
        self.max_cost = _positive("max_cost", max_cost, float)
        if max_cost is not None and self.lm is not None and not getattr(self.lm, "knows_cost", True):
            warnings.warn(
                f"max_cost={max_cost} cannot be enforced: the price of {getattr(self.lm, 'model', self.lm)!r} "
                "is unknown to codeact (set a token budget with max_run_tokens instead)",
                stacklevel=2,
            )
        self.max_observation_chars = max_observation_chars
        self.temperature = temperature
        self.on_event = on_event
        self.prompt = Prompt(
            self.signature,
            self.tools + (SubCalls.described(depth > 1) if self.max_llm_calls else []),
            sandbox=self.sandbox_options if interpreter is None else None,
            inputs_in_prompt=inputs_in_prompt,
            preview_chars=preview_chars,
            demos=demos,
        )
        self._shared_lock = threading.Lock()
        self._shared_started = False

    # --- what an optimiser tunes: instructions and solved examples ------------------------------------
    @property
    def instructions(self) -> str:
        return self.signature.instructions

    @property
    def demos(self) -> list[Demo]:
        return list(self.prompt.demos)

    def learn(self, *, instructions: str | None = None, demos: Sequence[Demo] | None = None) -> None:
        """Set the instructions and the solved examples the model sees (as an optimiser does)."""
        if instructions is not None:
            self.signature.instructions = instructions.strip()
        if demos is not None:
            self.prompt.demos = list(demos)
        self.prompt.system = self.prompt._system()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write what was learned (signature, instructions, solved examples) as JSON."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "signature": self.signature.text(),
            "instructions": self.instructions,
            "demos": [jsonable(dataclasses.asdict(d)) for d in self.prompt.demos],
        }
        target.write_text(json.dumps(state, indent=2, ensure_ascii=False), encoding="utf-8")
        return target

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], tools: Sequence[Callable[..., Any] | Tool] = (), **options: Any
    ) -> CodeAct:
        """A CodeAct from `save(path)`'s file; tools, the LM and other options are passed again."""
        state = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(state, dict) or "signature" not in state:
            raise ConfigurationError(f"{path} is not a saved CodeAct (no 'signature')")
        signature = Signature(state["signature"], instructions=state.get("instructions") or "")
        demos = [Demo(**{k: d[k] for k in ("inputs", "outputs", "code") if k in d}) for d in state.get("demos", [])]
        return cls(signature, tools, demos=demos, **options)

    def _check_tools(self) -> None:
        seen: set[str] = set()
        for t in self.tools:
            if t.name in seen:
                raise ValueError(f"two tools are named {t.name!r}; pass name='...' to Tool()")
            if t.name == "submit":
                raise ValueError("a tool may not be named 'submit'; that name ends the task")
            if self.max_llm_calls and t.name in ("llm_query", "llm_query_batched", "rlm_query"):
                raise ValueError(
                    f"a tool may not be named {t.name!r} while language-model calls from code are on "
                    "(sub_lm= or max_llm_calls=)"
                )
            if t.name in self.signature.inputs:
                raise ValueError(f"tool {t.name!r} has the name of an input variable; rename one of them")
            seen.add(t.name)
        for name in self.signature.inputs:
            if name in _RESERVED_INPUTS or (self.max_llm_calls and name.startswith("llm_query")):
                raise ConfigurationError(f"input {name!r} would hide the sandbox's own {name}(); rename the input")
        for name in self.signature.outputs:
            if name in _PREDICTION_ATTRIBUTES:
                raise ConfigurationError(
                    f"output {name!r} would be hidden by Prediction.{name}; rename the output "
                    f"(names taken: {', '.join(sorted(_PREDICTION_ATTRIBUTES))})"
                )

    def __repr__(self) -> str:
        tools = ", ".join(t.name for t in self.tools)
        return f"CodeAct({self.signature.text()!r}, tools=[{tools}])"

    # --- running ------------------------------------------------------------------------------
    def __call__(self, *args: Any, **inputs: Any) -> Prediction:
        """Run the task synchronously and return its `Prediction`."""
        _no_positional(args, self.signature)
        run = _Run(self, inputs)
        session = _Session(self, run)
        try:
            run.begin()
            session.open()
            while (messages := run.next_messages()) is not None:
                try:
                    completion = run.lm.complete(messages, **run.lm_options())
                except Exception as exc:
                    run.lm_failed(exc)
                    break
                code = run.take_reply(completion)
                if code is not None:
                    run.take_result(self._execute_step(run, session, messages, code))
            if run.wants_extraction() and not run.take_variables(session.execute(run.variables_code())):
                try:
                    extraction = run.lm.complete(run.extraction_messages(), **run.extract_options())
                except Exception as exc:
                    run.extraction_failed(exc)
                else:
                    run.take_extraction(extraction)
        except KeyboardInterrupt:
            run.end("interrupted", "interrupted by the user")
            session.close()
            raise RunInterrupted(run.finish()) from None
        except InterpreterError as exc:
            run.end("error", f"the sandbox could not be used: {exc}")
        except Exception as exc:
            run.failed(exc)
        finally:
            session.close()
        return run.result()

    async def acall(self, *args: Any, **inputs: Any) -> Prediction:
        """Run the task without blocking the event loop (`lm.acomplete`, `aexecute`)."""
        _no_positional(args, self.signature)
        run = _Run(self, inputs)
        run.is_async = True
        session = _Session(self, run)
        cancelled = False
        try:
            run.begin()
            await session.aopen()
            while (messages := run.next_messages()) is not None:
                try:
                    completion = await run.lm.acomplete(messages, **run.lm_options())
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    run.lm_failed(exc)
                    break
                code = run.take_reply(completion)
                if code is not None:
                    run.take_result(await self._aexecute_step(run, session, messages, code))
                await run.flush_async_events()
            if run.wants_extraction() and not run.take_variables(await session.aexecute(run.variables_code())):
                try:
                    extraction = await run.lm.acomplete(run.extraction_messages(), **run.extract_options())
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    run.extraction_failed(exc)
                else:
                    run.take_extraction(extraction)
        except (asyncio.CancelledError, KeyboardInterrupt) as exc:
            cancelled = True
            by_user = isinstance(exc, KeyboardInterrupt)
            run.end("interrupted", "interrupted by the user" if by_user else "cancelled")
            await session.aclose_soon()
            interrupted = run.finish()
            await run.flush_async_events()
            raise (RunInterrupted if by_user else RunCancelled)(interrupted) from None
        except InterpreterError as exc:
            run.end("error", f"the sandbox could not be used: {exc}")
        except Exception as exc:
            run.failed(exc)
        finally:
            if not cancelled:
                await session.aclose()
        prediction = run.result()
        await run.flush_async_events()
        return prediction

    def _execute_step(self, run: _Run, session: _Session, messages: list[Message], code: str) -> ExecutionResult:
        """Run a step's code; with `step_samples`, failed code is retried from the state before it."""
        saved = session.checkpoint()
        try:
            result = session.execute(code)
            while saved is not None and run.wants_sample(result):
                try:
                    completion = run.lm.complete(messages, **run.sample_options())
                except Exception:
                    break
                sampled = run.take_sample(completion, result)
                if sampled is not None:
                    result = session.execute_from(saved, sampled)
            return result
        finally:
            session.discard(saved)

    async def _aexecute_step(self, run: _Run, session: _Session, messages: list[Message], code: str) -> ExecutionResult:
        saved = await asyncio.to_thread(session.checkpoint)
        try:
            result = await session.aexecute(code)
            while saved is not None and run.wants_sample(result):
                try:
                    completion = await run.lm.acomplete(messages, **run.sample_options())
                except asyncio.CancelledError:
                    raise
                except Exception:
                    break
                sampled = run.take_sample(completion, result)
                if sampled is not None:
                    result = await asyncio.to_thread(session.execute_from, saved, sampled)
            return result
        finally:
            await asyncio.to_thread(session.discard, saved)

    def batch(
        self, inputs: Sequence[dict[str, Any]], *, num_threads: int = 4, executor: BatchExecutor | None = None
    ) -> list[Prediction]:
        """Run several tasks in parallel, each in its own session; results in input order.

        An input that fails (bad inputs, `fallback="raise"`) gives a Prediction with
        `end_reason="error"` (or the raised run) instead of sinking the batch. `executor` runs
        the batch elsewhere, e.g. `codeact.ray.RayExecutor()` on a Ray cluster.
        """
        items = list(inputs)
        if executor is not None:
            return executor.map(self, items)
        if num_threads < 1:
            raise ValueError(f"num_threads must be at least 1, got {num_threads}")
        with ThreadPoolExecutor(max_workers=min(num_threads, max(len(items), 1))) as pool:
            return list(pool.map(self._run_safely, items))

    def _run_safely(self, inputs: dict[str, Any]) -> Prediction:
        try:
            if not isinstance(inputs, dict):
                raise TypeError(f"each batch item must be a dict of inputs, got {type(inputs).__name__}")
            return self(**inputs)
        except MaxItersError as exc:
            return exc.prediction
        except Exception as exc:
            return self._failed_prediction(inputs, _describe_exception(exc))

    def _failed_prediction(self, inputs: Any, error: str) -> Prediction:
        """The prediction of a batch item that could not run: `end_reason="error"`, outputs None."""
        record = RunRecord(
            signature=self.signature.text(),
            run_id=uuid.uuid4().hex[:12],
            instructions=self.signature.instructions,
            inputs=dict(inputs) if isinstance(inputs, dict) else {},
            end_reason="error",
            error=error,
            max_iters=self.max_iters,
            started_at=time.time(),
        )
        return Prediction(dict.fromkeys(self.signature.outputs), record)

    def __getstate__(self) -> dict[str, Any]:
        """For sending to other processes (Ray workers): the lock of a shared interpreter stays here."""
        state = dict(self.__dict__)
        state.pop("_shared_lock", None)
        state["_shared_started"] = False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._shared_lock = threading.Lock()


class BatchExecutor(typing.Protocol):
    """Runs a batch of a `CodeAct` somewhere; `map` returns the predictions in input order."""

    def map(self, act: CodeAct, inputs: Sequence[dict[str, Any]]) -> list[Prediction]: ...


# --- one run ------------------------------------------------------------------------------------
class _Run:
    """The state of one run; the sync and async drivers in `CodeAct` feed it replies and results."""

    def __init__(self, module: CodeAct, inputs: dict[str, Any]) -> None:
        self.module = module
        self.signature = module.signature
        self.inputs = self.signature.validate_inputs(inputs)
        if module.interpreter is None:
            _check_transportable(self.inputs)
        self.lm: LM = module.lm if module.lm is not None else default_lm()
        self.subcalls = (
            SubCalls(
                module.sub_lm or self.lm,
                module.max_llm_calls,
                lambda: self.budget_text() if self.over_budget() else None,
                on_usage=self._count_sub_usage,
                recurse=self._sub_run if module.depth > 1 else None,
            )
            if module.max_llm_calls
            else None
        )
        self.tools = module.tools + (self.subcalls.tools() if self.subcalls else [])
        self.record = RunRecord(
            signature=self.signature.text(),
            run_id=uuid.uuid4().hex[:12],
            instructions=self.signature.instructions,
            inputs=dict(self.inputs),
            model=getattr(self.lm, "model", "") or type(self.lm).__name__,
            max_iters=module.max_iters,
            started_at=time.time(),
        )
        self.outputs: dict[str, Any] | None = None
        self.ended = False
        self.finished = False
        self.step: Step | None = None
        self.last_submitted: dict[str, Any] | None = None
        self._pending: list[Awaitable[Any]] = []
        self._handler_failed = False
        self.is_async = False
        self.telemetry = RunTelemetry(self.record.run_id, self.record.model, self.record.signature)

    # --- events ---
    def emit(self, event: Event) -> None:
        try:
            self.telemetry.observe(event)
        except Exception as exc:  # tracing must never end a run
            warnings.warn(f"OpenTelemetry spans failed: {exc!r}", stacklevel=2)
        handler = self.module.on_event
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

    def _sub_run(self, task: str, context: Any, budget: int) -> tuple[str, RunRecord]:
        """`rlm_query`: a nested CodeAct run on the sub-model, one level shallower, with its own sandbox."""
        module = self.module
        child = CodeAct(
            "task: str, context: Any -> answer: str",
            module.tools,
            lm=module.sub_lm or self.lm,
            max_iters=module.max_iters,
            fallback="partial",
            sandbox=module.sandbox_options if module.interpreter is None else None,
            max_llm_calls=budget,
            inputs_in_prompt="preview",
            depth=module.depth - 1,
        )
        prediction = child(task=task, context=context)
        return str(prediction.answer) if prediction.answer is not None else "", prediction.record

    def _count_sub_usage(self, usage: Usage) -> None:
        self.record.add_usage(usage)
        self.record.sub_usage = self.record.sub_usage + usage

    def begin(self) -> None:
        self.emit(
            RunStarted(
                self.record.run_id,
                self.record.signature,
                dict(self.inputs),
                self.record.model,
                self.module.max_iters,
            )
        )

    # --- the loop ---
    def next_messages(self) -> list[Message] | None:
        """The messages for the next step, or None when the run is over."""
        if self.ended:
            return None
        if len(self.record.steps) >= self.module.max_iters:
            self.end("max_iters")
            return None
        if self.over_budget():
            self.end("budget", self.budget_text())
            return None
        self.step = Step(index=len(self.record.steps))
        self.emit(StepStarted(self.record.run_id, self.step.index))
        self._lm_started = time.perf_counter()
        return self.module.prompt.messages(self.inputs, self.record.steps)

    def lm_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"stop": list(STOP_SEQUENCES)}
        if self.module.max_reply_tokens is not None:
            options["max_tokens"] = self.module.max_reply_tokens
        if getattr(self.lm, "constrains_grammar", False):  # a small local model: hold it to the format
            options["grammar"] = REPLY_GRAMMAR
        if self.module.temperature is not None:
            options["temperature"] = self.module.temperature
        if self.module.on_event is not None and self.step is not None:
            index, run_id = self.step.index, self.record.run_id
            options["on_token"] = lambda text: self.emit(TokenReceived(run_id, index, text))
        return options

    def lm_failed(self, exc: BaseException) -> None:
        assert self.step is not None
        self.step.lm_s = time.perf_counter() - self._lm_started
        self.end("lm_error", f"the language model failed: {_describe_exception(exc)}")

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
        parsed = parse_reply(step.reply)
        step.reasoning = parsed.reasoning
        step.code = parsed.code
        if parsed.code is None:
            step.observation = NO_CODE_OBSERVATION
            self._end_step()
            return None
        self.emit(CodeParsed(self.record.run_id, step.index, parsed.code, parsed.reasoning))
        return parsed.code

    def wants_sample(self, result: ExecutionResult) -> bool:
        """Whether to sample another reply for the step whose code gave `result`."""
        step = self.step
        assert step is not None
        return (
            result.error is not None
            and result.submitted is None
            and not self.over_budget()
            and len(step.rejected_samples) + 1 < self.module.step_samples
        )

    def sample_options(self) -> dict[str, Any]:
        options = self.lm_options()
        options.pop("on_token", None)
        options.setdefault("temperature", 1.0)  # a further sample should be able to differ
        return options

    def take_sample(self, completion: Completion, failed: ExecutionResult) -> str | None:
        """Set the failed reply aside and take a further sample's; returns its code (None: no code)."""
        step = self.step
        assert step is not None
        step.rejected_samples.append(RejectedSample(step.reply, step.code, str(failed.error)))
        step.reply = _strip_stop(completion.text)
        step.prompt_tokens += completion.usage.prompt_tokens
        step.completion_tokens += completion.usage.completion_tokens
        if completion.usage.cost is not None:
            step.cost = (step.cost or 0.0) + completion.usage.cost
        self.record.add_usage(_as_call(completion.usage))
        parsed = parse_reply(step.reply)
        step.reasoning, step.code = parsed.reasoning, parsed.code
        if parsed.code is not None:
            self.emit(CodeParsed(self.record.run_id, step.index, parsed.code, parsed.reasoning))
        return parsed.code

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
        if result.error is not None:
            e = result.error
            step.error = StepError(e.type, e.message, e.traceback, e.lineno, e.line)
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
        for validator in self.module.validators:
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
            steps_left = self.module.max_iters - step.index - 1
            step.observation = step.observation or observation(
                step, limit=self.module.max_observation_chars, steps_left=steps_left
            )
            self.emit(Observed(self.record.run_id, step.index, step.observation))
        self.record.steps.append(step)
        self.emit(StepEnded(self.record.run_id, step))
        self.step = None
        if self.outputs is None and not self.ended and self.over_budget():
            self.end("budget", self.budget_text())

    # --- budget ---
    def over_budget(self) -> bool:
        usage = self.record.usage
        if self.module.max_run_tokens is not None and usage.total_tokens >= self.module.max_run_tokens:
            return True
        return self.module.max_cost is not None and usage.cost is not None and usage.cost >= self.module.max_cost

    def budget_text(self) -> str:
        usage = self.record.usage
        return (
            f"budget spent: {usage.total_tokens} tokens (max_run_tokens={self.module.max_run_tokens}), "
            f"cost {usage.cost} (max_cost={self.module.max_cost})"
        )

    # --- fallback ---
    def wants_extraction(self) -> bool:
        if self.record.end_reason != "max_iters" or self.outputs is not None:
            return False
        self.record.fallback = self.module.fallback
        return self.module.fallback == "extract" and bool(self.record.steps)

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
        return self.module.prompt.extraction_messages(self.inputs, self.record.steps)

    def extract_options(self) -> dict[str, Any]:
        options: dict[str, Any] = (
            {"temperature": self.module.temperature} if self.module.temperature is not None else {}
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
        self.record.error = f"the extraction call failed: {_describe_exception(exc)}"

    # --- ending ---
    def failed(self, exc: Exception) -> None:
        """Something outside the model's code went wrong; the run ends with `error`."""
        if self.ended:
            warnings.warn(f"codeact failed after the run ended: {exc!r}", stacklevel=3)
        else:
            self.end("error", _describe_exception(exc))

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
            self.emit(StepEnded(self.record.run_id, step))

    def finish(self) -> Prediction:
        if not self.finished:
            self.finished = True
            if self.outputs is None and self.record.fallback == "partial" and self.last_submitted:
                partial = self.signature.validate_partial({k: _plain(v) for k, v in self.last_submitted.items()})
                self.outputs = {name: partial.get(name) for name in self.signature.outputs}
            self.record.outputs = self.outputs
            self.record.finish_timings(time.time())
            self.emit(RunEnded(self.record.run_id, self.record))
        outputs = self.outputs or dict.fromkeys(self.signature.outputs)
        return Prediction(dict(outputs), self.record)

    def result(self) -> Prediction:
        prediction = self.finish()
        if self.record.fallback == "raise" and self.outputs is None:
            raise MaxItersError(prediction)
        return prediction


# --- the session ----------------------------------------------------------------------------------
class _Session:
    """The sandbox session of one run: made fresh (or borrowed from `interpreter=`), given the
    tools, `submit` and the inputs, restarted after it dies."""

    def __init__(self, module: CodeAct, run: _Run) -> None:
        self.module = module
        self.run = run
        self.interpreter: Interpreter | None = None
        self.root: Interpreter | None = None  # the session first made; forks of it end with it
        self.owned = not _is_interpreter_object(module.interpreter)
        self.lost = False

    def _make(self) -> Interpreter:
        spec = self.module.interpreter
        if _is_interpreter_object(spec):
            return spec  # type: ignore[return-value]
        if spec is not None:
            made = spec()
            if not isinstance(made, Interpreter):
                raise InterpreterError(f"the interpreter factory returned {type(made).__name__}, not an Interpreter")
            return made
        from codeact.sandbox import Sandbox

        return Sandbox(
            self.run.tools,
            submit_params=list(self.module.signature.outputs),
            options=self.module.sandbox_options,
            approve=self.module.approve,
            max_tool_calls=self.module.max_tool_calls,
        )

    def _setup(self, interpreter: Interpreter) -> str:
        interpreter.set_tools(self.run.tools)
        interpreter.set_submit(list(self.module.signature.outputs))
        set_policy = getattr(interpreter, "set_policy", None)
        if callable(set_policy):  # a fresh tool-call budget for each run
            set_policy(approve=self.module.approve, max_tool_calls=self.module.max_tool_calls)
        elif self.module.approve is not None or self.module.max_tool_calls is not None:
            raise InterpreterError(
                f"{type(interpreter).__name__} has no set_policy(): approvals and tool-call budgets need "
                "codeact's Sandbox"
            )
        set_variables = getattr(interpreter, "set_variables", None)
        if callable(set_variables):  # inputs cross the wire as themselves; the empty step delivers them
            set_variables(self.run.inputs)
            return "" if not self.run.inputs else "pass"
        return input_assignments(self.run.inputs)

    def _start(self, interpreter: Interpreter) -> None:
        if self.owned:
            interpreter.start()
        elif not self.module._shared_started:
            interpreter.start()
            self.module._shared_started = True

    def open(self) -> None:
        if not self.owned:
            self.module._shared_lock.acquire()
        started = time.perf_counter()
        interpreter = self._make()
        self.interpreter = self.root = interpreter
        self._start(interpreter)
        code = self._setup(interpreter)
        if code:
            interpreter.execute(code)
        self.run.record.session_s += time.perf_counter() - started

    async def aopen(self) -> None:
        if not self.owned:
            await asyncio.to_thread(self.module._shared_lock.acquire)
        started = time.perf_counter()
        interpreter = self._make()
        self.interpreter = self.root = interpreter
        await asyncio.to_thread(self._start, interpreter)
        code = self._setup(interpreter)
        if code:
            await interpreter.aexecute(code)
        self.run.record.session_s += time.perf_counter() - started

    def execute(self, code: str) -> ExecutionResult:
        started = time.perf_counter()
        try:
            if self.lost:
                self._restart()
            assert self.interpreter is not None
            result = self.interpreter.execute(code, timeout=self.module.step_timeout)
        except Exception as exc:
            result = self._crashed(exc)
        return self._after(result, started)

    async def aexecute(self, code: str) -> ExecutionResult:
        started = time.perf_counter()
        try:
            if self.lost:
                await asyncio.to_thread(self._restart)
            assert self.interpreter is not None
            result = await self.interpreter.aexecute(code, timeout=self.module.step_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            result = self._crashed(exc)
        return self._after(result, started)

    def checkpoint(self) -> Interpreter | None:
        """A fork of the session as it is before a step, when `step_samples` asks for one."""
        fork = getattr(self.interpreter, "fork", None)
        if self.module.step_samples < 2 or self.lost or not self.owned or fork is None:
            return None
        try:
            return fork()
        except InterpreterError as exc:
            warnings.warn(f"step_samples: the session could not be forked ({exc}); not sampling", stacklevel=2)
            return None

    def execute_from(self, saved: Interpreter, code: str) -> ExecutionResult:
        """Run `code` in a new fork of `saved`; when it does not fail, that fork becomes the session."""
        try:
            candidate = saved.fork()  # type: ignore[attr-defined]
        except InterpreterError as exc:
            return _crash_result(exc)
        started = time.perf_counter()
        result = candidate.execute(code, timeout=self.module.step_timeout)
        if result.error is None or result.submitted is not None:
            self.interpreter, retired = candidate, self.interpreter
            self.lost = False
            if retired is not self.root:  # the first session holds the family's namespaces: kept to the end
                self.discard(retired)
        else:
            candidate.close()
        return self._after(result, started)

    def discard(self, interpreter: Interpreter | None) -> None:
        if interpreter is not None:
            with contextlib.suppress(Exception):
                interpreter.close()

    def _crashed(self, exc: Exception) -> ExecutionResult:
        self.lost = True
        return _crash_result(exc)

    def _after(self, result: ExecutionResult, started: float) -> ExecutionResult:
        if not result.duration_s:
            result.duration_s = time.perf_counter() - started
        if (
            result.error is not None
            and result.error.type in SESSION_LOST_KINDS
            and getattr(self.interpreter, "alive", True) is False
        ):
            self.lost = True  # the next step runs in a new session: define the inputs again
        return result

    def _restart(self) -> None:
        self.lost = False
        interpreter = self.interpreter
        if interpreter is None:
            return
        started = time.perf_counter()
        if self.owned:
            with contextlib.suppress(Exception):
                interpreter.close()
        interpreter.start()
        code = self._setup(interpreter)
        if code:
            interpreter.execute(code)
        self.run.record.session_s += time.perf_counter() - started

    def _close_interpreter(self) -> None:
        interpreter, self.interpreter = self.interpreter, None
        root, self.root = self.root, None
        if root is not None and root is not interpreter and self.owned:
            self.discard(root)
        if interpreter is not None and self.owned:
            try:
                interpreter.close()
            except Exception as exc:
                warnings.warn(f"closing the sandbox failed: {exc!r}", stacklevel=3)

    def close(self) -> None:
        had = self.interpreter is not None
        started = time.perf_counter()
        self._close_interpreter()
        if had:
            self.run.record.session_s += time.perf_counter() - started
        if had and not self.owned:
            self.module._shared_lock.release()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    async def aclose_soon(self, wait: float = 2.0) -> None:
        """Close from a cancelled run: a step may still hold the session, so wait only briefly."""
        closer = threading.Thread(target=self.close, name="codeact-close", daemon=True)
        closer.start()
        await asyncio.to_thread(closer.join, wait)


# --- helpers ------------------------------------------------------------------------------------
def _is_interpreter_object(spec: object) -> bool:
    """An interpreter instance (shared by runs), as opposed to a class or factory making one."""
    return isinstance(spec, Interpreter) and not isinstance(spec, type)


def _discard(awaitable: Awaitable[Any]) -> None:
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()


def _positive(name: str, value: Any, kind: type) -> Any:
    """A budget: None, or a positive number of the right kind."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ConfigurationError(
            f"{name} must be a positive {'integer' if kind is int else 'number'} or None, got {value!r}"
        )
    if value <= 0:
        raise ConfigurationError(f"{name} must be positive, got {value!r} (leave it None for no limit)")
    return value


def _no_positional(args: tuple[Any, ...], signature: Signature) -> None:
    if args:
        names = ", ".join(f"{name}=..." for name in signature.inputs) or "no inputs"
        raise TypeError(f"pass the inputs by name: act({names})")


def _check_transportable(inputs: dict[str, Any]) -> None:
    """Refuse, before the run, an input that cannot be sent into the sandbox."""
    for name, value in inputs.items():
        try:
            wire.encode(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"input {name!r} of type {type(value).__name__} cannot be sent into the sandbox: {exc}"
            ) from None


def _crash_result(exc: BaseException) -> ExecutionResult:
    from codeact.sandbox.interpreter import ExecutionError

    return ExecutionResult(
        error=ExecutionError(Failure.CRASHED.value, f"the sandbox failed while running this step: {exc}")
    )


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


def _describe_exception(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, (TypeError, ValueError, RuntimeError)):
        tb = traceback.extract_tb(exc.__traceback__)
        if tb:
            frame = tb[-1]
            text += f" (at {frame.filename}:{frame.lineno})"
    return text
