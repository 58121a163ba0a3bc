"""The `codeact` command, run for real in a subprocess with scripted model replies."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codeact.trajectory import RunRecord

ROOT = Path(__file__).resolve().parents[1]
MATH_TOOLS = ROOT / "examples" / "math_tools.py"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.pop("CODEACT_MODEL", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "250"  # no wrapping, so lines can be matched whole
    return env


def codeact(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codeact", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or ROOT,
        env=_env(),
    )


def replies(tmp_path: Path, *texts: str, name: str = "replies.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(list(texts)))
    return f"scripted:{path}"


def code(source: str, reasoning: str = "Next step.") -> str:
    return f"{reasoning}\n```python\n{source}\n```"


ADD_AND_SUBMIT = (
    code("result = add(17, 25)\nprint('sum is', result)", "I will use the add tool."),
    code("submit(answer=int(result))", "Now I submit."),
)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("codeact: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


# --- run -----------------------------------------------------------------------------------------


def test_run_shows_steps_answer_and_writes_trace_and_report(tmp_path: Path) -> None:
    trace, report = tmp_path / "run.json", tmp_path / "out" / "run.html"
    proc = codeact(
        "run",
        "What is 17 plus 25? Use the add tool.",
        "--model",
        replies(tmp_path, *ADD_AND_SUBMIT),
        "--tools",
        str(MATH_TOOLS),
        "--trace",
        str(trace),
        "--report",
        str(report),
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Step 1/10" in out and "Step 2/10" in out
    assert "result = add(17, 25)" in out
    assert "sum is 42.0" in out
    assert "answer: 42" in out
    assert "end reason: submitted" in out
    record = RunRecord.load(trace)
    assert f"{record.usage.total_tokens:,} tokens" in out
    assert "2 steps in" in out and "in 2 LM calls" in out
    assert record.end_reason == "submitted"
    assert record.outputs == {"answer": "42"}  # the default output type is str
    assert [s.code for s in record.steps] == [
        "result = add(17, 25)\nprint('sum is', result)",
        "submit(answer=int(result))",
    ]
    assert len(record.steps[0].tool_calls) == 1
    html = report.read_text()
    assert "What is 17 plus 25?" in html and "sum is 42.0" in html


def test_run_json_prints_one_object(tmp_path: Path) -> None:
    proc = codeact(
        "run", "17 + 25?", "--json", "--model", replies(tmp_path, *ADD_AND_SUBMIT), "--tools", str(MATH_TOOLS)
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["outputs"] == {"answer": "42"}
    assert summary["end_reason"] == "submitted"
    assert summary["steps"] == 2
    assert summary["usage"]["calls"] == 2
    assert summary["usage"]["prompt_tokens"] > 0


def test_run_quiet_prints_only_the_answer(tmp_path: Path) -> None:
    proc = codeact("run", "17 + 25?", "-q", "--model", replies(tmp_path, *ADD_AND_SUBMIT), "--tools", str(MATH_TOOLS))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "42\n"


def test_typed_signature_with_named_inputs(tmp_path: Path) -> None:
    model = replies(tmp_path, code("submit(top=sorted(numbers)[-k:], note='ok')"))
    proc = codeact(
        "run",
        "--signature",
        "numbers: list[int], k: int -> top: list[int], note: str",
        "--input",
        "numbers=[5, 1, 9, 3]",
        "--input",
        "k=2",
        "--json",
        "--model",
        model,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outputs"] == {"top": [5, 9], "note": "ok"}


def test_input_from_file_and_read_path(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "numbers.txt").write_text("3\n4\n5\n")
    question = tmp_path / "question.txt"
    question.write_text("Sum the numbers in the file.")
    model = replies(tmp_path, code(f"total = sum(int(x) for x in open({str(data / 'numbers.txt')!r}))\nsubmit(total)"))
    proc = codeact(
        "run",
        "-s",
        "question -> total: int",
        "-i",
        f"question=@{question}",
        "--read",
        str(data),
        "--json",
        "--model",
        model,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outputs"] == {"total": 12}


def test_files_outside_read_paths_are_not_readable(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("hidden")
    model = replies(
        tmp_path,
        code(f"print(open({str(secret)!r}).read())"),
        code("submit('done')"),
    )
    trace = tmp_path / "t.json"
    proc = codeact("run", "read it", "--model", model, "--trace", str(trace))
    assert proc.returncode == 0, proc.stderr
    step = RunRecord.load(trace).steps[0]
    assert step.error is not None and step.error.type in ("FileNotFoundError", "PermissionError")
    assert "hidden" not in step.stdout


@pytest.mark.parametrize(("flag", "answer"), [((), "no socket"), (("--network",), "socket ok")])
def test_network_is_off_unless_asked_for(tmp_path: Path, flag: tuple[str, ...], answer: str) -> None:
    model = replies(
        tmp_path,
        code("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\ns.close()\nsubmit('socket ok')"),
        code("submit('no socket')"),
    )
    proc = codeact("run", "x", *flag, "-q", "--model", model)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == answer


def test_network_host_lets_the_code_reach_that_host_only(tmp_path: Path) -> None:
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        model = replies(
            tmp_path,
            code(
                "import urllib.request\n"
                f"status = urllib.request.urlopen('http://127.0.0.1:{port}/').status\n"
                "try:\n"
                f"    urllib.request.urlopen('http://127.0.0.2:{port}/')\n"
                "except Exception as exc:\n"
                "    refused = str(exc)\n"
                "submit(f'{status} {refused}')"
            ),
        )
        proc = codeact("run", "x", "--network", f"127.0.0.1:{port}", "-q", "--model", model)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("200 HTTP Error 403") and f"127.0.0.2:{port}" in proc.stdout


def test_step_samples_retry_a_failed_step_from_the_state_before_it(tmp_path: Path) -> None:
    model = replies(
        tmp_path,
        code("rows = [1, 2, 3]"),
        code("rows.clear()\nrows.append(1 / 0)"),
        code("submit(sum(rows))"),
    )
    trace = tmp_path / "t.json"
    proc = codeact("run", "x", "--step-samples", "2", "-q", "--model", model, "--trace", str(trace))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "6"
    step = RunRecord.load(trace).steps[1]
    assert step.rejected_samples and "ZeroDivisionError" in step.rejected_samples[0].error


@pytest.mark.parametrize(
    ("flags", "message"),
    [(("--step-samples", "0"), "must be at least 1"), (("--action-format", "json"), "invalid choice")],
)
def test_bad_sampling_and_format_flags_are_usage_errors(tmp_path: Path, flags: tuple[str, ...], message: str) -> None:
    proc = codeact("run", "x", *flags, "--model", replies(tmp_path))
    assert proc.returncode == 2 and message in proc.stderr


def test_action_format_tool_call_still_runs_a_fenced_reply(tmp_path: Path) -> None:
    model = replies(tmp_path, code("submit('fenced')"))
    proc = codeact("run", "x", "--action-format", "tool_call", "-q", "--model", model)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "fenced"


def test_unavailable_backend_is_a_usage_error(tmp_path: Path) -> None:
    from codeact.sandbox import available_backends

    if "pyodide" in available_backends():
        pytest.skip("the Pyodide backend is available here")
    proc = codeact("run", "x", "--backend", "pyodide", "--model", replies(tmp_path))
    assert_one_line_error(proc, "pyodide sandbox backend is not available")


def test_wrong_submit_type_is_an_observation_then_fixed(tmp_path: Path) -> None:
    model = replies(tmp_path, code("submit(answer='forty-two')"), code("submit(answer=42)"))
    trace = tmp_path / "t.json"
    proc = codeact("run", "x", "-s", "task -> answer: int", "--model", model, "--trace", str(trace))
    assert proc.returncode == 0, proc.stderr
    assert "SubmitValidationError" in proc.stdout
    record = RunRecord.load(trace)
    assert record.outputs == {"answer": 42} and len(record.steps) == 2


def test_no_submit_within_max_iters_exits_1_with_fallback_answer(tmp_path: Path) -> None:
    model = replies(tmp_path, code("x = 1"), code("x = 2"), '{"answer": "2"}')
    proc = codeact("run", "x", "--max-iters", "2", "--json", "--model", model)
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["end_reason"] == "max_iters"
    assert summary["fallback"] == "extract"
    assert summary["outputs"] == {"answer": "2"}


def test_model_failure_exits_3(tmp_path: Path) -> None:
    # One reply for two calls: the scripted model fails on the second call.
    proc = codeact("run", "x", "--model", replies(tmp_path, code("x = 1")))
    assert proc.returncode == 3, proc.stderr
    assert "end reason: lm_error" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_tool_failure_reaches_the_model(tmp_path: Path) -> None:
    model = replies(tmp_path, code("divide(1, 0)"), code("submit('recovered')"))
    trace = tmp_path / "t.json"
    proc = codeact("run", "x", "--tools", f"{MATH_TOOLS}:divide", "--model", model, "--trace", str(trace))
    assert proc.returncode == 0, proc.stderr
    assert "ZeroDivisionError" in proc.stdout
    assert RunRecord.load(trace).steps[0].error.type == "ZeroDivisionError"


def test_step_timeout_option(tmp_path: Path) -> None:
    model = replies(tmp_path, code("while True:\n    pass"), code("submit('after')"))
    trace = tmp_path / "t.json"
    started = time.monotonic()
    proc = codeact("run", "x", "--timeout", "1", "--model", model, "--trace", str(trace))
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 20
    step = RunRecord.load(trace).steps[0]
    assert step.timed_out or (step.error is not None and step.error.type == "Timeout")


def test_ctrl_c_stops_the_run_kills_the_sandbox_and_writes_the_trace(tmp_path: Path) -> None:
    model = replies(tmp_path, code("import time\nprint('sleeping', flush=True)\ntime.sleep(120)"))
    trace = tmp_path / "t.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "codeact", "run", "wait", "--model", model, "--trace", str(trace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_env(),
    )
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 30
    while "time.sleep(120)" not in seen and time.monotonic() < deadline:
        seen += proc.stdout.readline()
    assert "time.sleep(120)" in seen, seen
    time.sleep(0.5)  # the code is now running in the sandbox
    sandbox_pids = _descendants(proc.pid)
    assert sandbox_pids, "the sandbox should run in child processes of the command"
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 10
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "end reason: interrupted" in seen + out
    record = RunRecord.load(trace)
    assert record.end_reason == "interrupted"
    assert record.steps and "time.sleep(120)" in (record.steps[0].code or "")
    time.sleep(0.5)
    alive = [pid for pid in sandbox_pids if _alive(pid)]
    assert not alive, f"sandbox processes still running after Ctrl-C: {alive}"


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- bad input -----------------------------------------------------------------------------------


def test_missing_tools_file(tmp_path: Path) -> None:
    proc = codeact("run", "x", "--model", replies(tmp_path), "--tools", str(tmp_path / "nope.py"))
    assert_one_line_error(proc, "tools file not found", "nope.py")


def test_tools_name_that_is_not_callable(tmp_path: Path) -> None:
    module = tmp_path / "things.py"
    module.write_text("LIMIT = 3\n\ndef add(a: int, b: int) -> int:\n    return a + b\n")
    proc = codeact("run", "x", "--model", replies(tmp_path), "--tools", f"{module}:LIMIT")
    assert_one_line_error(proc, "LIMIT", "not a callable")


def test_tools_name_that_is_missing(tmp_path: Path) -> None:
    proc = codeact("run", "x", "--model", replies(tmp_path), "--tools", f"{MATH_TOOLS}:power")
    assert_one_line_error(proc, "no attribute 'power'")


def test_tools_file_that_fails_to_import(tmp_path: Path) -> None:
    module = tmp_path / "broken.py"
    module.write_text("import nonexistent_package_xyz\n")
    proc = codeact("run", "x", "--model", replies(tmp_path), "--tools", str(module))
    assert_one_line_error(proc, "broken.py", "nonexistent_package_xyz")


def test_malformed_signature(tmp_path: Path) -> None:
    proc = codeact("run", "x", "--model", replies(tmp_path), "--signature", "question answer")
    assert_one_line_error(proc, "bad --signature")


def test_signature_with_unknown_type(tmp_path: Path) -> None:
    proc = codeact("run", "x", "--model", replies(tmp_path), "--signature", "q -> a: Frobnicate")
    assert_one_line_error(proc, "bad --signature", "Frobnicate")


def test_unknown_model() -> None:
    proc = codeact("run", "x", "--model", "nosuchmodel")
    assert_one_line_error(proc, "cannot use model 'nosuchmodel'")


def test_missing_scripted_replies_file(tmp_path: Path) -> None:
    proc = codeact("run", "x", "--model", f"scripted:{tmp_path / 'none.json'}")
    assert_one_line_error(proc, "not found")


def test_hosted_model_without_its_key() -> None:
    proc = codeact("run", "x", "--model", "openai/gpt-4o-mini")
    assert_one_line_error(proc, "OPENAI_API_KEY")


def test_input_not_in_signature(tmp_path: Path) -> None:
    proc = codeact("run", "--model", replies(tmp_path), "-i", "question=hi")
    assert_one_line_error(proc, "'question' is not an input")


def test_task_given_for_a_two_input_signature(tmp_path: Path) -> None:
    proc = codeact("run", "hello", "--model", replies(tmp_path), "-s", "a, b -> c")
    assert_one_line_error(proc, "--input NAME=VALUE")


def test_read_path_that_does_not_exist(tmp_path: Path) -> None:
    proc = codeact("run", "x", "--model", replies(tmp_path), "--read", str(tmp_path / "missing"))
    assert_one_line_error(proc, "--read", "missing")


def test_bad_option_values_are_usage_errors() -> None:
    for args in (["--max-iters", "0"], ["--timeout", "soon"], ["--memory", "lots"]):
        proc = codeact("run", "x", *args)
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        assert "error:" in proc.stderr


def test_memory_sizes_read_as_the_sandbox_reads_them(tmp_path: Path) -> None:
    proc = codeact("run", "x", "--model", replies(tmp_path, code("submit('ok')")), "--memory", "2GiB")
    assert proc.returncode == 0, proc.stderr
    proc = codeact("run", "x", "--model", replies(tmp_path, code("submit('ok')")), "--memory", "512")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "memory_limit='512' is 512 bytes" in proc.stderr and "512MB" in proc.stderr


def test_relative_read_paths_resolve_in_the_sandbox(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sales.csv").write_text("north,3\n")
    script = replies(tmp_path, code("submit(open('data/sales.csv').read().strip())"))
    proc = codeact("run", "x", "--model", script, "--read", "data", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outputs"] == {"answer": "north,3"}


def test_approve_asks_in_the_terminal_and_a_refusal_reaches_the_code_and_the_trace(tmp_path: Path) -> None:
    script = replies(
        tmp_path,
        code(
            "try:\n    add(1, 2)\nexcept PermissionError as exc:\n    print('refused:', exc)\n"
            "x = add(2, 2)\ny = add(3, 3)\nsubmit(x + y)"
        ),
    )
    trace = tmp_path / "run.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "codeact",
            "run",
            "x",
            "--model",
            script,
            "--tools",
            str(MATH_TOOLS),
            "-s",
            "task -> answer: int",
            "--approve",
            "--trace",
            str(trace),
        ],
        input="n\nz\na\n",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("allow? y = yes, n = no, a = always") == 2  # the third call was always-approved
    assert "refused: the call of tool 'add' was denied: refused at the terminal" in proc.stdout
    assert "denied" in proc.stdout  # the live view marks the call
    calls = RunRecord.load(trace).steps[0].tool_calls
    assert [c.approval for c in calls] == ["denied", "approved", "approved"]


def test_max_tool_calls_on_the_command_line(tmp_path: Path) -> None:
    script = replies(
        tmp_path, code("try:\n    add(1, 1)\n    add(1, 1)\nexcept RuntimeError as exc:\n    print(exc)\nsubmit(1)")
    )
    proc = codeact(
        "run", "x", "--model", script, "--tools", str(MATH_TOOLS), "-s", "task -> answer: int", "--max-tool-calls", "1"
    )
    assert proc.returncode == 0, proc.stderr
    assert "the budget of 1 tool calls for this run is used up" in proc.stdout


def test_run_help_documents_exit_codes() -> None:
    proc = codeact("run", "--help")
    assert proc.returncode == 0
    for line in ("exit status:", "0    the code submitted", "130  interrupted"):
        assert line in proc.stdout


# --- report, bench, doctor ---------------------------------------------------------------------


def test_report_command_renders_a_saved_trace(tmp_path: Path) -> None:
    trace = tmp_path / "run.json"
    assert (
        codeact(
            "run",
            "17 + 25?",
            "-q",
            "--model",
            replies(tmp_path, *ADD_AND_SUBMIT),
            "--tools",
            str(MATH_TOOLS),
            "--trace",
            str(trace),
        ).returncode
        == 0
    )
    out = tmp_path / "page.html"
    proc = codeact("report", str(trace), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    html = out.read_text()
    assert "<svg" in html and "result = add" in html.replace("</span>", "").replace('<span class="n">', "").replace(
        '<span class="o">', ""
    ).replace('<span class="p">', "")


def test_report_of_a_file_that_is_not_a_trace(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert_one_line_error(codeact("report", str(bad)), "not a codeact trace")
    bad.write_text("{not json")
    assert_one_line_error(codeact("report", str(bad)), "not valid JSON")
    assert_one_line_error(codeact("report", str(tmp_path / "missing.json")), "trace file not found")


def test_bench_runs_the_scripts_in_bench(tmp_path: Path) -> None:
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "tiny.py").write_text(
        "import sys\nprint('name  value')\nprint('tiny  ' + ' '.join(sys.argv[1:]))\n"
    )
    proc = codeact("bench", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "== tiny" in proc.stdout and "name  value" in proc.stdout
    proc = codeact("bench", "tiny", "--fast", cwd=tmp_path)
    assert "tiny  --fast" in proc.stdout
    assert_one_line_error(codeact("bench", "nosuch", cwd=tmp_path), "unknown benchmark 'nosuch'")


def test_doctor_reports_sandbox_backends_model_and_extras(tmp_path: Path) -> None:
    proc = codeact("doctor", "--json", "--model", replies(tmp_path, "OK"))
    report = json.loads(proc.stdout)
    sections = {c["section"] for c in report["checks"]}
    assert {"Sandbox layers", "Backends", "Model", "Extras"} <= sections
    by_name = {(c["section"], c["name"]): c for c in report["checks"]}
    assert by_name[("Model", "answers")]["ok"]
    assert "'OK'" in by_name[("Model", "answers")]["detail"]
    assert by_name[("Backends", "native (process)")]["ok"]
    assert by_name[("Reach", "network proxy")]["ok"], by_name[("Reach", "network proxy")]
    for check in report["checks"]:
        if not check["ok"] and check["section"] != "Sandbox layers":
            assert check["remedy"], check
    assert proc.returncode == (0 if report["ok"] else 1)


def test_doctor_says_when_the_model_does_not_answer(tmp_path: Path) -> None:
    proc = codeact("doctor", "--model", replies(tmp_path))  # no replies: the model fails
    assert proc.returncode == 1
    assert "answers" in proc.stdout and "ScriptedLMExhausted" in proc.stdout


@pytest.mark.parametrize(
    "args", [["--help"], ["run", "--help"], ["doctor", "--help"], ["bench", "--help"], ["report", "--help"]]
)
def test_help(args: list[str]) -> None:
    proc = codeact(*args)
    assert proc.returncode == 0 and "usage: codeact" in proc.stdout


def test_bench_m3tooleval_dispatches_to_the_benchmark() -> None:
    proc = codeact("bench", "m3tooleval", "--model", "reference", "--limit", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "success" in proc.stdout


# --- the live view in a terminal ---------------------------------------------------------------


def test_terminal_shows_a_spinner_with_phase_and_a_running_clock(tmp_path: Path) -> None:
    import pty

    model = replies(tmp_path, code("import time\ntime.sleep(1.2)\nprint('slept')"), code("submit('ok')"))
    leader, follower = pty.openpty()
    env = _env()
    env.pop("COLUMNS")
    proc = subprocess.Popen(
        [sys.executable, "-m", "codeact", "run", "x", "--model", model],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        cwd=ROOT,
        env=env,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the command exited and closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=30) == 0
    raw = b"".join(chunks).decode(errors="replace")
    assert "\x1b[" in raw  # colours and cursor control on a terminal
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", raw)
    clock = {float(s) for s in re.findall(r"step 1/10 · running code · ([0-9.]+)s", text)}
    assert len(clock) >= 3 and max(clock) - min(clock) >= 0.5, sorted(clock)
    assert "slept" in text and "end reason: submitted" in text


# --- loading tools -----------------------------------------------------------------------------


def _module(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return path


def test_tools_file_offers_its_public_functions_only(tmp_path: Path) -> None:
    from codeact.cli import load_tools

    path = _module(
        tmp_path,
        "mixed",
        (
            "from os.path import join\n"
            "import codeact\n\n"
            "def area(w: float, h: float) -> float:\n    'Area of a rectangle.'\n    return w * h\n\n"
            "async def fetch(url: str) -> str:\n    'Fetch a page.'\n    return url\n\n"
            "@codeact.tool(name='shout')\ndef loud(text: str) -> str:\n    return text.upper()\n\n"
            "def _helper() -> None:\n    pass\n\n"
            "class Thing:\n    pass\n\nLIMIT = 3\n"
        ),
    )
    names = [t.name for t in load_tools([str(path)])]
    assert sorted(names) == ["area", "fetch", "shout"]


def test_tools_file_with_a_tools_list_offers_exactly_that(tmp_path: Path) -> None:
    from codeact.cli import load_tools

    path = _module(
        tmp_path,
        "listed",
        (
            "class Counter:\n    def __init__(self):\n        self.n = 0\n"
            "    def bump(self) -> int:\n        'Count one more.'\n        self.n += 1\n        return self.n\n\n"
            "counter = Counter()\n\n"
            "def other() -> None:\n    pass\n\n"
            "TOOLS = [counter.bump]\n"
        ),
    )
    tools = load_tools([str(path)])
    assert [t.name for t in tools] == ["bump"]
    assert tools[0]() == 1 and tools[0]() == 2  # the bound method keeps its object's state


def test_tools_from_an_importable_module_and_attribute(tmp_path: Path) -> None:
    from codeact.cli import load_tools

    tools = load_tools(["json:dumps", f"{MATH_TOOLS}:add"])
    assert [t.name for t in tools] == ["dumps", "add"]


def test_two_tools_with_one_name_are_refused(tmp_path: Path) -> None:
    from codeact.cli import UsageError, load_tools

    with pytest.raises(UsageError, match="two tools are named 'add'"):
        load_tools([f"{MATH_TOOLS}:add", f"{MATH_TOOLS}:add"])


def test_module_without_functions_is_refused(tmp_path: Path) -> None:
    from codeact.cli import UsageError, load_tools

    path = _module(tmp_path, "empty", "X = 1\n")
    with pytest.raises(UsageError, match="no public functions and no TOOLS list"):
        load_tools([str(path)])


# --- command-line details a new user trips over ---------------------------------------------------------
def test_tools_from_a_module_in_the_working_directory_through_the_script(tmp_path: Path) -> None:
    (tmp_path / "shop_tools.py").write_text("def price(item: str) -> int:\n    '''A price.'''\n    return 7\n")
    script = Path(sys.executable).parent / "codeact"
    proc = subprocess.run(
        [
            str(script),
            "run",
            "x",
            "--model",
            replies(tmp_path, code("submit(price('a'))")),
            "--tools",
            "shop_tools",
            "-s",
            "task -> answer: int",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outputs"] == {"answer": 7}


def test_a_task_that_starts_with_at_is_text(tmp_path: Path) -> None:
    proc = codeact("run", "@everyone hello", "--model", replies(tmp_path, code("submit(task)")), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outputs"] == {"answer": "@everyone hello"}


def test_json_output_and_traces_hold_no_bare_nan(tmp_path: Path) -> None:
    trace = tmp_path / "run.json"
    proc = codeact(
        "run",
        "x",
        "--model",
        replies(tmp_path, code("submit(float('nan'))")),
        "-s",
        "task -> answer: float",
        "--json",
        "--trace",
        str(trace),
    )
    assert proc.returncode == 0, proc.stderr

    def refuse(constant: str) -> None:
        raise AssertionError(f"bare {constant} in JSON")

    assert json.loads(proc.stdout, parse_constant=refuse)["outputs"] == {"answer": "nan"}
    json.loads(trace.read_text(), parse_constant=refuse)


def test_a_trace_that_cannot_be_written_fails_the_command(tmp_path: Path) -> None:
    proc = codeact("run", "x", "--model", replies(tmp_path, code("submit('ok')")), "--trace", "/proc/run.json")
    assert proc.returncode == 3 and "cannot write trace" in proc.stderr


def test_report_of_a_trace_with_wrong_field_types_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"signature": "q -> a", "steps": [{"index": "zero", "exec_s": "slow"}], "lm_s": "x"}))
    proc = codeact("report", str(bad), "-o", str(tmp_path / "bad.html"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_budget_and_model_flags(tmp_path: Path) -> None:
    proc = codeact(
        "run",
        "x",
        "--model",
        replies(tmp_path, *[code("x = 1")] * 5),
        "--max-run-tokens",
        "20",
        "--max-reply-tokens",
        "50",
        "--fallback",
        "partial",
        "--temperature",
        "0.2",
        "--preload",
        "json",
        "--json",
    )
    assert json.loads(proc.stdout)["end_reason"] == "budget", proc.stderr


def test_paths_with_brackets_are_printed_as_written(tmp_path: Path) -> None:
    trace = tmp_path / "run[1].json"
    proc = codeact("run", "x", "--model", replies(tmp_path, code("submit('ok')")), "--trace", str(trace))
    assert proc.returncode == 0, proc.stderr
    assert f"trace: {trace}" in proc.stdout


def test_version() -> None:
    proc = codeact("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("codeact ")


def test_an_unknown_provider_or_a_missing_key_is_reported_before_the_run() -> None:
    proc = codeact("run", "x", "-m", "foo/bar")
    assert_one_line_error(proc, "unknown provider 'foo'")
    proc = codeact("run", "x", "-m", "anthropic/claude-3-5-haiku-latest")
    assert_one_line_error(proc, "ANTHROPIC_API_KEY")


def test_m3tooleval_stops_at_a_model_that_refuses_the_key(tmp_path: Path) -> None:
    from lm_fixtures import Fault, FaultProxy

    proxy = FaultProxy("http://127.0.0.1:9")  # every request is answered by a fault: nothing is forwarded
    proxy.inject(*[Fault("status", 401, {"error": {"message": "bad key"}})] * 50)
    try:
        env = {**_env(), "OPENAI_BASE_URL": proxy.base_url, "OPENAI_API_KEY": "sk-wrong"}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "codeact",
                "bench",
                "m3tooleval",
                "--model",
                "openai/some-model",
                "--mode",
                "code",
                "--limit",
                "6",
                "--workers",
                "1",
                "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env=env,
        )
    finally:
        proxy.close()
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "cannot be called" in proc.stderr and "LMAuthError" in proc.stderr
    assert len(proxy.chat_requests) == 1  # the first refusal stopped the benchmark
