"""Packages on demand: `Sandbox(packages=["tabulate==0.9.*"])`.

The requirements are installed with pip, from the index pip is configured with, into a cache
directory of their own (never the host's environment), keyed by the requirement set and the Python
version; a later session with the same set reuses it. The sandbox mounts the directory read-only and
puts it first on the session's import path (the native zygote can preload from it). Only the host
runs pip, before the session starts; the code in the sandbox never can.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from codeact.sandbox.interpreter import InterpreterError

log = logging.getLogger("codeact.sandbox")
_DONE = "codeact-packages.json"


def cache_root() -> Path:
    """Where installed package sets live: $CODEACT_PACKAGE_CACHE, else the user's cache folder."""
    override = os.environ.get("CODEACT_PACKAGE_CACHE")
    if override:
        return Path(override)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "codeact" / "packages"


def directory_for(requirements: Sequence[str]) -> Path:
    """The cache directory of this requirement set (installed or not)."""
    key = json.dumps(
        {
            "requirements": sorted(requirements),
            "python": sys.version.split()[0],
            "platform": f"{sys.platform}-{platform.machine()}",
        },
        sort_keys=True,
    )
    return cache_root() / hashlib.sha256(key.encode()).hexdigest()[:20]


def install(requirements: Sequence[str]) -> Path:
    """The directory holding `requirements`, installed with pip on first use (its output on stderr)."""
    target = directory_for(requirements)
    if (target / _DONE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".installing-", dir=target.parent))
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-input",
        "--disable-pip-version-check",
        "--target",
        str(staging),
        "--",
        *requirements,
    ]
    log.warning("sandbox: installing %s into %s", " ".join(requirements), target)
    print(
        f"codeact: installing {' '.join(requirements)} for the sandbox (once; cached in {target})",
        file=sys.stderr,
        flush=True,
    )
    try:
        proc = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PIP_NO_INPUT": "1"},
        )
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise InterpreterError(f"could not run pip to install {list(requirements)}: {exc}") from None
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        message = proc.stderr.strip()[-2000:] or f"pip exited with status {proc.returncode}"
        raise InterpreterError(f"pip could not install {list(requirements)} for the sandbox:\n{message}")
    (staging / _DONE).write_text(json.dumps({"requirements": list(requirements)}), encoding="utf-8")
    try:
        staging.rename(target)
    except OSError:  # another process installed the same set meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return target
