"""`Sandbox.fork()`: a branch of a native session with a copy of its state, independent from then on."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator

import pytest

from codeact import Sandbox
from codeact.sandbox import InterpreterError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the native sandbox needs Linux")


def double(x: int) -> int:
    """Twice x."""
    return 2 * x


@pytest.fixture
def parent() -> Iterator[Sandbox]:
    with Sandbox(tools=[double], backend="process", timeout=5) as sb:
        result = sb.execute(
            "import json\nrows = [1, 2]\ndef total():\n    return sum(rows)\n"
            "open('/tmp/notes.txt', 'w').write('from before the fork')"
        )
        assert result.error is None, result.error
        yield sb


def _settled(sandbox: Sandbox, count: int | None = None) -> list[int]:
    """The session's processes once they number `count`, or (without one) once the number stays the
    same over five polls: a worker is forked, and a branch exits, after the step that caused it returns."""
    found, same = sandbox.processes(), 0
    for _ in range(300):
        if count is not None and len(found) <= count:
            return found
        time.sleep(0.02)
        again = sandbox.processes()
        same = same + 1 if len(again) == len(found) else 0
        found = again
        if count is None and same >= 5:
            return found
    return found


def test_a_fork_has_the_variables_functions_imports_and_tools(parent: Sandbox) -> None:
    with parent.fork() as branch:
        result = branch.execute("rows.append(double(21))\njson.dumps([total(), rows])")
        assert result.error is None, result.error
        assert result.value == "'[45, [1, 2, 42]]'"
        assert branch.execute("open('/tmp/notes.txt').read()").value == "'from before the fork'"


def test_the_original_is_unchanged_by_its_fork(parent: Sandbox) -> None:
    with parent.fork() as branch:
        branch.execute("rows.clear()\nnew_name = 1")
        assert parent.execute("rows").value == "[1, 2]"
        assert parent.execute("new_name").error.type == "NameError"
        parent.execute("rows.append(3)")
        assert branch.execute("rows").value == "[]"


def test_forks_of_forks_and_many_forks_are_each_independent(parent: Sandbox) -> None:
    branches = [parent.fork() for _ in range(3)]
    try:
        for i, branch in enumerate(branches):
            branch.execute(f"rows.append({i})")
        grandchild = branches[0].fork()
        grandchild.execute("rows.append('g')")
        values = [b.execute("rows").value for b in [*branches, grandchild]]
        assert values == ["[1, 2, 0]", "[1, 2, 1]", "[1, 2, 2]", "[1, 2, 0, 'g']"]
        grandchild.close()
    finally:
        for branch in branches:
            branch.close()


def test_a_timeout_in_a_fork_rolls_back_only_the_fork(parent: Sandbox) -> None:
    with parent.fork() as branch:
        branch.execute("rows.append('kept')")
        result = branch.execute("while True:\n    pass", timeout=1)
        assert result.error is not None and result.error.type == "Timeout"
        assert branch.execute("rows").value == "[1, 2, 'kept']"
        assert parent.execute("rows").value == "[1, 2]"
        result = parent.execute("while True:\n    pass", timeout=1)
        assert result.error is not None and result.error.type == "Timeout"
        assert branch.execute("rows").value == "[1, 2, 'kept']"


def test_a_crash_in_a_fork_leaves_the_original_running(parent: Sandbox) -> None:
    with parent.fork() as branch:
        result = branch.execute("import os\nos._exit(3)")
        assert result.error is not None and result.error.type == "SandboxCrashed"
        assert branch.execute("rows").value == "[1, 2]"
        assert parent.execute("total()").value == "3"


def test_closing_a_fork_leaves_no_process_behind(parent: Sandbox) -> None:
    before = _settled(parent)
    branch = parent.fork()
    branch.execute(
        "import os\nchild = os.fork()\nif child == 0:\n    import time\n    time.sleep(0.1)\n    os._exit(0)"
    )
    assert len(parent.processes()) > len(before)
    branch.close()
    assert len(_settled(parent, len(before))) == len(before)
    assert parent.execute("total()").value == "3"


def test_closing_the_original_ends_its_forks(parent: Sandbox) -> None:
    branch = parent.fork()
    parent.close()
    assert parent.processes() == []
    result = branch.execute("rows")  # the branch's session is gone: it starts a fresh one
    assert result.error is not None and result.error.type == "NameError"
    assert "restarted" in result.stderr
    assert branch.execute("double(2)").value == "4"  # a fresh session with the same tools
    branch.close()


def test_closing_the_original_while_its_fork_runs_a_step_says_so() -> None:
    running = threading.Event()

    def started() -> None:
        """Say that the step runs."""
        running.set()

    with Sandbox(tools=[started], backend="process", timeout=120) as original:
        branch = original.fork()
        closer = threading.Thread(target=lambda: (running.wait(60), original.close()))
        closer.start()
        result = branch.execute("import time\nstarted()\ntime.sleep(60)")
        closer.join()
        assert result.error is not None and result.error.type == "SandboxCrashed"
        assert "the session it was forked from was closed" in result.error.message
        branch.close()


def test_a_fork_shares_the_sessions_limits(parent: Sandbox) -> None:
    with parent.fork() as branch:
        assert branch.options.memory_limit == parent.options.memory_limit
        result = branch.execute("import os\n[os.fork() for _ in range(200)]")
        assert result.error is not None  # the process limit of the family applies
        assert parent.execute("total()").value == "3"


def test_fork_needs_rollback() -> None:
    with Sandbox(backend="process", rollback=False) as sb, pytest.raises(InterpreterError, match="rollback=True"):
        sb.fork()


def test_a_fork_of_an_unstarted_sandbox_starts_it() -> None:
    sb = Sandbox(tools=[double], backend="process")
    try:
        with sb.fork() as branch:
            assert branch.execute("double(3)").value == "6"
    finally:
        sb.close()
