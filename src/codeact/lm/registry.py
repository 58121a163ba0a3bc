"""Which `LM` backend serves a model string."""

from __future__ import annotations

from codeact.lm.base import LM


def backend_for(model: str) -> type[LM]:
    """`openai/...` -> OpenAI SDK; `local` -> llama.cpp; `scripted:FILE` -> ScriptedLM; others -> LiteLLM."""
    if model.startswith("scripted:"):
        from codeact.lm.scripted import ScriptedLM

        return ScriptedLM
    raise ValueError(f"no backend for model {model!r} yet")
