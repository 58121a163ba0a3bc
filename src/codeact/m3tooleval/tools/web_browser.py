"""A stateful text web browser over the shipped fake web site (55 pages)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from codeact.m3tooleval.tools.calculator import calculator

LINES_PER_VIEW = 5
RULE = "-" * 10


@dataclass(frozen=True)
class WebPage:
    name: str
    content: str


@cache
def web_pages() -> dict[str, WebPage]:
    """The shipped pages by path."""
    data = resources.files("codeact.m3tooleval").joinpath("data/m3tooleval_web_browsing_pages.jsonl")
    pages = [WebPage(**json.loads(line)) for line in data.read_text().splitlines() if line.strip()]
    return {page.name: page for page in pages}


@cache
def web_metadata() -> dict[str, Any]:
    """Ground truth of the site: `item_info` (name, price) and `person_info` (contacts)."""
    data = resources.files("codeact.m3tooleval").joinpath("data/m3tooleval_web_browsing_metadata.json")
    return json.loads(data.read_text())


class WebBrowser:
    """Starts on `/`, shows 5 lines per view and keeps a history for `go_to_previous_page`.

    Behaviour follows the original exactly, including its quirks: going back pops the history
    without pushing the current page, and the page count is `lines // 5 + 1` when a page has more
    than 5 lines.
    """

    def __init__(self, pages: dict[str, WebPage] | None = None, start: str = "/") -> None:
        self.pages = pages if pages is not None else web_pages()
        self.history: list[WebPage] = []
        self.current: WebPage = self.pages[start]
        self.lines: list[str] = self.current.content.split("\n")
        self.position = 0

    def _open(self, page: WebPage) -> str:
        self.history.append(self.current)
        self._show(page)
        return f"[Opened page: {page.name}]\n" + self.view()

    def _show(self, page: WebPage) -> None:
        self.current = page
        self.lines = page.content.split("\n")
        self.position = 0

    def click_url(self, url: str) -> str:
        """Clicks on a URL shown as [Clickable '<url>'] and returns the rendered page."""
        url = url.replace("'", "")
        if url in self.pages:
            return self._open(self.pages[url])
        return "[URL not found.]"

    def go_to_previous_page(self) -> str:
        """Goes back to the previous page and returns its rendered content."""
        if self.history:
            self._show(self.history.pop())
            return f"[Opened page: {self.current.name}]\n" + self.view()
        return "[No previous page.]"

    def scroll_down(self) -> str:
        """Scrolls down the view and returns the rendered content."""
        if self.position + LINES_PER_VIEW < len(self.lines):
            self.position += LINES_PER_VIEW
            return self.view()
        return "[Reached the bottom of the page.]\n"

    def scroll_up(self) -> str:
        """Scrolls up the view and returns the rendered content."""
        if self.position > 0:
            self.position -= LINES_PER_VIEW
            return self.view()
        return "[Reached the top of the page.]\n"

    def view(self) -> str:
        """The current view of the rendered web page."""
        total = len(self.lines)
        paged = total > LINES_PER_VIEW
        page_no = self.position // LINES_PER_VIEW + 1 if paged else 1
        page_count = total // LINES_PER_VIEW + 1 if paged else 1
        name = f"[Web Page Name: {self.current.name}]\n" if self.current.name else ""
        body = "\n".join(self.lines[self.position : self.position + LINES_PER_VIEW])
        return f"{RULE}\n{name}[Viewing page {page_no} of {page_count}]\n\n{body}\n{RULE}"


def browser_functions(browser: WebBrowser) -> dict[str, Any]:
    """The web-browsing tools of one task, bound to that task's browser."""
    return {
        "click_url": browser.click_url,
        "go_to_previous_page": browser.go_to_previous_page,
        "scroll_down": browser.scroll_down,
        "scroll_up": browser.scroll_up,
        "view": browser.view,
        "calculator": calculator,
    }
