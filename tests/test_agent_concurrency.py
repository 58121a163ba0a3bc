"""CodeAct runs concurrently: `acall` without blocking the event loop, and `batch` in threads."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import codeact
from codeact.events import RunEnded, StepEnded

pytestmark = pytest.mark.skipif(
    not __import__("codeact.sandbox", fromlist=["available_backends"]).available_backends(),
    reason="no sandbox backend on this machine",
)


def py(code: str) -> str:
    return f"```python\n{code}\n```"


async def test_acall_awaits_async_tools_on_the_callers_loop_without_blocking_it() -> None:
    loop = asyncio.get_running_loop()
    tool_loops: list[asyncio.AbstractEventLoop] = []

    async def lookup(key: str) -> str:
        """Look a key up in a slow remote store."""
        tool_loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0.3)
        return key.upper()

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    lm = codeact.ScriptedLM([py("v = lookup('abc')\nprint(v)"), py("submit(v)")])
    act = codeact.CodeAct("q -> a", tools=[lookup], lm=lm)
    task = asyncio.create_task(ticker())
    prediction = await act.acall(q="?")
    task.cancel()
    assert prediction.a == "ABC"
    assert tool_loops == [loop]
    assert ticks >= 15  # the loop kept running while the tool slept 0.3 s


async def test_concurrent_acalls_overlap() -> None:
    async def slow(x: int) -> int:
        """Wait, then return x."""
        await asyncio.sleep(0.4)
        return x

    lm = codeact.ScriptedLM([py("submit(slow(len(q)))")] * 4)
    act = codeact.CodeAct("q -> n: int", tools=[slow], lm=lm)
    started = time.perf_counter()
    predictions = await asyncio.gather(*(act.acall(q="x" * i) for i in range(1, 5)))
    elapsed = time.perf_counter() - started
    assert [p.n for p in predictions] == [1, 2, 3, 4]
    assert elapsed < 1.4  # four 0.4 s tool calls, not run one after another


async def test_acall_with_async_event_handler() -> None:
    seen: list[str] = []

    async def handler(event: Any) -> None:
        await asyncio.sleep(0)
        seen.append(type(event).__name__)

    lm = codeact.ScriptedLM([py("submit(1)")])
    prediction = await codeact.CodeAct("q -> a: int", lm=lm, on_event=handler).acall(q="?")
    assert prediction.a == 1
    assert seen[0] == "RunStarted" and seen[-1] == "RunEnded"


async def test_acall_lm_error_and_fallback() -> None:
    def fail(messages: Any) -> str:
        raise codeact.lm.LMError("quota")

    lm = codeact.ScriptedLM([py("x = 1"), fail])
    prediction = await codeact.CodeAct("q -> a", lm=lm).acall(q="?")
    assert prediction.end_reason == "lm_error"
    lm = codeact.ScriptedLM([py("x = 1"), '{"a": "from the log"}'])
    prediction = await codeact.CodeAct("q -> a", lm=lm, max_iters=1).acall(q="?")
    assert (prediction.a, prediction.fallback) == ("from the log", "extract")


async def test_cancelling_acall_records_an_interrupted_run() -> None:
    records: list[Any] = []
    lm = codeact.ScriptedLM([py("x = 1"), py("while True:\n    pass")])
    act = codeact.CodeAct("q -> a", lm=lm, step_timeout=1.0, on_event=records.append)
    task = asyncio.create_task(act.acall(q="?"))
    await asyncio.sleep(0.4)
    task.cancel()
    started = time.perf_counter()
    with pytest.raises(asyncio.CancelledError) as info:
        await task
    assert time.perf_counter() - started < 3
    ended = [e for e in records if isinstance(e, RunEnded)]
    assert len(ended) == 1
    record = ended[0].record
    assert record.end_reason == "interrupted"
    assert [s.code for s in record.steps] == ["x = 1", "while True:\n    pass"]
    assert isinstance(info.value, codeact.RunCancelled) and info.value.prediction.record is record


async def test_ctrl_c_in_an_async_run_raises_run_interrupted_like_a_sync_one() -> None:
    def interrupt(messages: list[Any]) -> str:
        raise KeyboardInterrupt

    lm = codeact.ScriptedLM([py("print('working')"), interrupt])
    with pytest.raises(codeact.RunInterrupted) as info:
        await codeact.CodeAct("q -> a", lm=lm).acall(q="?")
    record = info.value.prediction.record
    assert record.end_reason == "interrupted" and record.steps[0].stdout == "working\n"


def test_batch_runs_each_input_in_its_own_session_in_order() -> None:
    # If sessions were shared, `marker` from one run would leak into the next.
    code = "try:\n    marker\nexcept NameError:\n    marker = word\nsubmit(length=len(marker), seen=marker)"
    lm = codeact.ScriptedLM([py(code)] * 6)
    threads: set[int] = set()

    def on_event(event: Any) -> None:
        if isinstance(event, StepEnded):
            threads.add(threading.get_ident())

    act = codeact.CodeAct("word -> length: int, seen", lm=lm, on_event=on_event)
    words = ["a", "bb", "ccc", "dddd", "eeeee"]
    inputs: list[dict[str, Any]] = [{"word": w} for w in words]
    inputs.insert(2, {"wrong": 1})
    predictions = act.batch(inputs, num_threads=3)
    assert len(predictions) == 6
    bad = predictions.pop(2)
    assert bad.end_reason == "error" and "missing input 'word'" in (bad.error or "")
    assert [(p.length, p.seen) for p in predictions] == [(len(w), w) for w in words]
    assert len(threads) > 1
    assert len({p.record.run_id for p in predictions}) == 5


def test_batch_keeps_a_raised_run() -> None:
    lm = codeact.ScriptedLM([py("print(1)"), py("submit(2)")])
    act = codeact.CodeAct("q -> a: int", lm=lm, max_iters=1, fallback="raise")
    predictions = act.batch([{"q": "x"}, {"q": "y"}], num_threads=1)
    assert [p.end_reason for p in predictions] == ["max_iters", "submitted"]
    assert predictions[0].fallback == "raise"


def test_shared_interpreter_instance_serves_runs_one_at_a_time() -> None:
    sandbox = codeact.Sandbox()
    try:
        lm = codeact.ScriptedLM([py("submit(len(q))")] * 3)
        act = codeact.CodeAct("q -> n: int", lm=lm, interpreter=sandbox)
        predictions = act.batch([{"q": "a"}, {"q": "bb"}, {"q": "ccc"}], num_threads=3)
        assert [p.n for p in predictions] == [1, 2, 3]
        assert sandbox.alive  # borrowed, not closed by CodeAct
    finally:
        sandbox.close()
