"""Concurrent tool calls from code: ten calls of a tool that waits 0.5 s, gathered vs one after another.

Run: .venv/bin/python bench/async_tools.py [--backend process|pyodide|all] [--calls 10] [--wait 0.5]
Prints the step's wall time for each style beside the in-process baseline measured in the same run
(the same waits gathered with asyncio over a thread each in this process, no sandbox).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from codeact import Sandbox
from codeact.sandbox import available_backends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="all", choices=["all", "process", "pyodide"])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--wait", type=float, default=0.5)
    args = parser.parse_args()

    def lookup(item: int) -> int:
        """Wait like a network call, then answer."""
        time.sleep(args.wait)
        return item

    async def alookup(item: int) -> int:
        """The same, as an async tool."""
        await asyncio.sleep(args.wait)
        return item

    async def baseline() -> float:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(args.calls) as threads:
            started = time.perf_counter()
            await asyncio.gather(*[loop.run_in_executor(threads, time.sleep, args.wait) for _ in range(args.calls)])
            return time.perf_counter() - started

    n = args.calls
    print(f"{n} tool calls of {args.wait:g} s each (wall time of one step)")
    print(f"{'in-process asyncio.gather, no sandbox (baseline)':<58} {asyncio.run(baseline()):8.3f} s")
    backends = available_backends() if args.backend == "all" else [args.backend]
    for backend in backends:
        with Sandbox(tools=[lookup, alookup], backend=backend, timeout=n * args.wait + 30) as sb:
            sb.execute("import asyncio")
            styles = {
                "plain calls, one after another": f"[lookup(i) for i in range({n})]",
                "await asyncio.gather, sync tool": f"await asyncio.gather(*[lookup(i) for i in range({n})])",
                "await asyncio.gather, async tool": f"await asyncio.gather(*[alookup(i) for i in range({n})])",
            }
            for label, code in styles.items():
                result = sb.execute(code)
                assert result.error is None, result.error
                overlapping = sum(call.concurrent for call in result.tool_calls)
                print(f"{backend + ': ' + label:<58} {result.duration_s:8.3f} s  ({overlapping}/{n} calls overlapped)")


if __name__ == "__main__":
    main()
