"""The `LM` seam: one class every model backend subclasses, and the records a call returns."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from codeact.errors import CodeActError


class _Message(TypedDict):
    role: str  # "system" | "user" | "assistant" | "tool"
    content: str


class Message(_Message, total=False):
    """One chat message; with tool calling, an assistant message may carry `tool_calls` (OpenAI's
    shape) and a `tool` message answers one of them by `tool_call_id`."""

    tool_calls: list[dict[str, Any]]
    tool_call_id: str


@dataclass
class FunctionCall:
    """A function the model asked to call (tool calling): its call id, name and JSON arguments."""

    id: str
    name: str
    arguments: str


@dataclass
class Usage:
    """Tokens and money spent; `cost` is None when the price of a model is unknown."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    cost: float | None = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        cost = None if self.cost is None or other.cost is None else self.cost + other.cost
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.calls + other.calls,
            cost,
        )


@dataclass
class Completion:
    """One model reply."""

    text: str
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str | None = None
    latency_s: float = 0.0
    cached: bool = False
    attempts: int = 1  # requests sent for this reply (more than one when the call was retried)
    tool_calls: list[FunctionCall] = field(default_factory=list)  # with `tools=`: what the model called


class LMError(CodeActError, RuntimeError):
    """A model call failed for good (after retries, or at once for errors retrying cannot fix)."""


TokenCallback = Callable[[str], None]


class LM:
    """A language model. `LM("openai/gpt-4o-mini")`, `LM("local")`, `LM("anthropic/...")`.

    Constructing `LM` with a model string returns the backend that serves it. To bring your own
    model, subclass `LM` and implement `complete` (and `acomplete` if it has a native async API).
    """

    model: str = ""
    #: whether `complete(..., json_schema=...)` constrains the reply to JSON of that schema
    constrains_json: bool = False
    #: whether `complete(..., grammar=GBNF)` holds the reply to that grammar
    constrains_grammar: bool = False
    #: whether `complete(..., tools=[...], tool_choice=...)` offers functions the reply may call
    supports_tool_calls: bool = False

    @property
    def knows_cost(self) -> bool:
        """Whether the replies carry a cost (False when this model's price is unknown)."""
        return True

    def configuration_problem(self) -> str | None:
        """What is sure to make a call fail before one is sent (an unknown provider, a missing key)."""
        return None

    def __new__(cls, *args: Any, **kwargs: Any) -> LM:
        if cls is LM:
            model = args[0] if args else kwargs.get("model")
            if not isinstance(model, str) or not model:
                raise ValueError(
                    "LM needs a model string such as 'openai/gpt-4o-mini', 'local' or "
                    "'anthropic/claude-3-5-haiku-latest'"
                )
            from codeact.lm.registry import backend_for

            return super().__new__(backend_for(model))
        return super().__new__(cls)

    def complete(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        on_token: TokenCallback | None = None,
    ) -> Completion:
        raise NotImplementedError(f"{type(self).__name__} does not implement complete()")

    async def acomplete(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        on_token: TokenCallback | None = None,
        **options: Any,
    ) -> Completion:
        """Async call; backends without a native async API run `complete` in a worker thread (other
        options a backend takes, such as `tools=`, are passed on to it)."""
        return await asyncio.to_thread(
            self.complete,
            messages,
            stop=stop,
            max_tokens=max_tokens,
            temperature=temperature,
            on_token=on_token,
            **options,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r})"
