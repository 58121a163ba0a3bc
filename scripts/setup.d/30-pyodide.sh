#!/usr/bin/env bash
# The Pyodide sandbox backend: Deno from PyPI (the `pyodide` extra), Pyodide from the npm registry
# (fetched by Deno into $VENV/share/codeact/pyodide-<version>), and its start-up snapshot. Each part
# is skipped when already there.
set -euo pipefail
PY="$VENV/bin/python"
if ! "$PY" -c "import deno" 2>/dev/null; then
    "$PY" -m pip install -q -e ".[pyodide]"
fi
"$PY" -m codeact.sandbox.pyodide install
