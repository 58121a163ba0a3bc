"""OpenTelemetry spans for runs (extra `codeact[otel]`; nothing happens without `opentelemetry-api`).

Every run reports to the global tracer provider, following the GenAI semantic conventions where they
apply: `invoke_agent codeact` for the run, a `step N` span per step, `chat MODEL` for each model call
(model, token usage, retries as `retry` events), `execute_code` for the code, `execute_tool NAME`
for each tool call the code made and `chat MODEL` for each `llm_query`. Spans carry the run id and
the end reason; prompts, code and outputs are attached only when
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT is true. Spans are built from the run's own
records as each step ends, so their times are the ones the record shows.
"""

from __future__ import annotations

import os
import time
from typing import Any

try:
    from opentelemetry import trace
except ImportError:  # the extra is not installed
    trace = None  # type: ignore[assignment]

from codeact.trajectory import RunRecord, Step

_NS = 1_000_000_000


def _capture_content() -> bool:
    return os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").lower() in ("1", "true", "yes")


class RunTelemetry:
    """The spans of one run; fed the run's events by the agent."""

    def __init__(self, run_id: str, model: str, signature: str) -> None:
        """Starts the run's span."""
        self.enabled = trace is not None
        self.run_id = run_id
        self.model = model
        self.content = _capture_content()
        self._step_start: dict[int, int] = {}
        self._code_start: dict[int, int] = {}
        if not self.enabled:
            return
        self.tracer = trace.get_tracer("codeact")
        self.run_span = self.tracer.start_span(
            "invoke_agent codeact",
            kind=trace.SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "codeact",
                "gen_ai.request.model": model,
                "codeact.run_id": run_id,
                "codeact.signature": signature,
            },
        )
        self.run_context = trace.set_span_in_context(self.run_span)

    def observe(self, event: Any) -> None:
        """Take one of the run's events (see `codeact.agent`)."""
        kind = type(event).__name__
        if kind == "StepStarted":
            self._step_start[event.index] = time.time_ns()
        elif kind == "CodeParsed":
            self._code_start[event.index] = time.time_ns()
        elif kind == "StepEnded":
            self.step_ended(event.step)
        elif kind == "RunEnded":
            self.run_ended(event.record)

    def step_ended(self, step: Step) -> None:
        if not self.enabled:
            return
        start = self._step_start.pop(step.index, time.time_ns())
        code_start = self._code_start.pop(step.index, start + int(step.lm_s * _NS))
        end = max(time.time_ns(), code_start + int(step.exec_s * _NS))
        span = self.tracer.start_span(
            f"step {step.index + 1}",
            context=self.run_context,
            start_time=start,
            attributes={"codeact.run_id": self.run_id, "codeact.step": step.index},
        )
        context = trace.set_span_in_context(span)
        self._chat(
            context,
            start,
            start + int(step.lm_s * _NS),
            self.model,
            step.prompt_tokens,
            step.completion_tokens,
            attempts=step.lm_attempts,
            reply=step.reply,
        )
        if step.code is not None:
            self._execution(context, step, code_start)
        if step.error is not None:
            span.set_attribute("error.type", step.error.type)
        span.end(end_time=end)

    def _chat(
        self,
        context: Any,
        start: int,
        end: int,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        attempts: int = 1,
        reply: str | None = None,
        error: str | None = None,
    ) -> None:
        provider, _, name = model.rpartition("/")  # "openai/gpt-4o-mini": the provider, then the model
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": name,
            "gen_ai.usage.input_tokens": prompt_tokens,
            "gen_ai.usage.output_tokens": completion_tokens,
            "codeact.lm.attempts": attempts,
        }
        if provider:
            attributes["gen_ai.provider.name"] = provider
        span = self.tracer.start_span(
            f"chat {name}", context=context, kind=trace.SpanKind.CLIENT, start_time=start, attributes=attributes
        )
        for attempt in range(1, attempts):
            span.add_event("retry", {"codeact.lm.attempt": attempt + 1}, timestamp=start)
        if error is not None:
            span.set_attribute("error.type", error.split(":", 1)[0])
            span.set_status(trace.Status(trace.StatusCode.ERROR, error))
        if self.content and reply:
            span.set_attribute("gen_ai.output.text", reply)
        span.end(end_time=max(start, end))

    def _execution(self, context: Any, step: Step, start: int) -> None:
        span = self.tracer.start_span(
            "execute_code",
            context=context,
            start_time=start,
            attributes={
                "codeact.step": step.index,
                "codeact.timed_out": step.timed_out,
                "codeact.tool_calls": step.tool_call_count,
                "codeact.rejected_samples": len(step.rejected_samples),
            },
        )
        for connection in step.connections:  # each connection the code opened through the network proxy
            span.add_event(
                "network.connection",
                {
                    "server.address": connection.host,
                    "server.port": connection.port,
                    "codeact.network.allowed": bool(connection.allowed),
                    "codeact.network.bytes_sent": connection.bytes_sent,
                    "codeact.network.bytes_received": connection.bytes_received,
                },
                timestamp=start,
            )
        if step.error is not None:
            span.set_attribute("error.type", step.error.type)
            span.set_status(trace.Status(trace.StatusCode.ERROR, step.error.type))
        if self.content:
            span.set_attribute("codeact.code", step.code or "")
            span.set_attribute("codeact.stdout", step.stdout)
        inner = trace.set_span_in_context(span)
        for call in step.tool_calls:
            call_start = start + int(call.start_s * _NS)
            tool = self.tracer.start_span(
                f"execute_tool {call.name}",
                context=inner,
                start_time=call_start,
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": call.name,
                    "codeact.tool.concurrent": call.concurrent,
                    "codeact.tool.approval": call.approval or "",
                    "codeact.tool.abandoned": call.abandoned,
                },
            )
            if call.error is not None:
                tool.set_attribute("error.type", call.error.split(":", 1)[0])
                tool.set_status(trace.Status(trace.StatusCode.ERROR, call.error))
            tool.end(end_time=call_start + int(call.duration_s * _NS))
        for call in step.llm_calls:
            self._chat(
                inner,
                start,
                start + int(call.duration_s * _NS),
                call.model,
                call.prompt_tokens,
                call.completion_tokens,
                reply=call.reply,
                error=call.error,
            )
        span.end(end_time=start + int(step.exec_s * _NS))

    def run_ended(self, record: RunRecord) -> None:
        if not self.enabled:
            return
        usage = record.usage
        self.run_span.set_attributes(
            {
                "codeact.end_reason": record.end_reason,
                "codeact.steps": len(record.steps),
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
            }
        )
        if record.end_reason not in ("submitted", "max_iters"):
            self.run_span.set_status(trace.Status(trace.StatusCode.ERROR, record.error or record.end_reason))
        self.run_span.end()
