"""OpenTelemetry spans of a run, read with the SDK's in-memory exporter: a two-step run with a tool
call, whose first model request fails once and is retried (through a real HTTP server and proxy)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import codeact
from codeact.lm.retry import RetryPolicy
from lm_fixtures import Fault, FaultProxy

REPLIES = [
    "Look it up.\n```python\nprice = lookup('apple')\nprint(price)\n```",
    "Done.\n```python\nsubmit(answer=price * 2)\n```",
]


class ScriptedServer:
    """An OpenAI-compatible chat endpoint on loopback that answers with the next scripted reply."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                text = server.replies.pop(0) if server.replies else "no more replies"
                body = json.dumps(
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "scripted-http",
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                        ],
                        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.http.server_address[1]}/v1"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter


def lookup(item: str) -> float:
    """The price of an item."""
    return 1.25


def test_span_tree_of_a_run_with_a_tool_call_and_a_retry(exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    upstream = ScriptedServer(REPLIES)
    proxy = FaultProxy(upstream.base_url.removesuffix("/v1"))
    proxy.inject(Fault("status", 500, {"error": {"message": "try again"}}))
    try:
        lm = codeact.LM(
            "openai/scripted-http",
            api_base=proxy.base_url,
            api_key="sk-test",
            retry=RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.02),
        )
        prediction = codeact.CodeAct("item -> answer: float", tools=[lookup], lm=lm)(item="apple")
    finally:
        proxy.close()
        upstream.close()
    assert prediction.answer == 2.5, prediction.error
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}

    def children(span: Any) -> list[str]:
        return sorted(s.name for s in spans if s.parent is not None and s.parent.span_id == span.context.span_id)

    run = next(s for s in spans if s.name == "invoke_agent codeact")
    assert run.parent is None
    assert run.attributes["codeact.end_reason"] == "submitted"
    assert run.attributes["codeact.run_id"] == prediction.record.run_id
    assert children(run) == ["step 1", "step 2"]
    step1 = next(s for s in spans if s.name == "step 1")
    assert children(step1) == ["chat scripted-http", "execute_code"]
    chat1 = next(s for s in spans if s.name == "chat scripted-http" and s.parent.span_id == step1.context.span_id)
    assert chat1.attributes["gen_ai.operation.name"] == "chat"
    assert chat1.attributes["gen_ai.usage.input_tokens"] == 100
    assert chat1.attributes["codeact.lm.attempts"] == 2
    assert [e.name for e in chat1.events] == ["retry"]
    execute1 = next(s for s in spans if s.name == "execute_code" and s.parent.span_id == step1.context.span_id)
    assert children(execute1) == ["execute_tool lookup"]
    tool = next(s for s in spans if s.name == "execute_tool lookup")
    assert tool.attributes["gen_ai.tool.name"] == "lookup"
    assert by_id[tool.parent.span_id] is execute1
    assert "codeact.code" not in execute1.attributes  # no content unless asked for
    assert all(s.context.trace_id == run.context.trace_id for s in spans)


def test_content_is_attached_only_when_asked_for(exporter: InMemorySpanExporter, monkeypatch) -> None:
    exporter.clear()
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    lm = codeact.ScriptedLM(["```python\nprint('hi')\nsubmit(answer=1.0)\n```"])
    codeact.CodeAct("item -> answer: float", lm=lm)(item="x")
    execute = next(s for s in exporter.get_finished_spans() if s.name == "execute_code")
    assert "print('hi')" in execute.attributes["codeact.code"]
    assert execute.attributes["codeact.stdout"] == "hi\n"


def test_network_connections_are_events_of_the_execute_span(exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    code = (
        "```python\nimport urllib.request\ntry:\n    urllib.request.urlopen('http://refused.test/')\n"
        "except Exception as exc:\n    print(exc)\nsubmit(answer=1.0)\n```"
    )
    act = codeact.CodeAct("item -> answer: float", lm=codeact.ScriptedLM([code]), sandbox={"network": ["api.test"]})
    assert act(item="x").answer == 1.0
    execute = next(s for s in exporter.get_finished_spans() if s.name == "execute_code")
    [event] = [e for e in execute.events if e.name == "network.connection"]
    assert event.attributes["server.address"] == "refused.test" and event.attributes["server.port"] == 80
    assert event.attributes["codeact.network.allowed"] is False
