"""`LM("local")`: the bundled SmolLM2 model run in process by llama.cpp, offline."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from codeact import LM
from codeact.lm import LMContextLengthError, LMTimeoutError
from codeact.lm.local import LocalLM
from lm_fixtures import bundled_model

pytestmark = pytest.mark.slow

COUNT = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]


@pytest.fixture(scope="module")
def local() -> LM:
    bundled_model()
    lm = LM("local")
    assert isinstance(lm.backend, LocalLM)
    return lm


def test_local_model_answers_offline_with_exact_usage(local: LM) -> None:
    reply = local.complete(COUNT, max_tokens=12, temperature=0)
    assert reply.text.strip()
    assert reply.usage.prompt_tokens > 10  # the chat template adds a system prompt
    assert reply.usage.completion_tokens == 12
    assert reply.finish_reason == "length"
    assert reply.usage.cost == 0.0 and reply.usage.calls == 1
    assert reply.latency_s > 0


def test_temperature_zero_is_repeatable(local: LM) -> None:
    first = local.complete(COUNT, max_tokens=15, temperature=0).text
    assert local.complete(COUNT, max_tokens=15, temperature=0).text == first


def test_stop_and_streaming(local: LM) -> None:
    full = local.complete(COUNT, max_tokens=30, temperature=0).text
    words = full.split()
    assert len(words) >= 4, full
    pieces: list[str] = []
    stopped = local.complete(COUNT, max_tokens=30, temperature=0, stop=[words[3]], on_token=pieces.append)
    assert words[3] not in stopped.text and full.startswith(stopped.text)
    assert stopped.finish_reason == "stop"
    assert "".join(pieces) == stopped.text


def test_async_calls_share_the_model_safely(local: LM) -> None:
    async def both() -> list[str]:
        replies = await asyncio.gather(
            local.acomplete(COUNT, max_tokens=8, temperature=0),
            local.acomplete(COUNT, max_tokens=8, temperature=0),
        )
        return [r.text for r in replies]

    first, second = asyncio.run(both())
    assert first and first == second


def test_prompt_longer_than_the_context_names_n_ctx() -> None:
    bundled_model()
    small = LM("local", n_ctx=256)
    with pytest.raises(LMContextLengthError, match="n_ctx"):
        small.complete([{"role": "user", "content": "word " * 400}], max_tokens=5)


def test_generation_stops_at_the_timeout() -> None:
    bundled_model()
    hurried = LM("local", timeout=0.3, max_tokens=2000)
    with pytest.raises(LMTimeoutError, match="timeout="):
        hurried.complete([{"role": "user", "content": "Write a very long story."}])


def test_cache_replays_the_local_reply(local: LM, tmp_path: Path) -> None:
    cached = LM("local", cache=tmp_path)
    first = cached.complete(COUNT, max_tokens=8, temperature=0.8)
    again = cached.complete(COUNT, max_tokens=8, temperature=0.8)
    assert not first.cached and again.cached and again.text == first.text
    assert len(list(tmp_path.glob("*/*.json"))) == 1
