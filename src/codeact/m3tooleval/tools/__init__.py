"""The five M3ToolEval tool groups, re-implemented; `toolset(category)` builds one task's tools."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from codeact.m3tooleval.tools import dna_sequencer, message_decoder, trade_calculator, travel
from codeact.m3tooleval.tools.web_browser import WebBrowser, browser_functions
from codeact.tools import Tool

CATEGORIES = (
    "message_decoder",
    "cryptobotanists_plant_dna_sequencer",
    "trade_calculator",
    "travel_itinerary_planning",
    "web_browsing",
)


@dataclass
class ToolSet:
    """One task's tools, in prompt order, and the state they share (the browser, if any).

    `sandbox_builtins` names tools that are Python built-ins in the original's code mode; code
    actions use the sandbox's own built-ins for them instead of calling the host.
    """

    category: str
    tools: dict[str, Tool]
    sandbox_builtins: frozenset[str] = frozenset()
    browser: WebBrowser | None = None
    functions: dict[str, Callable[..., Any]] = field(default_factory=dict)

    def host_tools(self) -> list[Tool]:
        """The tools a code-mode sandbox calls on the host."""
        return [t for name, t in self.tools.items() if name not in self.sandbox_builtins]

    def namespace(self) -> dict[str, Any]:
        """Plain functions by name, as the original put them in its REPL namespace."""
        names = {name: fn for name, fn in self.functions.items() if name not in self.sandbox_builtins}
        return names


def toolset(category: str, descriptions: dict[str, str] | None = None) -> ToolSet:
    """Fresh tools for one task of `category`; `descriptions` (name -> text) become tool docs."""
    browser: WebBrowser | None = None
    builtins_: frozenset[str] = frozenset()
    if category == "message_decoder":
        functions = dict(message_decoder.FUNCTIONS)
    elif category == "cryptobotanists_plant_dna_sequencer":
        functions = dict(dna_sequencer.FUNCTIONS)
    elif category == "trade_calculator":
        functions = dict(trade_calculator.FUNCTIONS)
    elif category == "travel_itinerary_planning":
        functions = dict(travel.FUNCTIONS)
        builtins_ = travel.SANDBOX_BUILTINS
    elif category == "web_browsing":
        browser = WebBrowser()
        functions = browser_functions(browser)
    else:
        raise ValueError(f"unknown M3ToolEval category {category!r}; known: {', '.join(CATEGORIES)}")
    descriptions = descriptions or {}
    tools = {name: Tool(fn, name=name, desc=descriptions.get(name)) for name, fn in functions.items()}
    return ToolSet(category, tools, builtins_, browser, functions)


__all__ = ["CATEGORIES", "ToolSet", "WebBrowser", "toolset"]
