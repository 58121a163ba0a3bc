"""`python -m codeact.sandbox.pyodide install|status`: set up or check the Pyodide backend."""

from __future__ import annotations

import sys

from codeact.sandbox.interpreter import InterpreterError
from codeact.sandbox.pyodide.installation import build_snapshot, install, layers


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "status"
    if command == "install":
        try:
            path = install()
            snapshot = build_snapshot(path)
        except InterpreterError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"pyodide ready in {path}; start-up snapshot {snapshot}")
        return 0
    if command == "status":
        parts = layers()
        for part in parts:
            mark = "ok " if part.active else "-- "
            print(f"{mark}{part.name}: {part.detail}" + (f"  (fix: {part.remedy})" if part.remedy else ""))
        return 0 if all(p.active for p in parts[:2]) else 1
    print("usage: python -m codeact.sandbox.pyodide [install|status]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
