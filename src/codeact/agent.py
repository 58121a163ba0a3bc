"""`CodeAct`: what a user builds, runs and tunes; each run is a `RunState` driven by `codeact.loop`.

    act = CodeAct("question -> answer: int", tools=[add], lm=lm)
    prediction = act(question="What is 17 + 25?")
    prediction.answer, prediction.end_reason, prediction.trajectory, prediction.usage

Each run gets a fresh sandbox session. The model replies with reasoning and code; the code runs;
the observation goes back; the run ends when the code calls `submit(...)` with values that validate
against the output types, or when `max_iters`, the budget, or the model gives out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
import typing
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from codeact.errors import ConfigurationError
from codeact.events import EventHandler
from codeact.lm.base import LM
from codeact.loop import adrive, drive
from codeact.prediction import (
    PREDICTION_ATTRIBUTES,
    RESERVED_INPUTS,
    MaxItersError,
    Prediction,
    RunCancelled,
    RunInterrupted,
)
from codeact.prompt import ACTION_FORMATS, ActionFormat, Demo, InputsInPrompt, Prompt
from codeact.run import RunSettings, RunState, describe_exception
from codeact.sandbox.driver import Approver, ToolPolicy
from codeact.sandbox.interpreter import Interpreter, InterpreterError
from codeact.sandbox.options import SandboxOptions
from codeact.session import RunSession, SharedInterpreter, is_interpreter_object
from codeact.settings import resolve_lm
from codeact.signature import Signature, ensure_signature
from codeact.subcalls import SubCalls
from codeact.tools import Tool, as_tool
from codeact.trajectory import Fallback, RunRecord, jsonable

__all__ = ["BatchExecutor", "CodeAct"]


# --- the agent ---------------------------------------------------------------------------------
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
    - `action_format`: how the model hands over its code: `"fenced"` (a ```python block in the
      reply; the default, and what every model and the bundled local one can do) or `"tool_call"`
      (the argument of a `run_python(code=...)` function call, for models trained for tool
      calling; OpenAI and LiteLLM models). A fenced block is still taken when no call is made.
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
        action_format: ActionFormat = "fenced",
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
        if action_format not in ACTION_FORMATS:
            raise ConfigurationError(f"action_format must be 'fenced' or 'tool_call', got {action_format!r}")
        if action_format == "tool_call" and self.lm is not None and not self.lm.supports_tool_calls:
            raise ConfigurationError(
                f"action_format='tool_call' needs a model that takes tools; {type(self.lm).__name__} does not "
                "(use an OpenAI or LiteLLM model, or action_format='fenced')"
            )
        self.action_format: ActionFormat = action_format
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
            action_format=action_format,
        )
        self._shared = SharedInterpreter(interpreter) if is_interpreter_object(interpreter) else None

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
        self.prompt.refresh()

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
            if name in RESERVED_INPUTS or (self.max_llm_calls and name.startswith("llm_query")):
                raise ConfigurationError(f"input {name!r} would hide the sandbox's own {name}(); rename the input")
        for name in self.signature.outputs:
            if name in PREDICTION_ATTRIBUTES:
                raise ConfigurationError(
                    f"output {name!r} would be hidden by Prediction.{name}; rename the output "
                    f"(names taken: {', '.join(sorted(PREDICTION_ATTRIBUTES))})"
                )

    def __repr__(self) -> str:
        tools = ", ".join(t.name for t in self.tools)
        return f"CodeAct({self.signature.text()!r}, tools=[{tools}])"

    # --- running ------------------------------------------------------------------------------
    def _settings(self) -> RunSettings:
        """This CodeAct's settings as one run takes them (later changes do not reach a running run)."""
        return RunSettings(
            signature=self.signature,
            prompt=self.prompt,
            tools=tuple(self.tools),
            lm=self.lm,
            sub_lm=self.sub_lm,
            max_iters=self.max_iters,
            fallback=self.fallback,
            max_run_tokens=self.max_run_tokens,
            max_cost=self.max_cost,
            max_reply_tokens=self.max_reply_tokens,
            temperature=self.temperature,
            on_event=self.on_event,
            validators=tuple(self.validators),
            step_samples=self.step_samples,
            step_timeout=self.step_timeout,
            max_observation_chars=self.max_observation_chars,
            approve=self.approve,
            max_tool_calls=self.max_tool_calls,
            sandbox_options=self.sandbox_options,
            interpreter=self.interpreter,
            max_llm_calls=self.max_llm_calls,
            nested_run=self._nested_run if self.depth > 1 else None,
            action_format=self.action_format,
        )

    def _start(self, inputs: dict[str, Any]) -> tuple[RunState, RunSession]:
        settings = self._settings()
        run = RunState(settings, inputs)
        return run, RunSession(settings, run, self._shared)

    def __call__(self, *args: Any, **inputs: Any) -> Prediction:
        """Run the task synchronously and return its `Prediction`."""
        _no_positional(args, self.signature)
        run, session = self._start(inputs)
        try:
            run.begin()
            session.open()
            drive(run, session)
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
        run, session = self._start(inputs)
        run.is_async = True
        cancelled = False
        try:
            run.begin()
            await session.aopen()
            await adrive(run, session)
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

    def _nested_run(self, lm: LM, task: str, context: Any, budget: int) -> tuple[str, RunRecord]:
        """`rlm_query`: a nested run on the sub-model, one level shallower, with its own sandbox."""
        child = CodeAct(
            "task: str, context: Any -> answer: str",
            self.tools,
            lm=self.sub_lm or lm,
            max_iters=self.max_iters,
            fallback="partial",
            sandbox=self.sandbox_options if self.interpreter is None else None,
            max_llm_calls=budget,
            inputs_in_prompt="preview",
            depth=self.depth - 1,
        )
        prediction = child(task=task, context=context)
        return str(prediction.answer) if prediction.answer is not None else "", prediction.record

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
            return self._failed_prediction(inputs, describe_exception(exc))

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


class BatchExecutor(typing.Protocol):
    """Runs a batch of a `CodeAct` somewhere; `map` returns the predictions in input order."""

    def map(self, act: CodeAct, inputs: Sequence[dict[str, Any]]) -> list[Prediction]: ...


# --- helpers ---
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
