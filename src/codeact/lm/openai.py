"""`OpenAILM`: OpenAI's API, or any OpenAI-compatible server (vLLM, llama.cpp, Ollama, LM Studio,
OpenRouter...) through `api_base=`, with the official `openai` SDK (sync and native async)."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import weakref
from typing import TYPE_CHECKING, Any

from codeact.lm import errors
from codeact.lm.backend import ChatBackend, Secret, chat_args, split_options
from codeact.lm.base import LMRequest
from codeact.lm.errors import LMAPIError, LMAuthError, LMConfigError, LMResponseError
from codeact.lm.pricing import cost_of, price_of
from codeact.lm.retry import parse_retry_after

if TYPE_CHECKING:
    import openai

OPENAI_BASE = "https://api.openai.com/v1"

_CONTEXT_WORDS = re.compile(
    r"context[ _]length|context window|maximum context|n_ctx|too many tokens|prompt is too long"
    r"|exceeds? the (?:model's )?(?:maximum|context)|context_length_exceeded|requested tokens",
    re.IGNORECASE,
)


def _server_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
        if isinstance(body.get("detail"), str):
            return body["detail"]
        if isinstance(inner, str):
            return inner
    text = error.response.text if error.response is not None else ""
    return text.strip()[:500] or str(error)


def _error_code(error: openai.APIStatusError) -> str:
    code = getattr(error, "code", None)
    if isinstance(code, str):
        return code
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("code"), str):
            return inner["code"]
    return ""


def translate_error(error: Exception, *, where: str, timeout: float, key_hint: str, not_found_hint: str) -> LMAPIError:
    """An `openai` SDK exception (LiteLLM's subclass them) as an `LMAPIError` saying what to fix."""
    import openai  # the SDK takes a second to import: only when a model of it is used

    if isinstance(error, openai.APITimeoutError):
        return errors.LMTimeoutError(
            f"{where} did not answer within {timeout:g}s: raise timeout= or ask for fewer max_tokens"
        )
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__ or error.__context__
        detail = f": {cause}" if cause else ""
        return errors.LMConnectionError(f"could not reach {where}{detail}")
    if not isinstance(error, openai.APIStatusError):
        return errors.LMResponseError(f"unreadable reply from {where}: {error}")
    status = error.status_code
    message = _server_message(error)
    code = _error_code(error)
    said = f"{where} answered {status}: {message}"
    headers = error.response.headers if error.response is not None else {}
    if status in (401, 403):
        return errors.LMAuthError(f"{said} ({key_hint})", status=status)
    if status == 404:
        return errors.LMModelNotFoundError(f"{said} ({not_found_hint})", status=status)
    if status == 429:
        if code == "insufficient_quota":
            return errors.LMQuotaError(f"{said} (add credit to the account)", status=status)
        return errors.LMRateLimitError(said, status=status, retry_after=parse_retry_after(headers))
    if status in (400, 413, 422) and (
        code == "context_length_exceeded"
        or type(error).__name__ == "ContextWindowExceededError"
        or _CONTEXT_WORDS.search(message)
    ):
        return errors.LMContextLengthError(
            f"{said} (the prompt plus max_tokens is longer than the model's context window: "
            "shorten the messages, lower max_tokens, or use a model or server with a larger "
            "context size)",
            status=status,
        )
    if status >= 500 or status in (408, 409):
        return errors.LMServerError(said, status=status, retry_after=parse_retry_after(headers))
    return errors.LMBadRequestError(said, status=status)


class OpenAILM(ChatBackend):
    """`LM("openai/gpt-4o-mini")`; `LM("openai/<model>", api_base="http://host:port/v1")` for any
    OpenAI-compatible server.

    The key comes from `api_key=` or `OPENAI_API_KEY` (a custom `api_base` needs none unless its
    server asks for one); the server from `api_base=` or `OPENAI_BASE_URL`. Extra keyword arguments
    (`top_p`, `seed`, `reasoning_effort`, ...) are sent with every request. See `Backend` for
    `timeout`, `retry`, `cache` and generation defaults.
    """

    supports_tool_calls = True

    @classmethod
    def serves(cls, model: str) -> bool:
        return model.startswith("openai/")

    @property
    def knows_cost(self) -> bool:
        return price_of(self.model) is not None

    def __init__(self, model: str, *, api_key: str | None = None, api_base: str | None = None, **options: Any) -> None:
        params = split_options(options)
        super().__init__(model, **options)
        self.model_name = model.removeprefix("openai/")
        if not self.model_name:
            raise LMConfigError("model name missing: use 'openai/<model>', e.g. 'openai/gpt-4o-mini'")
        base = api_base or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE
        self.api_base = base.rstrip("/")
        self.is_official = self.api_base == OPENAI_BASE
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if self.is_official:
                raise LMAuthError(
                    f"no API key for {model}: set the OPENAI_API_KEY environment variable or pass "
                    "api_key=...; for another OpenAI-compatible server pass api_base=..."
                )
            key = "no-key"
        self._api_key = Secret(key)
        import openai

        self._client = openai.OpenAI(api_key=key, base_url=self.api_base, timeout=self.timeout, max_retries=0)
        accepted = inspect.signature(self._client.chat.completions.create).parameters
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise LMConfigError(
                f"unknown option {', '.join(unknown)} for {model}: pass options of the chat "
                "completions API (top_p, seed, ...), and server-specific ones as extra_body={...}"
            )
        self.params = params
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        base = "" if self.is_official else f", api_base={self.api_base!r}"
        return f"OpenAILM({self.model!r}{base})"

    def _endpoint(self) -> str:
        return self.api_base

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        # Another server may reuse a model name; its prices are not OpenAI's.
        if not self.is_official:
            return None
        return cost_of(self.model_name, prompt_tokens, completion_tokens)

    def _async_client(self) -> openai.AsyncOpenAI:
        # An async HTTP client belongs to the event loop it first ran on.
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            import openai

            client = openai.AsyncOpenAI(
                api_key=self._api_key.reveal(),
                base_url=self.api_base,
                timeout=self.timeout,
                max_retries=0,
            )
            self._async_clients[loop] = client
        return client

    def _create_args(self, request: LMRequest, stream: bool) -> dict[str, Any]:
        # OpenAI's newer models refuse `max_tokens`; other servers mostly know only it.
        key = "max_completion_tokens" if self.is_official else "max_tokens"
        return {
            "model": self.model_name,
            "timeout": self.timeout,
            **self.params,
            **chat_args(request, stream=stream, max_tokens_key=key),
        }

    def _create(self, request: LMRequest, stream: bool) -> Any:
        return self._client.chat.completions.create(**self._create_args(request, stream))

    async def _acreate(self, request: LMRequest, stream: bool) -> Any:
        return await self._async_client().chat.completions.create(**self._create_args(request, stream))

    def _translate(self, error: Exception) -> Exception:
        if isinstance(error, (ValueError, AttributeError, TypeError)):
            return LMResponseError(f"unreadable reply from {self.api_base}: {error}")
        import openai

        if not isinstance(error, openai.OpenAIError):
            return error
        if self.is_official:
            key_hint = "check OPENAI_API_KEY or the api_key= argument"
            not_found_hint = f"check the model name {self.model_name!r}"
        else:
            key_hint = f"check the api_key= you pass for {self.api_base}"
            not_found_hint = f"check the model name {self.model_name!r} and that {self.api_base} ends in /v1"
        return translate_error(
            error, where=self._where(), timeout=self.timeout, key_hint=key_hint, not_found_hint=not_found_hint
        )

    def _where(self) -> str:
        return f"{self.api_base} (model {self.model_name!r})"
