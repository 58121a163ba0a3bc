"""Choosing a backend from a model string, the default model, bad options, prices and token counts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from codeact import LM
from codeact.lm import LMAuthError, LMConfigError, ScriptedLM, default_model
from codeact.lm.backend import Secret
from codeact.lm.openai import OpenAILM
from codeact.lm.pricing import cost_of, price_of
from codeact.lm.tokens import count_message_tokens, count_tokens


def test_openai_model_string_gives_the_openai_backend() -> None:
    lm = LM("openai/gpt-4o-mini", api_key="sk-test-abc")
    assert isinstance(lm, LM) and isinstance(lm.backend, OpenAILM)
    assert lm.model == "openai/gpt-4o-mini" and lm.model_name == "gpt-4o-mini"
    assert lm.is_official


def test_openai_compatible_server_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    lm = LM("openai/llama3", api_base="http://127.0.0.1:8000/v1/")
    assert lm.api_base == "http://127.0.0.1:8000/v1"
    assert repr(lm) == "LM(OpenAILM('openai/llama3', api_base='http://127.0.0.1:8000/v1'))"


def test_missing_openai_key_says_which_variable_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(LMAuthError, match="OPENAI_API_KEY"):
        LM("openai/gpt-4o-mini")


def test_key_from_environment_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-secret-999")
    lm = LM("openai/gpt-4o-mini")
    assert "sk-env-secret-999" not in repr(lm)
    assert "sk-env-secret-999" not in str(vars(lm))


def test_secret_hides_its_value() -> None:
    secret = Secret("sk-1234")
    assert secret.reveal() == "sk-1234"
    assert "sk-1234" not in repr(secret) and "sk-1234" not in str(secret)
    assert "sk-1234" not in f"{secret} {secret!r}"


def test_scripted_model_string_still_dispatches(tmp_path: Path) -> None:
    replies = tmp_path / "replies.json"
    replies.write_text('["hi"]')
    assert isinstance(LM(f"scripted:{replies}").backend, ScriptedLM)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "http://localhost:8000", "/gpt"])
def test_unknown_model_string_says_what_to_write(model: str) -> None:
    with pytest.raises(LMConfigError, match="provider/model"):
        LM(model)


def test_local_with_a_missing_file_names_the_path() -> None:
    pytest.importorskip("llama_cpp")
    with pytest.raises(LMConfigError, match=r"no model file at /nowhere/model\.gguf"):
        LM("local", model_path="/nowhere/model.gguf")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CODEACT_MODEL": "ollama/llama3.2", "OPENAI_API_KEY": "k"}, "ollama/llama3.2"),
        ({"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"}, "openai/gpt-4o-mini"),
        ({"ANTHROPIC_API_KEY": "k"}, "anthropic/claude-haiku-4-5"),
        ({}, "local"),
    ],
)
def test_default_model(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str) -> None:
    for name in ("CODEACT_MODEL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert default_model() == expected


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"timeout": 0}, "timeout"),
        ({"retry": "often"}, "retry"),
        ({"temprature": 0.5}, "unknown option temprature"),
    ],
)
def test_bad_backend_options_are_refused(options: dict[str, object], complaint: str) -> None:
    with pytest.raises(LMConfigError, match=complaint):
        LM("openai/x", api_base="http://127.0.0.1:1/v1", **options)


@pytest.mark.parametrize(
    ("messages", "complaint"),
    [
        ("hello", "must be a list"),
        ([], "empty"),
        ([{"role": "robot", "content": "x"}], r"messages\[0\]"),
        ([{"role": "user", "content": "x"}, {"role": "user"}], r"messages\[1\]"),
    ],
)
def test_malformed_messages_fail_before_anything_is_sent(messages: object, complaint: str) -> None:
    lm = LM("openai/x", api_base="http://127.0.0.1:1/v1", retry=0)
    with pytest.raises(LMConfigError, match=complaint):
        lm.complete(messages)  # type: ignore[arg-type]
    with pytest.raises(LMConfigError, match="max_tokens"):
        lm.complete([{"role": "user", "content": "x"}], max_tokens=0)


def test_prices_of_known_models_and_their_snapshots() -> None:
    assert cost_of("openai/gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert price_of("gpt-4o-mini-2024-07-18") == price_of("gpt-4o-mini")
    assert price_of("gpt-4o") != price_of("gpt-4o-mini")
    assert price_of("anthropic/claude-3-5-haiku-20241022") == price_of("claude-3-5-haiku-latest")
    assert cost_of("gpt-4o", 1000, 0) == pytest.approx(0.0025)


def test_unknown_model_costs_none_not_zero() -> None:
    assert cost_of("openai/my-finetune", 10, 10) is None
    assert cost_of("ollama/llama3.2", 10, 10) is None


def test_cost_is_none_for_a_self_hosted_server_using_a_known_name() -> None:
    lm = LM("openai/gpt-4o-mini", api_base="http://127.0.0.1:1/v1")
    assert lm._cost(100, 100) is None
    assert LM("openai/gpt-4o-mini", api_key="sk-x")._cost(100, 100) == pytest.approx(7.5e-5)


def test_token_estimate_is_close_to_bpe_counts() -> None:
    assert count_tokens("") == 0
    assert count_tokens("Hello, world!") == 4
    assert 10 <= count_tokens("def add(a, b):\n    return a + b\n") <= 16
    long = "The quick brown fox jumps over the lazy dog. " * 20
    assert 180 <= count_tokens(long) <= 240
    one = [{"role": "user", "content": "Hello, world!"}]
    assert count_message_tokens(one) > count_tokens("Hello, world!")


def test_an_unknown_call_option_is_named_before_anything_is_sent() -> None:
    lm = ScriptedLM(["never sent"])
    with pytest.raises(TypeError, match="unknown model call option max_token:"):
        lm.complete([{"role": "user", "content": "hi"}], max_token=5)
    assert lm.history == []


def test_a_model_of_ones_own_implements_one_method_for_sync_and_async() -> None:
    from codeact.lm import Completion, LMRequest

    class Echo(LM):
        def handle_request(self, request: LMRequest) -> Completion:
            return Completion(text=f"{request.messages[-1]['content']} (stop={request.stop})")

    messages = [{"role": "user", "content": "ping"}]
    assert Echo().complete(messages, stop=["\n"]).text == "ping (stop=['\\n'])"
    assert asyncio.run(Echo().acomplete(messages)).text == "ping (stop=None)"
