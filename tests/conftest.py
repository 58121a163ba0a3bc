"""Shared fixtures: every sandbox test runs against each backend available on this machine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


def _backends() -> list[str]:
    try:
        from codeact.sandbox import available_backends
    except ImportError:
        return []
    return available_backends()


@pytest.fixture(params=_backends())
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_sandbox(backend: str) -> Iterator[Callable[..., Any]]:
    """`make_sandbox(**options)` -> a started `Sandbox` on the backend under test, closed afterwards."""
    from codeact import Sandbox

    made: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("backend", backend)
        sandbox = Sandbox(*args, **kwargs)
        made.append(sandbox)
        sandbox.start()
        return sandbox

    yield make
    for sandbox in made:
        sandbox.close()
