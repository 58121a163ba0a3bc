"""Every Python example in the README runs as written, with scripted models in place of real ones."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)

# What a scripted model replies in each example, and what the example must print.
SCRIPTS: dict[str, tuple[list[str], str]] = {
    "tools=[add]": (["```python\nsubmit(answer=add(17, 25))\n```"], "42 submitted"),
    "class Triage": (["```python\ninfo = lookup('acme')\nsubmit(priority='high')\n```"], "high submitted"),
    "requires_approval=True": ([], ""),
    'inputs_in_prompt="preview"': ([], ""),
    "import dspy": ([], "3 notes about x 3"),
    "from codeact import Sandbox, SandboxPool": ([], "'DONE'"),
}


def _script(block: str) -> tuple[list[str], str]:
    matches = [script for marker, script in SCRIPTS.items() if marker in block]
    assert len(matches) == 1, f"no single script for this README example:\n{block[:300]}"
    return matches[0]


def test_every_example_has_a_script() -> None:
    assert len(BLOCKS) == len(SCRIPTS)
    for block in BLOCKS:
        _script(block)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the examples use the native sandbox")
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_the_readme_example_runs_as_written(index: int, tmp_path: Path) -> None:
    block = BLOCKS[index]
    replies, expected = _script(block)
    script = tmp_path / "replies.json"
    script.write_text(json.dumps(replies))
    model = f"scripted:{script}"
    prelude = f"import codeact\ncodeact.configure(lm=codeact.LM({model!r}))\n"
    program = prelude + block.replace('"openai/gpt-4o-mini"', repr(model))
    proc = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"README example {index + 1} failed:\n{block}\n{proc.stderr[-3000:]}"
    assert expected in proc.stdout
