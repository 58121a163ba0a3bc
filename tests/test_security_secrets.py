"""Attacks on the host's secrets: environment variables, tool closures, host memory, other sessions."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import pytest

from attacks import (
    assert_alive,
    assert_blocked,
    descendants,
    host_secret_env,
    probe,
    still_running,
    wait_until,
)

# Sandbox-side search for a secret in every place a process can read: environ, argv, /proc, memory.
# The secret travels as two parts (prefix, rest) and is never joined inside the sandbox, so the
# attack's own code and variables do not hold it and a hit means it came from elsewhere.
SEARCH_EVERYWHERE = """
import os
def __has(data, parts):
    head, rest = parts[0].encode(), parts[1].encode()
    at = data.find(head)
    while at >= 0:
        if data[at + len(head):at + len(head) + len(rest)] == rest:
            return True
        at = data.find(head, at + 1)
    return False

def __search(parts):
    hits = []
    if __has("\\n".join(k + "=" + v for k, v in os.environ.items()).encode(), parts):
        hits.append("os.environ")
    for pid in [p for p in os.listdir("/proc") if p.isdigit()] + ["self"]:
        for name in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{name}", "rb") as f:
                    if __has(f.read(), parts):
                        hits.append(f"/proc/{pid}/{name}")
            except OSError:
                pass
        try:
            maps = open(f"/proc/{pid}/maps").read().splitlines()
            mem = open(f"/proc/{pid}/mem", "rb")
        except OSError:
            continue
        with mem:
            for line in maps:
                fields = line.split()
                if "r" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                    continue
                start, end = (int(x, 16) for x in fields[0].split("-"))
                try:
                    mem.seek(start)
                    if __has(mem.read(end - start), parts):
                        hits.append(f"/proc/{pid}/mem {fields[0]} {fields[5:] or ''}")
                except (OSError, ValueError, OverflowError):
                    pass
    return hits
"""


def _needle() -> str:
    return f"codeact-secret-{uuid.uuid4().hex}"


def _parts(secret: str) -> tuple[str, str]:
    """The secret split so that sandbox code can search for it without ever holding it whole."""
    head, _, rest = secret.rpartition("-")
    return head + "-", rest


def test_host_environment_variables_are_invisible(make_sandbox, backend):
    secret = _needle()
    # A zygote of our own (distinct preload) starts after the secret is set, so it had the chance to see it.
    options = {"preload": ["colorsys"]} if backend == "process" else {}
    with host_secret_env("CODEACT_TEST_API_KEY", secret):
        sb = make_sandbox(**options)
        outcome = probe(
            sb,
            f"""
            hits = __search({_parts(secret)!r})
            if not hits:
                raise LookupError("secret not found")
            return hits
        """,
            prelude=SEARCH_EVERYWHERE,
            timeout=60,
        )
    assert_blocked(outcome, "find a host environment variable in the sandbox")
    assert_alive(sb)


def test_only_the_given_environment_is_visible(make_sandbox):
    secret = _needle()
    with host_secret_env("CODEACT_TEST_TOKEN", secret):
        sb = make_sandbox(env={"GIVEN": "yes"})
        control = probe(sb, "import os\nreturn os.environ.get('GIVEN')")
        assert control.status == "ok" and control.detail == "'yes'", f"control: env is passed in: {control}"
        outcome = probe(
            sb,
            """
            import os
            extra = {k: v for k, v in os.environ.items() if k != "GIVEN"}
            if not extra:
                raise LookupError("only GIVEN is set")
            return extra
        """,
        )
    assert_blocked(outcome, "see host environment variables besides the given ones")
    assert_alive(sb)


def test_secrets_in_tool_closures_stay_on_the_host(make_sandbox):
    api_key = _needle()
    calls: list[str] = []

    def lookup(query: str) -> int:
        """Look a query up with the private API key."""
        calls.append(query)
        return len(query) + len(api_key)

    sb = make_sandbox(tools=[lookup])
    control = sb.execute("lookup('abc')")
    assert control.value == str(3 + len(api_key)) and calls == ["abc"], f"control: the tool works: {control}"
    outcome = probe(
        sb,
        f"""
        import gc, inspect
        hits = []
        parts = {_parts(api_key)!r}
        f = lookup
        texts = [repr(getattr(f, "__closure__", None)), repr(getattr(f, "__defaults__", None)),
                 repr(getattr(getattr(f, "__code__", None), "co_consts", None)), repr(f.__dict__)]
        try:
            texts.append(repr(f.__globals__))
        except Exception:
            pass
        try:
            texts.append(inspect.getsource(f))
        except Exception:
            pass
        for obj in gc.get_objects():
            try:
                if isinstance(obj, (str, bytes)) and __has(obj.encode() if isinstance(obj, str) else obj, parts):
                    hits.append("gc object")
            except Exception:
                pass
        hits += [t[:80] for t in texts if __has(t.encode(), parts)]
        hits += __search(parts)
        if not hits:
            raise LookupError("the key is not in the sandbox")
        return hits
    """,
        prelude=SEARCH_EVERYWHERE,
        timeout=60,
    )
    assert_blocked(outcome, "read the API key captured by a host tool's closure")
    assert_alive(sb)


def test_memory_scan_finds_nothing_of_the_host(make_sandbox, backend):
    if backend == "pyodide":
        pytest.skip("pyodide: no /proc/<pid>/mem to scan; host memory is outside WebAssembly's address space")
    secret = _needle()
    host_copy = secret.encode() * 3  # noqa: F841 - the secret lives in this process's memory too
    options = {"preload": ["fractions"]} if backend == "process" else {}
    with host_secret_env("CODEACT_TEST_DB_PASSWORD", secret):
        sb = make_sandbox(**options)
        control = probe(
            sb,
            """
            marker = "".join(["sandbox-", "made-", "marker-", "xyz"])
            hits = __search(("sandbox-made-", "marker-xyz"))
            if not any("/mem" in h for h in hits):
                raise LookupError(f"the memory scan does not work: {hits}")
            return len(hits)
        """,
            prelude=SEARCH_EVERYWHERE,
            timeout=60,
        )
        assert control.status == "ok", f"control: the memory scan finds a string made in the sandbox: {control}"
        outcome = probe(
            sb,
            f"""
            hits = __search({_parts(secret)!r})
            if not hits:
                raise LookupError("not found")
            return hits
        """,
            prelude=SEARCH_EVERYWHERE,
            timeout=60,
        )
    assert_blocked(outcome, "find a host secret anywhere in the sandbox's readable memory")
    assert_alive(sb)


def test_script_directory_on_sys_path_is_not_exposed(make_sandbox, tmp_path, monkeypatch):
    # Running `python app.py` puts the app's directory first on sys.path, next to its .env file.
    project = tmp_path / "project"
    project.mkdir()
    (project / "app.py").write_text("print('app')\n")
    env_file = project / ".env"
    secret = _needle()
    env_file.write_text(f"OPENAI_API_KEY={secret}\n")
    monkeypatch.syspath_prepend(str(project))
    sb = make_sandbox()
    outcome = probe(sb, f"return open({str(env_file)!r}).read()")
    assert_blocked(outcome, f"read {env_file} because the host script's directory is on sys.path")
    assert_alive(sb)


def test_other_sessions_variables_are_unreachable_while_both_run(make_sandbox):
    secret = _needle()
    victim = make_sandbox()
    attacker = make_sandbox()
    assert victim.execute(f"vault = {secret!r}").error is None
    started = threading.Event()
    results: dict[str, object] = {}

    def hold() -> None:
        started.set()
        results["victim"] = victim.execute("import time\ntime.sleep(1.5)\nlen(vault)", timeout=20)

    thread = threading.Thread(target=hold)
    thread.start()
    started.wait()
    outcome = probe(
        attacker,
        f"""
        import time
        time.sleep(0.2)
        hits = __search({_parts(secret)!r})
        if not hits:
            raise LookupError("the other session is out of reach")
        return hits
    """,
        prelude=SEARCH_EVERYWHERE,
        timeout=60,
    )
    thread.join(30)
    assert_blocked(outcome, "read a concurrent session's variables")
    victim_result = results["victim"]
    assert victim_result.value == str(len(secret)), f"the victim session was disturbed: {victim_result}"
    assert_alive(attacker)


def test_files_in_the_hosts_tmp_are_invisible(make_sandbox):
    secret_file = Path("/tmp") / f"codeact-secret-{uuid.uuid4().hex}"
    secret_file.write_text("HOST-TMP-SECRET")
    try:
        sb = make_sandbox()
        outcome = probe(
            sb,
            f"""
            import os
            names = os.listdir("/tmp")
            if {secret_file.name!r} in names:
                return open({str(secret_file)!r}).read()
            raise FileNotFoundError(names)
        """,
        )
        assert_blocked(outcome, "read a file in the host's /tmp")
        assert_alive(sb)
    finally:
        secret_file.unlink()


@pytest.mark.parametrize("path", ["/proc/1/environ", "/proc/self/environ", "/proc/1/cmdline"])
def test_proc_environ_of_sandbox_processes_holds_no_host_secret(make_sandbox, backend, path):
    secret = _needle()
    options = {"preload": ["statistics"]} if backend == "process" else {}
    with host_secret_env("CODEACT_TEST_PROC_SECRET", secret):
        sb = make_sandbox(**options)
        outcome = probe(
            sb,
            f"""
            data = open({path!r}, "rb").read()
            if not __has(data, {_parts(secret)!r}):
                raise LookupError(f"no secret in {path}")
            return data
        """,
            prelude=SEARCH_EVERYWHERE,
        )
    assert_blocked(outcome, f"read the host secret from {path}")
    assert_alive(sb)


def test_pool_tasks_cannot_see_earlier_tasks(backend):
    from codeact.sandbox import SandboxPool

    secret = _needle()
    used: list[str] = []

    def vault() -> str:
        """Hand out the first task's private token."""
        used.append("vault")
        return secret

    me = os.getpid()
    baseline = set(descendants(me))
    pool_processes: set[int] = set()  # what the pool's sessions ran, as they report it
    with SandboxPool(size=2, backend=backend) as pool:
        with pool.session(tools=[vault]) as first:
            setup = first.execute(f"""
token = vault()
open("/tmp/left-behind", "w").write(token)
import os
if hasattr(os, "fork") and os.fork() == 0:
    import time
    while True:
        time.sleep(1)
token == {secret!r}
""")
            assert setup.value == "True", f"control: the first task holds the secret: {setup}"
            pool_processes.update(first.processes())
        used.clear()
        with pool.session() as second:
            outcome = probe(
                second,
                f"""
                found = []
                if "token" in globals():
                    found.append("variable")
                try:
                    found.append(open("/tmp/left-behind").read())
                except OSError:
                    pass
                try:
                    found.append(vault())
                except NameError:
                    pass
                import gc
                bridge = next((o for o in gc.get_objects() if type(o).__name__ == "Session"), None)
                if bridge is not None:  # the native backend's tool bridge, called directly
                    try:
                        found.append(bridge.call_tool("vault", [], {{}}))
                    except NameError:
                        pass
                found += __search({_parts(secret)!r})
                if not found:
                    raise LookupError("nothing of the first task is left")
                return found
            """,
                prelude=SEARCH_EVERYWHERE,
                timeout=60,
            )
            assert_blocked(outcome, "read what an earlier task of the pool left behind")
            assert not used, "the second task called the first task's tool"
            assert_alive(second)
            pool_processes.update(second.processes())
            host_view = descendants(me)
            spawned = {pid: host_view[pid] for pid in pool_processes if pid in host_view and pid not in baseline}
            assert spawned or backend != "process", "control: the host sees the pool's session processes"
    assert wait_until(lambda: not still_running(spawned), 5), (
        f"processes of a closed pool still run: {still_running(spawned)}"
    )
