"""Which model to use when none is given."""

from __future__ import annotations

import os

MODEL_ENV = "CODEACT_MODEL"
DEFAULT_OPENAI_MODEL = "openai/gpt-4o-mini"
DEFAULT_ANTHROPIC_MODEL = "anthropic/claude-haiku-4-5"


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
