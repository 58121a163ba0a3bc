"""Code that awaits: async stubs, concurrent tool calls, budgets and approvals, on every backend."""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

import pytest

import codeact
from codeact import tool
from codeact.sandbox.driver import ApprovalRequest


class Overlap:
    """A tool that counts how many of its calls run at the same time (no clock involved)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()
        self.all_in = threading.Event()

    def price(self, item: int) -> int:
        """The price of an item."""
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            if self.active == self.expected:
                self.all_in.set()
        self.all_in.wait(20)  # held until every call is in flight (or a generous bound passes)
        with self.lock:
            self.active -= 1
        return item * 10


async def aprice(item: int) -> int:
    """The price of an item, asynchronously."""
    await asyncio.sleep(0)
    return item * 100


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


# --- awaiting ------------------------------------------------------------------------------------
def test_gathered_calls_of_a_sync_tool_run_concurrently_on_the_host(make_sandbox):
    overlap = Overlap(10)
    sb = make_sandbox(tools=[overlap.price], timeout=60)
    r = sb.execute("import asyncio\nprices = await asyncio.gather(*[price(i) for i in range(10)])\nprices")
    assert r.error is None, r.error
    assert r.value == repr([i * 10 for i in range(10)])
    assert overlap.peak == 10
    assert len(r.tool_calls) == 10 and all(call.concurrent for call in r.tool_calls)


def test_calls_from_threads_of_the_code_run_concurrently_on_the_host(make_sandbox, backend):
    if backend == "pyodide":
        pytest.skip("WebAssembly has no threads")
    overlap = Overlap(8)
    sb = make_sandbox(tools=[overlap.price, aprice], timeout=60)
    code = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "with ThreadPoolExecutor(8) as pool:\n"
        "    prices = list(pool.map(price, range(8)))\n"
        "prices"
    )
    r = sb.execute(code)
    assert r.error is None, r.error
    assert r.value == repr([i * 10 for i in range(8)])
    assert overlap.peak == 8
    # a thread's plain call and the loop's awaited calls share the channel
    overlap = Overlap(1)
    sb.set_tools([overlap.price, aprice])
    r = sb.execute("import asyncio\nawait asyncio.gather(aprice(1), asyncio.to_thread(price, 2), aprice(3))")
    assert r.error is None and r.value == "[100, 20, 300]", r.error


def test_replies_read_by_a_thread_never_leave_the_loop_waiting_for_them(make_sandbox, backend):
    # The loop is told the channel is readable; before its turn, a thread waiting for its own reply
    # reads what was there, and the loop's futures' replies too. The loop then read on, for replies
    # that had all come: about one step in ten waited out its time limit.
    if backend == "pyodide":
        pytest.skip("WebAssembly has no threads")
    sb = make_sandbox(tools=[Overlap(1).price, aprice], timeout=10)
    for _ in range(50):
        r = sb.execute("import asyncio\nawait asyncio.gather(aprice(1), asyncio.to_thread(price, 2), aprice(3))")
        assert r.error is None and r.value == "[100, 20, 300]", r.error


def test_async_tools_are_awaitable_and_gather(make_sandbox):
    sb = make_sandbox(tools=[aprice])
    r = sb.execute("import asyncio\nps = await asyncio.gather(*(aprice(i) for i in range(5)))\nps")
    assert r.error is None, r.error
    assert r.value == "[0, 100, 200, 300, 400]"
    assert sb.execute("await aprice(7)").value == "700"


def test_task_groups_and_as_completed_work(make_sandbox):
    sb = make_sandbox(tools=[add, aprice])
    r = sb.execute(
        "import asyncio\n"
        "async def main():\n"
        "    async with asyncio.TaskGroup() as tg:\n"
        "        tasks = [tg.create_task(add(i, 1)) for i in range(3)]\n"
        "    done = [await f for f in asyncio.as_completed([aprice(1), aprice(2)])]\n"
        "    return [t.result() for t in tasks], sorted(done)\n"
        "await main()"
    )
    assert r.error is None, r.error
    assert r.value == "([1, 2, 3], [100, 200])"


def test_plain_calls_work_as_before_in_plain_code_and_helpers(make_sandbox):
    sb = make_sandbox(tools=[add, aprice])
    r = sb.execute("x = add(1, 2)\ny = aprice(3)\nx + y")
    assert r.error is None and r.value == "303"
    r = sb.execute(
        "def helper():\n    return add(2, 2)\nasync def main():\n    return helper() + await add(1, 1)\nawait main()"
    )
    assert r.error is None and r.value == "6"


def test_a_call_not_awaited_in_async_code_says_to_await_it(make_sandbox):
    sb = make_sandbox(tools=[add])
    r = sb.execute("async def main():\n    v = add(1, 2)\n    return v + 1\nawait main()")
    assert r.error is not None and r.error.type == "TypeError"
    assert "write `await add(...)`" in r.error.message
    r = sb.execute("import asyncio\nv = add(1, 2)\nprint(v)\nawait asyncio.sleep(0)")
    assert "write `await add(...)` for its value" in r.stdout  # one await makes the whole step async code


def test_a_call_not_awaited_leaves_no_warning_for_a_later_step(make_sandbox):
    sb = make_sandbox(tools=[add])
    r = sb.execute("async def main():\n    v = add(1, 2)\n    return v + 1\nawait main()")
    assert r.error is not None and r.error.type == "TypeError"
    r = sb.execute("import gc\ngc.collect()\n'collected'")  # the call's frame, kept by its error, goes now
    assert r.error is None and r.value == "'collected'"
    assert r.stderr == ""


def test_the_statements_and_the_last_expression_of_a_step_share_one_loop(make_sandbox):
    sb = make_sandbox(tools=[aprice])
    r = sb.execute("import asyncio\nloop = asyncio.get_running_loop()\ntask = loop.create_task(aprice(2))\nawait task")
    assert r.error is None, r.error
    assert r.value == "200"


def test_an_async_generator_awaits_tool_calls(make_sandbox):
    sb = make_sandbox(tools=[add])
    r = sb.execute(
        "async def sums():\n    for i in range(3):\n        yield await add(i, 1)\n[s async for s in sums()]"
    )
    assert r.error is None, r.error
    assert r.value == "[1, 2, 3]" and len(r.tool_calls) == 3


def test_asyncio_run_drives_coroutines_and_tool_calls_as_in_a_script(make_sandbox):
    sb = make_sandbox(tools=[aprice, add])
    code = (
        "import asyncio\n"
        "async def main():\n"
        "    return await asyncio.gather(aprice(1), add(2, 3))\n"
        "(asyncio.run(main()), asyncio.new_event_loop().run_until_complete(main()),"
        " asyncio.run(aprice(2)), asyncio.new_event_loop().run_until_complete(add(4, 5)))"
    )
    r = sb.execute(code)
    assert r.error is None, r.error
    assert r.value == "([100, 5], [100, 5], 200, 9)"
    r = sb.execute("async def nested():\n    asyncio.run(asyncio.sleep(0))\nawait nested()")
    assert r.error is not None and r.error.type == "RuntimeError"
    assert "cannot be called from a running event loop" in r.error.message


def test_calls_the_code_never_awaited_are_abandoned_without_harm(make_sandbox):
    # The host's tool threads finish such calls while the step's answer is being handled: they must
    # neither disturb that (a dict changed during iteration) nor write to the step's closed channel
    # (which ended the session).
    sb = make_sandbox(tools=[add])
    sb.execute("kept = 1")
    for _ in range(10):
        r = sb.execute(
            "async def main():\n    calls = [add(i, 0) for i in range(300)]\n    return len(calls)\nawait main()"
        )
        assert r.error is None and r.value == "300", r.error
        assert len(r.tool_calls) == 300  # every call is in the record, finished or abandoned
    assert sb.execute("kept").value == "1"


def test_tasks_a_step_left_running_are_cancelled_and_it_says_so(make_sandbox):
    """A step ends as a script does under asyncio.run: its loop closes, so the tasks still running are
    cancelled and its output names them; awaiting one in a later step says why it was cancelled
    (not that its future belongs to another loop)."""
    sb = make_sandbox(tools=[aprice])
    r = sb.execute(
        "import asyncio\npriced = asyncio.create_task(aprice(1))\nnap = asyncio.create_task(asyncio.sleep(3600))\n"
        "await asyncio.sleep(0)\n'started'"
    )
    assert r.error is None and r.value == "'started'", r.error
    assert "cancelled" in r.stderr and "sleep" in r.stderr, r.stderr
    r = sb.execute("await nap")
    assert r.error is not None and r.error.type == "CancelledError"
    assert "await a task in its own step" in r.error.message
    r = sb.execute("task = asyncio.create_task(aprice(2))\nawait task")
    assert r.error is None and r.value == "200" and r.stderr == "", (r.error, r.stderr)


def test_an_async_tool_that_exits_does_not_stop_the_callers_loop(make_sandbox):
    async def leave() -> int:
        """Exit the program."""
        sys.exit(3)

    sb = make_sandbox(tools=[leave])

    async def main() -> tuple[str | None, str | None]:
        r = await sb.aexecute("try:\n    await leave()\nexcept BaseException as exc:\n    caught = str(exc)\ncaught")
        assert r.error is None, r.error
        return r.value, (await sb.aexecute("1 + 1")).value

    caught, after = asyncio.run(main())  # SystemExit used to end this loop, and the program with it
    assert "SystemExit" in (caught or "") and after == "2"


def hour_long(cancelled: threading.Event) -> Any:
    """An async tool that sleeps for an hour and sets `cancelled` if it is cancelled."""

    async def slow() -> int:
        """Wait for an hour."""
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    return slow


def test_an_async_tool_past_the_time_limit_is_cancelled_on_the_callers_loop(make_sandbox):
    cancelled = threading.Event()
    sb = make_sandbox(tools=[hour_long(cancelled)], timeout=1)

    async def main() -> tuple[str | None, str | None]:
        r = await sb.aexecute("kept = 1\nawait slow()")
        assert r.tool_calls[0].abandoned
        assert await asyncio.to_thread(cancelled.wait, 30)  # it used to sleep on in the caller's loop
        return r.error.type if r.error else None, (await sb.aexecute("1 + 1")).value

    assert asyncio.run(main()) == ("Timeout", "2")


def test_an_async_tool_past_the_time_limit_of_a_plain_execute_is_cancelled(make_sandbox):
    cancelled = threading.Event()
    sb = make_sandbox(tools=[hour_long(cancelled)], timeout=1)
    r = sb.execute("slow()")  # no event loop of the caller's: the tool runs on one of the host thread's
    assert r.error is not None and r.error.type == "Timeout" and r.tool_calls[0].abandoned
    assert cancelled.wait(30)
    assert sb.execute("1 + 1").value == "2"


# --- budgets -------------------------------------------------------------------------------------
def test_the_call_past_the_budget_raises_in_the_code(make_sandbox):
    sb = make_sandbox(tools=[add], max_tool_calls=3)
    r = sb.execute(
        "done = []\ntry:\n    for i in range(10):\n        done.append(add(i, 0))\n"
        "except RuntimeError as exc:\n    print(exc)\ndone"
    )
    assert r.error is None, r.error
    assert r.value == "[0, 1, 2]"
    assert "budget of 3 tool calls" in r.stdout
    assert [c.error is not None and c.error.startswith("ToolBudgetExceeded") for c in r.tool_calls] == [
        False,
        False,
        False,
        True,
    ]
    sb.set_policy(max_tool_calls=1)  # a fresh budget
    assert sb.execute("add(1, 1)").value == "2"


def test_a_tool_can_have_its_own_call_limit(make_sandbox):
    limited = tool(add, max_calls=1)
    sb = make_sandbox(tools=[limited, aprice])
    r = sb.execute("add(1, 1)\ntry:\n    add(2, 2)\nexcept RuntimeError as exc:\n    print(exc)\naprice(1)")
    assert r.error is None, r.error
    assert "may be called at most 1 times" in r.stdout
    assert r.value == "100"


# --- approvals -----------------------------------------------------------------------------------
def delete(path: str) -> str:
    """Delete a file."""
    return f"deleted {path}"


def test_approvals_allow_deny_with_a_reason_and_edit(make_sandbox):
    seen: list[ApprovalRequest] = []

    def approve(request: ApprovalRequest) -> Any:
        seen.append(request)
        if request.arguments["path"] == "/etc":
            return "system paths are off limits"
        if request.arguments["path"] == "draft":
            return {"path": "/tmp/draft"}
        return True

    sb = make_sandbox(tools=[tool(delete, requires_approval=True), add], approve=approve)
    r = sb.execute(
        "print(delete('/tmp/a'))\nprint(delete(path='draft'))\n"
        "try:\n    delete('/etc')\nexcept PermissionError as exc:\n    print('refused:', exc)\nadd(1, 1)"
    )
    assert r.error is None, r.error
    assert r.stdout.splitlines() == [
        "deleted /tmp/a",
        "deleted /tmp/draft",
        "refused: the call of tool 'delete' was denied: system paths are off limits",
    ]
    assert [(c.name, c.approval) for c in r.tool_calls] == [
        ("delete", "approved"),
        ("delete", "edited"),
        ("delete", "denied"),
        ("add", None),
    ]
    assert [s.tool for s in seen] == ["delete"] * 3  # unmarked tools run freely
    assert seen[1].arguments == {"path": "draft"}


def test_arguments_an_approver_edited_that_do_not_fit_the_tool_are_named_as_the_approvers(make_sandbox):
    """The code passed good arguments: the error must not send the model looking for its own mistake."""
    sb = make_sandbox(tools=[tool(add, requires_approval=True)], approve=lambda request: {"a": "many", "b": 1})
    r = sb.execute("try:\n    add(1, 2)\nexcept TypeError as exc:\n    print(exc)")
    assert r.error is None, r.error
    assert "should be int" in r.stdout and "the approver" in r.stdout
    assert r.tool_calls[0].approval == "edited" and "the approver" in (r.tool_calls[0].error or "")


def test_an_approver_that_fails_denies_the_call_and_says_it_was_the_approver(make_sandbox):
    """The approver's own error is not the tool's: the model must not retry a call the user's code broke."""

    def approve(request: ApprovalRequest) -> Any:
        raise RuntimeError("the approval service is down")

    sb = make_sandbox(tools=[tool(delete, requires_approval=True)], approve=approve)
    r = sb.execute("try:\n    delete('/tmp/a')\nexcept PermissionError as exc:\n    print(exc)")
    assert r.error is None, r.error
    assert r.stdout.strip() == (
        "the call of tool 'delete' was not run: its approver failed (RuntimeError: the approval service is down)"
    )
    assert [(c.name, c.approval, c.result) for c in r.tool_calls] == [("delete", "denied", None)]


def test_an_async_approver_is_awaited_and_every_tool_asks_when_none_is_marked(make_sandbox):
    async def approve(request: ApprovalRequest) -> bool:
        await asyncio.sleep(0)
        return request.arguments.get("a") != 13

    sb = make_sandbox(tools=[add], approve=approve)
    r = sb.execute("add(1, 2)\ntry:\n    add(13, 0)\nexcept PermissionError:\n    print('no')")
    assert r.error is None and r.stdout == "no\n"


def test_time_waiting_for_an_approval_does_not_count_against_the_step(make_sandbox):
    release = threading.Event()

    def slow_human(request: ApprovalRequest) -> bool:
        release.wait(2.5)  # longer than the step's 1 s limit: a person thinking
        return True

    sb = make_sandbox(tools=[add], approve=slow_human, timeout=1)
    r = sb.execute("add(20, 22)")
    assert r.error is None, r.error
    assert r.value == "42"


def test_a_large_result_after_a_long_approval_still_arrives(make_sandbox):
    def big(n: int) -> str:
        return "x" * n

    def slow_human(request: ApprovalRequest) -> bool:
        threading.Event().wait(4)  # past the step's 2 s limit, which an approval does not use up
        return True

    sb = make_sandbox(tools=[big], approve=slow_human, timeout=2)
    r = sb.execute("len(big(8_000_000))")  # far more than a socket holds: the host's send waits for reads
    assert r.error is None, r.error
    assert r.value == "8000000"


def test_a_tool_marked_for_approval_needs_an_approver(make_sandbox):
    with pytest.raises(ValueError, match="tool 'delete' requires approval; pass approve="):
        make_sandbox(tools=[tool(delete, requires_approval=True)])


# --- through CodeAct -------------------------------------------------------------------------------
def py(code: str) -> str:
    return f"Next.\n```python\n{code}\n```"


def test_codeact_records_every_call_with_its_approval_and_budget() -> None:
    decisions: list[str] = []

    def approve(request: ApprovalRequest) -> Any:
        decisions.append(request.tool)
        return request.arguments["path"] != "/"

    lm = codeact.ScriptedLM(
        [
            py(
                "import asyncio\nparts = await asyncio.gather(add(1, 2), add(3, 4))\n"
                "try:\n    delete('/')\nexcept PermissionError as exc:\n    print(exc)\n"
                "try:\n    add(0, 0)\nexcept RuntimeError as exc:\n    print(exc)"
            ),
            py("submit(sum(parts))"),
        ]
    )
    act = codeact.CodeAct(
        "q -> answer: int", tools=[add, tool(delete, requires_approval=True)], lm=lm, approve=approve, max_tool_calls=3
    )
    prediction = act(q="go")
    assert prediction.answer == 10 and prediction.end_reason == "submitted"
    calls = prediction.trajectory[0].tool_calls
    assert [(c.name, c.approval) for c in calls[:2]] == [("add", None), ("add", None)]
    assert calls[2].name == "delete" and calls[2].approval == "denied"
    assert calls[3].error is not None and calls[3].error.startswith("ToolBudgetExceeded")
    assert prediction.trajectory[0].tool_call_count == 4
    assert decisions == ["delete"]
    record = codeact.RunRecord.from_dict(prediction.record.to_dict())
    assert record.steps[0].tool_calls[2].approval == "denied"


def test_codeact_refuses_a_marked_tool_without_an_approver() -> None:
    with pytest.raises(ValueError, match="requires approval"):
        codeact.CodeAct("q -> a", tools=[tool(delete, requires_approval=True)], lm=codeact.ScriptedLM([]))


def test_the_prompt_says_that_a_step_with_await_gets_awaitables_from_its_calls() -> None:
    """One `await` makes the whole step async code, where a plain call gives an awaitable: a model
    given async tools is told so before it writes `x = tool(...)` beside an `await`."""
    told = "In a step that uses `await` anywhere, and inside `async def`, a call gives an awaitable"
    assert told in codeact.CodeAct("q -> answer", tools=[aprice, add]).prompt.system
    assert "await" not in codeact.CodeAct("q -> answer", tools=[add]).prompt.system
