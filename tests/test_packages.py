"""Packages on demand: installed with pip into a cache of their own, imported in the sandbox, never
in the host's environment; the cache is read-only to the code and cannot be granted for writing."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from codeact import Sandbox, SandboxOptions
from codeact.sandbox import InterpreterError
from codeact.sandbox.packages import directory_for

PACKAGE = "tabulate==0.9.*"


def _index_reachable(dest: str) -> bool:
    probe = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--dest",
            dest,
            "--quiet",
            "--no-input",
            "tabulate==0.9.0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return probe.returncode == 0


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    if not _index_reachable(str(tmp_path_factory.mktemp("download"))):
        pytest.skip("no package index is reachable from this machine")
    root = str(tmp_path_factory.mktemp("package-cache"))
    os.environ["CODEACT_PACKAGE_CACHE"] = root
    yield root
    os.environ.pop("CODEACT_PACKAGE_CACHE", None)


def test_a_package_is_installed_for_the_sandbox_and_not_for_the_host(make_sandbox, cache, capfd):
    assert importlib.util.find_spec("tabulate") is None, "the test needs a host without tabulate"
    sb = make_sandbox(packages=[PACKAGE])
    r = sb.execute("import tabulate\nprint(tabulate.tabulate([[1, 2]], tablefmt='plain'))\ntabulate.__file__")
    assert r.error is None, r.error
    assert r.stdout == "1  2\n"
    assert r.value is not None and r.value.strip("'").startswith(str(directory_for([PACKAGE])))
    assert importlib.util.find_spec("tabulate") is None  # the host's environment is unchanged
    assert "tabulate" not in sys.modules
    capfd.readouterr()
    again = make_sandbox(packages=[PACKAGE])  # the cached set is reused: pip does not run again
    assert again.execute("import tabulate\n'ok'").value == "'ok'"
    assert "installing" not in capfd.readouterr().err


def test_the_code_cannot_change_an_installed_package(make_sandbox, cache):
    sb = make_sandbox(packages=[PACKAGE])
    r = sb.execute(
        "import tabulate\ntry:\n    open(tabulate.__file__, 'a').write('# planted')\n"
        "    print('ATTACK SUCCEEDED')\nexcept OSError as exc:\n    print('refused')"
    )
    assert r.error is None and r.stdout == "refused\n"


def test_a_package_that_cannot_be_had_fails_with_pips_message(cache):
    with pytest.raises(InterpreterError, match="pip could not install") as info:
        Sandbox(packages=["no-such-package-codeact-test==99.0"]).start()
    assert "No matching distribution" in str(info.value) or "ERROR" in str(info.value)


def test_requirements_cannot_smuggle_pip_options():
    with pytest.raises(ValueError, match="requirement strings"):
        SandboxOptions(packages=["--index-url=http://127.0.0.1:9/simple"])


def test_the_package_cache_cannot_be_granted_for_writing(cache):
    with pytest.raises(ValueError, match="the sandbox package cache"):
        SandboxOptions(write_paths=[cache])
