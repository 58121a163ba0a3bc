"""`Backend`: what every real model backend shares around sending one request.

A call is turned into a plain request dict (model, server, messages, generation settings), looked up
in the optional response cache, sent under the retry policy, timed, and priced. Subclasses only
implement `_send` (and `_asend` when they have a native async API).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, Generic, TypeVar

from codeact.lm.base import LM, Completion, FunctionCall, LMRequest, Message, TokenCallback, Usage
from codeact.lm.cache import ResponseCache
from codeact.lm.errors import LMConfigError, LMConnectionError, LMError, LMResponseError, LMTimeoutError
from codeact.lm.pricing import cost_of
from codeact.lm.retry import RetryPolicy, acall_with_retry, call_with_retry
from codeact.lm.tokens import count_message_tokens, count_tokens

T = TypeVar("T")
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


def chat_args(request: LMRequest, *, stream: bool, max_tokens_key: str = "max_tokens") -> dict[str, Any]:
    """The generation settings, streaming and functions of an OpenAI-style chat request."""
    args: dict[str, Any] = {"messages": request.messages}
    if request.stop:
        args["stop"] = request.stop
    if request.max_tokens is not None:
        args[max_tokens_key] = request.max_tokens
    if request.temperature is not None:
        args["temperature"] = request.temperature
    if stream:
        args["stream"] = True
        args["stream_options"] = {"include_usage": True}
    if request.tools:
        args["tools"] = request.tools
        args["tool_choice"] = request.tool_choice or "auto"
    return args


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


_BACKEND_OPTIONS = ("timeout", "retry", "cache", "temperature", "max_tokens", "stop")


def split_options(options: dict[str, Any]) -> dict[str, Any]:
    """Take the options that are not `Backend`'s own out of `options` (a provider's extra request
    parameters) and return them."""
    return {name: options.pop(name) for name in list(options) if name not in _BACKEND_OPTIONS}


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

    def _send(self, request: LMRequest) -> Completion:
        raise NotImplementedError

    async def _asend(self, request: LMRequest) -> Completion:
        return await asyncio.to_thread(self._send, request)

    # The shared call path.

    def _resolve(self, request: LMRequest) -> LMRequest:
        """The request with this backend's defaults filled in, checked, and stripped of what it cannot use."""
        stop = [request.stop] if isinstance(request.stop, str) else request.stop
        stop = list(stop) if stop is not None else self.stop
        max_tokens = request.max_tokens if request.max_tokens is not None else self.max_tokens
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise LMConfigError(f"max_tokens must be a positive int, got {max_tokens!r}")
        if request.tools and not self.supports_tool_calls:
            raise LMConfigError(f"{type(self).__name__} cannot offer functions to call (tools=)")
        return replace(
            request,
            messages=check_messages(request.messages),
            stop=stop or None,
            max_tokens=max_tokens,
            temperature=request.temperature if request.temperature is not None else self.temperature,
            json_schema=request.json_schema if self.constrains_json else None,
            grammar=request.grammar if self.constrains_grammar else None,
            tools=request.tools or None,
            tool_choice=request.tool_choice if request.tools else None,
        )

    def _cache_key(self, request: LMRequest) -> dict[str, Any]:
        key = {"model": self.model, "endpoint": self._endpoint(), **vars(request)}
        del key["on_token"]
        return {name: value for name, value in key.items() if value is not None or name in _ALWAYS_KEYED}

    def _lookup(self, request: LMRequest) -> tuple[LMRequest, Completion | None]:
        """The resolved request, and its stored reply when the cache has one (replayed to `on_token`)."""
        request = self._resolve(request)
        hit = self.cache.get(self._cache_key(request)) if self.cache is not None else None
        if hit is not None and request.on_token is not None and hit.text:
            request.on_token(hit.text)
        return request, hit

    def _finish(self, request: LMRequest, completion: Completion, sent: _Attempts) -> Completion:
        usage = completion.usage
        if usage.prompt_tokens == 0 and usage.completion_tokens == 0:
            usage = Usage(count_message_tokens(request.messages), count_tokens(completion.text))
        cost = self._cost(usage.prompt_tokens, usage.completion_tokens)
        completion = replace(
            completion,
            usage=Usage(usage.prompt_tokens, usage.completion_tokens, 1, cost),
            latency_s=time.perf_counter() - sent.started,
            model=completion.model or self.model,
            attempts=sent.count,
        )
        if self.cache is not None:
            try:
                self.cache.put(self._cache_key(request), completion)
            except OSError as error:  # a full or read-only disk must not fail the call
                warnings.warn(f"could not write the response cache: {error}", stacklevel=3)
        return completion

    def handle_request(self, request: LMRequest) -> Completion:
        request, hit = self._lookup(request)
        if hit is not None:
            return hit
        send = _Attempts(lambda: self._send(request))
        return self._finish(request, call_with_retry(send, self.retry), send)

    async def ahandle_request(self, request: LMRequest) -> Completion:
        request, hit = self._lookup(request)
        if hit is not None:
            return hit
        send = _Attempts(lambda: self._asend(request))
        return self._finish(request, await acall_with_retry(send, self.retry), send)


class _Attempts(Generic[T]):
    """A call's `send`, counting the attempts (retries included) since the call began."""

    def __init__(self, send: Callable[[], T]) -> None:
        self.send, self.count, self.started = send, 0, time.perf_counter()

    def __call__(self) -> T:
        self.count += 1
        return self.send()


_ALWAYS_KEYED = frozenset({"model", "endpoint", "messages", "stop", "max_tokens", "temperature"})


class ChatBackend(Backend):
    """A backend that speaks OpenAI's chat format (the OpenAI SDK, LiteLLM): it gives the call to
    make (`_create`, `_acreate`) and how to translate its errors; streaming, tool calls and the
    reply's parsing are shared."""

    def _create(self, request: LMRequest, stream: bool) -> Any:
        raise NotImplementedError

    async def _acreate(self, request: LMRequest, stream: bool) -> Any:
        raise NotImplementedError

    def _where(self) -> str:
        return self.model

    def _translate(self, error: Exception) -> Exception:
        """The `LMError` for an error the client raised (or the error itself to re-raise it)."""
        return error

    @contextlib.contextmanager
    def _errors_translated(self) -> Iterator[None]:
        try:
            yield
        except CallbackFailed as failed:
            raise failed.error from None
        except LMError:
            raise
        except Exception as error:
            raise self._translate(error) from None

    def _send(self, request: LMRequest) -> Completion:
        with self._errors_translated():
            return chat(lambda stream: self._create(request, stream), request.on_token, self._where(), self.timeout)

    async def _asend(self, request: LMRequest) -> Completion:
        with self._errors_translated():
            return await achat(
                lambda stream: self._acreate(request, stream), request.on_token, self._where(), self.timeout
            )
