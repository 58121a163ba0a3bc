#!/usr/bin/env bash
# LiteLLM, the optional extra behind LM("anthropic/..."), LM("gemini/...") and other providers, so its
# backend is tested for real (against the local llama.cpp server). Skipped when already importable.
set -euo pipefail
if "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('litellm') is None)"; then
    echo "litellm: already installed" >&2
    exit 0
fi
"$VENV/bin/python" -m pip install -q "litellm>=1.40"
