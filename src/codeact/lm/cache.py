"""An opt-in on-disk cache of model replies, keyed on the full request.

Each entry is one readable JSON file, `<directory>/<key[:2]>/<key>.json`, holding the request and
the reply, so a cache can be inspected, diffed or pruned with ordinary tools. The key is the SHA-256
of the request in canonical JSON: model, server address, messages and every generation setting
(never the API key). Reruns of a benchmark or a debugging session then cost nothing and get the
same replies, whatever the temperature.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from codeact.lm.base import Completion, FunctionCall, Usage

CACHE_DIR_ENV = "CODEACT_CACHE_DIR"


def default_cache_dir() -> Path:
    """`$CODEACT_CACHE_DIR`, else `$XDG_CACHE_HOME/codeact/lm`, else `~/.cache/codeact/lm`."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "codeact" / "lm"


def request_key(request: dict[str, Any]) -> str:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache:
    """Replies stored under `directory` (default: `default_cache_dir()`)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.directory)!r})"

    def path_for(self, request: dict[str, Any]) -> Path:
        key = request_key(request)
        return self.directory / key[:2] / f"{key}.json"

    def get(self, request: dict[str, Any]) -> Completion | None:
        """The stored reply to `request`, marked `cached=True`, or None. An unreadable entry is
        treated as absent (and overwritten by the next `put`)."""
        path = self.path_for(request)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            stored = entry["completion"]
            usage = Usage(**stored["usage"])
            return Completion(
                text=stored["text"],
                usage=Usage(usage.prompt_tokens, usage.completion_tokens, usage.calls, 0.0),
                model=stored.get("model", ""),
                finish_reason=stored.get("finish_reason"),
                latency_s=0.0,
                cached=True,
                tool_calls=[FunctionCall(**call) for call in stored.get("tool_calls") or []],
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, request: dict[str, Any], completion: Completion) -> Path:
        """Store `completion` as the reply to `request` (atomically: readers never see half a file)."""
        path = self.path_for(request)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "request": request,
            "completion": asdict(completion) | {"cached": False},
            "stored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entry, handle, indent=2, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*/*.json"))

    def clear(self) -> None:
        for path in self.directory.glob("*/*.json"):
            path.unlink(missing_ok=True)
