"""The retry policy: which errors are retried, how long it waits, and Retry-After parsing."""

from __future__ import annotations

import asyncio
import email.utils
import time

import pytest

from codeact.lm import (
    LMAuthError,
    LMConnectionError,
    LMContextLengthError,
    LMRateLimitError,
    LMServerError,
    RetryPolicy,
)
from codeact.lm.retry import acall_with_retry, call_with_retry, parse_retry_after


def failing(*errors: Exception) -> tuple[list[float], object]:
    """A send function that raises `errors` in turn, then returns "ok"; records call times."""
    calls: list[float] = []

    def send() -> str:
        calls.append(time.monotonic())
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    return calls, send


def test_backoff_grows_exponentially_with_jitter_and_a_ceiling() -> None:
    policy = RetryPolicy(initial_delay=1.0, multiplier=2.0, max_delay=5.0)
    error = LMServerError("boom", status=500)
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 5.0), (10, 5.0)]:
        delays = [policy.delay(attempt, error) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.7  # jittered over the whole range, not fixed
        assert len(set(delays)) > 100


def test_retry_after_overrides_the_backoff() -> None:
    policy = RetryPolicy(initial_delay=0.01)
    assert policy.delay(0, LMRateLimitError("429", retry_after=7.5)) == 7.5


def test_transient_errors_are_retried_until_success() -> None:
    calls, send = failing(LMServerError("500"), LMConnectionError("reset"), LMRateLimitError("429", retry_after=0.05))
    policy = RetryPolicy(max_retries=3, initial_delay=0.001)
    assert call_with_retry(send, policy) == "ok"  # type: ignore[arg-type]
    assert len(calls) == 4
    assert calls[3] - calls[2] >= 0.05


@pytest.mark.parametrize("error", [LMAuthError("401", status=401), LMContextLengthError("too long", status=400)])
def test_errors_waiting_cannot_fix_are_raised_at_once(error: Exception) -> None:
    calls, send = failing(error)
    with pytest.raises(type(error)):
        call_with_retry(send, RetryPolicy(max_retries=5, initial_delay=0.001))  # type: ignore[arg-type]
    assert len(calls) == 1


def test_the_last_error_says_how_many_attempts_were_made() -> None:
    calls, send = failing(*[LMServerError("503 from server")] * 3)
    with pytest.raises(LMServerError, match=r"503 from server.*gave up after 3 attempts"):
        call_with_retry(send, RetryPolicy(max_retries=2, initial_delay=0.001))  # type: ignore[arg-type]
    assert len(calls) == 3


def test_async_retry_waits_without_blocking_the_loop() -> None:
    ticks: list[float] = []

    async def ticker() -> None:
        for _ in range(5):
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    attempts = 0

    async def send() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise LMRateLimitError("429", retry_after=0.08)
        return "ok"

    async def main() -> str:
        result, _ = await asyncio.gather(acall_with_retry(send, RetryPolicy()), ticker())
        return result

    assert asyncio.run(main()) == "ok"
    assert attempts == 2
    assert len(ticks) == 5


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    seconds = parse_retry_after({"retry-after": when})
    assert seconds is not None and 25 <= seconds <= 31


def test_policy_rejects_negative_settings() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)
