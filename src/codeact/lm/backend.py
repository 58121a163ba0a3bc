"""`Backend`: what every real model backend shares around sending one request.

A call is turned into a plain request dict (model, server, messages, generation settings), looked up
in the optional response cache, sent under the retry policy, timed, and priced. Subclasses only
implement `_send` (and `_asend` when they have a native async API).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from codeact.lm.base import LM, Completion, FunctionCall, Message, TokenCallback, Usage
from codeact.lm.cache import ResponseCache
from codeact.lm.errors import LMConfigError, LMConnectionError, LMResponseError, LMTimeoutError
from codeact.lm.pricing import cost_of
from codeact.lm.retry import RetryPolicy, acall_with_retry, call_with_retry
from codeact.lm.tokens import count_message_tokens, count_tokens

Request = dict[str, Any]
CacheOption = bool | str | os.PathLike[str] | ResponseCache | None

_ROLES = ("system", "user", "assistant", "tool")


class Secret:
    """A string (an API key) that never shows in repr, str, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("an API key is not pickled; pass it (or its environment variable) again")


class CallbackFailed(Exception):
    """The caller's `on_token` raised; backends re-raise `error` unchanged instead of treating it
    as a model failure."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def emit(on_token: TokenCallback | None, text: str) -> None:
    """Pass streamed `text` to the caller's `on_token`, wrapping its failure in `CallbackFailed`."""
    if on_token is None or not text:
        return
    try:
        on_token(text)
    except Exception as error:
        raise CallbackFailed(error) from error


def _cache_from(option: CacheOption) -> ResponseCache | None:
    if option is None or option is False:
        return None
    if option is True:
        return ResponseCache()
    if isinstance(option, ResponseCache):
        return option
    return ResponseCache(option)


def _retry_from(option: RetryPolicy | int | None) -> RetryPolicy:
    if option is None:
        return RetryPolicy()
    if isinstance(option, RetryPolicy):
        return option
    if isinstance(option, int) and not isinstance(option, bool):
        return RetryPolicy(max_retries=option)
    raise LMConfigError(f"retry must be a RetryPolicy or a number of retries, got {option!r}")


def check_messages(messages: Sequence[Message]) -> list[Message]:
    """`messages` as a list of plain dicts, or LMConfigError saying which one is malformed."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise LMConfigError(
            f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}"
        )
    if not messages:
        raise LMConfigError("messages is empty: give at least one {'role': 'user', 'content': ...}")
    checked: list[Message] = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if role not in _ROLES or not isinstance(content, str):
            raise LMConfigError(
                f"messages[{index}] must be a dict with 'role' in {_ROLES} and a str 'content', got {message!r:.200}"
            )
        plain: Message = {"role": role, "content": content}
        if role == "assistant" and isinstance(message.get("tool_calls"), list):
            plain["tool_calls"] = message["tool_calls"]
        if role == "tool" and isinstance(message.get("tool_call_id"), str):
            plain["tool_call_id"] = message["tool_call_id"]
        checked.append(plain)
    return checked


def tool_args(request: Request) -> dict[str, Any]:
    """The `tools` and `tool_choice` of an OpenAI-style chat request, when the call offers functions."""
    if not request.get("tools"):
        return {}
    return {"tools": request["tools"], "tool_choice": request.get("tool_choice") or "auto"}


def function_calls(message: Any) -> list[FunctionCall]:
    """The function calls of an OpenAI-style reply message (objects or dicts)."""
    calls = []
    for call in _get(message, "tool_calls") or ():
        function = _get(call, "function")
        calls.append(
            FunctionCall(_get(call, "id") or "", _get(function, "name") or "", _get(function, "arguments") or "")
        )
    return calls


class FunctionCallDeltas:
    """Function calls gathered from streamed deltas (each names its call by index)."""

    def __init__(self) -> None:
        self.parts: dict[int, list[str]] = {}

    def add(self, delta: Any) -> None:
        for call in _get(delta, "tool_calls") or ():
            index = _get(call, "index") or 0
            entry = self.parts.setdefault(index, ["", "", ""])
            function = _get(call, "function")
            entry[0] = entry[0] or _get(call, "id") or ""
            entry[1] = entry[1] or _get(function, "name") or ""
            entry[2] += _get(function, "arguments") or ""

    def calls(self) -> list[FunctionCall]:
        return [FunctionCall(*self.parts[index]) for index in sorted(self.parts)]


def _get(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else getattr(value, name, None)


# --- OpenAI-format chat replies (the OpenAI SDK and LiteLLM both speak it) --------------------------
def completion_of(response: Any, where: str) -> Completion:
    """A Completion from a non-streamed chat response."""
    choices = getattr(response, "choices", None)
    if not choices:
        raise LMResponseError(f"{where} returned a completion with no choices")
    choice = choices[0]
    usage = getattr(response, "usage", None)
    return Completion(
        text=choice.message.content or "",
        usage=Usage(getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0),
        model=getattr(response, "model", "") or "",
        finish_reason=choice.finish_reason,
        tool_calls=function_calls(choice.message),
    )


class StreamedReply:
    """Text, tool calls, usage and finish reason gathered from streamed chunks."""

    def __init__(self, where: str, timeout: float) -> None:
        self.where, self.timeout = where, timeout
        self.started = time.monotonic()
        self.pieces: list[str] = []
        self.usage = Usage()
        self.model = ""
        self.finish_reason: str | None = None
        self.calls = FunctionCallDeltas()

    def add(self, chunk: Any, on_token: TokenCallback) -> None:
        self.model = self.model or getattr(chunk, "model", "") or ""
        usage = getattr(chunk, "usage", None)
        if usage is not None and (usage.prompt_tokens or usage.completion_tokens):
            self.usage = Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0)
        for choice in getattr(chunk, "choices", None) or ():
            if getattr(choice, "index", 0) != 0:
                continue
            text = getattr(choice.delta, "content", None) if choice.delta else None
            if text:
                self.pieces.append(text)
                emit(on_token, text)
            if choice.delta:
                self.calls.add(choice.delta)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        if time.monotonic() - self.started > self.timeout:
            raise LMTimeoutError(
                f"{self.where} was still streaming after {self.timeout:g}s: raise timeout= or ask for fewer max_tokens"
            )

    def completion(self) -> Completion:
        if self.finish_reason is None:
            raise LMConnectionError("the reply stream ended before the model finished (no finish_reason)")
        return Completion(
            text="".join(self.pieces),
            usage=self.usage,
            model=self.model,
            finish_reason=self.finish_reason,
            tool_calls=self.calls.calls(),
        )


def chat(create: Callable[[bool], Any], on_token: TokenCallback | None, where: str, timeout: float) -> Completion:
    """One chat call: `create(stream)` sends it; streamed when there is an `on_token` to feed."""
    if on_token is None:
        return completion_of(create(False), where)
    reply = StreamedReply(where, timeout)
    stream = create(True)
    try:
        for chunk in stream:
            reply.add(chunk, on_token)
    finally:
        close = getattr(stream, "close", None)
        if callable(close):
            close()
    return reply.completion()


async def achat(
    create: Callable[[bool], Awaitable[Any]], on_token: TokenCallback | None, where: str, timeout: float
) -> Completion:
    """`chat`, awaited."""
    if on_token is None:
        return completion_of(await create(False), where)
    reply = StreamedReply(where, timeout)
    stream = await create(True)
    try:
        async for chunk in stream:
            reply.add(chunk, on_token)
    finally:
        close = getattr(stream, "aclose", None) or getattr(stream, "close", None)
        if callable(close):
            outcome = close()
            if inspect.isawaitable(outcome):
                await outcome
    return reply.completion()


class Backend(LM):
    """A model reached by sending requests.

    Options common to every backend: `timeout` (seconds per call, each attempt), `retry` (a
    `RetryPolicy` or a number of retries), `cache` (True for the default directory, a path, or a
    `ResponseCache`; off by default), and defaults for `temperature`, `max_tokens` and `stop` that
    a call's own arguments override. A retried streaming call streams again from the start, so
    `on_token` can see the beginning of a reply twice.
    """

    def __init__(
        self,
        model: str,
        *,
        timeout: float = 120.0,
        retry: RetryPolicy | int | None = None,
        cache: CacheOption = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> None:
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise LMConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.model = model
        self.timeout = float(timeout)
        self.retry = _retry_from(retry)
        self.cache = _cache_from(cache)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.stop = list(stop) if stop else None

    # What a subclass provides.

    def _endpoint(self) -> str:
        """Where requests go (part of the cache key: the same model name on two servers differs)."""
        return ""

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """Dollars for a call from the price table; None when the model's price is unknown."""
        return cost_of(self.model, prompt_tokens, completion_tokens)

    def _send(self, request: Request, on_token: TokenCallback | None) -> Completion:
        raise NotImplementedError

    async def _asend(self, request: Request, on_token: TokenCallback | None) -> Completion:
        return await asyncio.to_thread(self._send, request, on_token)

    # The shared call path.

    def _request(
        self,
        messages: Sequence[Message],
        stop: Sequence[str] | None,
        max_tokens: int | None,
        temperature: float | None,
        json_schema: dict[str, Any] | None = None,
        grammar: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
    ) -> Request:
        if isinstance(stop, str):
            stop = [stop]
        stop = list(stop) if stop is not None else self.stop
        max_tokens = max_tokens if max_tokens is not None else self.max_tokens
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise LMConfigError(f"max_tokens must be a positive int, got {max_tokens!r}")
        temperature = temperature if temperature is not None else self.temperature
        request: Request = {
            "model": self.model,
            "endpoint": self._endpoint(),
            "messages": check_messages(messages),
            "stop": stop or None,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if json_schema is not None and self.constrains_json:
            request["json_schema"] = json_schema
        if grammar is not None and self.constrains_grammar:
            request["grammar"] = grammar
        if tools:
            if not self.supports_tool_calls:
                raise LMConfigError(f"{type(self).__name__} cannot offer functions to call (tools=)")
            request["tools"], request["tool_choice"] = tools, tool_choice
        return request

    def _cached(self, request: Request, on_token: TokenCallback | None) -> Completion | None:
        if self.cache is None:
            return None
        hit = self.cache.get(request)
        if hit is not None and on_token is not None and hit.text:
            on_token(hit.text)
        return hit

    def _finish(self, request: Request, completion: Completion, started: float) -> Completion:
        usage = completion.usage
        if usage.prompt_tokens == 0 and usage.completion_tokens == 0:
            usage = Usage(count_message_tokens(request["messages"]), count_tokens(completion.text))
        cost = self._cost(usage.prompt_tokens, usage.completion_tokens)
        completion = replace(
            completion,
            usage=Usage(usage.prompt_tokens, usage.completion_tokens, 1, cost),
            latency_s=time.perf_counter() - started,
            model=completion.model or self.model,
        )
        if self.cache is not None:
            try:
                self.cache.put(request, completion)
            except OSError as error:  # a full or read-only disk must not fail the call
                warnings.warn(f"could not write the response cache: {error}", stacklevel=3)
        return completion

    def complete(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        on_token: TokenCallback | None = None,
        json_schema: dict[str, Any] | None = None,
        grammar: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
    ) -> Completion:
        request = self._request(messages, stop, max_tokens, temperature, json_schema, grammar, tools, tool_choice)
        hit = self._cached(request, on_token)
        if hit is not None:
            return hit
        started = time.perf_counter()
        attempts = 0

        def send() -> Completion:
            nonlocal attempts
            attempts += 1
            return self._send(request, on_token)

        completion = call_with_retry(send, self.retry)
        completion.attempts = attempts
        return self._finish(request, completion, started)

    async def acomplete(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        on_token: TokenCallback | None = None,
        json_schema: dict[str, Any] | None = None,
        grammar: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
    ) -> Completion:
        request = self._request(messages, stop, max_tokens, temperature, json_schema, grammar, tools, tool_choice)
        hit = self._cached(request, on_token)
        if hit is not None:
            return hit
        started = time.perf_counter()
        attempts = 0

        async def send() -> Completion:
            nonlocal attempts
            attempts += 1
            return await self._asend(request, on_token)

        completion = await acall_with_retry(send, self.retry)
        completion.attempts = attempts
        return self._finish(request, completion, started)
