"""The `LM` seam: one class every model backend subclasses, and the records a call returns."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypedDict

from codeact.lm.errors import LMConfigError
from codeact.lm.errors import LMError as LMError  # re-exported: the root of the model errors


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


TokenCallback = Callable[[str], None]


@dataclass(frozen=True)
class LMRequest:
    """One call to a model: the messages and every option of the call, in one value.

    A field left None takes the model's default. `json_schema` and `grammar` hold the reply to a
    JSON schema or a GBNF grammar (on models that can, see `LM.constrains_json`); `tools` and
    `tool_choice` offer functions the reply may call (OpenAI's format); `on_token` receives the reply
    as it streams.
    """

    messages: Sequence[Message]
    stop: Sequence[str] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    json_schema: dict[str, Any] | None = None
    grammar: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    on_token: TokenCallback | None = None

    @classmethod
    def of(cls, messages: Sequence[Message], options: dict[str, Any]) -> LMRequest:
        """The request for `complete(messages, **options)`; an unknown option raises TypeError naming it."""
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise TypeError(
                f"unknown model call option {', '.join(unknown)}: the options are {', '.join(sorted(_OPTIONS))}"
            )
        return cls(messages, **options)

    def options(self) -> dict[str, Any]:
        """The options that differ from their defaults, as keyword arguments of `complete`."""
        return {name: getattr(self, name) for name in _OPTIONS if getattr(self, name) is not None}


_OPTIONS = frozenset(name for name in LMRequest.__dataclass_fields__ if name != "messages")


class LM:
    """A language model. `LM("openai/gpt-4o-mini")`, `LM("local")`, `LM("anthropic/...")`.

    `LM(model, **options)` serves the model with the backend that declares it `serves` that name
    (`lm.backend`); its attributes read through to the backend. To bring your own model, subclass
    `LM` and implement `handle_request` (and `ahandle_request` if it has a native async API).
    Callers use `complete(messages, **options)` and `acomplete`, which build one `LMRequest`.
    """

    model: str = ""
    #: whether a request's `json_schema` constrains the reply to JSON of that schema
    constrains_json: bool = False
    #: whether a request's `grammar` (GBNF) holds the reply to that grammar
    constrains_grammar: bool = False
    #: whether a request's `tools` (with `tool_choice`) offer functions the reply may call
    supports_tool_calls: bool = False
    #: a backend that serves every `provider/model` name no other backend claims
    serves_any_provider: ClassVar[bool] = False
    _backends: ClassVar[list[type[LM]]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "serves" in cls.__dict__ or cls.__dict__.get("serves_any_provider"):
            LM._backends.append(cls)

    @classmethod
    def serves(cls, model: str) -> bool:
        """Whether this backend serves the model name (a backend class overrides it)."""
        return False

    @staticmethod
    def backend_for(model: str) -> type[LM]:
        """The backend class that serves a model name; LMConfigError saying how to write one otherwise."""
        if not isinstance(model, str) or not model:
            raise LMConfigError(
                "LM needs a model string such as 'openai/gpt-4o-mini', 'local' or 'anthropic/claude-haiku-4-5'"
            )
        for backend in LM._backends:
            if backend.serves(model):
                return backend
        provider, _, name = model.partition("/")
        if provider and name and not provider.startswith(("http:", "https:")):
            for backend in LM._backends:
                if backend.serves_any_provider:
                    return backend
        raise LMConfigError(
            f"unknown model string {model!r}: use 'provider/model' such as 'openai/gpt-4o-mini', "
            "'anthropic/claude-haiku-4-5' or 'ollama/llama3.2', or 'local' for the bundled offline model "
            "(an OpenAI-compatible server is 'openai/<model>' with api_base='http://host:port/v1')"
        )

    def __init__(self, model: str | None = None, **options: Any) -> None:
        if model is None and type(self) is not LM and not options:
            return  # a model of the user's own, which implements handle_request or complete
        self.backend = LM.backend_for(model)(model, **options)  # type: ignore[arg-type]
        self.model = self.backend.model
        self.constrains_json = self.backend.constrains_json
        self.constrains_grammar = self.backend.constrains_grammar
        self.supports_tool_calls = self.backend.supports_tool_calls

    def __getattr__(self, name: str) -> Any:
        backend = self.__dict__.get("backend")
        if backend is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(backend, name)

    @property
    def knows_cost(self) -> bool:
        """Whether the replies carry a cost (False when this model's price is unknown)."""
        backend = self.__dict__.get("backend")
        return True if backend is None else backend.knows_cost

    def configuration_problem(self) -> str | None:
        """What is sure to make a call fail before one is sent (an unknown provider, a missing key)."""
        backend = self.__dict__.get("backend")
        return None if backend is None else backend.configuration_problem()

    def complete(self, messages: Sequence[Message], **options: Any) -> Completion:
        """The model's reply to `messages`; `options` are the fields of `LMRequest` (stop, max_tokens,
        temperature, on_token, json_schema, grammar, tools, tool_choice)."""
        return self.handle_request(LMRequest.of(messages, options))

    async def acomplete(self, messages: Sequence[Message], **options: Any) -> Completion:
        """`complete`, awaited."""
        return await self.ahandle_request(LMRequest.of(messages, options))

    def handle_request(self, request: LMRequest) -> Completion:
        backend = self.__dict__.get("backend")
        if backend is None:
            raise NotImplementedError(f"{type(self).__name__} implements neither handle_request() nor complete()")
        return backend.handle_request(request)

    async def ahandle_request(self, request: LMRequest) -> Completion:
        """Backends without a native async API answer in a worker thread."""
        backend = self.__dict__.get("backend")
        if backend is not None:
            return await backend.ahandle_request(request)
        return await asyncio.to_thread(self.complete, request.messages, **request.options())

    def __repr__(self) -> str:
        backend = self.__dict__.get("backend")
        return f"LM({backend!r})" if backend is not None else f"{type(self).__name__}({self.model!r})"
