"""Language-model calls from code: the `llm_query` and `llm_query_batched` tools of one run.

They run on the host through codeact's `LM` (retries, cache, usage, cost), under the run's
`max_llm_calls` and its token and cost budget; each call is recorded for the step that made it.
Like every tool they can be awaited from async code; a batch runs its calls concurrently, a bounded
number at a time.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pydantic

from codeact.lm.base import LM, Usage
from codeact.lm.errors import LMAPIError
from codeact.signature import parse_type
from codeact.tools import Tool
from codeact.trajectory import LLMCall

_FENCED_JSON = re.compile(r"^```(?:json)?\s*\n(.*?)\n```\s*$", re.DOTALL)


class SubCalls:
    """The sub-calls of one run. `over_budget` says why the run's own budget forbids another call."""

    def __init__(
        self,
        lm: LM | None,
        max_calls: int,
        over_budget: Callable[[], str | None],
        *,
        on_usage: Callable[[Usage], None],
        concurrency: int = 8,
        recurse: Callable[[str, Any, int], Any] | None = None,
    ) -> None:
        self.lm = lm
        self.recurse = recurse
        self.max_calls = max_calls
        self.over_budget = over_budget
        self.on_usage = on_usage
        self.concurrency = concurrency
        self.made = 0
        self.usage = Usage()
        self.records: list[LLMCall] = []
        self.lock = threading.Lock()

    @classmethod
    def described(cls, recursive: bool = False) -> list[Tool]:
        """The tools as the prompt describes them (no model behind them)."""
        recurse = (lambda task, context, budget: None) if recursive else None
        return cls(None, 0, lambda: None, on_usage=lambda _: None, recurse=recurse).tools()

    def tools(self) -> list[Tool]:
        found = [Tool(self.llm_query, name="llm_query"), Tool(self.llm_query_batched, name="llm_query_batched")]
        if self.recurse is not None:
            found.append(Tool(self.rlm_query, name="rlm_query"))
        return found

    def take(self) -> list[LLMCall]:
        """The calls made since the last take (those of the step that just ended)."""
        with self.lock:
            taken, self.records = self.records, []
        return taken

    # --- the tools (their docstrings are what the model reads) --------------------------------------
    def llm_query(
        self,
        prompt: str,
        schema: str | dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> Any:
        """Ask a language model one question and return its answer as text.

        Use it to read, classify or summarise a piece of a large input: pass the piece in the prompt.
        With schema (a type such as "int", "list[str]", "dict[str, float]", or a JSON schema) the answer
        is parsed and checked as that type. Calls are limited per run.
        """
        self._reserve(1)
        return self._ask(prompt, schema, temperature, max_tokens)

    def llm_query_batched(
        self,
        prompts: list[str],
        schema: str | dict[str, Any] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> list[Any]:
        """Ask a language model several independent questions at once; the answers, in order.

        Faster than a loop of llm_query; each prompt counts as one call of the run's limit. A prompt
        whose call failed, or whose answer does not fit the schema, gets a string starting with
        "[ERROR]" that says why in its place; the other answers are kept.
        """
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts must be a list of str")
        _schema(schema)  # a schema that cannot be used fails the whole batch, before any call
        self._reserve(len(prompts))
        if not prompts:
            return []

        def ask(prompt: str) -> Any:
            try:
                return self._ask(prompt, schema, temperature, max_tokens)
            except (LMAPIError, AnswerMismatch) as exc:  # this prompt's failure: not the batch's
                return f"[ERROR] {type(exc).__name__}: {exc}"

        with ThreadPoolExecutor(min(self.concurrency, len(prompts)), thread_name_prefix="codeact-llm") as pool:
            return list(pool.map(ask, prompts))

    def rlm_query(self, task: str, context: Any = None) -> str:
        """Hand a sub-task to a language model that solves it by writing code, like you, in a sandbox of
        its own, with `context` as a variable there; returns its answer as text.

        Use it for a part that needs several steps of its own (searching a large piece, say). It spends
        calls from the same budget as llm_query.
        """
        if not isinstance(task, str):
            raise TypeError(f"task must be a str, got {type(task).__name__}")
        assert self.recurse is not None
        self._reserve(1)
        with self.lock:
            share = max(0, self.max_calls - self.made)
        record = LLMCall(prompt=task, model="rlm_query")
        with self._recording(record):
            answer, run = self.recurse(task, context, share)
        record.reply, record.run = answer, run
        usage = run.usage
        record.prompt_tokens, record.completion_tokens, record.cost = (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cost,
        )
        with self.lock:
            self.made += run.sub_usage.calls  # the child's own sub-calls came out of the same budget
            self.usage = self.usage + usage
            self.on_usage(usage)
        if run.outputs is None:
            raise RuntimeError(f"the sub-task ended without an answer ({run.end_reason}): {run.error or ''}".strip())
        return answer

    @contextlib.contextmanager
    def _recording(self, record: LLMCall) -> Iterator[None]:
        """Time the call in `record`, note its failure, and keep it for the step."""
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            record.duration_s = time.perf_counter() - started
            with self.lock:
                self.records.append(record)

    # --- one call ---------------------------------------------------------------------------------
    def _reserve(self, n: int) -> None:
        with self.lock:
            if self.made + n > self.max_calls:
                left = self.max_calls - self.made
                raise RuntimeError(
                    f"the run may make {self.max_calls} language-model calls from code and {self.made} are made; "
                    f"{left} left, {n} asked: answer from what you have (or ask fewer, larger questions)"
                )
            why = self.over_budget()
            if why is not None:
                raise RuntimeError(
                    f"the run's budget is spent ({why}); no more language-model calls: submit what you have"
                )
            self.made += n

    def _ask(
        self, prompt: str, schema: str | dict[str, Any] | None, temperature: float | None, max_tokens: int | None
    ) -> Any:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        adapter, json_schema = _schema(schema)
        content = prompt
        if json_schema is not None:
            content += "\n\nAnswer with JSON only, matching this JSON schema:\n" + json.dumps(
                json_schema, separators=(",", ":")
            )
        assert self.lm is not None
        record = LLMCall(prompt=prompt, model=getattr(self.lm, "model", "") or type(self.lm).__name__)
        options: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens}
        if json_schema is not None and getattr(self.lm, "constrains_json", False):
            options["json_schema"] = json_schema
        with self._recording(record):
            completion = self.lm.complete([{"role": "user", "content": content}], **options)
        usage = completion.usage
        record.reply = completion.text
        record.prompt_tokens, record.completion_tokens, record.cost = (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cost,
        )
        counted = Usage(usage.prompt_tokens, usage.completion_tokens, max(usage.calls, 1), usage.cost)
        with self.lock:
            self.usage = self.usage + counted
            self.on_usage(counted)
        if adapter is None and json_schema is None:
            return completion.text
        return _parse(completion.text, adapter)


def _schema(schema: str | dict[str, Any] | None) -> tuple[pydantic.TypeAdapter[Any] | None, dict[str, Any] | None]:
    """A type adapter and JSON schema for `schema` (a type spelt as in signatures, or a JSON schema)."""
    if schema is None:
        return None, None
    if isinstance(schema, dict):
        return None, schema
    if not isinstance(schema, str):
        raise TypeError(f"schema must be a type such as 'list[int]' or a JSON schema dict, got {schema!r}")
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(parse_type(schema, "schema"))
    return adapter, adapter.json_schema()


class AnswerMismatch(ValueError):
    """The model's answer is not JSON, or does not fit the schema asked for."""


def _parse(text: str, adapter: pydantic.TypeAdapter[Any] | None) -> Any:
    stripped = text.strip()
    fenced = _FENCED_JSON.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError:
        if adapter is None:
            raise AnswerMismatch(f"the model's answer is not JSON: {text[:300]!r}") from None
        value = stripped  # a bare word or number may still validate as the type
    if adapter is None:
        return value
    try:
        return adapter.validate_python(value)
    except pydantic.ValidationError as exc:
        raise AnswerMismatch(
            f"the model's answer {text[:300]!r} does not fit the schema: {exc.errors()[0].get('msg', exc)}"
        ) from None
