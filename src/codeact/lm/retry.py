"""Retrying model calls: exponential backoff with full jitter, honouring the server's Retry-After.

Only errors marked `retryable` (429 rate limits, 5xx, dropped connections, timeouts) are retried;
everything else (bad key, unknown model, prompt too long) is raised at once.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from codeact.lm.errors import LMAPIError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait. The n-th wait (from 0) is a random time in
    `[0, min(max_delay, initial_delay * multiplier**n)]`, or the server's Retry-After when it gave one.
    A Retry-After longer than `max_retry_after` fails the call at once instead of sleeping."""

    max_retries: int = 4
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 20.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.initial_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("retry delays must be >= 0")

    def delay(self, attempt: int, error: LMAPIError) -> float:
        """Seconds to wait before retry number `attempt` (0-based) after `error`."""
        if error.retry_after is not None:
            return error.retry_after
        ceiling = min(self.max_delay, self.initial_delay * self.multiplier**attempt)
        return random.uniform(0, ceiling)

    def should_retry(self, attempt: int, error: LMAPIError) -> bool:
        if not error.retryable or attempt >= self.max_retries:
            return False
        return error.retry_after is None or error.retry_after <= self.max_retry_after


NO_RETRY = RetryPolicy(max_retries=0)


def parse_retry_after(headers: object) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date); None if absent."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    millis = get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _give_up(attempt: int, error: LMAPIError, policy: RetryPolicy) -> LMAPIError:
    if error.retryable and error.retry_after is not None and error.retry_after > policy.max_retry_after:
        error.args = (
            f"{error} (the server asked to wait {error.retry_after:.0f}s, longer than "
            f"max_retry_after={policy.max_retry_after:.0f}s; try again later)",
        )
    elif error.retryable and attempt > 0:
        error.args = (f"{error} (gave up after {attempt + 1} attempts)",)
    return error


def call_with_retry(send: Callable[[], T], policy: RetryPolicy) -> T:
    """`send()`, retried under `policy`; the last error is raised when retries run out."""
    attempt = 0
    while True:
        try:
            return send()
        except LMAPIError as error:
            if not policy.should_retry(attempt, error):
                raise _give_up(attempt, error, policy) from error.__cause__
            time.sleep(policy.delay(attempt, error))
            attempt += 1


async def acall_with_retry(send: Callable[[], Awaitable[T]], policy: RetryPolicy) -> T:
    """Async `call_with_retry`: waits with `asyncio.sleep`, so other tasks run meanwhile."""
    attempt = 0
    while True:
        try:
            return await send()
        except LMAPIError as error:
            if not policy.should_retry(attempt, error):
                raise _give_up(attempt, error, policy) from error.__cause__
            await asyncio.sleep(policy.delay(attempt, error))
            attempt += 1
