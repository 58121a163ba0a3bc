"""Where the Pyodide backend finds Deno, Pyodide and its start-up snapshot, and how it installs them.

Deno comes from PyPI (package `deno`, the `pyodide` extra). Pyodide comes from the npm registry,
fetched by Deno itself into `<prefix>/share/codeact/pyodide-<version>` (the virtualenv when there is
one) or the user's cache; `CODEACT_PYODIDE_DIR` points at another copy. A memory snapshot of a
started session, made once per version of these files, cuts start-up from seconds to a few hundred
milliseconds.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from codeact.sandbox.interpreter import InterpreterError, LayerStatus

PYODIDE_VERSION = "314.0.7"
_HERE = Path(__file__).parent
RUNTIME_JS = _HERE / "runtime.mjs"
RUNTIME_PY = _HERE / "runtime.py"
WIRE_PY = _HERE.parent / "wire.py"
STEP_PY = _HERE.parent / "step.py"
_REQUIRED = ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip", "pyodide-lock.json")
INSTALL_HINT = "pip install 'codeact[pyodide]' && python -m codeact.sandbox.pyodide install"


# `deno run` with no prompts, config, lock file, remote or npm code: what every runtime start shares
DENO_RUN = ("run", "--no-prompt", "--no-config", "--no-lock", "--no-remote", "--no-npm", "--quiet")


def find_deno() -> str | None:
    """The Deno executable: the PyPI `deno` package's, else one on PATH."""
    with contextlib.suppress(ImportError, FileNotFoundError):
        import deno  # type: ignore[import-untyped]

        return str(deno.find_deno_bin())
    return shutil.which("deno")


def _user_cache() -> Path:
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "codeact"


def candidate_dirs() -> list[Path]:
    """Where Pyodide is looked for, first match wins."""
    name = f"pyodide-{PYODIDE_VERSION}"
    override = os.environ.get("CODEACT_PYODIDE_DIR")
    found = [Path(override)] if override else []
    return [*found, Path(sys.prefix) / "share" / "codeact" / name, _user_cache() / name]


def _complete(path: Path) -> bool:
    return all((path / f).is_file() for f in _REQUIRED)


def find_pyodide() -> Path | None:
    """The directory holding Pyodide's files, or None when it is not installed."""
    for path in candidate_dirs():
        if _complete(path):
            return path.resolve()
    return None


def _writable_target() -> Path:
    for path in candidate_dirs():
        parent = path.parent
        with contextlib.suppress(OSError):
            parent.mkdir(parents=True, exist_ok=True)
            if os.access(parent, os.W_OK):
                return path
    raise InterpreterError("no writable place to install Pyodide; set CODEACT_PYODIDE_DIR to one")


def install(*, quiet: bool = False) -> Path:
    """Fetch Pyodide from the npm registry (through Deno) unless present; returns its directory."""
    existing = find_pyodide()
    if existing is not None:
        return existing
    deno = find_deno()
    if deno is None:
        raise InterpreterError(f"Deno is not installed; run: {INSTALL_HINT}")
    target = _writable_target()
    with tempfile.TemporaryDirectory(prefix="codeact-pyodide-") as work:
        env = {**os.environ, "DENO_DIR": work, "NO_COLOR": "1"}
        done = subprocess.run(
            [deno, "cache", "--quiet", f"npm:pyodide@{PYODIDE_VERSION}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        fetched = Path(work) / "npm" / "registry.npmjs.org" / "pyodide" / PYODIDE_VERSION
        if done.returncode != 0 or not _complete(fetched):
            raise InterpreterError(
                f"could not fetch pyodide@{PYODIDE_VERSION} from the npm registry: "
                f"{(done.stderr or done.stdout).strip()[-800:]}"
            )
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
        try:
            for entry in fetched.iterdir():
                if entry.is_file():
                    shutil.copy2(entry, staging / entry.name)
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if not quiet:
        print(f"installed pyodide {PYODIDE_VERSION} in {target}", file=sys.stderr)
    return target.resolve()


@functools.cache
def deno_version(deno: str) -> str:
    """The first line of `deno --version` (a process start: read once per executable)."""
    done = subprocess.run([deno, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return done.stdout.split("\n", 1)[0].strip() if done.returncode == 0 else ""


# --- snapshot ---------------------------------------------------------------------------------------


def sources() -> dict[str, str]:
    """The Python modules a session runs inside Pyodide."""
    return {
        name: path.read_text(encoding="utf-8")
        for name, path in (("runtime", RUNTIME_PY), ("wire", WIRE_PY), ("step", STEP_PY))
    }


def snapshot_path(pyodide_dir: Path) -> Path:
    """The snapshot for these exact runtime files; a change to them names a new snapshot."""
    digest = hashlib.sha256()
    for part in (
        RUNTIME_JS.read_bytes(),
        RUNTIME_PY.read_bytes(),
        WIRE_PY.read_bytes(),
        STEP_PY.read_bytes(),
        PYODIDE_VERSION.encode(),
    ):
        digest.update(hashlib.sha256(part).digest())
    name = f"session-{digest.hexdigest()[:16]}.bin"
    beside = pyodide_dir / "snapshots"
    if (beside / name).is_file() or os.access(beside if beside.is_dir() else pyodide_dir, os.W_OK):
        return beside / name
    return _user_cache() / f"snapshots-{PYODIDE_VERSION}" / name  # Pyodide installed read-only


def deno_environment(pyodide_dir: Path) -> dict[str, str]:
    """The only variables a Deno process of the sandbox sees (none of the host's)."""
    env = {
        "NO_COLOR": "1",
        "DENO_NO_UPDATE_CHECK": "1",
        "DENO_NO_PROMPT": "1",
        "DENO_DIR": str(pyodide_dir / "deno-cache"),
    }
    if sys.platform == "win32":
        for name in ("SYSTEMROOT", "SystemRoot", "TEMP", "TMP"):
            if name in os.environ:
                env[name] = os.environ[name]
    return env


def build_snapshot(pyodide_dir: Path | None = None, *, deno: str | None = None) -> Path:
    """Make the start-up snapshot unless it exists; the Deno that makes it may write only that file."""
    pyodide_dir = pyodide_dir or find_pyodide()
    deno = deno or find_deno()
    if pyodide_dir is None or deno is None:
        raise InterpreterError(f"the Pyodide backend is not installed; run: {INSTALL_HINT}")
    path = snapshot_path(pyodide_dir)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob("session-*.bin"):
        with contextlib.suppress(OSError):
            old.unlink()
    partial = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    command = [
        deno,
        *DENO_RUN,
        f"--allow-read={pyodide_dir}",
        f"--allow-write={partial}",
        str(RUNTIME_JS),
        str(pyodide_dir),
        "-",
        "make-snapshot",
    ]
    init = {"op": "init", "sources": sources(), "snapshot_out": str(partial), "mounts": [], "env": {}}
    body = json.dumps(init).encode()
    try:
        done = subprocess.run(
            command,
            input=len(body).to_bytes(4, "big") + body,
            capture_output=True,
            timeout=300,
            env=deno_environment(pyodide_dir),
            check=False,
        )
        if done.returncode != 0 or not partial.is_file():
            raise InterpreterError(
                "could not make the Pyodide start-up snapshot: " + done.stderr.decode(errors="replace").strip()[-800:]
            )
        os.replace(partial, path)
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()
    return path


# --- readiness ---------------------------------------------------------------------------------------


def layers() -> list[LayerStatus]:
    """Each part the Pyodide backend needs, whether it is there, and what to install when not."""
    found: list[LayerStatus] = []
    deno = find_deno()
    found.append(
        LayerStatus(
            "deno",
            deno is not None,
            detail=(deno_version(deno) + f" ({deno})") if deno else "not found",
            remedy="" if deno else "pip install 'codeact[pyodide]'",
        )
    )
    pyodide_dir = find_pyodide()
    found.append(
        LayerStatus(
            "pyodide",
            pyodide_dir is not None,
            detail=f"{PYODIDE_VERSION} in {pyodide_dir}"
            if pyodide_dir
            else f"{PYODIDE_VERSION} not found in " + ", ".join(str(p) for p in candidate_dirs()),
            remedy="" if pyodide_dir else "python -m codeact.sandbox.pyodide install",
        )
    )
    snapshot = snapshot_path(pyodide_dir) if pyodide_dir else None
    found.append(
        LayerStatus(
            "snapshot",
            bool(snapshot and snapshot.is_file()),
            detail=str(snapshot)
            if snapshot and snapshot.is_file()
            else "no start-up snapshot: each session starts cold (seconds instead of ~0.4 s)",
            remedy="" if snapshot and snapshot.is_file() else "python -m codeact.sandbox.pyodide install",
        )
    )
    return found


def status() -> LayerStatus:
    """Whether the Pyodide backend can run here (Deno and Pyodide installed) and what to do if not."""
    parts = layers()
    missing = [p for p in parts[:2] if not p.active]
    if missing:
        return LayerStatus(
            "pyodide backend", False, detail="; ".join(f"{p.name}: {p.detail}" for p in missing), remedy=INSTALL_HINT
        )
    return LayerStatus("pyodide backend", True, detail="; ".join(f"{p.name}: {p.detail}" for p in parts))
