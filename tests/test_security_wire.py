"""Forged messages on the tool channel and the session's control socket.

The attacker knows the implementation: it finds the step's channel to the host and writes raw
frames (4-byte big-endian length, then JSON). The host must treat whatever arrives as data, end
that session when the protocol is broken, never unpickle or evaluate anything, and live on.
"""

from __future__ import annotations

import base64
import contextlib
import json
import pickle
import signal
import struct
import threading
import time
from pathlib import Path

import pytest

from attacks import (
    FIND_CHANNEL,
    FIND_CONTROL,
    assert_alive,
    assert_blocked,
    assert_new_sandbox_works,
    probe,
    run_measuring_host_memory,
)

calls: list[tuple[object, ...]] = []


def echo(value: object) -> object:
    """Return the value unchanged."""
    calls.append((value,))
    return value


@pytest.fixture(autouse=True)
def _native_only(backend: str) -> None:
    if backend != "process":
        pytest.skip("forges frames of the native backend's wire")


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _send_raw(frame: bytes, *, wait: float = 5.0) -> str:
    """Sandbox code that writes `frame` on the tool channel and reports what came back."""
    return f"""
        ch = __channel()
        ch.sendall({frame!r})
        ch.settimeout({wait})
        try:
            reply = ch.recv(1 << 16)
        except OSError as exc:
            raise ConnectionError(f"no reply: {{exc}}")
        if not reply:
            raise ConnectionError("the host closed the channel")
        return reply[:200]
    """


def _run_forgery(sb, frame: bytes, *, wait: float = 5.0):
    control = sb.execute(FIND_CHANNEL + "\n__channel() is not None")
    assert control.value == "True", f"control: the attack finds the tool channel: {control}"
    return probe(sb, _send_raw(frame, wait=wait), prelude=FIND_CHANNEL, timeout=20)


def _assert_session_ended_cleanly(sb, make_sandbox, outcome) -> None:
    assert outcome.status == "ended" and outcome.result.error is not None, (
        f"the host did not end the session that broke the protocol: {outcome}"
    )
    assert outcome.result.error.type in ("SandboxProtocolError", "SandboxCrashed"), outcome.result.error
    assert_alive(sb)  # restarted
    assert_new_sandbox_works(make_sandbox)


def test_claimed_huge_length_is_rejected(make_sandbox):
    sb = make_sandbox(tools=[echo])
    outcome = _run_forgery(sb, struct.pack(">I", 0xFFFFFFF0) + b"{")
    _assert_session_ended_cleanly(sb, make_sandbox, outcome)
    assert "exceeds" in outcome.result.error.message or "limit" in outcome.result.error.message


def test_invalid_json_is_rejected(make_sandbox):
    sb = make_sandbox(tools=[echo])
    outcome = _run_forgery(sb, _frame(b'{"op": "call", "tool": "echo", "args": [1, 2'))
    _assert_session_ended_cleanly(sb, make_sandbox, outcome)


def test_non_utf8_and_non_object_frames_are_rejected(make_sandbox):
    sb = make_sandbox(tools=[echo])
    outcome = _run_forgery(sb, _frame(b"\xff\xfe\x00garbage") + _frame(b"[1, 2, 3]"))
    _assert_session_ended_cleanly(sb, make_sandbox, outcome)
    sb2 = make_sandbox(tools=[echo])
    outcome = _run_forgery(sb2, _frame(b'"just a string"'))
    _assert_session_ended_cleanly(sb2, make_sandbox, outcome)


def test_unknown_op_is_rejected(make_sandbox):
    sb = make_sandbox(tools=[echo])
    outcome = _run_forgery(sb, _frame(b'{"op": "exec_on_host", "code": "import os; os.system(\'id\')"}'))
    _assert_session_ended_cleanly(sb, make_sandbox, outcome)


def test_pickle_payload_is_never_unpickled(make_sandbox, tmp_path):
    marker = tmp_path / "unpickled"

    class Trap:
        def __reduce__(self):
            return (Path.write_text, (marker, "the host unpickled sandbox data"))

    payload = base64.b64encode(pickle.dumps(Trap())).decode()
    sb = make_sandbox(tools=[echo])
    for tag in ("pickle", "object", "bytes_pickle", "ndarray_pickle"):
        body = json.dumps({"op": "call", "tool": "echo", "args": [{"$t": tag, "v": payload}], "kwargs": {}}).encode()
        outcome = _run_forgery(sb, _frame(body))
        assert outcome.status in ("ended", "ok", "blocked")
        assert not marker.exists(), f"the host unpickled a {tag!r} value from the sandbox"
        assert_alive(sb)
    # numpy object arrays are pickles in disguise
    body = json.dumps(
        {
            "op": "call",
            "tool": "echo",
            "kwargs": {},
            "args": [{"$t": "ndarray", "dtype": "|O", "shape": [1], "v": payload}],
        }
    ).encode()
    _run_forgery(sb, _frame(body))
    assert not marker.exists(), "the host decoded an object-dtype array from the sandbox"
    assert not calls or all(not isinstance(c[0], Trap) for c in calls)
    assert_new_sandbox_works(make_sandbox)


def test_unknown_value_tag_in_tool_arguments_is_rejected(make_sandbox):
    sb = make_sandbox(tools=[echo])
    calls.clear()
    body = b'{"op": "call", "tool": "echo", "args": [{"$t": "module", "v": "os"}], "kwargs": {}}'
    outcome = _run_forgery(sb, _frame(body))
    assert not calls, f"the host ran a tool with an undecodable argument: {calls}"
    _assert_session_ended_cleanly(sb, make_sandbox, outcome)


@pytest.mark.parametrize(
    "body",
    [
        b'{"op": "call", "tool": "echo", "args": {"not": "a list"}, "kwargs": {}}',
        b'{"op": "call", "tool": "echo", "args": [], "kwargs": [1, 2]}',
        b'{"op": "call", "tool": "echo", "args": [], "kwargs": {"$t": "dict", "v": [[1, 2]]}}',
        b'{"op": "call", "tool": ["echo"], "args": [], "kwargs": {}}',
        b'{"op": "call", "tool": "echo", "args": [{"$t": "set", "v": [[1]]}], "kwargs": {}}',
        b'{"op": "call", "tool": "echo", "args": [{"$t": "timedelta", "v": [1e999, 0, 0]}], "kwargs": {}}',
        b'{"op": "call", "tool": "echo", "args": [{"$t": "ndarray", "dtype": "<f8", "shape": [1000000000], "v": ""}]}',
    ],
)
def test_malformed_tool_calls_are_rejected(make_sandbox, body):
    sb = make_sandbox(tools=[echo])
    calls.clear()
    outcome = _run_forgery(sb, _frame(body))
    assert not calls, f"the host ran a tool for a malformed call: {calls}"
    _assert_session_ended_cleanly(sb, make_sandbox, outcome)


def test_deeply_nested_json_is_rejected(make_sandbox):
    sb = make_sandbox(tools=[echo])
    calls.clear()
    depth = 200_000
    body = b'{"op": "call", "tool": "echo", "args": [' + b"[" * depth + b"]" * depth + b'], "kwargs": {}}'
    outcome = _run_forgery(sb, _frame(body))
    assert not calls
    _assert_session_ended_cleanly(sb, make_sandbox, outcome)


def test_huge_integer_is_rejected(make_sandbox):
    sb = make_sandbox(tools=[echo])
    calls.clear()
    body = b'{"op": "call", "tool": "echo", "args": [' + b"9" * 1_000_000 + b'], "kwargs": {}}'
    started = time.monotonic()
    outcome = _run_forgery(sb, _frame(body))
    assert time.monotonic() - started < 15, "parsing a huge integer stalled the host"
    assert not calls or all(not isinstance(c[0], int) or c[0].bit_length() < 10_000 for c in calls)
    assert outcome.status in ("ended", "ok", "blocked")
    assert_alive(sb)


def test_forged_result_with_wrong_types_does_not_raise_on_the_host(make_sandbox):
    sb = make_sandbox(tools=[echo])
    for fields in (
        b'"stdout": ["not", "text"], "stderr": {"a": 1}, "value": {"x": 1}, "error": "oops"',
        b'"stdout_truncated": "lots"',
        b'"stdout_truncated": 1e999',
        b'"submitted": {"$t": "set", "v": [[1]]}',
        b'"error": {"type": ["x"], "message": {"y": 2}, "lineno": "seven", "line": 5}',
        b'"duration": "forever", "value": 12',
    ):
        body = b'{"op": "result", ' + fields + b"}"
        try:
            outcome = _run_forgery(sb, _frame(body), wait=2)
        except Exception as exc:  # the host's execute() itself raised
            pytest.fail(f"a forged result ({fields!r}) made execute() raise {type(exc).__name__}: {exc}")
        result = outcome.result
        assert isinstance(result.stdout, str) and isinstance(result.stderr, str)
        assert result.value is None or isinstance(result.value, str)
        assert isinstance(result.stdout_truncated, int)
        assert_alive(sb)


def test_forged_supervisor_report_does_not_raise_on_the_host(make_sandbox):
    sb = make_sandbox()
    assert sb.execute(FIND_CONTROL + "\n__control() is not None").value == "True", "control: finds the socket"
    for report in (
        b'{"op": "failed", "kind": "died", "status": "not a number"}',
        b'{"op": "failed", "kind": "died", "status": 99999999999999999999999}',
        b'{"op": "failed", "kind": "died", "status": [9]}',
        b'{"op": "hello", "layers": "none"}',
    ):
        code = f"__control().sendall({_frame(report)!r})\nimport time\ntime.sleep(2)\n'sent'"
        try:
            result = sb.execute(FIND_CONTROL + "\n" + code, timeout=10)
        except Exception as exc:
            pytest.fail(f"a forged report {report!r} made execute() raise {type(exc).__name__}: {exc}")
        assert result.error is None or isinstance(result.error.message, str)
        try:
            follow = sb.execute("1 + 1", timeout=10)
        except Exception as exc:
            pytest.fail(f"after a forged report {report!r} execute() raised {type(exc).__name__}: {exc}")
        assert follow.value == "2", f"the session is confused after a forged report {report!r}: {follow}"


def _unsupervised(attack: str) -> str:
    """A step that finds its channel, kills its session's supervisor (so nothing inside ends it), runs
    `attack` with `ch` and then waits forever: only the host can end it."""
    return (
        FIND_CHANNEL
        + """
import json, os, signal, struct, time
ch = __channel()
for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
    if pid not in (1, os.getpid()):
        os.kill(pid, signal.SIGKILL)
"""
        + attack
        + """
while True:
    time.sleep(1)
"""
    )


def test_half_sent_frame_cannot_hang_the_host(make_sandbox):
    sb = make_sandbox(tools=[echo], timeout=2)
    assert sb.execute("warm = 1").error is None  # from now on the step's parent is a holder, not pid 1
    code = _unsupervised("""
ch.sendall(b"\\x00\\x00\\x10\\x00" + b"{")  # promise 4096 bytes, send one
""")
    _assert_returns_in_time(sb, code, 20)
    assert_alive(sb)


def _assert_returns_in_time(sb, code: str, limit_s: float) -> None:
    """`sb.execute(code)` must come back (with an error) within `limit_s`; kills the session if not."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["result"] = sb.execute(code)
        except Exception as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit_s)
    hung = thread.is_alive()
    if hung:  # free the host thread so the suite can go on: kill the session's processes
        for fd in list(getattr(sb.backend, "_pidfds", [])):
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        thread.join(10)
    assert not hung, f"ATTACK SUCCEEDED: the host's execute() was still waiting after {limit_s:g} s"
    assert "error" not in box, f"execute() raised: {box.get('error')!r}"
    assert box["result"].error is not None, box["result"]


def test_unread_tool_reply_cannot_hang_the_host(make_sandbox):
    sb = make_sandbox(tools=[echo], timeout=2)
    assert sb.execute("warm = 1").error is None  # from now on the step's parent is a holder, not pid 1
    code = _unsupervised("""
body = json.dumps({"op": "call", "tool": "echo", "args": ["x" * (12 * 1024 * 1024)], "kwargs": {}}).encode()
ch.sendall(struct.pack(">I", len(body)) + body)  # the host answers with 12 MB that nobody reads
""")
    _assert_returns_in_time(sb, code, 20)
    assert_alive(sb)


def test_unread_refusals_cannot_hang_the_host(make_sandbox):
    # The host answers a call of an unknown tool itself, at once: a step that sends many and reads
    # none fills the socket until the host's own send blocks. It may block until the step's time
    # limit, no longer (it used to wait 30 s, in the thread that enforces that limit).
    sb = make_sandbox(tools=[echo], timeout=2)
    assert sb.execute("warm = 1").error is None
    code = _unsupervised("""
name = "n" * 20_000
for i in range(200):  # about 4 MB of refusals, far more than a socket holds
    body = json.dumps({"op": "call", "id": i, "tool": name, "args": [], "kwargs": {}}).encode()
    ch.sendall(struct.pack(">I", len(body)) + body)
""")
    _assert_returns_in_time(sb, code, 20)
    assert_alive(sb)


def test_oversized_tool_argument_is_refused_clearly(make_sandbox):
    sb = make_sandbox(tools=[echo], timeout=60)
    calls.clear()
    assert sb.execute("kept = 'k'").error is None
    result = sb.execute("echo('x' * (40 * 1024 * 1024))")
    assert result.error is not None, "a 40 MB tool argument was accepted"
    assert "limit" in result.error.message or "large" in result.error.message, result.error
    assert not calls, "the host ran the tool with an oversized argument"
    assert sb.execute("kept").value == "'k'", "the session did not survive a refused tool call"
    assert sb.execute("echo([1, 2])").value == "[1, 2]", "tools stopped working"


def test_oversized_frame_forged_past_the_stub_is_rejected(make_sandbox):
    sb = make_sandbox(tools=[echo], timeout=60)
    calls.clear()
    big = b'{"op": "call", "tool": "echo", "args": ["' + b"x" * (24 * 1024 * 1024) + b'"], "kwargs": {}}'
    outcome = _run_forgery(sb, _frame(big))
    assert not calls, "the host accepted a frame over its size limit"
    _assert_session_ended_cleanly(sb, make_sandbox, outcome)


@pytest.mark.parametrize(
    "name",
    [
        "does_not_exist",
        "__init__",
        "_serve_call",
        "__import__",
        "eval",
        "exec",
        "os.system",
        "__class__",
        "__builtins__",
        "",
        "echo.__globals__",
    ],
)
def test_calling_a_tool_that_was_not_given_is_refused(make_sandbox, name):
    sb = make_sandbox(tools=[echo])
    calls.clear()
    outcome = probe(
        sb,
        f"""
        return __codeact_call__({name!r}, ["id"], {{}})
    """,
        prelude="__codeact_call__ = echo.__globals__['__codeact_call__']",
    )
    assert_blocked(outcome, f"call the host function {name!r} through the tool bridge")
    assert "NameError" in outcome.detail or "no tool" in outcome.detail or outcome.status == "ended", outcome
    assert not calls, "a tool ran for a name that was not given"
    assert_alive(sb)


def test_flood_of_tool_calls_is_served_and_the_host_lives(make_sandbox):
    sb = make_sandbox(tools=[echo], timeout=60)
    calls.clear()
    result = sb.execute("n = 0\nfor i in range(20000):\n    n += echo(i)\nn")
    assert result.error is None and result.value == str(sum(range(20000))), result
    assert len(calls) == 20000
    assert_alive(sb)


def test_tool_call_from_a_stray_process_after_the_step_is_refused(make_sandbox):
    sb = make_sandbox(tools=[echo], timeout=10)
    calls.clear()
    result = sb.execute("""
import os, time
if os.fork() == 0:
    time.sleep(0.5)
    try:
        echo("from a child after the step ended")
    finally:
        os._exit(0)
'step done'
""")
    assert result.value == "'step done'", result
    time.sleep(1.0)
    assert ("from a child after the step ended",) not in calls, "a stray process called a host tool between steps"
    assert_alive(sb)


def test_forged_result_cannot_bypass_the_output_limits(make_sandbox):
    # The sandbox cuts output to the limit itself; a forged result must not carry more to the host
    # (and from there into the model's context) than an honest one could.
    sb = make_sandbox(tools=[echo], timeout=30)
    big = "A" * (5 * 1024 * 1024)
    body = json.dumps(
        {"op": "result", "stdout": big, "stderr": big, "value": big, "error": None, "stdout_truncated": 0}
    ).encode()
    outcome = _run_forgery(sb, _frame(body), wait=2)
    result = outcome.result
    sizes = {"stdout": len(result.stdout), "stderr": len(result.stderr), "value": len(result.value or "")}
    assert sizes["stdout"] <= (1 << 20) + 10_000 and sizes["stderr"] <= (1 << 20) + 10_000, (
        f"ATTACK SUCCEEDED: a forged result delivered {sizes} characters past the 1 MiB output limit"
    )
    assert sizes["value"] <= 100_000, f"ATTACK SUCCEEDED: a forged result delivered a {sizes['value']} character value"
    assert_alive(sb)


def test_small_frame_of_many_tiny_values_cannot_balloon_host_memory(make_sandbox):
    # 15 MB of "{}," is five million dicts: decoding must not turn a frame under the size limit
    # into gigabytes on the host (many sessions can do this at once).
    sb = make_sandbox(tools=[echo], timeout=60)
    calls.clear()
    code = (
        FIND_CHANNEL
        + """
import struct
body = b'{"op": "call", "tool": "echo", "args": [[' + b",".join([b"{}"] * 5_000_000) + b']], "kwargs": {}}'
ch = __channel()
ch.sendall(struct.pack(">I", len(body)) + body)
ch.settimeout(30)
ch.recv(100)
'sent'
"""
    )
    result, grown_mb = run_measuring_host_memory(lambda: sb.execute(code))
    assert grown_mb < 300, (
        f"ATTACK SUCCEEDED: one 15 MB tool-call frame made the host allocate {grown_mb:.0f} MB ({result.error})"
    )
    assert_alive(sb)


def test_submitted_values_cannot_balloon_host_memory(make_sandbox):
    sb = make_sandbox(tools=[echo], timeout=60)
    code = (
        FIND_CHANNEL
        + """
import struct
items = b",".join([b"[]"] * 5_000_000)
body = b'{"op": "result", "stdout": "", "stderr": "", "value": null, "error": null, "submitted": {"answer": [' + items + b']}}'
ch = __channel()
ch.sendall(struct.pack(">I", len(body)) + body)
import time
time.sleep(5)
"""
    )
    result, grown_mb = run_measuring_host_memory(lambda: sb.execute(code))
    assert grown_mb < 300, (
        f"ATTACK SUCCEEDED: one 15 MB result frame made the host allocate {grown_mb:.0f} MB ({result.error})"
    )
    assert_alive(sb)
