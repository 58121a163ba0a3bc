"""The OpenAI-compatible backend against a real llama.cpp server over HTTP, and against faults
injected by a loopback proxy in front of it. Model text varies between builds: these tests assert
behaviour (lengths, stops, usage, errors, request counts), not words."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from codeact import LM
from codeact.lm import (
    LMAuthError,
    LMBadRequestError,
    LMConnectionError,
    LMContextLengthError,
    LMModelNotFoundError,
    LMQuotaError,
    LMRateLimitError,
    LMResponseError,
    LMServerError,
    LMTimeoutError,
    RetryPolicy,
)
from codeact.lm.openai import OpenAILM
from llama_server import MODEL_ALIAS, LlamaServer
from lm_fixtures import SERVER_KEY, Fault, FaultProxy, fault_proxy, llama_server

__all__ = ["fault_proxy", "llama_server"]

pytestmark = pytest.mark.slow

FAST_RETRY = RetryPolicy(max_retries=3, initial_delay=0.01, max_delay=0.05)
HELLO = [{"role": "user", "content": "Say hello to Ada in one short sentence."}]
COUNT = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]


def make_lm(base_url: str, **options: Any) -> LM:
    options.setdefault("api_key", SERVER_KEY)
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("timeout", 60)
    lm = LM(f"openai/{MODEL_ALIAS}", api_base=base_url, **options)
    assert isinstance(lm.backend, OpenAILM)
    return lm


# Against the real server.


def test_chat_reply_has_text_usage_and_latency(llama_server: LlamaServer) -> None:
    reply = make_lm(llama_server.base_url).complete(HELLO, max_tokens=30, temperature=0)
    assert reply.text.strip()
    assert reply.usage.prompt_tokens > 5
    assert 0 < reply.usage.completion_tokens <= 30
    assert reply.usage.calls == 1
    assert reply.usage.cost is None  # a self-hosted server's price is unknown, not zero
    assert reply.latency_s > 0
    assert reply.finish_reason in ("stop", "length")
    assert reply.cached is False


def test_max_tokens_cuts_the_reply(llama_server: LlamaServer) -> None:
    reply = make_lm(llama_server.base_url).complete(COUNT, max_tokens=4, temperature=0)
    assert reply.usage.completion_tokens <= 4
    assert reply.finish_reason == "length"


def test_stop_sequence_ends_the_reply_before_it(llama_server: LlamaServer) -> None:
    lm = make_lm(llama_server.base_url)
    full = lm.complete(COUNT, max_tokens=40, temperature=0).text
    words = full.split()
    assert len(words) >= 4, full
    stop = words[3]
    stopped = lm.complete(COUNT, max_tokens=40, temperature=0, stop=[stop])
    assert stop not in stopped.text
    assert full.startswith(stopped.text)
    assert len(stopped.text) < len(full)
    assert stopped.finish_reason == "stop"


def test_streaming_passes_every_piece_to_on_token(llama_server: LlamaServer) -> None:
    pieces: list[str] = []
    reply = make_lm(llama_server.base_url).complete(COUNT, max_tokens=30, temperature=0, on_token=pieces.append)
    assert len(pieces) > 3
    assert "".join(pieces) == reply.text
    # llama.cpp's server sends no usage when streaming: the backend counts tokens itself.
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens > 0


async def test_async_calls_run_concurrently_and_stream(llama_server: LlamaServer) -> None:
    lm = make_lm(llama_server.base_url)
    pieces: list[str] = []
    streamed, plain = await asyncio.gather(
        lm.acomplete(HELLO, max_tokens=20, on_token=pieces.append),
        lm.acomplete(COUNT, max_tokens=20),
    )
    assert streamed.text and "".join(pieces) == streamed.text
    assert plain.text and plain.usage.completion_tokens > 0


def test_on_token_failure_is_raised_unchanged(llama_server: LlamaServer) -> None:
    def explode(piece: str) -> None:
        raise KeyError("from the callback")

    with pytest.raises(KeyError, match="from the callback"):
        make_lm(llama_server.base_url).complete(HELLO, max_tokens=10, on_token=explode)


def test_wrong_key_fails_at_once_saying_to_check_the_key(fault_proxy: FaultProxy) -> None:
    lm = make_lm(fault_proxy.base_url, api_key="sk-wrong-key-123")
    with pytest.raises(LMAuthError) as caught:
        lm.complete(HELLO, max_tokens=5)
    assert caught.value.status == 401
    assert "api_key" in str(caught.value)
    assert "sk-wrong-key-123" not in str(caught.value)
    assert len(fault_proxy.chat_requests) == 1  # no retry


def test_prompt_too_long_names_the_context_size(llama_server: LlamaServer) -> None:
    long_prompt = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(LMContextLengthError, match="context"):
        make_lm(llama_server.base_url).complete(long_prompt, max_tokens=10)


def test_api_key_stays_out_of_repr(llama_server: LlamaServer) -> None:
    lm = make_lm(llama_server.base_url)
    assert SERVER_KEY not in repr(lm)
    assert SERVER_KEY not in str(vars(lm))


def test_cache_answers_a_repeated_request_without_sending_it(fault_proxy: FaultProxy, tmp_path: Path) -> None:
    lm = make_lm(fault_proxy.base_url, cache=tmp_path)
    first = lm.complete(HELLO, max_tokens=20, temperature=0.9)
    assert len(fault_proxy.chat_requests) == 1
    pieces: list[str] = []
    again = lm.complete(HELLO, max_tokens=20, temperature=0.9, on_token=pieces.append)
    assert len(fault_proxy.chat_requests) == 1
    assert again.cached and again.text == first.text and "".join(pieces) == first.text
    assert again.usage.prompt_tokens == first.usage.prompt_tokens
    # A fresh LM on the same directory (a rerun) also hits; a different setting misses.
    assert make_lm(fault_proxy.base_url, cache=tmp_path).complete(HELLO, max_tokens=20, temperature=0.9).cached
    lm.complete(HELLO, max_tokens=21, temperature=0.9)
    assert len(fault_proxy.chat_requests) == 2
    files = sorted(tmp_path.glob("*/*.json"))
    assert len(files) == 2
    entry = json.loads(files[0].read_text())
    assert {"request", "completion"} <= entry.keys()
    assert entry["request"]["messages"] == HELLO
    assert all(SERVER_KEY not in f.read_text() for f in files)


# Faults injected by the proxy.


def test_429_waits_for_retry_after_then_succeeds(fault_proxy: FaultProxy) -> None:
    fault_proxy.inject(Fault("status", 429, {"error": {"message": "slow down"}}, {"retry-after": "1"}))
    reply = make_lm(fault_proxy.base_url).complete(HELLO, max_tokens=10)
    assert reply.text
    first, second = fault_proxy.chat_requests
    assert second.at - first.at >= 0.95


def test_5xx_is_retried_until_it_succeeds(fault_proxy: FaultProxy) -> None:
    fault_proxy.inject(Fault("status", 500), Fault("status", 503))
    reply = make_lm(fault_proxy.base_url).complete(HELLO, max_tokens=10)
    assert reply.text
    assert len(fault_proxy.chat_requests) == 3


def test_dropped_connection_is_retried(fault_proxy: FaultProxy) -> None:
    fault_proxy.inject(Fault("drop"))
    assert make_lm(fault_proxy.base_url).complete(HELLO, max_tokens=10).text
    assert len(fault_proxy.chat_requests) == 2


def test_stream_cut_midway_is_retried_from_the_start(fault_proxy: FaultProxy) -> None:
    fault_proxy.inject(Fault("cut_stream"))
    pieces: list[str] = []
    reply = make_lm(fault_proxy.base_url).complete(HELLO, max_tokens=10, on_token=pieces.append)
    assert reply.text
    assert len(fault_proxy.chat_requests) == 2


def test_slow_response_times_out_and_gives_up(fault_proxy: FaultProxy) -> None:
    fault_proxy.inject(Fault("slow", delay=5), Fault("slow", delay=5))
    lm = make_lm(fault_proxy.base_url, timeout=0.5, retry=RetryPolicy(1, initial_delay=0.01))
    started = time.monotonic()
    with pytest.raises(LMTimeoutError, match=r"0\.5s.*gave up after 2 attempts"):
        lm.complete(HELLO, max_tokens=5)
    assert time.monotonic() - started < 4
    assert len(fault_proxy.chat_requests) == 2


def test_persistent_5xx_gives_up_after_the_retry_budget(fault_proxy: FaultProxy) -> None:
    fault_proxy.inject(*[Fault("status", 502)] * 3)
    lm = make_lm(fault_proxy.base_url, retry=RetryPolicy(2, initial_delay=0.01))
    with pytest.raises(LMServerError, match=r"502.*gave up after 3 attempts") as caught:
        lm.complete(HELLO, max_tokens=5)
    assert caught.value.status == 502
    assert len(fault_proxy.chat_requests) == 3


def test_retry_after_longer_than_allowed_fails_at_once(fault_proxy: FaultProxy) -> None:
    fault_proxy.inject(Fault("status", 429, {"error": {"message": "busy"}}, {"retry-after": "3600"}))
    with pytest.raises(LMRateLimitError, match="asked to wait 3600s"):
        make_lm(fault_proxy.base_url).complete(HELLO, max_tokens=5)
    assert len(fault_proxy.chat_requests) == 1


@pytest.mark.parametrize(
    ("status", "body", "error_type", "advice"),
    [
        (404, {"error": {"message": "model not found"}}, LMModelNotFoundError, "model name"),
        (400, {"error": {"message": "bad temperature"}}, LMBadRequestError, "bad temperature"),
        (
            429,
            {"error": {"message": "quota", "code": "insufficient_quota"}},
            LMQuotaError,
            "credit",
        ),
    ],
)
def test_errors_retrying_cannot_fix_fail_at_once(
    fault_proxy: FaultProxy, status: int, body: Any, error_type: type[Exception], advice: str
) -> None:
    fault_proxy.inject(Fault("status", status, body))
    with pytest.raises(error_type, match=advice):
        make_lm(fault_proxy.base_url).complete(HELLO, max_tokens=5)
    assert len(fault_proxy.chat_requests) == 1


def test_a_reply_that_is_not_json_is_an_lm_error(fault_proxy: FaultProxy) -> None:
    fault_proxy.inject(Fault("garbage"))
    with pytest.raises(LMResponseError):
        make_lm(fault_proxy.base_url).complete(HELLO, max_tokens=5)


async def test_async_retries_too(fault_proxy: FaultProxy) -> None:
    fault_proxy.inject(Fault("status", 500), Fault("drop"))
    reply = await make_lm(fault_proxy.base_url).acomplete(HELLO, max_tokens=10)
    assert reply.text
    assert len(fault_proxy.chat_requests) == 3


def test_unreachable_server_is_a_connection_error() -> None:
    lm = make_lm("http://127.0.0.1:9/v1", retry=RetryPolicy(1, initial_delay=0.01))
    with pytest.raises(LMConnectionError, match=r"could not reach http://127\.0\.0\.1:9/v1"):
        lm.complete(HELLO)
