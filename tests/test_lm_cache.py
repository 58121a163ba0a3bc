"""The on-disk response cache: readable entries, keys over the whole request, damaged files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from codeact.lm import Completion, ResponseCache, Usage
from codeact.lm.cache import default_cache_dir, request_key

REQUEST = {
    "model": "openai/gpt-4o-mini",
    "endpoint": "https://api.openai.com/v1",
    "messages": [{"role": "user", "content": "Hi"}],
    "stop": None,
    "max_tokens": 10,
    "temperature": 0.0,
}


def test_a_stored_reply_comes_back_marked_cached_and_free(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    assert cache.get(REQUEST) is None
    stored = Completion("Hello!", Usage(12, 3, 1, 0.0001), "gpt-4o-mini", "stop", 0.8)
    path = cache.put(REQUEST, stored)
    hit = cache.get(REQUEST)
    assert hit is not None and hit.cached
    assert (hit.text, hit.model, hit.finish_reason) == ("Hello!", "gpt-4o-mini", "stop")
    assert (hit.usage.prompt_tokens, hit.usage.completion_tokens) == (12, 3)
    assert hit.usage.cost == 0.0  # nothing was spent this time
    entry = json.loads(path.read_text())
    assert entry["request"] == REQUEST and entry["completion"]["text"] == "Hello!"
    assert len(cache) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", "openai/gpt-4o"),
        ("endpoint", "http://127.0.0.1:8000/v1"),
        ("messages", [{"role": "user", "content": "Hi!"}]),
        ("stop", ["\n"]),
        ("max_tokens", 11),
        ("temperature", 0.5),
    ],
)
def test_every_part_of_the_request_is_in_the_key(field: str, value: object) -> None:
    assert request_key({**REQUEST, field: value}) != request_key(REQUEST)
    assert request_key(dict(reversed(list(REQUEST.items())))) == request_key(REQUEST)


def test_a_damaged_entry_is_a_miss_and_is_overwritten(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    path = cache.put(REQUEST, Completion("Hello!"))
    path.write_text("{not json")
    assert cache.get(REQUEST) is None
    cache.put(REQUEST, Completion("Again"))
    hit = cache.get(REQUEST)
    assert hit is not None and hit.text == "Again"
    cache.clear()
    assert len(cache) == 0


def test_default_directory_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CODEACT_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("CODEACT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "codeact" / "lm"
