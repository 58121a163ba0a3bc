"""Which `LM` backend serves a model string, and which model to use when none is given."""

from __future__ import annotations

import os

from codeact.lm.base import LM
from codeact.lm.errors import LMConfigError

MODEL_ENV = "CODEACT_MODEL"
DEFAULT_OPENAI_MODEL = "openai/gpt-4o-mini"
DEFAULT_ANTHROPIC_MODEL = "anthropic/claude-haiku-4-5"


def backend_for(model: str) -> type[LM]:
    """`openai/...` -> the OpenAI SDK; `local` (or `local/<file.gguf>`) -> llama.cpp in process;
    `scripted:FILE` -> ScriptedLM; any other `provider/model` -> LiteLLM."""
    if model.startswith("scripted:"):
        from codeact.lm.scripted import ScriptedLM

        return ScriptedLM
    if model == "local" or model.startswith("local/"):
        from codeact.lm.local import LocalLM

        return LocalLM
    if model.startswith("openai/"):
        from codeact.lm.openai import OpenAILM

        return OpenAILM
    provider, _, name = model.partition("/")
    if provider and name and not provider.startswith(("http:", "https:")):
        from codeact.lm.litellm import LiteLLMLM

        return LiteLLMLM
    raise LMConfigError(
        f"unknown model string {model!r}: use 'provider/model' such as 'openai/gpt-4o-mini', "
        "'anthropic/claude-haiku-4-5' or 'ollama/llama3.2', or 'local' for the bundled offline model "
        "(an OpenAI-compatible server is 'openai/<model>' with api_base='http://host:port/v1')"
    )


def default_model() -> str:
    """`$CODEACT_MODEL` if set; else OpenAI's gpt-4o-mini when `OPENAI_API_KEY` is set; else
    Anthropic's Claude Haiku when `ANTHROPIC_API_KEY` is set; else `"local"`."""
    chosen = os.environ.get(MODEL_ENV, "").strip()
    if chosen:
        return chosen
    if os.environ.get("OPENAI_API_KEY"):
        return DEFAULT_OPENAI_MODEL
    if os.environ.get("ANTHROPIC_API_KEY"):
        return DEFAULT_ANTHROPIC_MODEL
    return "local"
