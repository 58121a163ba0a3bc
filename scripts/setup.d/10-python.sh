#!/usr/bin/env bash
# The package itself, editable, with the test and data extras.
set -euo pipefail
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[dev,data]"
