"""The terminal view of a run as it happens, fed by `CodeAct`'s `on_event` callback.

Each step prints its code (highlighted), then its outcome; while the model thinks or the code runs,
a spinner line shows the step, elapsed time, tokens and cost so far. On a terminal that is not
interactive (a pipe, a file) the spinner is left out and every line is flushed as it is printed.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.status import Status
from rich.syntax import Syntax
from rich.text import Text

from codeact import events
from codeact.sandbox.interpreter import ToolCall
from codeact.trajectory import RunRecord, Step

OUTPUT_LINES = 30

END_STYLES = {
    "submitted": "bold green",
    "max_iters": "bold yellow",
    "budget": "bold yellow",
    "interrupted": "bold yellow",
}


def format_cost(cost: float | None) -> str:
    if cost is None:
        return "cost unknown"
    return f"${cost:.4f}"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe(text: str) -> str:
    """Text from the model or the sandbox, with control characters (escape sequences that could
    clear the screen, retitle the window or write the clipboard) shown as visible escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def format_value(value: Any) -> str:
    """A submitted value as the user reads it: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return safe(value)
    try:
        return json.dumps(value)  # escapes control characters
    except (TypeError, ValueError):
        return safe(repr(value))


def _clip(text: str, lines: int = OUTPUT_LINES) -> str:
    text = safe(text)
    rows = text.rstrip("\n").splitlines()
    if len(rows) <= lines:
        return "\n".join(rows)
    head = rows[: lines - 5]
    tail = rows[-4:]
    return "\n".join([*head, f"… {len(rows) - len(head) - len(tail)} more lines …", *tail])


class _StatusLine:
    """The text after the spinner, rendered afresh on each refresh so the clock keeps moving."""

    def __init__(self, view: LiveView) -> None:
        self.view = view

    def __rich__(self) -> Text:
        return Text.from_markup(self.view._status_text())


class LiveView:
    """Prints a run's events to `console` (unless `show` is false) and keeps the steps it saw;
    `record` is the run's record once it ended."""

    def __init__(self, console: Console | None = None, *, show: bool = True) -> None:
        self.console = console or Console()
        self.show = show
        self.interactive = show and self.console.is_terminal
        self.status: Status | None = None
        self.max_iters = 0
        self.started = time.perf_counter()
        self.step_index = 0
        self.phase = ""
        self.streamed = 0
        self.tokens = 0
        self.cost: float | None = 0.0
        self.steps: list[Step] = []
        self.run_started: events.RunStarted | None = None
        self.record: RunRecord | None = None
        self._asking = threading.Lock()

    # --- events ---
    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.RunStarted):
            self._run_started(event)
        elif isinstance(event, events.StepStarted):
            self.step_index = event.index
            self.streamed = 0
            self._set_phase("model thinking")
        elif isinstance(event, events.TokenReceived):
            self.streamed += len(event.text)
            self._set_phase(f"model writing ({self.streamed:,} chars)")
        elif isinstance(event, events.CodeParsed):
            self._code(event)
            self._set_phase("running code")
        elif isinstance(event, events.Observed):
            pass  # the step's outcome is printed from StepEnded, which carries the whole step
        elif isinstance(event, events.StepEnded):
            self._step_ended(event.step)
        elif isinstance(event, events.RunEnded):
            self.record = event.record
            self.stop()

    def _run_started(self, event: events.RunStarted) -> None:
        self.run_started = event
        self.max_iters = event.max_iters
        self.started = time.perf_counter()
        self._print(
            Text.assemble(
                ("codeact ", "bold"),
                (f"{event.signature}", "cyan"),
                ("  model ", "dim"),
                (event.model, "magenta"),
                ("  max steps ", "dim"),
                (str(event.max_iters), ""),
            )
        )

    def _code(self, event: events.CodeParsed) -> None:
        self._pause()
        if not self.show:
            return
        title = f"Step {event.index + 1}/{self.max_iters}" if self.max_iters else f"Step {event.index + 1}"
        self.console.rule(Text(title, style="bold"), align="left")
        if event.reasoning.strip():
            self._print(Text(_clip(event.reasoning.strip(), 12), style="italic dim"))
        code = Syntax(
            safe(event.code.rstrip()),
            "python",
            theme="ansi_dark",
            line_numbers=False,
            word_wrap=True,
            background_color="default",
        )
        self._print(Panel(code, title="code", title_align="left", border_style="blue", expand=True))

    def _step_ended(self, step: Step) -> None:
        self._pause()
        self.steps.append(step)
        self.tokens += step.prompt_tokens + step.completion_tokens
        if self.cost is not None:
            self.cost = None if step.cost is None else self.cost + step.cost
        if step.code is None and self.show:
            self.console.rule(Text(f"Step {step.index + 1}", style="bold"), align="left")
            self._print(Text("The reply held no code: ", style="yellow") + Text(_clip(step.reply, 8)))
        parts: list[Any] = []
        if step.stdout:
            parts.append(Text(_clip(step.stdout)))
        if step.stderr:
            parts.append(Text(_clip(step.stderr), style="yellow"))
        if step.value is not None:
            parts.append(Text.assemble(("→ ", "dim"), _clip(step.value, 10)))
        if step.error is not None:
            where = f" (line {step.error.lineno}: {step.error.line})" if step.error.lineno else ""
            parts.append(Text(safe(f"{step.error.type}: {step.error.message}{where}"), style="bold red"))
        if step.submitted is not None and step.error is None:
            shown = ", ".join(f"{k}={format_value(v)}" for k, v in step.submitted.items())
            parts.append(Text(f"submit({shown})", style="bold green"))
        if parts:
            failed = step.error is not None
            self._print(
                Panel(
                    Group(*parts),
                    title="observation",
                    title_align="left",
                    border_style="red" if failed else "green",
                    expand=True,
                )
            )
        elif step.code is not None and step.exec_s > 0:
            self._print(Text("(no output)", style="dim"))
        elif step.code is not None:
            self._print(Text("(stopped before the code finished)", style="yellow"))
        for line in tool_call_lines(step.tool_calls):
            self._print(line)
        if step.llm_calls:
            tokens = sum(c.prompt_tokens + c.completion_tokens for c in step.llm_calls)
            failed = sum(c.error is not None for c in step.llm_calls)
            self._print(
                Text(
                    f"  language-model calls from code: {len(step.llm_calls)} ({tokens:,} tokens"
                    + (f", {failed} failed" if failed else "")
                    + ")",
                    style="dim",
                )
            )
        self._print(
            Text(
                f"model {step.lm_s:.2f}s · code {step.exec_s:.3f}s"
                + (
                    f" · tools {step.tool_s:.3f}s ({step.tool_call_count} call{'s' * (step.tool_call_count != 1)})"
                    if step.tool_calls
                    else ""
                )
                + f" · {step.prompt_tokens + step.completion_tokens:,} tokens · "
                f"total {self.tokens:,} tokens, {format_cost(self.cost)}",
                style="dim",
            )
        )

    # --- the spinner line ---
    def _status_text(self) -> str:
        elapsed = time.perf_counter() - self.started
        step = f"step {self.step_index + 1}" + (f"/{self.max_iters}" if self.max_iters else "")
        return f"[bold]{step}[/] · {self.phase} · {elapsed:.1f}s · {self.tokens:,} tokens · {format_cost(self.cost)}"

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        if not self.interactive:
            return
        if self.status is None:
            self.status = self.console.status(_StatusLine(self), spinner="dots")
            self.status.start()

    def _pause(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def stop(self) -> None:
        """Remove the spinner (at the end of a run, or when it is interrupted)."""
        self._pause()

    def ask(self, question: Text, choices: str) -> str:
        """Ask the person at the terminal (the spinner paused meanwhile); one of `choices`' letters."""
        with self._asking:
            self._pause()
            console = self.console if self.show else Console(stderr=True, highlight=False)
            console.print(question)
            while True:
                console.print(f"  \\[{'/'.join(choices)}] ", end="")
                console.file.flush()
                line = sys.stdin.readline()
                if not line:  # no one to ask: no
                    return "n"
                if line.strip().lower()[:1] in choices:
                    return line.strip().lower()[:1]

    def _print(self, renderable: Any) -> None:
        if not self.show:
            return
        self.console.print(renderable)
        if not self.interactive:
            self.console.file.flush()


_SHOWN_CALLS = 12


def tool_call_lines(calls: list[ToolCall]) -> list[Text]:
    """One dim line per tool call of a step (the first few), with denials and failures marked."""
    lines = []
    for call in calls[:_SHOWN_CALLS]:
        arguments = ", ".join([_short(a) for a in call.args] + [f"{k}={_short(v)}" for k, v in call.kwargs.items()])
        line = Text("  ⇢ " if call.concurrent else "  → ", style="dim")
        line.append(safe(f"{call.name}({arguments})"), style="cyan")
        if call.approval == "denied":
            line.append("  denied", style="bold red")
        elif call.approval:
            line.append(f"  {call.approval}", style="green")
        if call.error is not None and call.approval != "denied":
            line.append(f"  {safe(call.error)[:120]}", style="red")
        elif call.error is None:
            line.append(f"  = {_short(call.result)}", style="dim")
        line.append(f"  {call.duration_s:.3f}s" + (" (abandoned)" if call.abandoned else ""), style="dim")
        lines.append(line)
    if len(calls) > _SHOWN_CALLS:
        lines.append(Text(f"  … {len(calls) - _SHOWN_CALLS} more tool calls", style="dim"))
    return lines


def _short(value: Any, limit: int = 40) -> str:
    text = format_value(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_result(console: Console, record: RunRecord) -> None:
    """The end of a run: the typed answer, the end reason, and the totals."""
    console.rule(Text("Result", style="bold"), align="left")
    if record.outputs is not None:
        for name, value in record.outputs.items():
            console.print(Text.assemble((f"{name}: ", "bold"), format_value(value)))
    else:
        console.print(Text("no answer", style="bold red"))
    reason = Text(record.end_reason, style=END_STYLES.get(record.end_reason, "bold red"))
    line = Text.assemble(("end reason: ", "bold"), reason)
    if record.fallback:
        line.append(f" (fallback: {record.fallback})", style="dim")
    console.print(line)
    if record.error:
        console.print(Text(safe(record.error), style="red"))
    usage = record.usage
    console.print(
        Text(
            f"{len(record.steps)} step{'s' * (len(record.steps) != 1)} in {record.duration_s:.2f}s "
            f"(model {record.lm_s:.2f}s, code {record.exec_s:.3f}s, tools {record.tool_s:.3f}s) · "
            f"{usage.total_tokens:,} tokens ({usage.prompt_tokens:,} in, "
            f"{usage.completion_tokens:,} out) in {usage.calls} LM call{'s' * (usage.calls != 1)} · "
            f"{format_cost(usage.cost)}",
            style="dim",
        )
    )
    if not console.is_terminal:
        console.file.flush()
