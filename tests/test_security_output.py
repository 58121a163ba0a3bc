"""Output floods: whatever the code prints or returns, the host keeps bounded memory and gets cut,
marked output back; nothing reaches the host's own stdout or stderr."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from attacks import assert_alive, run_measuring_host_memory

_OUTPUT_BOUND = 2 * (1 << 20) + 10_000  # the default limit (1 MiB) with room for a marker, in characters


def test_printing_gigabytes_keeps_the_host_bounded(make_sandbox):
    sb = make_sandbox(timeout=60)
    result, grown_mb = run_measuring_host_memory(
        lambda: sb.execute("""
line = "x" * (1 << 20)
for i in range(2048):  # 2 GiB
    print(line)
print("THE END")
""")
    )
    assert result.error is None, result.error
    assert len(result.stdout) <= _OUTPUT_BOUND, f"{len(result.stdout)} characters of stdout reached the host"
    assert "cut" in result.stdout, "the cut output carries no marker"
    assert result.stdout.rstrip().endswith("THE END"), "the tail of the output was not kept"
    assert grown_mb < 200, f"the host grew {grown_mb:.0f} MB"
    assert_alive(sb)


def test_stderr_flood_is_cut_too(make_sandbox):
    sb = make_sandbox(timeout=60)
    result = sb.execute("""
import sys
chunk = "e" * 65536
for _ in range(8192):  # 512 MiB
    sys.stderr.write(chunk)
""")
    assert result.error is None, result.error
    assert len(result.stderr) <= _OUTPUT_BOUND, f"{len(result.stderr)} characters of stderr reached the host"
    assert "cut" in result.stderr
    assert_alive(sb)


def test_millions_of_tiny_prints_are_bounded(make_sandbox):
    # Unsandboxed this takes about 2 s; a capture that copies what it holds on every write (quadratic)
    # would take hours and time out even on a loaded machine; the limit is no speed test.
    sb = make_sandbox(timeout=600)
    result = sb.execute("for i in range(2_000_000):\n    print(i)")
    assert result.error is None, f"two million small prints did not finish: {result.error}"
    assert len(result.stdout) <= _OUTPUT_BOUND
    assert result.stdout.rstrip().endswith("1999999"), "the last line is missing from the tail"
    assert_alive(sb)


def test_raw_writes_to_descriptors_1_and_2_never_reach_the_host(make_sandbox, capfd):
    sb = make_sandbox(timeout=30)
    marker = "RAW-FD-FLOOD-MARKER"
    result = sb.execute(f"""
import os
data = ({marker!r} + "\\n").encode() * 4096
for _ in range(64):
    os.write(1, data)
    os.write(2, data)
""")
    assert result.error is None, result.error
    time.sleep(0.2)
    captured = capfd.readouterr()
    assert marker not in captured.out and marker not in captured.err, "sandbox output reached the host's terminal"
    assert_alive(sb)


def test_huge_value_repr_is_cut(make_sandbox):
    sb = make_sandbox(timeout=60)
    result = sb.execute("'v' * (200 * 1024 * 1024)")
    assert result.error is None, result.error
    assert result.value is not None and len(result.value) <= 100_000, (
        f"a {len(result.value or '')} character value reached the host"
    )
    assert "cut" in result.value
    assert_alive(sb)


def test_endless_repr_is_cut_or_stopped(make_sandbox):
    sb = make_sandbox(timeout=5, memory_limit="256MB")
    result = sb.execute("""
class Endless:
    def __repr__(self):
        return "r" * (64 * 1024 * 1024) + repr(self)
Endless()
""")
    assert result.error is not None or (result.value is not None and len(result.value) <= 100_000), result
    assert_alive(sb)


def test_huge_exception_message_is_bounded(make_sandbox):
    sb = make_sandbox(timeout=60)
    result = sb.execute("raise ValueError('m' * (100 * 1024 * 1024))")
    assert result.error is not None
    size = len(result.error.message) + len(result.error.traceback)
    assert size <= 20 * (1 << 20), f"a {size} character error reached the host"
    assert_alive(sb)


def test_huge_submit_is_refused_clearly(make_sandbox):
    sb = make_sandbox(timeout=60)
    result = sb.execute("submit('a' * (100 * 1024 * 1024))")
    assert result.error is not None, "a 100 MB submission was accepted"
    assert result.submitted is None or len(str(result.submitted)) <= 20 * (1 << 20)
    assert "large" in result.error.message or "limit" in result.error.message, result.error
    assert_alive(sb)


def test_lone_surrogates_in_output_do_not_break_the_session(make_sandbox):
    sb = make_sandbox()
    assert sb.execute("kept = 1").error is None
    result = sb.execute("print('before \\ud800 after')\n'\\udfff'")
    assert result.error is None or result.error.type not in ("SandboxCrashed", "SandboxProtocolError"), result
    follow = sb.execute("kept + 1")
    assert follow.value == "2", f"the session broke after printing a lone surrogate: {follow}"


def test_flood_from_background_threads_is_bounded(make_sandbox, backend):
    if backend == "pyodide":
        pytest.skip("pyodide: WebAssembly Python cannot start threads")
    sb = make_sandbox(timeout=60)
    result, grown_mb = run_measuring_host_memory(
        lambda: sb.execute("""
import threading
def flood():
    chunk = "t" * 65536
    for _ in range(2048):  # 128 MiB per thread
        print(chunk)
threads = [threading.Thread(target=flood) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
""")
    )
    assert result.error is None, result.error
    assert len(result.stdout) <= _OUTPUT_BOUND
    assert grown_mb < 200, f"the host grew {grown_mb:.0f} MB"
    assert_alive(sb)


def test_terminal_escapes_from_the_sandbox_do_not_reach_the_users_terminal(tmp_path):
    # Output, errors and answers are untrusted: raw escape sequences could clear the screen, retitle
    # the window, plant a fake hyperlink or write the clipboard (OSC 52) of the user running the CLI.
    replies = [
        "```python\nimport sys\n"
        "print('\\x1b]52;c;cHduZWQ=\\x07\\x1b[2J\\x1b[31mINJECTED\\x1b[0m')\n"
        "print('\\x1b]0;pwned-title\\x07', file=sys.stderr)\n"
        "raise ValueError('\\x1b[1;31mfake\\x1b[0m')\n```",
        "```python\nsubmit('\\x1b]8;;http://evil.invalid\\x1b\\\\click\\x1b]8;;\\x1b\\\\ \\x1b[2Jdone')\n```",
    ]
    script = tmp_path / "replies.json"
    script.write_text(json.dumps(replies))
    proc = subprocess.run(
        [sys.executable, "-m", "codeact", "run", "say hi", "--model", f"scripted:{script}"],
        capture_output=True,
        timeout=180,
        cwd=tmp_path,
    )
    shown = proc.stdout + proc.stderr
    assert b"INJECTED" in shown and b"done" in shown, f"control: the run showed the output: {shown[-2000:]!r}"
    text = shown.decode("utf-8", errors="replace")
    escapes = sum(text.count(c) for c in ("\x1b", "\x07", "\x9b"))  # ESC, BEL, C1 CSI
    lines = [line for line in text.splitlines() if "\x1b" in line][:4]
    assert escapes == 0, f"ATTACK SUCCEEDED: {escapes} raw escape/bell bytes reached the terminal: {lines!r}"


def test_sandbox_output_cannot_inject_html_into_the_report(tmp_path):
    payload = "<script>alert('xss')</script><img src=x onerror=alert(1)>"
    replies = [
        f"```python\nprint({payload!r})\nraise ValueError({payload!r})\n```",
        f"```python\nsubmit({payload!r})\n```",
    ]
    script = tmp_path / "replies.json"
    script.write_text(json.dumps(replies))
    report = tmp_path / "report.html"
    proc = subprocess.run(
        [sys.executable, "-m", "codeact", "run", "say hi", "--model", f"scripted:{script}", "--report", str(report)],
        capture_output=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert report.exists(), f"control: the run wrote a report: {proc.stderr[-2000:]!r}"
    html = report.read_text()
    assert "alert(" in html, "control: the payload is shown in the report"
    assert "<script>alert" not in html and "<img src=x" not in html, "sandbox output became live HTML in the report"
