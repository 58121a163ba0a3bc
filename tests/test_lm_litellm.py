"""The LiteLLM backend (optional extra): real calls through LiteLLM's OpenAI provider to the local
llama.cpp server, and the message users get when the extra is missing."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from codeact import LM
from codeact.lm import LMAuthError, LMContextLengthError, LMMissingExtraError, RetryPolicy
from llama_server import MODEL_ALIAS, LlamaServer
from lm_fixtures import SERVER_KEY, llama_server

__all__ = ["llama_server"]

# Importing LiteLLM makes pydantic warn about its own types.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydantic._internal._generate_schema")

HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]


def test_missing_litellm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "litellm", None)  # makes `import litellm` fail
    with pytest.raises(LMMissingExtraError, match=r"pip install 'codeact\[litellm\]'"):
        LM("anthropic/claude-haiku-4-5")
    with pytest.raises(ImportError):
        LM("gemini/gemini-2.0-flash")


def make_lm(server: LlamaServer, **options: Any) -> Any:
    pytest.importorskip("litellm", reason="the litellm extra is not installed")
    from codeact.lm.litellm import LiteLLMLM

    options.setdefault("api_key", SERVER_KEY)
    options.setdefault("retry", RetryPolicy(1, initial_delay=0.01))
    return LiteLLMLM(f"openai/{MODEL_ALIAS}", api_base=server.base_url, **options)


@pytest.mark.slow
def test_litellm_chat_stream_and_async(llama_server: LlamaServer) -> None:
    lm = make_lm(llama_server)
    reply = lm.complete(HELLO, max_tokens=12, temperature=0)
    assert reply.text and 0 < reply.usage.completion_tokens <= 12 and reply.usage.calls == 1
    assert reply.usage.cost is None  # a self-hosted server: price unknown
    pieces: list[str] = []
    streamed = lm.complete(HELLO, max_tokens=12, on_token=pieces.append)
    assert len(pieces) > 1 and "".join(pieces) == streamed.text
    assert asyncio.run(lm.acomplete(HELLO, max_tokens=8)).text


@pytest.mark.slow
def test_litellm_errors_become_lm_errors(llama_server: LlamaServer) -> None:
    with pytest.raises(LMAuthError, match="api_key"):
        make_lm(llama_server, api_key="wrong").complete(HELLO, max_tokens=4)
    with pytest.raises(LMContextLengthError, match="context"):
        make_lm(llama_server).complete([{"role": "user", "content": "word " * 3000}])


def test_missing_provider_key_says_which_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("litellm", reason="the litellm extra is not installed")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    with pytest.raises(LMAuthError, match="ANTHROPIC_API_KEY"):
        LM("anthropic/claude-haiku-4-5", retry=0).complete(HELLO)
