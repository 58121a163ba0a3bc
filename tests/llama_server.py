"""A real OpenAI-compatible server for tests and benchmarks: `python -m llama_cpp.server` with the
bundled SmolLM2 model on a free loopback port, started and stopped by `LlamaServer`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

MODEL_ALIAS = "smollm2"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """`with LlamaServer(api_key="k") as server: server.base_url` -> "http://127.0.0.1:PORT/v1"."""

    def __init__(
        self, model_path: Path, *, api_key: str, n_ctx: int = 2048, n_threads: int = 2, chat_format: str | None = None
    ) -> None:
        self.model_path = model_path
        self.chat_format = chat_format
        self.api_key = api_key
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, ready_within: float = 60.0) -> LlamaServer:
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", MODEL_ALIAS,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_threads", str(self.n_threads),
            "--n_ctx", str(self.n_ctx),
            "--api_key", self.api_key,
            # Queue concurrent requests instead of cutting off the running stream.
            "--interrupt_requests", "False",
        ]  # fmt: skip
        if self.chat_format:  # e.g. "chatml-function-calling": tool calls held to their schema by a grammar
            command += ["--chat_format", self.chat_format]
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        self._process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + ready_within
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited early:\n{self.log_text()}")
            if self._ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama_cpp.server not ready within {ready_within}s:\n{self.log_text()}")

    def _ready(self) -> bool:
        request = urllib.request.Request(f"{self.base_url}/models", headers={"Authorization": f"Bearer {self.api_key}"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def log_text(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._process = None
        self._log.close()

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
