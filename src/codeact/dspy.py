"""DSPy's `CodeInterpreter` on codeact's sandbox (extra `codeact[dspy]`).

    dspy.RLM(signature, interpreter_factory=codeact.dspy.Interpreter)
    dspy.CodeAct(signature, tools=[...], interpreter_factory=codeact.dspy.Interpreter)
    program = codeact.dspy.Module(codeact.CodeAct(...))   # tunable by DSPy's optimisers

The session is codeact's native sandbox (or Pyodide where it is not available): namespaces, a read-only
root, seccomp and Landlock, a time and memory limit per step, numpy and pandas. DSPy's tools run on
the host; `variables` cross in codeact's value encoding (DataFrames, arrays, large texts in parts).
Following DSPy's contract: `execute` returns a `FinalOutput` when the code called `SUBMIT(...)`, else
what it printed, else the value of its last expression (None when there is none); an error in the
code raises `CodeExecutionError` (a `SyntaxError` for code that does not parse) and the session lives
on; a session that dies, breaks the protocol or was shut down raises `CodeInterpreterError` and stays
ended. An instance is the caller's to shut down; a factory's products are the module's.
"""

from __future__ import annotations

import ast
import functools
import inspect
import keyword
from collections.abc import Callable
from typing import Any

import dspy
from dspy.primitives.code_interpreter import CodeExecutionError, CodeInterpreterError, FinalOutput

from codeact.agent import CodeAct
from codeact.prompt import Demo
from codeact.sandbox import Sandbox, SandboxOptions
from codeact.sandbox.driver import serving
from codeact.sandbox.interpreter import Failure, InterpreterError
from codeact.tools import Tool

_TERMINAL = frozenset(kind.value for kind in Failure if kind.ends_session)
_SUBMIT_ALIAS = "SUBMIT = submit\n"


class Interpreter:
    """A DSPy `CodeInterpreter` whose code runs in a codeact sandbox.

    `tools` maps names to host callables (DSPy calls them with keyword arguments; positional ones
    work too); a tool's exception reaches the code as a RuntimeError naming its type, as in DSPy's
    own interpreter. `output_fields` (DSPy's `[{"name": ..., "type": ...}]`) shape `SUBMIT(...)`;
    without them `SUBMIT(output)`. `sandbox` or keyword options are `codeact.SandboxOptions`;
    DSPy's `enable_network_access=["api.example.com"]` is taken as `network=[...]`.
    """

    def __init__(
        self,
        tools: dict[str, Callable[..., Any]] | None = None,
        output_fields: list[dict[str, Any]] | None = None,
        *,
        sandbox: SandboxOptions | dict[str, Any] | None = None,
        enable_network_access: list[str] | None = None,
        **options: Any,
    ) -> None:
        if enable_network_access:
            options["network"] = list(enable_network_access)
        self.tools: dict[str, Callable[..., Any]] = dict(tools or {})
        self.output_fields = output_fields
        self._tools_registered = False
        self.options = SandboxOptions.of(sandbox, **options)
        self._sandbox: Sandbox | None = None
        self._registered: tuple[Any, ...] | None = None
        self._ended: str | None = None

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self._ended is not None:
            raise CodeInterpreterError(f"the interpreter session has ended ({self._ended}); create a new one")
        if self._sandbox is None:
            try:
                self._sandbox = Sandbox(options=self.options)
                self._sandbox.start()
            except InterpreterError as exc:
                self._sandbox = None
                raise CodeInterpreterError(f"the codeact sandbox could not start: {exc}") from None

    def shutdown(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None
        self._ended = self._ended or "it was shut down"

    def __enter__(self) -> Interpreter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __call__(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        return self.execute(code, variables)

    # --- execution ---------------------------------------------------------------------------------
    def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        if self._sandbox is not None and serving(self._sandbox):
            raise CodeInterpreterError("the interpreter cannot execute recursively from one of its tools")
        self.start()
        sandbox = self._sandbox
        assert sandbox is not None
        self._register_tools(sandbox)
        if variables:
            for name in variables:
                if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
                    raise CodeInterpreterError(f"Invalid variable name: {name!r}")
            try:
                sandbox.set_variables(dict(variables))
            except TypeError as exc:
                raise CodeInterpreterError(str(exc)) from None
        result = sandbox.execute(code)
        error = result.error
        if error is not None:
            if error.type in _TERMINAL:
                self.shutdown()
                self._ended = "the interpreter state was lost"
                raise CodeInterpreterError(f"{error.type}: {error.message}; the interpreter state was lost")
            if error.type in ("SyntaxError", "IndentationError", "TabError"):
                raise SyntaxError(f"Invalid Python syntax. message: {error.message}")
            raise CodeExecutionError(f"{error.type}: {error.message}")
        if result.submitted is not None:
            return FinalOutput(dict(result.submitted))
        if result.stdout:
            return result.stdout
        if result.value is None:
            return None
        try:
            return ast.literal_eval(result.value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return result.value  # not a literal: its repr, as the model would read it

    def _register_tools(self, sandbox: Sandbox) -> None:
        """Give the session DSPy's current tools and SUBMIT (RLM adds tools after construction)."""
        fields = [str(f["name"]) for f in self.output_fields or []] or ["output"]
        wanted = (tuple((name, id(fn)) for name, fn in self.tools.items()), tuple(fields))
        if wanted == self._registered:
            return
        try:
            sandbox.set_tools([Tool(_as_runtime_error(fn), name=name) for name, fn in self.tools.items()])
            sandbox.set_submit(fields)
        except (TypeError, ValueError) as exc:
            raise CodeInterpreterError(f"cannot register the tools: {exc}") from None
        result = sandbox.execute(_SUBMIT_ALIAS)
        if result.error is not None:
            raise CodeInterpreterError(f"cannot define SUBMIT: {result.error}")
        self._registered = wanted
        self._tools_registered = True


def _as_runtime_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, its failures raised as RuntimeError("Type: message") as DSPy's interpreter does."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def acall(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc

        return acall

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc

    return call


class Module(dspy.Module):
    """A `codeact.CodeAct` as a DSPy module, so DSPy's optimisers can tune it.

    The instructions and demonstrations live in one `dspy.Predict` (`self.predict`), where
    optimisers find them; each call hands them to the CodeAct run and records the call in DSPy's
    trace, so `BootstrapFewShot` keeps the successful runs (with the code that solved them) as
    demonstrations. `save`/`load` are DSPy's; `to_codeact()` gives back a CodeAct with what was
    learned (whose own `save` writes it for codeact alone).
    """

    def __init__(self, act: CodeAct) -> None:
        super().__init__()
        self.act = act
        fields = act.signature.text() + ", code"
        self.predict = dspy.Predict(dspy.Signature(fields, act.signature.instructions or "Solve the task."))

    def forward(self, **inputs: Any) -> dspy.Prediction:
        self.act.learn(instructions=self.predict.signature.instructions, demos=self._demos())
        prediction = self.act(**inputs)
        code = "\n\n".join(step.code for step in prediction.trajectory if step.code)
        result = dspy.Prediction(**prediction.outputs, code=code, end_reason=prediction.end_reason)
        if dspy.settings.trace is not None and prediction.end_reason == "submitted":
            dspy.settings.trace.append((self.predict, dict(inputs), result))
        return result

    def _demos(self) -> list[Demo]:
        names_in, names_out = list(self.act.signature.inputs), list(self.act.signature.outputs)
        demos = []
        for demo in self.predict.demos:
            data = dict(demo.items()) if hasattr(demo, "items") else dict(demo)
            if all(n in data for n in names_in + names_out):
                demos.append(
                    Demo(
                        inputs={n: data[n] for n in names_in},
                        outputs={n: data[n] for n in names_out},
                        code=str(data.get("code") or ""),
                    )
                )
        return demos

    def to_codeact(self) -> CodeAct:
        """The wrapped CodeAct, holding the instructions and demonstrations learned so far."""
        self.act.learn(instructions=self.predict.signature.instructions, demos=self._demos())
        return self.act


__all__ = ["Interpreter", "Module"]
