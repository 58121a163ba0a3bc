"""`ScriptedLM`: replies given in advance, for tests and reproducible runs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from codeact.lm.base import LM, Completion, FunctionCall, LMError, LMRequest, Message, Usage

Reply = str | Completion | Callable[[list[Message]], "str | Completion"]


class ScriptedLMExhausted(LMError):
    """A `ScriptedLM` was called more times than it has replies."""


class ScriptedLM(LM):
    """Returns `replies` in order: strings, or callables that get the messages and return a string.
    A reply may also be a `Completion` (or a callable returning one), e.g. one with `tool_calls`.

    Every call is recorded in `history` (messages, reply, and the stop, max_tokens and
    temperature options). Token counts are whitespace-word counts, so usage is non-zero and
    deterministic. `ScriptedLM("scripted:replies.json")` reads a JSON list of reply strings.
    """

    supports_tool_calls = True

    def __init__(self, replies: Sequence[Reply] | str, *, model: str = "scripted") -> None:
        if isinstance(replies, str):
            path = Path(replies.removeprefix("scripted:"))
            try:
                loaded: Any = json.loads(path.read_text())
            except FileNotFoundError:
                raise ValueError(f"scripted replies file not found: {path}") from None
            except json.JSONDecodeError as exc:
                raise ValueError(f"scripted replies file {path} is not valid JSON: {exc}") from None
            if not isinstance(loaded, list) or not all(isinstance(r, str) for r in loaded):
                raise ValueError(f"scripted replies file {path} must hold a JSON list of strings")
            replies = loaded
            model = f"scripted:{path}"
        self.replies: list[Reply] = list(replies)
        self.model = model
        self.history: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @classmethod
    def serves(cls, model: str) -> bool:
        return model.startswith("scripted:")

    def handle_request(self, request: LMRequest) -> Completion:
        messages, on_token = request.messages, request.on_token
        start = time.perf_counter()
        with self._lock:
            index = len(self.history)
            if index >= len(self.replies):
                raise ScriptedLMExhausted(
                    f"ScriptedLM ran out of replies: call {index + 1} but only {len(self.replies)} replies were given"
                )
            entry: dict[str, Any] = {
                "messages": [dict(m) for m in messages],
                "reply": None,
                "stop": list(request.stop) if request.stop else None,
                "max_tokens": request.max_tokens,
                "temperature": request.temperature,
                "tools": request.tools,
            }
            self.history.append(entry)
        reply = self.replies[index]
        text = reply(list(messages)) if callable(reply) else reply
        calls: list[FunctionCall] = []
        if isinstance(text, Completion):
            text, calls = text.text, list(text.tool_calls)
        if not isinstance(text, str):
            raise TypeError(f"scripted reply {index + 1} returned {type(text).__name__}, not str")
        entry["reply"] = text
        if on_token is not None:
            for piece in text.splitlines(keepends=True):
                on_token(piece)
        usage = Usage(
            prompt_tokens=sum(len((m.get("content") or "").split()) for m in messages),
            completion_tokens=len(text.split()),
            calls=1,
            cost=None,
        )
        return Completion(
            text=text,
            usage=usage,
            model=self.model,
            finish_reason="tool_calls" if calls else "stop",
            latency_s=time.perf_counter() - start,
            tool_calls=calls,
        )
