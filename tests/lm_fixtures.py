"""Fixtures for the LM tests: a real llama.cpp server and a fault-injecting HTTP proxy in front of it.

Import the fixtures into a test module: `from lm_fixtures import llama_server, fault_proxy`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llama_server import MODEL_ALIAS, LlamaServer

SERVER_KEY = "test-key-5f2c"


def bundled_model() -> Path:
    """The SmolLM2 GGUF file, or skip when the local model is not installed (scripts/setup does)."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed: run scripts/setup")
    from codeact.lm.errors import LMMissingExtraError
    from codeact.lm.local import bundled_model_path

    try:
        return bundled_model_path()
    except LMMissingExtraError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LlamaServer]:
    """`python -m llama_cpp.server` with SmolLM2 on a free loopback port, requiring `SERVER_KEY`."""
    with LlamaServer(bundled_model(), api_key=SERVER_KEY, n_ctx=2048, n_threads=2) as server:
        yield server


@dataclass
class Fault:
    """What the proxy does with one request instead of forwarding it.

    kind: "status" answers `status` with `body` and `headers`; "drop" closes the connection without
    answering; "slow" waits `delay` seconds, then forwards; "cut_stream" starts a 200 event stream
    and closes it after one chunk; "garbage" answers 200 with a body that is not JSON.
    """

    kind: str
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class SeenRequest:
    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FaultProxy:
    """A loopback HTTP proxy to `upstream` that first plays queued `Fault`s, one per request.

    Bounded: it answers at most `max_requests` requests (then 503s) and runs in a daemon thread
    until `close()`.
    """

    def __init__(self, upstream: str, max_requests: int = 100) -> None:
        self.upstream = upstream.rstrip("/")
        self.max_requests = max_requests
        self.faults: list[Fault] = []
        self.seen: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def reset(self) -> None:
        with self._lock:
            self.faults.clear()
            self.seen.clear()

    @property
    def chat_requests(self) -> list[SeenRequest]:
        return [r for r in self.seen if r.path.endswith("/chat/completions")]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _next(self, seen: SeenRequest) -> Fault | None:
        with self._lock:
            self.seen.append(seen)
            if len(self.seen) > self.max_requests:
                return Fault("status", 503, {"error": {"message": "fault proxy request cap"}})
            return self.faults.pop(0) if self.faults else None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._handle(b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self._handle(self.rfile.read(length))

            def _handle(self, body: bytes) -> None:
                seen = SeenRequest(time.monotonic(), self.command, self.path, dict(self.headers.items()), body)
                fault = proxy._next(seen)
                try:
                    if fault is None:
                        self._forward(body)
                    elif fault.kind == "status":
                        self._answer(fault.status, fault.body, fault.headers)
                    elif fault.kind == "drop":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                    elif fault.kind == "slow":
                        time.sleep(fault.delay)
                        self._forward(body)
                    elif fault.kind == "cut_stream":
                        self.send_response(200)
                        self.send_header("content-type", "text/event-stream")
                        self.end_headers()
                        chunk = {
                            "id": "x",
                            "object": "chat.completion.chunk",
                            "created": 0,
                            "model": MODEL_ALIAS,
                            "choices": [{"index": 0, "delta": {"content": "Hel"}}],
                        }
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                    elif fault.kind == "garbage":
                        self._answer(200, "<html>not json</html>", {"content-type": "text/html"})
                    else:
                        raise ValueError(f"unknown fault kind {fault.kind!r}")
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass  # the client gave up first (timeouts do)

            def _answer(self, status: int, body: Any, headers: dict[str, str]) -> None:
                data = body if isinstance(body, str) else json.dumps(body or {})
                self.send_response(status)
                headers = {"content-type": "application/json", **headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data.encode())))
                self.end_headers()
                self.wfile.write(data.encode())

            def _forward(self, body: bytes) -> None:
                path = self.path.removeprefix("/v1")
                request = urllib.request.Request(
                    proxy.upstream + path,
                    data=body or None,
                    method=self.command,
                    headers={
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() in ("authorization", "content-type", "accept")
                    },
                )
                try:
                    with urllib.request.urlopen(request, timeout=120) as response:
                        status, data = response.status, response.read()
                        content_type = response.headers.get("content-type", "application/json")
                except urllib.error.HTTPError as error:
                    status, data = error.code, error.read()
                    content_type = error.headers.get("content-type", "application/json")
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


@pytest.fixture
def fault_proxy(llama_server: LlamaServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(llama_server.base_url)
    yield proxy
    proxy.close()
