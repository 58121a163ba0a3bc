"""A run record as one self-contained HTML page: no network, styles and script inline.

The page shows the task and inputs, the answer and end reason, a timeline of model, execution and
tool time (inline SVG), and every step with its reasoning, highlighted code, output and errors.
Outputs longer than `FOLD_LINES` lines or `FOLD_CHARS` characters are folded behind a preview.
"""

from __future__ import annotations

import json
import os
import time
from html import escape
from pathlib import Path
from typing import Any

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from codeact.trajectory import RunRecord, Step

FOLD_LINES = 25
FOLD_CHARS = 4000
PREVIEW_LINES = 10

END_REASON_TEXT = {
    "submitted": "The code submitted an answer.",
    "max_iters": "The iteration budget ran out before the code submitted an answer.",
    "budget": "The token or cost budget ran out.",
    "error": "The run stopped on an error.",
    "lm_error": "The language model could not be reached or failed.",
    "interrupted": "The run was interrupted (Ctrl-C).",
}

_FORMATTER = HtmlFormatter(cssclass="hl", style="friendly")

_CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#ffffff; --panel:#f6f8fa;
  --model:#6f42c1; --exec:#1f883d; --tool:#d4a72c; --err:#cf222e; --ok:#1a7f37; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
  color:var(--fg); background:var(--bg); }
main { max-width: 1000px; margin: 0 auto; padding: 24px 20px 64px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 10px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 16px; margin: 0; }
.muted { color: var(--muted); }
code, pre, .mono { font-family: ui-monospace,"SFMono-Regular","DejaVu Sans Mono",Menlo,Consolas,monospace;
  font-size: 13px; }
pre { margin: 0; padding: 10px 12px; background: var(--panel); border: 1px solid var(--line);
  border-radius: 6px; overflow-x: auto; white-space: pre-wrap; word-break: break-word; }
.hl pre { white-space: pre; }
.badge { display:inline-block; padding: 1px 10px; border-radius: 999px; font-size: 13px; font-weight: 600;
  color: #fff; vertical-align: middle; }
.badge.submitted { background: var(--ok); }
.badge.fail { background: var(--err); }
.badge.warn { background: #9a6700; }
.summary { display:grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: 10px; margin: 16px 0; }
.stat { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; }
.stat .v { font-size: 18px; font-weight: 600; }
.stat .k { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
table.kv { border-collapse: collapse; width: 100%; }
table.kv th { text-align: left; vertical-align: top; padding: 6px 12px 6px 0; width: 160px; font-weight: 600; }
table.kv td { padding: 4px 0; }
.answer { border: 2px solid var(--ok); border-radius: 8px; padding: 12px 16px; background: #f0fff4; }
.answer.none { border-color: var(--err); background: #fff5f5; }
.step { border: 1px solid var(--line); border-radius: 8px; margin: 16px 0; padding: 12px 16px; }
.step.failed { border-left: 4px solid var(--err); }
.step.done { border-left: 4px solid var(--ok); }
.step header { display:flex; justify-content: space-between; align-items: baseline; gap: 12px;
  flex-wrap: wrap; margin-bottom: 8px; }
.step .meta { font-size: 13px; color: var(--muted); }
.block { margin: 10px 0; }
table.calls { border-collapse: collapse; font-size: 13px; margin-top: 4px; }
table.calls td, table.calls th { padding: 2px 10px 2px 0; text-align: left; vertical-align: top; }
table.calls tr.denied td, table.calls tr.failed td { color: #cf222e; }
svg.calls { width: 100%; height: auto; font-size: 12px; }
.label { font-size: 12px; font-weight: 600; color: var(--muted); text-transform: uppercase;
  letter-spacing: .04em; margin-bottom: 3px; }
.reasoning { white-space: pre-wrap; }
.error pre { border-color: var(--err); background: #fff5f5; }
.error .headline { color: var(--err); font-weight: 600; }
details > summary { cursor: pointer; color: #0969da; font-size: 13px; margin: 4px 0; }
details.fold[open] + pre.preview { display: none; }
pre.preview { border-style: dashed; }
.toolbar { float: right; }
.toolbar button { font: inherit; font-size: 13px; padding: 2px 10px; margin-left: 6px; cursor: pointer;
  border: 1px solid var(--line); background: var(--panel); border-radius: 6px; }
svg.timeline { width: 100%; height: auto; display: block; }
svg.timeline text { font: 12px system-ui,"DejaVu Sans",sans-serif; fill: var(--fg); }
.legend span { display:inline-block; margin-right: 16px; font-size: 13px; }
.legend i { display:inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 5px;
  vertical-align: -1px; }
footer { margin-top: 40px; font-size: 12px; color: var(--muted); }
"""

_SCRIPT = """
function setFolds(open) {
  document.querySelectorAll('details').forEach(function (d) { d.open = open; });
}
"""


def _fmt_s(seconds: float) -> str:
    if seconds <= 0:
        return "0 s"
    if seconds >= 100:
        return f"{seconds:.0f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    ms = seconds * 1000
    if ms >= 10:
        return f"{ms:.0f} ms"
    return f"{ms:.1f} ms" if ms >= 1 else f"{ms:.2f} ms"


def _fmt_cost(cost: float | None) -> str:
    if cost is None:
        return "unknown"
    return f"${cost:.4f}" if cost < 1 else f"${cost:.2f}"


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=repr)


def _pre(text: str, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f"<pre{cls}>{escape(text)}</pre>"


def _foldable(label: str, text: str, *, css: str = "", open_label: str | None = None) -> str:
    """A labelled output block; long text shows a preview and folds the rest behind a summary."""
    lines = text.splitlines()
    head = f'<div class="label">{escape(label)}</div>'
    if len(lines) <= FOLD_LINES and len(text) <= FOLD_CHARS:
        return f'<div class="block {css}">{head}{_pre(text)}</div>'
    preview = "\n".join(lines[:PREVIEW_LINES])
    if len(preview) > FOLD_CHARS // 4:
        preview = preview[: FOLD_CHARS // 4]
    size = f"{len(lines)} lines, {len(text):,} characters"
    summary = open_label or f"Show all ({size})"
    return (
        f'<div class="block {css}">{head}'
        f'<details class="fold"><summary>{escape(summary)}</summary>{_pre(text)}</details>'
        f"{_pre(preview + chr(10) + '…', 'preview')}</div>"
    )


def _collapsed(label: str, text: str) -> str:
    """A block that starts folded whatever its length (for detail most readers skip)."""
    return f'<div class="block"><details><summary>{escape(label)}</summary>{_pre(text)}</details></div>'


def _code(code: str) -> str:
    highlighted = highlight(code, PythonLexer(), _FORMATTER)
    head = '<div class="label">Code</div>'
    lines = code.count("\n") + 1
    if lines <= 3 * FOLD_LINES:
        return f'<div class="block">{head}{highlighted}</div>'
    return (
        f'<div class="block">{head}<details class="fold" open><summary>Code: {lines} lines '
        f"(click to fold)</summary>{highlighted}</details></div>"
    )


_MAX_CALL_ROWS = 40


def _tool_calls_html(step: Step) -> str:
    """The step's tool calls as a timeline (a bar per call over the step's time) and a table."""
    calls = step.tool_calls[:_MAX_CALL_ROWS]
    span = max([step.exec_s] + [c.start_s + c.duration_s for c in calls] + [1e-6])
    width, left, row_h = 960, 200, 18
    height = len(calls) * row_h + 6
    bars, rows = [], []
    for i, call in enumerate(calls):
        arguments = ", ".join([_compact(a) for a in call.args] + [f"{k}={_compact(v)}" for k, v in call.kwargs.items()])
        outcome = call.error or _compact(call.result)
        status = (
            "denied"
            if call.approval == "denied"
            else "failed"
            if call.error
            else "abandoned"
            if call.abandoned
            else "ok"
        )
        color = {"denied": "#cf222e", "failed": "#bc4c00", "abandoned": "#8c959f"}.get(status, "var(--tool)")
        y = 3 + i * row_h
        x0 = left + (width - left - 10) * call.start_s / span
        w = max(2.0, (width - left - 10) * call.duration_s / span)
        tip = (
            f"{call.name}({arguments}) · {_fmt_s(call.duration_s)} · {status}"
            + (" · concurrent" if call.concurrent else "")
            + (f" · {call.approval}" if call.approval else "")
        )
        bars.append(
            f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{escape(call.name)}</text>'
            f'<rect x="{x0:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 4}" fill="{color}" rx="2">'
            f"<title>{escape(tip)}</title></rect>"
        )
        rows.append(
            f'<tr class="{status}"><td>{escape(call.name)}({escape(_clip(arguments, 120))})</td>'
            f"<td>{escape(_clip(outcome, 160))}</td><td>{escape(call.approval or '')}</td>"
            f"<td>{escape(_fmt_s(call.duration_s))}{' ‖' if call.concurrent else ''}</td></tr>"
        )
    more = len(step.tool_calls) - len(calls)
    note = f'<div class="muted">… and {more} more calls (in the trace)</div>' if more > 0 else ""
    return (
        f'<div class="block"><div class="label">Tool calls ({len(step.tool_calls)})</div>'
        f'<svg class="calls" viewBox="0 0 {width} {height}" role="img" aria-label="Tool calls of this step">'
        + "".join(bars)
        + "</svg>"
        '<table class="calls"><tr><th>call</th><th>result or error</th><th>approval</th><th>time</th></tr>'
        + "".join(rows)
        + f"</table>{note}</div>"
    )


def _llm_calls_html(step: Step) -> str:
    """The language-model calls the step's code made: question, answer, tokens, cost, time."""
    rows = "".join(
        f'<tr class="{"failed" if call.error else "ok"}"><td>{escape(_clip(call.prompt, 200))}</td>'
        f"<td>{escape(_clip(call.error or call.reply or '', 200))}"
        + (
            f' <span class="muted">(nested run: {len(call.run.steps)} steps, {escape(call.run.end_reason)})</span>'
            if call.run
            else ""
        )
        + "</td>"
        f"<td>{call.prompt_tokens + call.completion_tokens:,}</td><td>{escape(_fmt_cost(call.cost))}</td>"
        f"<td>{escape(_fmt_s(call.duration_s))}</td></tr>"
        for call in step.llm_calls[:_MAX_CALL_ROWS]
    )
    headers = ["prompt", "answer", "tokens", "cost", "time"]
    return _table_block("Language-model calls from code", "calls", len(step.llm_calls), headers, rows)


def _connections_html(step: Step) -> str:
    """The connections the step's code opened through the network proxy, allowed or refused."""
    rows = "".join(
        f'<tr class="{"ok" if c.allowed else "denied"}"><td>{escape(c.method)} {escape(c.host)}:{c.port}</td>'
        f"<td>{'allowed' if c.allowed else 'refused'}{' to ' + escape(c.address) if c.address else ''}</td>"
        f"<td>{c.bytes_sent:,} out, {c.bytes_received:,} in</td><td>{escape(_clip(c.refusal, 200))}</td></tr>"
        for c in step.connections[:_MAX_CALL_ROWS]
    )
    headers = ["request", "outcome", "bytes", "why"]
    return _table_block("Network connections", "connections", len(step.connections), headers, rows)


def _table_block(label: str, noun: str, total: int, headers: list[str], rows: str) -> str:
    """A labelled table of a step's records; past `_MAX_CALL_ROWS` rows a note says how many more."""
    more = total - _MAX_CALL_ROWS
    note = f'<div class="muted">… and {more} more {noun} (in the trace)</div>' if more > 0 else ""
    head = "".join(f"<th>{h}</th>" for h in headers)
    return (
        f'<div class="block"><div class="label">{label} ({total})</div>'
        f'<table class="calls"><tr>{head}</tr>{rows}</table>{note}</div>'
    )


def _compact(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=repr)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _step_html(step: Step) -> str:
    failed = step.error is not None
    css = "failed" if failed else ("done" if step.submitted is not None else "")
    tokens = step.prompt_tokens + step.completion_tokens
    meta = [
        f"model {_fmt_s(step.lm_s)}",
        f"execution {_fmt_s(step.exec_s)}",
    ]
    if step.tool_calls or step.tool_s:
        meta.append(f"tools {_fmt_s(step.tool_s)} ({step.tool_call_count} call{'s' * (step.tool_call_count != 1)})")
    meta.append(f"{tokens:,} tokens ({step.prompt_tokens:,} in, {step.completion_tokens:,} out)")
    if step.cost is not None:
        meta.append(_fmt_cost(step.cost))
    parts = [
        f'<section class="step {css}" id="step-{step.index + 1}">',
        f'<header><h3>Step {step.index + 1}</h3><span class="meta">{escape(" · ".join(meta))}</span></header>',
    ]
    if step.reasoning.strip():
        parts.append(
            '<div class="block"><div class="label">Reasoning</div>'
            f'<div class="reasoning">{escape(step.reasoning.strip())}</div></div>'
        )
    for number, sample in enumerate(step.rejected_samples, 1):
        parts.append(
            _foldable(
                f"Sample {number}, set aside: {_clip(sample.error, 120)}",
                sample.code if sample.code is not None else sample.reply,
            )
        )
    if step.code is not None:
        parts.append(_code(step.code))
    elif step.reply:
        parts.append(_foldable("Model reply (no code)", step.reply))
    if step.tool_calls:
        parts.append(_tool_calls_html(step))
    if step.llm_calls:
        parts.append(_llm_calls_html(step))
    if step.connections:
        parts.append(_connections_html(step))
    if step.stdout:
        parts.append(_foldable("Output", step.stdout))
    if step.stderr:
        parts.append(_foldable("Standard error", step.stderr))
    if step.value is not None:
        parts.append(_foldable("Value of the last expression", step.value))
    if step.error is not None:
        err = step.error
        where = f" (line {err.lineno}: <code>{escape(err.line or '')}</code>)" if err.lineno else ""
        parts.append(
            '<div class="block error"><div class="label">Error</div>'
            f'<div class="headline">{escape(err.type)}: {escape(err.message)}{where}</div>'
        )
        if step.timed_out:
            parts.append('<div class="muted">The step hit its time limit and was stopped.</div>')
        if err.traceback:
            parts.append(_collapsed("Traceback", err.traceback))
        parts.append("</div>")
    if step.submitted is not None:
        parts.append(_foldable("Submitted", _value_text(step.submitted)))
    if step.observation:
        parts.append(_collapsed("Observation sent to the model", step.observation))
    if step.reply and step.code is not None:
        parts.append(_collapsed("Full model reply", step.reply))
    parts.append("</section>")
    return "\n".join(parts)


def _timeline_svg(record: RunRecord) -> str:
    """Model, execution and tool time per step on three lanes along one time axis."""
    segments: list[tuple[str, float, float, str]] = []  # lane, start, length, tooltip
    t = 0.0
    boundaries: list[tuple[float, str]] = []
    for step in record.steps:
        boundaries.append((t, str(step.index + 1)))
        segments.append(("model", t, step.lm_s, f"Step {step.index + 1}: model {_fmt_s(step.lm_s)}"))
        t += step.lm_s
        segments.append(("exec", t, step.exec_s, f"Step {step.index + 1}: execution {_fmt_s(step.exec_s)}"))
        if step.tool_s > 0:
            tip = f"Step {step.index + 1}: tools {_fmt_s(step.tool_s)} in {step.tool_call_count} call(s)"
            segments.append(("tool", t, min(step.tool_s, step.exec_s or step.tool_s), tip))
        t += step.exec_s
    if record.fallback_lm_s > 0:
        boundaries.append((t, "extract"))
        segments.append(("model", t, record.fallback_lm_s, f"Extraction call: {_fmt_s(record.fallback_lm_s)}"))
        t += record.fallback_lm_s
    total = t
    if total <= 0:
        return '<p class="muted">No model, execution or tool time was recorded for this run.</p>'
    width, left, right, lane_h, top = 960, 90, 20, 26, 28
    plot_w = width - left - right
    lanes = [("model", "Model", "var(--model)"), ("exec", "Execution", "var(--exec)"), ("tool", "Tools", "var(--tool)")]
    height = top + len(lanes) * (lane_h + 8) + 30

    def x(sec: float) -> float:
        return left + plot_w * sec / total

    out = [
        f'<svg class="timeline" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="Timeline of model, execution and tool time">'
    ]
    for i, (key, name, color) in enumerate(lanes):
        y = top + i * (lane_h + 8)
        out.append(f'<text x="{left - 10}" y="{y + lane_h * 0.68:.1f}" text-anchor="end">{name}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{plot_w}" height="{lane_h}" fill="#f6f8fa"/>')
        for lane, start, length, tip in segments:
            if lane != key or length <= 0:
                continue
            w = max(1.5, x(start + length) - x(start))
            out.append(
                f'<rect x="{x(start):.1f}" y="{y}" width="{w:.1f}" height="{lane_h}" fill="{color}" '
                f'rx="2"><title>{escape(tip)}</title></rect>'
            )
    bottom = top + len(lanes) * (lane_h + 8) - 8
    for start, label in boundaries:
        bx = x(start)
        out.append(
            f'<line x1="{bx:.1f}" y1="{top - 4}" x2="{bx:.1f}" y2="{bottom}" stroke="#8c959f" stroke-dasharray="3 3"/>'
        )
        out.append(f'<text x="{bx + 3:.1f}" y="{top - 8}">{escape(label)}</text>')
    for i in range(5):
        sec = total * i / 4
        tx = x(sec)
        anchor = "start" if i == 0 else ("end" if i == 4 else "middle")
        out.append(
            f'<text x="{tx:.1f}" y="{bottom + 20}" text-anchor="{anchor}" class="muted">{escape(_fmt_s(sec))}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _outputs_html(record: RunRecord) -> str:
    if record.outputs is None:
        return (
            '<div class="answer none"><strong>No answer.</strong> '
            f"{escape(END_REASON_TEXT.get(record.end_reason, record.end_reason))}</div>"
        )
    rows = "".join(
        f"<tr><th>{escape(str(name))}</th><td>{_pre(_value_text(value))}</td></tr>"
        for name, value in record.outputs.items()
    )
    return f'<div class="answer" id="answer"><table class="kv">{rows}</table></div>'


def _badge(end_reason: str) -> str:
    css = (
        "submitted"
        if end_reason == "submitted"
        else ("warn" if end_reason in ("max_iters", "budget", "interrupted") else "fail")
    )
    return f'<span class="badge {css}" id="end-reason">{escape(end_reason)}</span>'


def _headline(record: RunRecord) -> str:
    """What the run was asked: its one text input, else its instructions, else its signature."""
    texts = [v for v in record.inputs.values() if isinstance(v, str) and v.strip()]
    if len(texts) == 1:
        return texts[0].strip()
    return record.instructions or record.signature


def render_html(record: RunRecord, *, title: str | None = None) -> str:
    """The run as a complete HTML document (a string) that loads nothing from the network."""
    task = _headline(record)
    page_title = title or f"codeact run: {task[:80]}"
    usage = record.usage
    cost = _fmt_cost(usage.cost)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.started_at)) if record.started_at else "unknown"
    stats = [
        ("End reason", _badge(record.end_reason)),
        ("Steps", f"{len(record.steps)}" + (f" of {record.max_iters}" if record.max_iters else "")),
        ("Duration", escape(_fmt_s(record.duration_s))),
        ("Model time", escape(_fmt_s(record.lm_s))),
        ("Execution time", escape(_fmt_s(record.exec_s))),
        ("Tool time", escape(_fmt_s(record.tool_s))),
        ("Tokens", f"{usage.total_tokens:,}"),
        ("LM calls", f"{usage.calls}"),
        ("Cost", escape(cost)),
    ]
    stat_html = "".join(f'<div class="stat"><div class="k">{k}</div><div class="v">{v}</div></div>' for k, v in stats)
    inputs_rows = "".join(
        f"<tr><th>{escape(str(k))}</th><td>{_foldable('', _value_text(v))}</td></tr>" for k, v in record.inputs.items()
    )
    task_rows = [
        f"<tr><th>Signature</th><td><code>{escape(record.signature)}</code></td></tr>",
        f"<tr><th>Model</th><td><code>{escape(record.model or 'unknown')}</code></td></tr>",
        f"<tr><th>Started</th><td>{escape(started)}</td></tr>",
    ]
    if record.instructions:
        task_rows.insert(0, f'<tr><th>Instructions</th><td class="reasoning">{escape(record.instructions)}</td></tr>')
    ending = [f"<p>{escape(END_REASON_TEXT.get(record.end_reason, record.end_reason))}</p>"]
    if record.error:
        ending.append(f'<div class="block error">{_pre(record.error)}</div>')
    if record.fallback:
        ending.append(
            f"<p>No step submitted an answer; the fallback <code>{escape(record.fallback)}</code> "
            "produced the result below.</p>"
        )
    if record.fallback_reply:
        ending.append(_collapsed("Extraction reply", record.fallback_reply))
    steps_html = "\n".join(_step_html(s) for s in record.steps) or '<p class="muted">No steps.</p>'
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(page_title)}</title>
<style>{_CSS}{_FORMATTER.get_style_defs(".hl")}</style>
</head>
<body>
<main>
<h1>{escape(task if len(task) <= 200 else task[:200] + "…")}</h1>
<div class="muted">codeact run report</div>
<div class="summary">{stat_html}</div>
<h2>Answer</h2>
{_outputs_html(record)}
<h2>Task</h2>
<table class="kv">{"".join(task_rows)}</table>
{f'<h2>Inputs</h2><table class="kv" id="inputs">{inputs_rows}</table>' if inputs_rows else ""}
<h2>Timeline</h2>
<div class="legend"><span><i style="background:var(--model)"></i>Model</span>
<span><i style="background:var(--exec)"></i>Execution (includes tools)</span>
<span><i style="background:var(--tool)"></i>Tools</span></div>
{_timeline_svg(record)}
<h2>Steps <span class="toolbar"><button type="button" onclick="setFolds(true)">Expand all</button><button type="button" onclick="setFolds(false)">Collapse all</button></span></h2>
{steps_html}
<h2>How the run ended</h2>
{"".join(ending)}
<footer>Generated by codeact on {escape(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))}.</footer>
</main>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def write_report(record: RunRecord, path: str | os.PathLike[str]) -> Path:
    """Write `render_html(record)` to `path` (parent folders are created) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(record), encoding="utf-8")
    return target
