"""Pyodide sandbox figures (the rows `bench/sandbox.py` adds beside the native backend's).

Run: .venv/bin/python bench/sandbox_pyodide.py [--quick]. Prints medians of repeated runs.
"""

from __future__ import annotations

import argparse

from codeact.sandbox.pyodide import status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    ready = status()
    if not ready.active:
        raise SystemExit(f"the pyodide backend is not installed: {ready.detail}; run: {ready.remedy}")
    from codeact.sandbox.pyodide.bench import figures

    for name, value, unit in figures(quick=args.quick):
        print(f"{name:<70} {value:10.2f} {unit}")


if __name__ == "__main__":
    main()
