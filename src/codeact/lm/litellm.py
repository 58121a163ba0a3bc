"""`LiteLLMLM`: every other provider (`anthropic/...`, `gemini/...`, `ollama/...`, `groq/...`, ...)
through LiteLLM, an optional extra: `pip install 'codeact[litellm]'`."""

from __future__ import annotations

import os
from typing import Any

from codeact.lm.backend import ChatBackend, Secret, chat_args, split_options
from codeact.lm.base import LMRequest
from codeact.lm.errors import LMMissingExtraError, LMResponseError
from codeact.lm.openai import translate_error
from codeact.lm.pricing import cost_of, price_of

_KEY_ENV = {
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "vertex_ai": "GOOGLE_APPLICATION_CREDENTIALS",
    "together_ai": "TOGETHERAI_API_KEY",
    "azure": "AZURE_API_KEY",
    "bedrock": "AWS_ACCESS_KEY_ID",
}


def _import_litellm() -> Any:
    # LiteLLM fetches its model price map over the network at import unless told not to.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError:
        raise LMMissingExtraError(
            "this model needs LiteLLM, an optional extra: pip install 'codeact[litellm]' "
            "(OpenAI and OpenAI-compatible servers work without it as 'openai/<model>')"
        ) from None
    litellm.suppress_debug_info = True
    return litellm


class LiteLLMLM(ChatBackend):
    """Any LiteLLM model string, e.g. `LM("anthropic/claude-haiku-4-5")`, `LM("ollama/llama3.2",
    api_base="http://localhost:11434")`. The key comes from `api_key=` or the provider's usual
    environment variable (`ANTHROPIC_API_KEY`, `GEMINI_API_KEY`, ...). Extra keyword arguments are
    passed to `litellm.completion`. See `Backend` for `timeout`, `retry` and `cache`.
    """

    supports_tool_calls = True
    serves_any_provider = True

    @property
    def knows_cost(self) -> bool:
        return price_of(self.model) is not None

    def configuration_problem(self) -> str | None:
        try:
            self._litellm.get_llm_provider(self.model)
        except Exception:
            return (
                f"unknown provider {self.provider!r} in model {self.model!r}: write provider/model, e.g. "
                "anthropic/claude-haiku-4-5 or openai/gpt-4o-mini"
            )
        if self._api_key is None and self.api_base is None:
            try:
                env = self._litellm.validate_environment(model=self.model)
            except Exception:
                return None
            missing = env.get("missing_keys") or []
            if missing and not env.get("keys_in_environment"):
                return f"model {self.model!r} needs {', '.join(missing)} set in the environment (or api_key=...)"
        return None

    def __init__(self, model: str, *, api_key: str | None = None, api_base: str | None = None, **options: Any) -> None:
        self._litellm = _import_litellm()
        params = split_options(options)
        super().__init__(model, **options)
        self.provider = model.partition("/")[0]
        self.api_base = api_base.rstrip("/") if api_base else None
        self._api_key = Secret(api_key) if api_key else None
        self.params = params

    def __repr__(self) -> str:
        base = f", api_base={self.api_base!r}" if self.api_base else ""
        return f"LiteLLMLM({self.model!r}{base})"

    def _endpoint(self) -> str:
        return self.api_base or self.provider

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        if self.api_base:
            return None
        known = cost_of(self.model, prompt_tokens, completion_tokens)
        if known is not None:
            return known
        try:
            prompt_cost, completion_cost = self._litellm.cost_per_token(
                model=self.model,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
            )
        except Exception:  # LiteLLM raises plain exceptions for models it has no price for
            return None
        return float(prompt_cost) + float(completion_cost)

    def _args(self, request: LMRequest, stream: bool) -> dict[str, Any]:
        args: dict[str, Any] = {"model": self.model, "timeout": self.timeout, "num_retries": 0, **self.params}
        if self.api_base:
            args["api_base"] = self.api_base
        if self._api_key is not None:
            args["api_key"] = self._api_key.reveal()
        return args | chat_args(request, stream=stream)

    def _create(self, request: LMRequest, stream: bool) -> Any:
        return self._litellm.completion(**self._args(request, stream))

    async def _acreate(self, request: LMRequest, stream: bool) -> Any:
        return await self._litellm.acompletion(**self._args(request, stream))

    def _translate(self, error: Exception) -> Exception:
        import openai  # installed with LiteLLM, which raises its exceptions

        env = _KEY_ENV.get(self.provider, f"{self.provider.upper()}_API_KEY")
        if isinstance(error, openai.OpenAIError):
            return translate_error(
                error,
                where=self._where(),
                timeout=self.timeout,
                key_hint=f"check {env} or the api_key= argument",
                not_found_hint=f"check the model name {self.model!r} in LiteLLM's provider list",
            )
        return LMResponseError(f"{self._where()} failed: {error}")

    def _where(self) -> str:
        return f"{self.api_base or self.provider} (model {self.model!r})"
